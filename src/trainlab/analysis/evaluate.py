"""Evaluation of a saved run: the report plus its pictures (confusion matrix, gallery of mistakes)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from trainlab.data.corrections import file_sha256
from trainlab.errors import TrainlabError, WriteError
from trainlab.metrics import EvalReport, classification_report
from trainlab.plots import plot_confusion, plot_gallery
from trainlab.runs.record import DatasetInfo, read_record
from trainlab.runs.run import Run, check_usable, load_run
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


def corrections_changed(run: Run) -> list[str]:
    """A warning when the corrections file the run trained with is not what it was then (run.json
    keeps its sha256): the split is loaded with today's decisions, so the numbers can differ from
    the run's own."""
    if run.run_dir is None:
        return []
    try:
        applied = (read_record(run.run_dir).dataset or DatasetInfo(name="")).corrections
    except TrainlabError:
        return []
    if not applied or not applied.get("sha256"):
        return []
    path = applied.get("path") or run.recipe.data.corrections
    try:
        now = file_sha256(path)
    except TrainlabError:
        return [f"the corrections file {path} the run trained with is gone or unreadable"]
    if now != applied["sha256"]:
        return [f"the corrections file {path} changed since the run trained (sha256 {applied['sha256'][:12]} then, "
                f"{now[:12]} now): the split is loaded with today's decisions, so these numbers can differ from the "
                f"run's own"]
    return []


def evaluate_run(run: str | Path | Run, split: str = "test", out_dir: str | Path | None = None,
                 settings: Settings | None = None, pictures: bool = True) -> tuple[EvalReport, list[Path], list[str]]:
    """Report on a split, and confusion-<split>.png and misclassified-<split>.png (in the run folder
    by default): (report, files written, warnings). Pictures that cannot be written are a warning,
    not an error: the report stands on its own."""
    r = run if isinstance(run, Run) else load_run(run, settings)
    check_usable(r)
    warnings = corrections_changed(r)
    logits, y, x = r.logits(split, settings)
    report = classification_report(logits, y, r.classes, split)
    out = Path(out_dir) if out_dir else r.run_dir
    files = []
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
