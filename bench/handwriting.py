"""How well runs read digits that are not MNIST (the dashboard's Try-it page in use).

Two sets, neither made from MNIST images:
- drawn: digits traced as a mouse draws them (trainlab.data.handwriting: stroke templates per digit,
  each with its own slant, size, position, shaky hand and a 10-30 px pen on a 280 px canvas),
  sent as the PNG the page's canvas sends;
- photographed: scikit-learn's handwritten digits (UCI optdigits: 43 writers, none of them
  MNIST's; 8x8 images upscaled), rendered as JPEG photos of dark ink on tinted, unevenly lit
  paper with blur and noise.
Both go through `predict_bytes`, the same preparation as `trainlab predict` and the page.

    python bench/handwriting.py RUN [RUN ...] [--per-class 50] [--runs-dir runs] [--out bench/results/handwriting.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from trainlab.analysis.predict import predict_bytes
from trainlab.data.handwriting import drawn_digits, photographed_digits
from trainlab.runs.run import load_run
from trainlab.settings import load_settings


def photo_set(seed: int = 0):
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download
    d = load_digits()
    return photographed_digits(d.images, d.target, seed=seed)


def accuracy(run, files: list[bytes], labels: np.ndarray) -> float:
    correct = 0
    for i in range(0, len(files), 256):
        preds = predict_bytes(run, [(f"{j}.png", b) for j, b in enumerate(files[i:i + 256])])
        correct += int((preds.labels == labels[i:i + 256]).sum())
    return correct / len(files)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--per-class", type=int, default=50)
    ap.add_argument("--runs-dir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench/results/handwriting.json")
    a = ap.parse_args()
    settings = load_settings(runs_dir=a.runs_dir)
    drawn, drawn_y = drawn_digits(a.per_class, seed=a.seed)
    photos, photo_y = photo_set(a.seed)
    rows = []
    for name in a.runs:
        run = load_run(name, settings)
        t0 = time.perf_counter()
        row = {"run": run.run_id, "recipe": run.recipe.name, "mnist_test_acc": run.metrics.get("test_acc"),
               "drawn_acc": accuracy(run, drawn, drawn_y), "photo_acc": accuracy(run, photos, photo_y),
               "n_drawn": len(drawn), "n_photo": len(photos)}
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(f"{row['recipe']:16s} {row['run']:40s} mnist {row['mnist_test_acc']:.4f}  drawn {row['drawn_acc']:.4f} "
              f"({len(drawn)})  photographed {row['photo_acc']:.4f} ({len(photos)})")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"seed": a.seed, "per_class": a.per_class, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
