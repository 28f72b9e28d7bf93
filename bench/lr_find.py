"""Benchmark: is the LR finder's suggestion inside the range where training works?

    TRAINLAB_DATA=../shared/datasets python bench/lr_find.py [--recipes mnist-mlp,walk-1-baseline]

For each recipe: run the range test (100 batches, 1e-7 to 10), write docs/lr-find-RECIPE.png, then
train the full recipe at learning rates a decade apart (1e-5 ... 1) and at the suggestion, and
report the test accuracy of each. "Works" means within 0.02 of the best accuracy of the sweep.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from recipes import machine  # noqa: E402

import trainlab  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipes", default="mnist-mlp,walk-1-baseline")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "lr_find.json")
    a = ap.parse_args()
    results = {"machine": machine(), "recipes": []}
    for name in a.recipes.split(","):
        t0 = time.perf_counter()
        found = trainlab.find_lr(name)
        seconds = time.perf_counter() - t0
        found.plot(DOCS / f"lr-find-{name}.png")
        sweep = {}
        for lr in [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, found.suggestion]:
            run = trainlab.train(name, overrides={"optimizer.lr": lr}, progress="none", save=False)
            sweep[lr] = run.metrics["test_acc"]
            print(f"  {name} lr {lr:.2e}: test acc {sweep[lr]:.4f}", flush=True)
        best = max(sweep.values())
        works = sorted(lr for lr, acc in sweep.items() if acc >= best - 0.02)
        res = {"recipe": name, "lr_find_seconds": round(seconds, 1), "suggestions": found.suggestions,
               "suggested": found.suggestion, "recipe_lr": found.recipe.optimizer.lr, "sweep": {f"{k:.3g}": v for k, v in sweep.items()},
               "works": [f"{x:.3g}" for x in works], "suggestion_works": sweep[found.suggestion] >= best - 0.02}
        results["recipes"].append(res)
        print(json.dumps(res), flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
