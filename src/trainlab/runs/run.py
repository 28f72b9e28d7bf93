"""`Run`, a trained model with its recipe, history, metrics and data, and `load_run`, which rebuilds
one from its folder (what `trainlab.train` returns and every command that uses a saved run reads)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from torch import nn

from trainlab.data.images import expand_inputs
from trainlab.data.images import load_file as load_image_file
from trainlab.data.preprocess import Preprocess
from trainlab.data.registry import load_for_recipe
from trainlab.data.tensors import TensorData, prepare_data
from trainlab.engine.inference import Predictions, as_batch, classify, predict_logits
from trainlab.errors import RunNotFound, TrainlabError, first_line
from trainlab.fileio import read_inside
from trainlab.metrics import EvalReport, classification_report
from trainlab.models import build_model, place
from trainlab.plots import plot_predictions
from trainlab.recipes import Recipe
from trainlab.runs.files import read_history, read_recipe
from trainlab.runs.record import Metrics, OODThresholds, read_record, resolve_run_dir
from trainlab.settings import Settings, load_settings
from trainlab.system.process_wide import caller_state_kept


@dataclass
class Run:
    """A trained model with its recipe, history and metrics; what `trainlab.train` returns."""

    recipe: Recipe
    model: nn.Module
    history: list[dict]
    metrics: Metrics
    classes: list[str]
    preprocess: Preprocess
    run_id: str | None = None
    run_dir: Path | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    data: TensorData | None = None  # kept after training; loaded on demand for a saved run
    ood: OODThresholds | None = None  # out-of-distribution thresholds calibrated on the validation split
    settings: Settings | None = None  # where its data is found when it is loaded again

    def tensors(self, settings: Settings | None = None) -> TensorData:
        """The run's data splits on its device (kept from training, or loaded again for a saved run)."""
        if self.data is None:
            r = self.recipe
            ds = load_for_recipe(r.data, settings or self.settings)
            self.data = prepare_data(ds, r, self.device)
            self.data.preprocess = self.preprocess  # the run's own normalisation, not a refit
        return self.data

    def split(self, split: str = "test", settings: Settings | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(uint8 images (N, C, H, W), labels) of the test or val split."""
        if split not in ("test", "val"):
            raise TrainlabError(f"split {split!r}: use test or val")
        d = self.tensors(settings)
        x, y = (d.x_test, d.y_test) if split == "test" else (d.x_val, d.y_val)
        if x is None:
            raise TrainlabError(f"run {self.run_id}: it has no {split} split (data.validation is none); use --split test")
        return x, y

    def logits(self, split: str = "test", settings: Settings | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits, labels, uint8 images) of the test or val split, on the CPU."""
        x, y = self.split(split, settings)
        logits = predict_logits(self.model, x, self.preprocess, self.recipe.eval_batch_size, self.device, self.recipe.tta)
        return logits.float().cpu(), y.cpu(), x.cpu()

    def evaluate(self, split: str = "test", settings: Settings | None = None, top_k: tuple[int, ...] = (1, 3, 5)) -> EvalReport:
        """Loss, accuracy, top-k, per-class precision/recall/F1, confusion matrix, most-confused pairs."""
        logits, y, _ = self.logits(split, settings)
        return classification_report(logits, y, self.classes, split, ks=top_k)

    def predict(self, inputs, style: str | None = None) -> Predictions:
        """Class probabilities for image files, folders, or dataset-format uint8 arrays."""
        shape = self.preprocess.shape
        if isinstance(inputs, (str, os.PathLike)):
            inputs = [inputs]
        arrays = isinstance(inputs, (np.ndarray, torch.Tensor)) or (
            isinstance(inputs, (list, tuple)) and len(inputs) and isinstance(inputs[0], (np.ndarray, torch.Tensor)))
        if arrays:
            x = as_batch(np.stack([np.asarray(a) for a in inputs]) if isinstance(inputs, (list, tuple)) else inputs, shape)
            return self._classify(x)
        files, images, failures = [], [], []
        for f in expand_inputs(inputs):
            try:
                images.append(load_image_file(f, style or self.preprocess.style, shape)[1])
                files.append(f)
            except ValueError as exc:
                failures.append((f, str(exc)))
        x = as_batch(np.stack(images), shape) if images else torch.zeros((0, *shape), dtype=torch.uint8)
        preds = self._classify(x)
        preds.files, preds.failures = files, failures
        return preds

    def plot_predictions(self, indices=range(15), split: str = "test", out: str | os.PathLike | None = None,
                         cols: int = 3, settings: Settings | None = None):
        """The lesson's picture of predictions on items of a split: each image captioned
        'predicted (confidence) / true' in blue (right) or red (wrong), beside its class probabilities."""
        x, y = self.split(split, settings)
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        preds = self._classify(x[idx.to(x.device)])
        return plot_predictions(preds.inputs, preds.probs, self.classes, y.cpu()[idx].numpy(), cols=cols, path=out)

    def _classify(self, x: torch.Tensor) -> Predictions:
        return classify(self.model, x, self.preprocess, self.classes, self.ood, self.device,
                        self.recipe.eval_batch_size, self.recipe.tta)


def check_usable(run: "Run") -> None:
    """Refuse a run whose model cannot give meaningful answers, as `trainlab serve` does: a failed run,
    or weights that hold NaN or infinity (a diverged run). Predict and evaluate call it first."""
    bad = next((name for name, p in run.model.state_dict().items()
                if p.is_floating_point() and not torch.isfinite(p).all()), None)
    if bad is not None:
        raise TrainlabError(f"run {run.run_id}: its weights hold NaN or infinity ({bad}): it diverged; "
                            f"train it again with a lower learning rate")
    status = None
    if run.run_dir is not None:
        try:
            status = read_record(run.run_dir).status
        except TrainlabError:
            status = None
    if status == "failed":
        raise TrainlabError(f"run {run.run_id} failed; evaluate or predict with a completed run "
                            f"(trainlab runs --status completed)")


MAX_WEIGHTS = 8 << 30  # bytes: the biggest model.safetensors read (a trainlab model of 2 GB of parameters, four times over)


def read_weights(run_dir: Path, name: str = "model.safetensors") -> dict[str, torch.Tensor]:
    """A run's weights, read the safe way (a regular file inside the run folder, no link followed)."""
    fix = f"remove the run with `trainlab runs rm {run_dir.name}`"
    try:
        data = read_inside(run_dir, name, fix, limit=MAX_WEIGHTS)
    except FileNotFoundError:
        raise RunNotFound(f"run {run_dir.name} has no {name}; it did not finish") from None
    return load_safetensors(data)


def load_run(run: str | os.PathLike, settings: Settings | None = None, device: str = "cpu",
             model: nn.Module | None = None, *, runs_dir: str | os.PathLike | None = None,
             data_dir: str | os.PathLike | None = None) -> Run:
    """Rebuild a saved run (an id, a unique part of one, or a folder): recipe, model with its
    weights, history and metrics. `runs_dir`/`data_dir` override the settings' folders."""
    settings = (settings or load_settings()).with_(runs_dir=runs_dir, data_dir=data_dir)
    run_dir = resolve_run_dir(run, settings)
    record, recipe = read_record(run_dir), read_recipe(run_dir)
    if record.preprocess is None or record.dataset is None:
        raise TrainlabError(f"run {run_dir.name} stopped before its data was recorded; remove it with `trainlab runs rm {run_dir.name}`")
    prep, classes = Preprocess.from_dict(record.preprocess), record.dataset.classes
    weights = run_dir / "model.safetensors"
    if not weights.is_file() and not weights.is_symlink():
        raise RunNotFound(f"run {run_dir.name} has no model.safetensors (status {record.status}); it did not finish")
    if model is None:
        if record.custom_model:
            raise TrainlabError(f"run {run_dir.name} trained your own model ({record.custom_model}), which only your code "
                                f"can build: load it from Python with trainlab.load_run('{run_dir.name}', "
                                f"model={record.custom_model}())")
        with caller_state_kept():  # the initial weights draw from the caller's generators; they are replaced below
            model, _ = build_model(recipe.model, prep.input_shape, len(classes))
    try:
        model.load_state_dict(read_weights(run_dir))
    except TrainlabError:
        raise
    except Exception as exc:  # safetensors' header errors and torch's shape mismatches
        raise TrainlabError(f"{weights}: cannot load these weights into the run's model ({first_line(exc)}); "
                            f"the file is truncated or from another model: remove the run with `trainlab runs rm {run_dir.name}`") from None
    dev = torch.device(device)
    model = place(model, dev).eval()
    metrics = record.metrics or Metrics()
    return Run(recipe, model, read_history(run_dir / "history.csv"), metrics, classes, prep, record.run_id, run_dir, dev,
               ood=record.ood, settings=settings)
