"""Soak test of exact resume: kill `trainlab train` with SIGKILL at random moments (mid-epoch, right
at epoch ends, during the final save) N times, `--resume` after each, and check that the final
weights equal an uninterrupted run's, byte for byte.

    TRAINLAB_DATA=../shared/datasets python bench/soak_resume.py --kills 20 --seeds 1

Writes bench/results/soak_resume.json and prints one line per kill and a summary.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ARGS = ["walk-5-relu", "--epochs", "24", "--set", "data.limit_train=12000", "--set", "data.limit_test=500",
        "--set", "schedule.name=onecycle", "--set", "augment.translate=1", "--checkpoint-every", "0.05", "--quiet"]


def cmd(*args, runs: Path) -> list[str]:
    return [sys.executable, "-m", "trainlab", "train", *args, "--runs-dir", str(runs)]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def reference(seed: int, work: Path) -> str:
    runs = work / f"ref-{seed}"
    p = subprocess.run(cmd(*ARGS, "--seed", str(seed), "--json", runs=runs), capture_output=True, text=True, check=True)
    return sha(Path(json.loads(p.stdout.splitlines()[-1])["run_dir"]) / "model.safetensors")


def wait_until(pred, timeout=120.0) -> bool:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return True
        time.sleep(0.005)
    return False


def kill_once(proc: subprocess.Popen, run_dir: Path | None, runs: Path, rng: random.Random, last: bool) -> str:
    """Kill `proc` at a random moment mid-epoch or right at an epoch's end, or (the last kill) during
    the final save; returns the kind."""
    kind = "final-save" if last else rng.choice(["mid-epoch", "epoch-end"])
    if run_dir is None:
        wait_until(lambda: any(runs.glob("*/checkpoint.pt")) or proc.poll() is not None)
    run_dir = run_dir or next(iter(runs.glob("*/checkpoint.pt")), Path()).parent
    if kind == "mid-epoch":
        time.sleep(rng.uniform(0.0, 0.6))
    elif kind == "epoch-end":
        rows = len((run_dir / "history.csv").read_text().splitlines()) if (run_dir / "history.csv").is_file() else 0
        wait_until(lambda: (run_dir / "history.csv").is_file()
                   and len((run_dir / "history.csv").read_text().splitlines()) > rows or proc.poll() is not None, 30)
    else:  # as the final files are written: curves.png appears after model.safetensors, before run.json says completed
        wait_until(lambda: (run_dir / "metrics.json").is_file() or proc.poll() is not None, 60)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    return kind


def soak(seed: int, kills: int, work: Path, rng: random.Random) -> dict:
    ref = reference(seed, work)
    runs = work / f"soak-{seed}"
    proc = subprocess.Popen(cmd(*ARGS, "--seed", str(seed), runs=runs), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    events, run_dir, t0 = [], None, time.time()
    while True:
        kind = kill_once(proc, run_dir, runs, rng, last=len(events) == kills - 1)
        run_dir = next(iter(runs.glob("*/run.json"))).parent
        record = json.loads((run_dir / "run.json").read_text())
        from trainlab.runs.record import read_record
        live = read_record(run_dir).live_status()  # what `trainlab runs` shows
        events.append({"kill": len(events) + 1, "kind": kind, "status_after": record["status"], "shown_as": live,
                       "epochs_done": len((run_dir / "history.csv").read_text().splitlines()) - 1
                       if (run_dir / "history.csv").is_file() else 0})
        print(f"kill {len(events):2d} ({kind:10s}): run.json says {record['status']}, `trainlab runs` shows {live}, "
              f"{events[-1]['epochs_done']} epochs done", flush=True)
        if record["status"] == "completed" or len(events) >= kills:
            break
        proc = subprocess.Popen(cmd("--resume", run_dir.name, "--quiet", runs=runs), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
    if record["status"] != "completed":  # finish without further kills
        subprocess.run(cmd("--resume", run_dir.name, "--quiet", runs=runs), check=True, capture_output=True)
    final = sha(run_dir / "model.safetensors")
    return {"seed": seed, "kills": len(events), "events": events, "identical": final == ref, "reference_sha256": ref,
            "final_sha256": final, "seconds": round(time.time() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20, help="SIGKILLs per seed (fewer if the run completes first)")
    ap.add_argument("--seeds", type=int, default=1, help="how many seeds (each a reference run and a soak)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "soak_resume.json")
    args = ap.parse_args()
    rng = random.Random(2026)
    with tempfile.TemporaryDirectory() as tmp:
        results = [soak(seed, args.kills, Path(tmp), rng) for seed in range(args.seeds)]
    summary = {"machine": f"{platform.processor() or platform.machine()}, {platform.system()}, Python {platform.python_version()}",
               "args": ARGS, "results": results,
               "all_identical": all(r["identical"] for r in results), "total_kills": sum(r["kills"] for r in results)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    kinds = [e["kind"] for r in results for e in r["events"]]
    shown = [e["shown_as"] for r in results for e in r["events"]]
    print(f"shown after the kills: {', '.join(f'{k} {shown.count(k)}' for k in sorted(set(shown)))}")
    print(f"{summary['total_kills']} kills ({', '.join(f'{k} {kinds.count(k)}' for k in sorted(set(kinds)))}); "
          f"final weights identical to the uninterrupted run: {summary['all_identical']}")


if __name__ == "__main__":
    main()
