"""Every preset exports to ONNX and agrees with torch: each is trained briefly on a small slice of its
data (the architecture is what the export depends on), then `export_onnx` verifies it on up to
1,000 test images.

    python bench/export_presets.py [--limit-train 512] [--out bench/results/export_presets.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import trainlab
from trainlab.recipes import preset_names
from trainlab.serving.export import export_onnx
from trainlab.settings import load_settings


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit-train", type=int, default=512)
    ap.add_argument("--cifar-source", help="CIFAR-10 as an image tree (here: $TRAINLAB_DATA/cifar10-jpeg.zip)")
    ap.add_argument("--out", default="bench/results/export_presets.json")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as runs:
        settings = load_settings(runs_dir=runs)
        for name in preset_names():
            sets = {"epochs": 1, "data.limit_train": a.limit_train, "data.limit_test": 1000}
            if a.cifar_source and trainlab.load_recipe(name).data.name == "cifar10":
                sets["data.source"] = a.cifar_source
            run = trainlab.train(name, overrides=sets,
                                 settings=settings, progress="none")
            rep = export_onnx(run, Path(runs) / f"{name}.onnx", settings=settings)
            rows.append({"preset": name, "images": rep.images, "max_abs_diff": rep.max_abs_diff, "top1_agree": rep.top1_agree,
                         "ok": rep.ok, "mb": round(rep.path.stat().st_size / 1e6, 2), "export_s": round(rep.seconds, 1)})
            print(json.dumps(rows[-1]), flush=True)
    Path(a.out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
