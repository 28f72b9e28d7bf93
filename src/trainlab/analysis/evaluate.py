"""Evaluation of a saved run: the report plus its pictures (confusion matrix, gallery of mistakes)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from trainlab.errors import WriteError
from trainlab.metrics import EvalReport, classification_report
from trainlab.plots import plot_confusion, plot_gallery
from trainlab.runs.run import Run, load_run
from trainlab.settings import Settings


def misclassified(classes: list[str], logits: torch.Tensor, y: torch.Tensor, x: torch.Tensor, limit: int = 40):
    """The wrongly classified images, highest loss first: (uint8 NHWC images, captions)."""
    losses = F.cross_entropy(logits, y, reduction="none")
    pred = logits.argmax(1)
    wrong = (pred != y).nonzero().flatten()
    order = wrong[losses[wrong].argsort(descending=True)][:limit]
    probs = torch.softmax(logits, 1)
    captions = [f"#{int(i)} {classes[int(y[i])]}\n-> {classes[int(pred[i])]} ({probs[i, pred[i]]:.2f})" for i in order]
    return x[order].permute(0, 2, 3, 1).numpy(), captions


def confusion_cell(logits: torch.Tensor, y: torch.Tensor, true: int, pred: int, limit: int = 48) -> list[dict]:
    """The items of one confusion-matrix cell (true class, predicted class), highest loss first:
    index, loss and the confidence of the prediction."""
    losses = F.cross_entropy(logits, y, reduction="none")
    probs = torch.softmax(logits, 1)
    idx = ((y == true) & (logits.argmax(1) == pred)).nonzero().flatten()
    idx = idx[losses[idx].argsort(descending=True)][:limit]
    return [{"index": int(i), "loss": float(losses[i]), "confidence": float(probs[i, pred])} for i in idx]


def evaluate_run(run: str | Path | Run, split: str = "test", out_dir: str | Path | None = None,
                 settings: Settings | None = None, pictures: bool = True) -> tuple[EvalReport, list[Path], list[str]]:
    """Report on a split, and confusion-<split>.png and misclassified-<split>.png (in the run folder
    by default): (report, files written, warnings). Pictures that cannot be written are a warning,
    not an error: the report stands on its own."""
    r = run if isinstance(run, Run) else load_run(run, settings)
    logits, y, x = r.logits(split, settings)
    report = classification_report(logits, y, r.classes, split)
    out = Path(out_dir) if out_dir else r.run_dir
    files, warnings = [], []
    if pictures and out is not None:
        imgs, captions = misclassified(r.classes, logits, y, x)
        try:
            files.append(plot_confusion(report, out / f"confusion-{split}.png"))
            files.append(plot_gallery(imgs, captions, out / f"misclassified-{split}.png",
                                      title=f"{r.recipe.name}: {len(imgs)} highest-loss mistakes on {split}"))
            files.append(r.plot_predictions(range(min(15, len(y))), split, out / f"predictions-{split}.png", settings=settings))
        except WriteError as exc:
            warnings.append(f"pictures not written ({exc}); pass --out DIR to write them elsewhere")
    return report, files, warnings
