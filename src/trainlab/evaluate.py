"""Evaluation of a saved run: the report plus its pictures (confusion matrix, gallery of mistakes)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from trainlab.metrics import EvalReport, classification_report
from trainlab.plots import plot_confusion, plot_gallery
from trainlab.runs import Run, load_run


def misclassified(run: Run, logits: torch.Tensor, y: torch.Tensor, x: torch.Tensor, limit: int = 40):
    """The wrongly classified images, highest loss first: (uint8 NHWC images, captions)."""
    losses = F.cross_entropy(logits, y, reduction="none")
    pred = logits.argmax(1)
    wrong = (pred != y).nonzero().flatten()
    order = wrong[losses[wrong].argsort(descending=True)][:limit]
    probs = torch.softmax(logits, 1)
    captions = [f"#{int(i)} {run.classes[int(y[i])]}\n-> {run.classes[int(pred[i])]} ({probs[i, pred[i]]:.2f})" for i in order]
    return x[order].permute(0, 2, 3, 1).numpy(), captions


def evaluate_run(run: str | Path | Run, split: str = "test", out_dir: str | Path | None = None, runs_dir=None,
                 data_dir=None) -> tuple[EvalReport, list[Path]]:
    """Report on a split and write confusion.png and misclassified.png (into the run folder by default)."""
    r = run if isinstance(run, Run) else load_run(run, runs_dir)
    logits, y, x = r.logits(split, data_dir)
    report = classification_report(logits, y, r.classes, split)
    out = Path(out_dir) if out_dir else r.run_dir
    files = []
    if out is not None:
        files.append(plot_confusion(report, out / f"confusion-{split}.png"))
        imgs, captions = misclassified(r, logits, y, x)
        files.append(plot_gallery(imgs, captions, out / f"misclassified-{split}.png",
                                  title=f"{r.recipe.name}: {len(imgs)} highest-loss mistakes on {split}"))
    return report, files
