"""The predict API under load, on loopback: `trainlab serve RUN` with the torch and the onnxruntime
back-ends side by side, 1, 8 and 32 concurrent clients for 60 s each (a bounded httpx asyncio client
in this process: each client sends one drawn-digit PNG, waits for the answer, sends the next).
Reports throughput, p50/p99 latency, failed requests and the server's memory (VmRSS of its
processes) before, halfway, at the end of, and at most during each level.

    python bench/serve_load.py RUN [--seconds 60] [--levels 1 8 32] [--workers 1] [--runs-dir runs]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from serving import free_port, tree_rss_mb, wait_healthy

from trainlab.data.handwriting import drawn_digits


async def level(url: str, clients: int, seconds: float, files: list[bytes]) -> dict:
    lat, failed, reasons = [], 0, {}
    until = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(i: int, http: httpx.AsyncClient):
        nonlocal failed
        k = i
        while time.monotonic() < until:
            t0 = time.perf_counter()
            try:
                r = await http.post("/api/v1/predict", files={"file": ("d.png", files[k % len(files)])}, timeout=30)
                ok, why = r.status_code == 200, f"HTTP {r.status_code}: {r.text[:120]}"
            except httpx.HTTPError as exc:
                ok, why = False, f"{type(exc).__name__}: {exc}"[:160]
            if not ok:
                reasons[why] = reasons.get(why, 0) + 1
                reasons.setdefault("at_s", []).append(round(seconds - (until - time.monotonic()), 2))
            lat.append(time.perf_counter() - t0)
            failed += int(not ok)
            k += clients

    async with httpx.AsyncClient(base_url=url, limits=limits) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*[client(i, http) for i in range(clients)])
        wall = time.perf_counter() - t0
    ms = np.array(lat) * 1000
    return {"clients": clients, "requests": len(lat), "failed": failed, "why_failed": reasons, "rps": round(len(lat) / wall, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 1), "p99_ms": round(float(np.percentile(ms, 99)), 1)}


async def sampled(work, pid: int, samples: list[float], every: float = 5.0):
    """Run `work` while sampling the server's memory every few seconds."""
    async def sample():
        while True:
            samples.append(tree_rss_mb(pid))
            await asyncio.sleep(every)
    task = asyncio.create_task(sample())
    try:
        return await work
    finally:
        task.cancel()


def run_backend(run: str, onnx: bool, a, files) -> list[dict]:
    port = free_port()
    cmd = [sys.executable, "-m", "trainlab", "serve", run, "--port", str(port), "--workers", str(a.workers)]
    cmd += (["--onnx"] if onnx else []) + (["--runs-dir", a.runs_dir] if a.runs_dir else [])
    log = open(Path(a.out).with_suffix(f".{'onnx' if onnx else 'torch'}.log"), "w")  # what the server said
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    rows = []
    try:
        wait_healthy(url)
        asyncio.run(level(url, 1, 2, files))  # warm-up
        for c in a.levels:
            before = tree_rss_mb(server.pid)
            samples: list[float] = []
            row = asyncio.run(sampled(level(url, c, a.seconds, files), server.pid, samples))
            row.update(backend="onnxruntime" if onnx else "torch", rss_before_mb=before, rss_mid_mb=samples[len(samples) // 2],
                       rss_after_mb=tree_rss_mb(server.pid), rss_max_mb=max(samples))
            print(json.dumps(row), flush=True)
            rows.append(row)
    finally:
        server.terminate()
        server.wait(60)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--runs-dir")
    ap.add_argument("--backends", nargs="+", default=["torch", "onnx"], choices=["torch", "onnx"])
    ap.add_argument("--out", default="bench/results/serve_load.json")
    a = ap.parse_args()
    files, _ = drawn_digits(10, seed=11)
    rows = [row for b in a.backends for row in run_backend(a.run, b == "onnx", a, files)]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"machine": f"{os.cpu_count()} cores (client and server share them)", "run": a.run,
                                       "seconds": a.seconds, "workers": a.workers, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
