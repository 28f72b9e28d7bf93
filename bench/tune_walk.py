"""Benchmark: the tuning walk by hand against `trainlab tune` in the same wall-clock time.

    python bench/tune_walk.py                      # walk, then a study in the walk's time, then a 20-minute study
    python bench/tune_walk.py --long 0             # skip the long study
    python bench/tune_walk.py --markdown bench/results/tune_walk.json

1. Runs the five walk recipes (`walk-1-baseline` ... `walk-5-relu`) as a user does: five
   `trainlab train` commands. Their total wall-clock time is the budget.
2. Runs `trainlab tune walk-1-baseline --space walk --jobs 2` with `--timeout` such that the command
   fits the budget, and takes the best trial (by validation accuracy, on 10% of the training images)
   among those that *finished* within the budget; reports its test accuracy against walk-5-relu's.
3. Runs a longer study (`--long` seconds, default 1200) and reports the same.
Each `trainlab` command is a fresh process: imports, data loading and worker start-up all count.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from recipes import machine  # noqa: E402

WALK = ["walk-1-baseline", "walk-2-lower-lr", "walk-3-more-epochs", "walk-4-deeper", "walk-5-relu"]


def trainlab(*args, env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainlab", *map(str, args)], env=env, capture_output=True, text=True)


def walk(env) -> list[dict]:
    out = []
    for name in WALK:
        t0 = time.perf_counter()
        p = trainlab("train", name, "--quiet", "--json", env=env)
        wall = time.perf_counter() - t0
        if p.returncode:
            sys.exit(p.stderr)
        r = json.loads(p.stdout.splitlines()[-1])
        out.append({"recipe": name, "wall_s": round(wall, 1), "test_acc": r["test_acc"], "val_acc": r["val_acc"]})
        print(f"  {name:<20} {wall:6.1f} s  test acc {r['test_acc']:.4f}", flush=True)
    return out


def study(env, runs: Path, name: str, budget: float, jobs: int, startup: int) -> dict:
    """One `trainlab tune` command given `budget` seconds of wall-clock time in all."""
    import optuna
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    # no new trial after (budget - margin); the margin covers start-up and the last trials' ends
    p = trainlab("tune", "walk-1-baseline", "--space", "walk", "--study", name, "--trials", 100000, "--jobs", jobs,
                 "--startup", startup, "--timeout", max(budget * 0.8 - 6, 5), "--no-plots", "--runs-dir", runs, env=env)
    wall = time.perf_counter() - t0
    if p.returncode:
        sys.exit(p.stderr)
    s = optuna.load_study(study_name=name, storage=f"sqlite:///{runs / 'studies.db'}")
    trials = s.get_trials(deepcopy=False)
    done = [t for t in trials if t.state.name == "COMPLETE"
            and (t.datetime_complete.replace(tzinfo=timezone.utc) - started).total_seconds() <= budget]
    best = max(done, key=lambda t: t.value) if done else None
    states = {}
    for t in trials:
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    return {"study": name, "budget_s": round(budget, 1), "wall_s": round(wall, 1), "jobs": jobs, "startup": startup,
            "trials": states, "finished_in_budget": len(done),
            "best": None if best is None else {"trial": best.number, "val_acc": best.value, "test_acc": best.user_attrs.get("test_acc"),
                                               "params": best.params, "run_id": best.user_attrs.get("run_id")}}


def markdown(res: dict) -> str:
    w5 = next(w for w in res["walk"] if w["recipe"] == "walk-5-relu")
    lines = [f"Machine: {res['machine']}; {res['date']}. Walk: five `trainlab train` commands, "
             f"{res['budget_s']:.0f} s in all; walk-5-relu test acc {w5['test_acc']:.4f}.", "",
             "| study | wall-clock budget | trials (completed within budget) | best val acc | its test acc | vs walk-5-relu | best params |",
             "|---|---|---|---|---|---|---|"]
    for s in res["studies"]:
        b = s["best"] or {}
        params = ", ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                           for k, v in (b.get("params") or {}).items())
        total = sum(s["trials"].values())
        lines.append(f"| {s['study']} (jobs {s['jobs']}) | {s['budget_s']:.0f} s (ran {s['wall_s']:.0f} s) | {total} "
                     f"({s['finished_in_budget']}) | {b.get('val_acc', 0):.4f} | {b.get('test_acc', 0):.4f} | "
                     f"{b.get('test_acc', 0) - w5['test_acc']:+.4f} | {params} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--long", type=float, default=1200, help="seconds of the longer study (0: skip)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--startup", type=int, default=5, help="TPE's random trials before it models the results")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "tune_walk.json")
    ap.add_argument("--markdown", type=Path, help="print the table of a saved result and exit")
    a = ap.parse_args()
    if a.markdown:
        print(markdown(json.loads(a.markdown.read_text())))
        return
    runs = Path(tempfile.mkdtemp(prefix="trainlab-tune-bench-"))
    env = dict(os.environ, TRAINLAB_RUNS=str(runs), PYTHONWARNINGS="ignore")
    print("walk (five trainlab train commands):", flush=True)
    walked = walk(env)
    budget = sum(w["wall_s"] for w in walked)
    stamp = datetime.now().strftime("%H%M%S")
    res = {"machine": machine(), "date": datetime.now().isoformat(timespec="minutes"), "walk": walked, "budget_s": budget,
           "studies": []}
    for name, seconds in [(f"walk-budget-{stamp}", budget), (f"walk-long-{stamp}", a.long)]:
        if seconds <= 0:
            continue
        print(f"study {name}: {seconds:.0f} s, {a.jobs} workers ...", flush=True)
        res["studies"].append(study(env, runs, name, seconds, a.jobs, a.startup))
        print(json.dumps(res["studies"][-1]), flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=2) + "\n")
    print(markdown(res))


if __name__ == "__main__":
    main()
