"""Speed on a busy machine: trainlab and Keras 3 side by side beside 0, 1 and 2 busy processes.

    python bench/under_load.py                                  # everything below (about 45 minutes here)
    python bench/under_load.py --recipes mnist-mlp --loads 0,1 --seeds 1 --skip tune,dashboard
    python bench/under_load.py --markdown bench/results/under_load.json

Busy processes are `python -c "while True: pass"`, started before and stopped after each run by
this script. The order is interleaved (seed, then load, then tool) so that the machine's drift hits
every cell alike. Every run is a fresh process (bench/compare.py's runners: the same recipe, data
and initialisation for both tools). Reported per recipe, load and tool: median train seconds with
the min-max spread, trainlab's speed-up against Keras beside the same load, and each tool's
slow-down against its own idle median. Then:

- tune: `trainlab tune run walk-1-baseline --space walk --jobs 1` against `--jobs 2`, completed
  trials in the same time (--tune-seconds each), scaled to 5 minutes;
- dashboard: a job of mnist-tfjs-cnn (1 epoch) started through the API, its train seconds with no
  client and with 5 SSE clients following its events.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from compare import TOOL_NAMES, TOOLS, ensure_tf_python, export_data, run_tool  # noqa: E402
from recipes import machine  # noqa: E402
from serving import free_port, wait_healthy  # noqa: E402

HERE = Path(__file__).resolve().parent
RECIPES = {"mnist-mlp": None, "fashion-mlp": None, "mnist-tfjs-cnn": None, "cifar10-cnn": 1}  # epochs (None: the recipe's)


def recipe_sets(name: str) -> list[str]:
    """CIFAR-10 from the JPEG tree in the data folder (this workplace has no network for the canonical tarball)."""
    data = os.environ.get("TRAINLAB_DATA")
    return [f"data.source={data}/cifar10-jpeg.zip"] if name.startswith("cifar10") and data else []


@contextmanager
def busy(n: int):
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    time.sleep(0.5 if n else 0)  # let them reach full speed
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def side_by_side(args, tf_python: str | None, tmp: Path) -> list[dict]:
    from trainlab.recipes import load_recipe, parse_set
    tools = [t for t in args.tools.split(",") if t and (tf_python or not t.startswith("keras"))]
    prepared = {}
    for name in args.recipes.split(","):
        epochs = RECIPES.get(name)
        recipe = load_recipe(name, parse_set(recipe_sets(name)), epochs=epochs)
        npz, _, _ = export_data(recipe, tmp)
        recipe_json = tmp / f"{name}.json"
        recipe_json.write_text(recipe.model_dump_json(by_alias=True))
        prepared[name] = (recipe_json, npz, epochs)
    rows = []
    loads = [int(x) for x in args.loads.split(",")]
    seeds = {name: (1 if name.startswith("cifar10") else args.seeds) for name in prepared} if args.cifar_one_seed \
        else {name: args.seeds for name in prepared}
    for seed in range(max(seeds.values())):
        for name, (recipe_json, npz, epochs) in prepared.items():
            if seed >= seeds[name]:
                continue
            for load in loads:
                for tool in tools:
                    with busy(load):
                        row = run_tool(tool, name, recipe_json, npz, seed, recipe_sets(name), epochs, tf_python)
                    row["load"] = load
                    rows.append(row)
                    print(f"{name:15s} load {load} {tool:8s} seed {seed}: train {row['train_seconds']:6.1f} s, "
                          f"wall {row['wall_seconds']:6.1f} s, test acc {row['test_acc']:.4f}", flush=True)
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    out = []
    for name in dict.fromkeys(r["recipe"] for r in rows):
        for load in sorted({r["load"] for r in rows if r["recipe"] == name}):
            e = {"recipe": name, "load": load}
            for tool in dict.fromkeys(r["tool"] for r in rows):
                t = [r["train_seconds"] for r in rows if r["recipe"] == name and r["load"] == load and r["tool"] == tool]
                idle = [r["train_seconds"] for r in rows if r["recipe"] == name and r["load"] == 0 and r["tool"] == tool]
                if t:
                    e[tool] = {"n": len(t), "median": statistics.median(t), "min": min(t), "max": max(t),
                               "vs_idle": statistics.median(t) / statistics.median(idle) if idle else None,
                               "acc": statistics.mean(r["test_acc"] for r in rows if r["recipe"] == name
                                                      and r["load"] == load and r["tool"] == tool)}
            if "trainlab" in e and "keras" in e:
                e["speedup"] = e["keras"]["median"] / e["trainlab"]["median"]
            out.append(e)
    return out


def tune_rate(jobs: int, seconds: float, tmp: Path) -> dict:
    runs = tmp / f"tune-{jobs}"
    cmd = [sys.executable, "-m", "trainlab", "tune", "run", "walk-1-baseline", "--space", "walk", "--trials", "10000",
           "--timeout", str(seconds), "--jobs", str(jobs), "--runs-dir", str(runs), "--no-plots", "--json",
           "--study", f"bench-{jobs}"]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"tune --jobs {jobs} failed: {p.stderr.strip()[-1500:]}")
    report = json.loads(p.stdout.strip().splitlines()[-1])
    done = sum(1 for t in report["trials"] if t["state"] in ("complete", "pruned"))
    return {"jobs": jobs, "seconds": seconds, "wall": wall, "finished_trials": done,
            "per_5_minutes": done * 300 / wall}


def dashboard_job(clients: int, tmp: Path) -> dict:
    import httpx
    port = free_port()
    runs = tmp / f"dash-{clients}"
    server = subprocess.Popen([sys.executable, "-m", "trainlab", "dashboard", "--port", str(port), "--no-browser",
                               "--runs-dir", str(runs)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base)
        with httpx.Client(base_url=base, timeout=30) as c:
            job = c.post("/api/v1/train", json={"preset": "mnist-tfjs-cnn", "overrides": {"epochs": 1}}).json()["job"]
            while (j := c.get(f"/api/v1/jobs/{job['id']}").json())["run_id"] is None:
                time.sleep(0.1)
            stop = threading.Event()
            events = [0] * clients

            def follow(i: int) -> None:
                with httpx.Client(base_url=base, timeout=httpx.Timeout(10, read=60)) as cc:
                    with cc.stream("GET", f"/api/v1/runs/{j['run_id']}/events") as r:
                        for line in r.iter_lines():
                            events[i] += line.startswith("data:")
                            if stop.is_set() or line.startswith("event: end"):
                                return

            threads = [threading.Thread(target=follow, args=(i,), daemon=True) for i in range(clients)]
            for t in threads:
                t.start()
            while c.get(f"/api/v1/jobs/{job['id']}").json()["state"] in ("queued", "starting", "running"):
                time.sleep(0.5)
            stop.set()
            run = c.get(f"/api/v1/runs/{j['run_id']}").json()["record"]
            return {"clients": clients, "train_seconds": run["timings"]["train_seconds"], "events": sum(events),
                    "threads": run["threads"]}
    finally:
        server.terminate()
        server.wait(20)


def merge(files: list[dict]) -> dict:
    """One results file from several sessions: per recipe the rows of the last file holding it."""
    by_recipe: dict[str, tuple[dict, list]] = {}
    out: dict = {"machine": files[-1]["machine"], "date": files[-1]["date"], "rows": [], "sessions": []}
    for f in files:
        for name in dict.fromkeys(r["recipe"] for r in f.get("rows", [])):
            by_recipe[name] = (f, [dict(r, date=f["date"]) for r in f["rows"] if r["recipe"] == name])
        for key in ("tune", "dashboard"):
            if f.get(key):
                out[key], out[f"{key}_date"] = f[key], f["date"]
    for name, (f, rows) in by_recipe.items():
        out["rows"] += rows
        out["sessions"].append({"recipe": name, "date": f["date"], "command": f["command"]})
    out["summary"] = summarize(out["rows"])
    out["command"] = "; ".join(dict.fromkeys(s["command"] for s in out["sessions"]))
    return out


def _short(command: str) -> str:
    """A saved command line as one would retype it: the script's name, no --out."""
    words = command.split()
    keep = [w for i, w in enumerate(words[1:], 1) if w != "--out" and words[i - 1] != "--out"]
    return " ".join([Path(words[0]).name, *keep])


def markdown(saved: dict) -> str:
    lines = [f"Machine: {saved['machine']}", "",
             "| recipe | busy processes | trainlab train s, median (min–max) | vs its idle | Keras train s, median (min–max) | vs its idle | trainlab speed-up |",
             "|---|---|---|---|---|---|---|"]
    for e in saved["summary"]:
        t, k = e.get("trainlab"), e.get("keras")

        def cell(x):
            return f"{x['median']:.1f} ({x['min']:.1f}–{x['max']:.1f}), n={x['n']}" if x else "–"

        def rel(x):
            return f"{x['vs_idle']:.2f}×" if x and x.get("vs_idle") else "–"
        lines.append(f"| {e['recipe']} | {e['load']} | {cell(t)} | {rel(t)} | {cell(k)} | {rel(k)} | "
                     f"{e['speedup']:.1f}× |" if "speedup" in e else f"| {e['recipe']} | {e['load']} | {cell(t)} | {rel(t)} | – | – | – |")
    others = [tool for tool in TOOLS if tool not in ("trainlab", "keras") and any(tool in e for e in saved["summary"])]
    if others:
        lines += ["", "| recipe | busy processes | " + " | ".join(f"{TOOL_NAMES[o]}: train s (acc)" for o in others)
                  + " | trainlab (acc) |", "|---|---|" + "---|" * (len(others) + 1)]
        for e in saved["summary"]:
            if any(o in e for o in others):
                lines.append(f"| {e['recipe']} | {e['load']} | " + " | ".join(
                    f"{cell(e.get(o))} ({e[o]['acc']:.4f})" if o in e else "–" for o in others)
                    + (f" | {cell(e['trainlab'])} ({e['trainlab']['acc']:.4f}) |" if "trainlab" in e else " | – |"))
    if saved.get("sessions"):
        lines += ["", "Each recipe's cells come from one interleaved session: " + "; ".join(
            f"{x['recipe']} {x['date']} (`{_short(x['command'])}`)"
            for x in saved["sessions"]) + "".join(f"; {k} {saved[k + '_date']}" for k in ("tune", "dashboard")
                                                   if saved.get(k + "_date")) + "."]
    if saved.get("tune"):
        lines += ["", "| tune | finished trials | wall s | per 5 minutes |", "|---|---|---|---|"]
        lines += [f"| --jobs {t['jobs']} | {t['finished_trials']} | {t['wall']:.0f} | {t['per_5_minutes']:.1f} |" for t in saved["tune"]]
    if saved.get("dashboard"):
        lines += ["", "| dashboard job (mnist-tfjs-cnn, 1 epoch) | train s | events received | threads |", "|---|---|---|---|"]
        lines += [f"| {d['clients']} SSE clients | {d['train_seconds']:.1f} | {d['events']} | {d['threads']} |" for d in saved["dashboard"]]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", default=",".join(RECIPES))
    ap.add_argument("--loads", default="0,1,2")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--cifar-one-seed", action="store_true", help="cifar10-cnn with one seed (its Keras epoch takes minutes)")
    ap.add_argument("--tune-seconds", type=float, default=300.0)
    ap.add_argument("--skip", default="", help="comma list of: side, tune, dashboard")
    ap.add_argument("--tools", default="trainlab,keras",
                    help="a comma list of trainlab, keras, trainlab-fp32 (precision fp32), keras-bf16 (mixed_bfloat16)")
    ap.add_argument("--tf-python")
    ap.add_argument("--out", default=str(HERE / "results" / "under_load.json"))
    ap.add_argument("--markdown")
    ap.add_argument("--merge", nargs="+", metavar="RESULTS",
                    help="combine saved results files into --out: each recipe's rows from the last file that has it, "
                         "tune and dashboard likewise (one recipe's cells always come from one interleaved session)")
    args = ap.parse_args()
    if args.markdown:
        print(markdown(json.loads(Path(args.markdown).read_text())))
        return
    if args.merge:
        saved = merge([json.loads(Path(f).read_text()) for f in args.merge])
        Path(args.out).write_text(json.dumps(saved, indent=1))
        print(markdown(saved))
        return
    skip = set(args.skip.split(","))
    info = machine()
    print(info, flush=True)
    saved: dict = {"machine": info, "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv), "rows": [], "summary": []}
    with tempfile.TemporaryDirectory(prefix="trainlab-load-") as tmp:
        if "side" not in skip:
            tf_python = ensure_tf_python(args.tf_python) if "keras" in args.tools else None
            saved["rows"] = side_by_side(args, tf_python, Path(tmp))
            saved["summary"] = summarize(saved["rows"])
        if "tune" not in skip:
            saved["tune"] = [tune_rate(j, args.tune_seconds, Path(tmp)) for j in (1, 2)]
            print(saved["tune"], flush=True)
        if "dashboard" not in skip:
            saved["dashboard"] = [dashboard_job(c, Path(tmp)) for c in (0, 5, 0, 5)]
            print(saved["dashboard"], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(saved, indent=1))
    print(markdown(saved))


if __name__ == "__main__":
    main()
