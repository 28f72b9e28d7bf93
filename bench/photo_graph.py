"""How the `--prepare full` graph's photo preparation compares with `trainlab predict`'s (PIL):
pixels (identical or not) and time per photo, at phone sizes, for each style.

    python bench/photo_graph.py [--repeats 3]      # writes bench/results/photo_graph.json

Only the preparation is exported (graph_prep.PreparePhoto); the model after it is the same in
both paths. Times are the median of --repeats calls after one warm-up, onnxruntime on the CPU
with its default threads, PIL's from `images.prepare_image` on an already decoded image.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from trainlab.data import graph_prep, handwriting, images
from trainlab.serving.export import _export_graph, _session

SIZES = [(640, 480), (1600, 1200), (4032, 3024)]
STYLES = [("digit", (1, 28, 28)), ("fashion", (1, 28, 28)), ("photo", (3, 48, 64))]


def timed(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "photo_graph.json")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    ink = np.asarray(images.open_image(handwriting.drawn_digits(1, seed=5)[0][7]))
    base = Image.open(io.BytesIO(handwriting.photograph(ink, rng, size=480))).convert("RGB")
    dims = {0: torch.export.Dim("height", min=2, max=16384), 1: torch.export.Dim("width", min=2, max=16384),
            2: torch.export.Dim("channels", min=1, max=4)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for style, shape in STYLES:
            path = Path(tmp) / f"{style}.onnx"
            t0 = time.perf_counter()
            _export_graph(graph_prep.PreparePhoto(style, shape).eval(), torch.zeros((96, 80, 3), dtype=torch.uint8), path, 18,
                          "image", dims)
            export_s = time.perf_counter() - t0
            sess = _session(path)
            for w, h in SIZES:
                im = base.resize((w, h), Image.BICUBIC)
                arr = np.ascontiguousarray(np.asarray(im))
                got = sess.run(None, {"image": arr})[0][0].transpose(1, 2, 0)
                want = images.prepare_image(im, style, shape)
                row = {"style": style, "shape": list(shape), "photo": f"{w}x{h}", "export_s": round(export_s, 1),
                       "identical": bool(np.array_equal(got, want.astype(np.float32))),
                       "max_abs_pixel_diff": float(np.abs(got - want).max()),
                       "onnx_s": round(timed(lambda: sess.run(None, {"image": arr}), args.repeats), 3),
                       "pil_s": round(timed(lambda: images.prepare_image(im, style, shape), args.repeats), 3)}
                rows.append(row)
                print(row, flush=True)
    out = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}", "torch": torch.__version__,
           "repeats": args.repeats, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
