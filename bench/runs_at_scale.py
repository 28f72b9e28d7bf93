"""The runs table and Compare with ten thousand runs in the store (issue #36).

    python bench/runs_at_scale.py                 # 10,000 runs, 5 repeats of each request, Chromium if there
    python bench/runs_at_scale.py --runs 2000 --repeat 3

Builds a runs folder of N synthetic runs (a run.json each, 12 epochs of history in the index, a few
studies, tags and datasets), starts `trainlab dashboard` on it, and times what the pages ask for over
HTTP: the first page of the runs table (100 rows), sorted by test accuracy, filtered by free text, by
study and by a metric range, a page deep in the table, and a 50-run comparison. With Chromium, also
the Runs page from navigation to its rows on screen and the Compare page of 50 runs to its charts.
Reports median (min-max) milliseconds; writes bench/results/runs_at_scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from recipes import machine  # noqa: E402


def build(runs: Path, n: int) -> list[str]:
    from trainlab.runs.record import DatasetInfo, Metrics, RunRecord
    from trainlab.recipes import apply_overrides, load_recipe
    from trainlab.runs.store import Store
    base = load_recipe("mnist-mlp").to_dict()  # a real recipe: Compare validates what it shows
    runs.mkdir(parents=True)
    store = Store(f"sqlite:///{runs / 'trainlab.db'}")
    ids = []
    for i in range(n):
        run_id = f"20261201-{i // 3600:02d}{i // 60 % 60:02d}{i % 60:02d}-recipe-{i % 9}-{i:06x}"
        m = Metrics(test_acc=0.5 + (i * 7919 % 500) / 1000, test_loss=0.3, val_acc_at_best=0.6, train_seconds=float(i % 97))
        rec = RunRecord(run_id=run_id, recipe=f"recipe-{i % 9}", recipe_digest="d", status="completed", seed=i,
                        started_at=f"2026-12-01T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}+00:00",
                        dataset=DatasetInfo(name=["mnist", "fashion-mnist", "cifar10"][i % 3], classes=[], n_train=1, n_val=0, n_test=1),
                        study=f"study-{i % 20}" if i % 4 == 0 else None, trial=i // 80 if i % 4 == 0 else None,
                        system={"peak_rss_mb": 200 + i % 300, "cpu_mean": 1.5}, metrics=m, epochs=12)
        folder = runs / run_id
        folder.mkdir()
        (folder / "run.json").write_text(rec.model_dump_json())
        recipe = apply_overrides(base, {"name": rec.recipe, "optimizer.lr": 0.001 * (1 + i % 5), "batch_size": 64 + i % 3})
        store.record_start(rec, recipe, folder)
        history = [{"epoch": e, "loss": 1 / e, "acc": 1 - 0.5 / e, "val_loss": 1.1 / e, "val_acc": 1 - 0.6 / e, "lr": 0.001,
                    "seconds": 1.0} for e in range(1, 13)]
        store.record_end(rec, history, "val_acc")
        if i % 10 == 0:
            store.tag(run_id, ["baseline" if i % 20 else "keep"])
        ids.append(run_id)
    return ids


def timed(url: str, repeat: int) -> dict:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(url, timeout=120) as r:
                body = r.read()
        except urllib.error.HTTPError as exc:
            raise SystemExit(f"{url}: {exc.code} {exc.read()[:300]!r}") from None
        times.append(1000 * (time.perf_counter() - t0))
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "bytes": len(body)}


def browser(url: str, ids: list[str], repeat: int) -> dict:
    """Chromium: the Runs page from navigation to its rows, Compare of 50 runs to its charts."""
    if not Path("/usr/bin/chromium").exists():
        return {}
    from playwright.sync_api import sync_playwright
    out = {}
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu",
                                                                        "--disable-background-networking"])
        page = b.new_page(viewport={"width": 1280, "height": 900})
        for name, route, ready in (("runs page to 100 rows", "#/runs", "document.querySelectorAll('#runs tbody tr').length >= 100"),
                                   ("compare page, 50 runs, to its charts", "#/compare/" + ",".join(ids[:50]),
                                    "Number(document.querySelector('#cmp-vacc')?.dataset.points || 0) > 0")):
            times = []
            for _ in range(repeat):
                page.goto("about:blank")
                t0 = time.perf_counter()
                page.goto(url + route)
                page.wait_for_function(ready, timeout=60_000)
                times.append(1000 * (time.perf_counter() - t0))
            out[name] = {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times)}
        b.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", default=str(HERE / "results" / "runs_at_scale.json"))
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="trainlab-scale-"))
    try:
        t0 = time.perf_counter()
        ids = build(root / "runs", args.runs)
        print(f"built {args.runs:,} runs in {time.perf_counter() - t0:.0f} s", flush=True)
        from helpers_port import free_port
        port = free_port()
        env = {**os.environ, "TRAINLAB_RUNS": str(root / "runs")}
        server = subprocess.Popen([sys.executable, "-m", "trainlab", "dashboard", "--port", str(port), "--no-browser"],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        url = f"http://127.0.0.1:{port}/"
        for _ in range(200):
            try:
                urllib.request.urlopen(url + "healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        api = url + "api/v1/"
        requests = {
            "runs: first page (100, newest first)": "runs?limit=100",
            "runs: sorted by test acc": "runs?limit=100&sort=test_acc",
            "runs: free text 'recipe-3'": "runs?limit=100&q=recipe-3",
            "runs: one study": "runs?limit=100&study=study-7",
            "runs: test acc 0.8-0.9, cifar10": "runs?limit=100&min_test_acc=0.8&max_test_acc=0.9&dataset=cifar10",
            "runs: page 90 (offset 9,000)": "runs?limit=100&offset=9000",
            "compare: 50 runs": "compare?runs=" + ",".join(ids[:50]),
        }
        results = {name: timed(api + q, args.repeat) for name, q in requests.items()}
        results.update(browser(url, ids, args.repeat))
        server.terminate()
        server.wait(30)
        report = {"machine": machine(), "runs": args.runs, "repeat": args.repeat, "results": results}
        Path(args.out).write_text(json.dumps(report, indent=1))
        print(f"{args.runs:,} runs, {machine()}; median (min-max) ms over {args.repeat}")
        for name, r in results.items():
            print(f"  {name:<42} {r['median_ms']:7.0f} ({r['min_ms']:.0f}-{r['max_ms']:.0f})")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
