"""Benchmark: every seed recipe, several seeds, each in a fresh `trainlab train` process.

    python bench/recipes.py                      # MNIST-family recipes, 3 seeds each
    python bench/recipes.py --recipes cifar10-cnn,cifar10-cnn-deeper --seeds 1 \
        --set data.source=$TRAINLAB_DATA/cifar10-jpeg.zip
    python bench/recipes.py --markdown bench/results/recipes.json   # re-print a saved table

Reports, per recipe: median train seconds (spread min-max), median wall seconds of the whole
command (start-up and data loading included), mean and spread of test accuracy, and the Keras
reference from shared/SEED_EXPERIMENTS.md with the speed-up against it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

MNIST_FAMILY = ["mnist-mlp", "fashion-mlp", "mnist-tfjs-cnn", "walk-1-baseline", "walk-2-lower-lr",
                "walk-3-more-epochs", "walk-4-deeper", "walk-5-relu"]
# Keras 3.15 / TF 2.21 on 2 CPU cores, tutorial code as written (seconds, test accuracy); None = not given
KERAS_REFERENCE = {"mnist-mlp": (22.0, 0.9739), "fashion-mlp": (33.9, 0.870), "mnist-tfjs-cnn": (22.3, 0.971),
                   "walk-5-relu": (40.9, 0.955), "cifar10-cnn": (148.0 * 5, None)}
TUTORIAL = {"mnist-mlp": "test 0.9739", "fashion-mlp": "test 0.864", "mnist-tfjs-cnn": "test 0.971 (ref., lr 0.001)",
            "walk-1-baseline": "val ~0.65", "walk-2-lower-lr": "val 0.76", "walk-3-more-epochs": "val 0.86",
            "walk-4-deeper": "val 0.11", "walk-5-relu": "val ~0.95", "cifar10-cnn": "val ~0.72",
            "cifar10-cnn-deeper": "val 0.748, test 0.729"}


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()}, Python {platform.python_version()}, torch {torch.__version__}"


def run_one(recipe: str, seed: int, sets: list[str]) -> dict:
    cmd = [sys.executable, "-m", "trainlab", "train", recipe, "--seed", str(seed), "--quiet", "--json", "--no-save"]
    for s in sets:
        cmd += ["--set", s]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{recipe} seed {seed} failed: {p.stderr.strip()}")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    return {"recipe": recipe, "seed": seed, "wall_seconds": wall, "train_seconds": out["train_seconds"],
            "test_acc": out["test_acc"], "val_acc": out["val_acc"], "val_acc_at_best": out["val_acc_at_best"]}


def summarize(rows: list[dict]) -> list[dict]:
    out = []
    for recipe in dict.fromkeys(r["recipe"] for r in rows):
        rs = [r for r in rows if r["recipe"] == recipe]
        train = [r["train_seconds"] for r in rs]
        acc = [r["test_acc"] for r in rs]
        val = [r["val_acc"] for r in rs if r["val_acc"] is not None]
        out.append({"recipe": recipe, "n": len(rs), "train_median": statistics.median(train), "train_min": min(train),
                    "train_max": max(train), "wall_median": statistics.median(r["wall_seconds"] for r in rs),
                    "acc_mean": statistics.mean(acc), "acc_min": min(acc), "acc_max": max(acc),
                    "val_mean": statistics.mean(val) if val else None})
    return out


def markdown(summary: list[dict], info: str) -> str:
    lines = [f"Machine: {info}", "",
             "| recipe | seeds | train s, median (min–max) | wall s | test acc, mean (min–max) | val acc | tutorial | Keras ref. | speed-up vs Keras |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        ref = KERAS_REFERENCE.get(s["recipe"])
        ref_txt = f"{ref[0]:.1f} s" + (f", {ref[1]:.4f}" if ref and ref[1] else "") if ref else ""
        speed = f"{ref[0] / s['wall_median']:.1f}× (wall)" if ref else ""
        val = f"{s['val_mean']:.4f}" if s["val_mean"] is not None else ""
        lines.append(f"| `{s['recipe']}` | {s['n']} | {s['train_median']:.1f} ({s['train_min']:.1f}–{s['train_max']:.1f}) | "
                     f"{s['wall_median']:.1f} | {s['acc_mean']:.4f} ({s['acc_min']:.4f}–{s['acc_max']:.4f}) | {val} | "
                     f"{TUTORIAL.get(s['recipe'], '')} | {ref_txt} | {speed} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", default=",".join(MNIST_FAMILY), help="comma-separated recipe names")
    ap.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per recipe")
    ap.add_argument("--set", action="append", default=[], help="override passed to every run (key.path=value)")
    ap.add_argument("--out", default="bench/results/recipes.json", help="where the raw results go (merged by recipe)")
    ap.add_argument("--markdown", metavar="JSON", help="only print the table of a saved results file")
    args = ap.parse_args()
    if args.markdown:
        saved = json.loads(Path(args.markdown).read_text())
        print(markdown(summarize(saved["rows"]), saved["machine"]))
        return
    info = machine()
    rows = []
    for recipe in args.recipes.split(","):
        for seed in range(args.seeds):
            row = run_one(recipe, seed, args.set)
            print(f"{recipe} seed {seed}: train {row['train_seconds']:.1f}s wall {row['wall_seconds']:.1f}s "
                  f"test_acc {row['test_acc']:.4f}", flush=True)
            rows.append(row)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    saved = json.loads(out.read_text()) if out.is_file() else {"rows": []}
    done = set(args.recipes.split(","))
    saved = {"machine": info, "rows": [r for r in saved["rows"] if r["recipe"] not in done] + rows}
    out.write_text(json.dumps(saved, indent=2))
    print(markdown(summarize(saved["rows"]), info))


if __name__ == "__main__":
    main()
