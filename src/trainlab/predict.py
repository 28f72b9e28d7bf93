"""Prediction on a user's own images: files are prepared exactly as the run's dataset was (the
style recorded with the run), then normalised by the run's own Preprocess.

Out-of-distribution warning, calibrated on the validation split at the end of training:
  * confidence: the top probability is below the 2nd percentile of top probabilities on
    validation images;
  * input statistics: the mean or the standard deviation of the model input lies outside the
    range that holds 99% of validation images (0.5th to 99.5th percentile).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from trainlab.errors import TrainlabError
from trainlab.preprocess import IMAGE_EXTENSIONS, Preprocess, open_image, prepare_image

if TYPE_CHECKING:
    from trainlab.runs import Run


@dataclass
class Predictions:
    """Class probabilities for N inputs, with names, per-input warnings, and the inputs that failed."""

    probs: np.ndarray  # (N, K)
    classes: list[str]
    files: list[str] = field(default_factory=list)
    warnings: list[list[str]] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    inputs: np.ndarray | None = None  # the dataset-format uint8 images (N, H, W, C) the model got

    @property
    def labels(self) -> np.ndarray:
        return self.probs.argmax(1)

    @property
    def class_names(self) -> list[str]:
        return [self.classes[i] for i in self.labels]

    def __len__(self) -> int:
        return len(self.probs)

    def records(self, top_k: int = 3) -> list[dict]:
        """One dict per input: file, label, class_name, probability, top_k, warnings."""
        out = []
        k = min(top_k, self.probs.shape[1]) if len(self.probs) else 0
        for i, p in enumerate(self.probs):
            order = np.argsort(-p)[:k]
            out.append({"file": self.files[i] if self.files else f"[{i}]", "label": int(order[0]),
                        "class_name": self.classes[order[0]], "probability": float(p[order[0]]),
                        "top_k": [{"label": int(j), "class_name": self.classes[j], "probability": float(p[j])} for j in order],
                        "warnings": self.warnings[i] if self.warnings else []})
        return out


def expand_inputs(inputs) -> list[str]:
    """Files as given; folders become their image files (sorted, recursively)."""
    out = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out += sorted(str(f) for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file())
        else:
            out.append(str(item))
    return out


def load_file(path: str, style: str, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(original as an array for display, dataset-format uint8 (H, W, C)); ValueError with the reason."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ValueError("no such file") from None
    except IsADirectoryError:
        raise ValueError("is a folder with no images") from None
    except OSError as exc:
        raise ValueError(f"cannot read it ({exc.strerror or exc})") from None
    im = open_image(data, path)
    return np.asarray(im), prepare_image(im, style, shape)


def _as_batch(images, shape: tuple[int, int, int]) -> torch.Tensor:
    """uint8 arrays in the dataset's format -> (N, C, H, W); accepts (H, W), (N, H, W), NHWC or NCHW."""
    c, h, w = shape
    x = torch.as_tensor(np.asarray(images))
    if x.ndim == 2 or (x.ndim == 3 and tuple(x.shape) in ((h, w, c), (c, h, w))):
        x = x[None]
    if x.ndim == 3 and c == 1:
        x = x[:, None]
    if x.ndim == 4 and tuple(x.shape[1:]) == (h, w, c) and c != h:
        x = x.permute(0, 3, 1, 2)
    if x.ndim != 4 or tuple(x.shape[1:]) != (c, h, w):
        raise TrainlabError(f"predict: images of shape {tuple(np.asarray(images).shape)} do not fit this run's input "
                            f"(N, {h}, {w}, {c}); pass image files, or arrays of that shape")
    return x.to(torch.uint8).contiguous()


def input_stats(x: torch.Tensor, prep: Preprocess) -> tuple[np.ndarray, np.ndarray]:
    """Per-image mean and std of the model input (after normalisation)."""
    z = prep(x).flatten(1).double()
    return z.mean(1).numpy(), z.std(1).numpy()


@torch.inference_mode()
def calibrate_ood(run_model, x: torch.Tensor, prep: Preprocess, batch_size: int, device,
                  logits: torch.Tensor | None = None) -> dict:
    """Thresholds for the out-of-distribution warning, from one split (the validation split);
    `logits` are the model's on `x` when the caller already has them."""
    from trainlab.train import predict_logits
    if logits is None:
        logits = predict_logits(run_model, x, prep, batch_size, device)
    probs = torch.softmax(logits.float(), 1).cpu().numpy()
    conf = probs.max(1)
    means, stds = input_stats(x.cpu(), prep)
    return {"confidence_p02": float(np.quantile(conf, 0.02)),
            "mean_range": [float(np.quantile(means, 0.005)), float(np.quantile(means, 0.995))],
            "std_range": [float(np.quantile(stds, 0.005)), float(np.quantile(stds, 0.995))], "n": int(len(conf))}


def ood_warnings(ood: dict | None, conf: float, mean: float, std: float) -> list[str]:
    if not ood:
        return []
    out = []
    if conf < ood["confidence_p02"]:
        out.append(f"low confidence {conf:.2f} (below {ood['confidence_p02']:.2f}, the 2nd percentile on validation "
                   f"images): the input may be unlike the training data")
    for name, value, (lo, hi) in (("mean", mean, ood["mean_range"]), ("contrast (std)", std, ood["std_range"])):
        if not lo <= value <= hi:
            out.append(f"pixel {name} {value:.2f} is outside {lo:.2f}..{hi:.2f}, where 99% of validation images lie")
    return out


def predict(run: "Run", inputs, style: str | None = None) -> Predictions:
    """Predict image files/folders (prepared in the run's style) or dataset-format arrays."""
    from trainlab.train import predict_logits
    shape = run.preprocess.shape
    style = style or run.preprocess.style
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    is_arrays = isinstance(inputs, (np.ndarray, torch.Tensor)) or (
        isinstance(inputs, (list, tuple)) and inputs and isinstance(inputs[0], (np.ndarray, torch.Tensor)))
    failures: list[tuple[str, str]] = []
    if is_arrays:
        x = _as_batch(np.stack([np.asarray(a) for a in inputs]) if isinstance(inputs, (list, tuple)) else inputs, shape)
        files = [f"[{i}]" for i in range(len(x))]
    else:
        files, arrays = [], []
        for f in expand_inputs(inputs):
            try:
                arrays.append(load_file(f, style, shape)[1])
                files.append(f)
            except ValueError as exc:
                failures.append((f, str(exc)))
        x = _as_batch(np.stack(arrays), shape) if arrays else torch.zeros((0, *shape), dtype=torch.uint8)
    if len(x) == 0:
        return Predictions(np.zeros((0, len(run.classes))), run.classes, [], [], failures, np.zeros((0, *shape[1:], shape[0]), np.uint8))
    logits = predict_logits(run.model, x, run.preprocess, run.recipe.eval_batch_size, run.device, run.recipe.tta)
    probs = torch.softmax(logits.float(), 1).cpu().numpy()
    means, stds = input_stats(x, run.preprocess)
    warnings = [ood_warnings(run.ood, float(p.max()), float(m), float(s)) for p, m, s in zip(probs, means, stds)]
    return Predictions(probs, run.classes, files, warnings, failures, x.permute(0, 2, 3, 1).numpy())


def write_model_views(run: "Run", preds: Predictions, show_dir: str | os.PathLike, style: str | None = None) -> list[Path]:
    """For each input, a PNG of the original beside the exact tensor the model received."""
    from trainlab.plots import plot_model_view
    out = []
    show_dir = Path(show_dir)
    style = style or run.preprocess.style
    for i, (rec, arr) in enumerate(zip(preds.records(1), preds.inputs)):
        f = rec["file"]
        original = arr[..., 0] if arr.shape[-1] == 1 else arr
        if Path(f).is_file():  # arrays and test-set items have no file: show what was given
            original = load_file(f, style, run.preprocess.shape)[0]
        seen = run.preprocess(torch.from_numpy(arr).permute(2, 0, 1)[None].contiguous())[0]
        seen = seen.view(run.preprocess.shape).numpy()
        stem = Path(f).stem if Path(f).is_file() else "item"
        name = f"{i:03d}-{stem}.png"
        caption = f"{Path(f).name}: {rec['class_name']} ({rec['probability']:.2f})"
        out.append(plot_model_view(original, seen, caption, show_dir / name))
    return out
