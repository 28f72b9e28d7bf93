"""Soak test of the dashboard on loopback: N Server-Sent-Event clients follow a training run started
from the API while upload predictions come in; the server's memory is sampled as it goes.

    python bench/dashboard_soak.py [--minutes 10] [--clients 20] [--predictions 1000] [--out bench/results/dashboard_soak.json]

It starts `trainlab dashboard` on a temporary runs folder (TRAINLAB_DATA must point at the data),
trains mnist-draw first when --model-run is not given (about a minute), starts a long training job,
and reports: SSE events received and reconnects, predictions sent and failed with p50/p99 latency,
and the server's resident memory (VmRSS of its process) at the start, the end and its maximum.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from serving import free_port, tree_rss_mb, wait_healthy

from trainlab.data.handwriting import drawn_digits


async def follow(client: httpx.AsyncClient, run_id: str, until: float, stats: dict) -> None:
    """One SSE client: follows the run, reconnecting with Last-Event-ID whenever the stream ends."""
    last = 0
    while time.monotonic() < until:
        try:
            async with client.stream("GET", f"/api/v1/runs/{run_id}/events", headers={"Last-Event-ID": str(last)},
                                     timeout=httpx.Timeout(10, read=30)) as r:
                if r.status_code != 200:
                    stats["sse_errors"] += 1
                async for line in r.aiter_lines():
                    if line.startswith("id: "):
                        last = int(line[4:])
                        stats["events"] += 1
                    if time.monotonic() >= until:
                        return
        except httpx.HTTPError:
            stats["sse_errors"] += 1
        stats["reconnects"] += 1
        await asyncio.sleep(0.5)


async def predict_many(client: httpx.AsyncClient, files: list[bytes], labels, n: int, seconds: float, stats: dict) -> None:
    gap = seconds / n
    for i in range(n):
        t0 = time.perf_counter()
        try:
            r = await client.post("/api/v1/predict?top_k=3", files={"file": ("d.png", files[i % len(files)])}, timeout=30,
                                  headers={"X-Trainlab": "1"})  # as the page sends it (guard.py)
            ok = r.status_code == 200 and len(r.json()["results"]) == 1
            if ok:
                stats["correct"] += int(r.json()["results"][0]["label"] == labels[i % len(files)])
        except httpx.HTTPError:
            ok = False
        stats["latency"].append(time.perf_counter() - t0)
        stats["predict_failed"] += int(not ok)
        await asyncio.sleep(max(0.0, gap - (time.perf_counter() - t0)))


async def soak(url: str, run_id: str, pid: int, a) -> dict:
    seconds = a.minutes * 60
    until = time.monotonic() + seconds
    stats = {"events": 0, "reconnects": 0, "sse_errors": 0, "predict_failed": 0, "correct": 0, "latency": [], "rss": []}
    files, labels = drawn_digits(max(1, a.predictions // 10), seed=7)

    async def sample():
        while time.monotonic() < until:
            stats["rss"].append((round(seconds - (until - time.monotonic()), 1), tree_rss_mb(pid, children=False)))  # the server alone, not its training worker
            await asyncio.sleep(10)

    async with httpx.AsyncClient(base_url=url) as client:
        await asyncio.gather(sample(), predict_many(client, files, labels, a.predictions, seconds * 0.95, stats),
                             *[follow(client, run_id, until, stats) for _ in range(a.clients)])
    return stats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--predictions", type=int, default=1000)
    ap.add_argument("--model-run", help="a run folder to predict with (copied in); default: train mnist-draw first")
    ap.add_argument("--out", default="bench/results/dashboard_soak.json")
    a = ap.parse_args()
    runs = Path(tempfile.mkdtemp(prefix="soak-")) / "runs"
    runs.mkdir()
    env = {**os.environ, "TRAINLAB_RUNS": str(runs)}
    if a.model_run:
        shutil.copytree(a.model_run, runs / Path(a.model_run).name)
        subprocess.run([sys.executable, "-m", "trainlab", "runs", "reindex"], env=env, check=True, capture_output=True)
    else:
        subprocess.run([sys.executable, "-m", "trainlab", "train", "mnist-draw", "-q"], env=env, check=True)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "trainlab", "dashboard", "--port", str(port), "--no-browser"], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url)
        job = httpx.post(url + "/api/v1/train", json={"preset": "mnist-tfjs-cnn", "overrides": {"epochs": 200}}).json()["job"]
        while not (run_id := httpx.get(f"{url}/api/v1/jobs/{job['id']}").json()["run_id"]):
            time.sleep(0.5)
        stats = asyncio.run(soak(url, run_id, server.pid, a))
        httpx.post(f"{url}/api/v1/jobs/{job['id']}/stop", headers={"X-Trainlab": "1"})
    finally:
        server.terminate()
        server.wait(60)
    lat = np.array(stats.pop("latency")) * 1000
    rss = [m for _, m in stats["rss"]]
    result = {"machine": f"{os.cpu_count()} cores", "minutes": a.minutes, "clients": a.clients, **stats,
              "predictions": len(lat), "p50_ms": round(float(np.percentile(lat, 50)), 1),
              "p99_ms": round(float(np.percentile(lat, 99)), 1), "drawn_accuracy": round(stats["correct"] / max(1, len(lat)), 4),
              "rss_start_mb": rss[0], "rss_end_mb": rss[-1], "rss_max_mb": max(rss)}
    print(json.dumps({k: v for k, v in result.items() if k != "rss"}, indent=1))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
