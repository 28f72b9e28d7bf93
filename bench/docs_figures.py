"""Regenerate the README's figures and the sample evaluate report into docs/images/.

    TRAINLAB_DATA=../shared/datasets python bench/docs_figures.py

Trains the five walk-* recipes and mnist-tfjs-cnn (seed 0) into a temporary runs folder, then
writes docs/images/walk.png, docs/images/evaluate.txt, docs/images/confusion.png, docs/images/misclassified.png and
docs/images/model-view.png (a digit drawn dark-on-light, off-centre, on a large canvas).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

import trainlab
from trainlab.analysis.evaluate import evaluate_run
from trainlab.analysis.predict import write_model_views

DOCS = Path(__file__).resolve().parents[1] / "docs" / "images"
WALK = ["walk-1-baseline", "walk-2-lower-lr", "walk-3-more-epochs", "walk-4-deeper", "walk-5-relu"]


def main() -> None:
    DOCS.mkdir(exist_ok=True)
    runs_dir = Path(tempfile.mkdtemp(prefix="trainlab-docs-"))
    try:
        walk = [trainlab.train(name, runs_dir=runs_dir, progress="none") for name in WALK]
        trainlab.plot_history(walk, DOCS / "walk.png", title="The tuning walk (MNIST MLP, raw pixels)")
        for run in walk:
            print(f"{run.recipe.name}: val_acc {run.history[-1]['val_acc']:.4f}")

        trainlab.show_samples("fashion-mnist", n=25, out=DOCS / "samples.png")
        fashion = trainlab.train("fashion-mlp", runs_dir=runs_dir, progress="none")
        fashion.plot_predictions(range(15), out=DOCS / "predictions.png")
        print(f"fashion-mlp: test_acc {fashion.metrics['test_acc']:.4f}")

        cnn = trainlab.train("mnist-tfjs-cnn", runs_dir=runs_dir, progress="none")
        report, files, _ = evaluate_run(cnn, out_dir=runs_dir / "eval")
        (DOCS / "evaluate.txt").write_text(report.text() + "\n")
        shutil.copy(files[0], DOCS / "confusion.png")
        shutil.copy(files[1], DOCS / "misclassified.png")

        digit = trainlab.load_dataset("mnist").x_test[0, :, :, 0]  # a 7
        canvas = Image.new("L", (240, 180), 235)
        canvas.paste(Image.fromarray(255 - digit).resize((84, 84), Image.BICUBIC).point(lambda v: int(v * 0.9)), (30, 70))
        photo = runs_dir / "my-seven.png"
        canvas.save(photo)
        preds = cnn.predict([str(photo)])
        view = write_model_views(cnn, preds, runs_dir / "views")[0]
        shutil.copy(view, DOCS / "model-view.png")
        print(f"my-seven.png -> {preds.class_names[0]} ({preds.probs[0].max():.3f})")
    finally:
        shutil.rmtree(runs_dir, ignore_errors=True)


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
