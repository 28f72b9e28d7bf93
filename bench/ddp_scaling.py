"""One process against two (torchrun, gloo) on this machine, for CNN recipes: train time and
accuracy. One process uses every core's thread; each of two processes gets half (OMP_NUM_THREADS),
so they do not fight over the cores.

    python bench/ddp_scaling.py [--recipes mnist-fast mnist-tfjs-cnn] [--seeds 0 1 2] [--out bench/results/ddp_scaling.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def run(recipe: str, seed: int, nproc: int) -> dict:
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as runs:
        env = {**os.environ, "TRAINLAB_RUNS": runs, "OMP_NUM_THREADS": str(max(1, cores // nproc))}
        cmd = [sys.executable, "-m", "trainlab", "train", recipe, "--seed", str(seed), "-q", "--json"]
        if nproc > 1:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m",
                   "trainlab", "train", recipe, "--seed", str(seed), "-q", "--json"]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
    return {"recipe": recipe, "seed": seed, "nproc": nproc, "train_seconds": round(r["train_seconds"], 2),
            "total_seconds": round(r["total_seconds"], 2), "test_acc": r["test_acc"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipes", nargs="+", default=["mnist-fast", "mnist-tfjs-cnn"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default="bench/results/ddp_scaling.json")
    a = ap.parse_args()
    rows = []
    for recipe in a.recipes:
        for seed in a.seeds:
            for nproc in (1, 2):  # interleaved: the machine's drift hits both alike
                rows.append(run(recipe, seed, nproc))
                print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for recipe in a.recipes:
        for nproc in (1, 2):
            sel = [r for r in rows if r["recipe"] == recipe and r["nproc"] == nproc]
            t = [r["train_seconds"] for r in sel]
            acc = [r["test_acc"] for r in sel]
            summary[f"{recipe}/{nproc}"] = {"train_s_median": statistics.median(t), "train_s_min": min(t), "train_s_max": max(t),
                                            "test_acc_mean": round(statistics.mean(acc), 4)}
    print(json.dumps(summary, indent=1))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"machine": f"{os.cpu_count()} cores", "rows": rows, "summary": summary}, indent=1) + "\n")


if __name__ == "__main__":
    main()
