"""Inference: logits in batches, loss and accuracy, class probabilities with out-of-distribution
warnings. Training, evaluation, prediction and serving all go through `predict_logits`.

Out-of-distribution warning, calibrated on the validation split at the end of training:
  * confidence: the top probability is below the 2nd percentile of top probabilities on
    validation images;
  * input statistics: the mean or the standard deviation of the model input lies outside the
    range that holds 99% of validation images (0.5th to 99.5th percentile).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainlab.data.preprocess import Preprocess
from trainlab.errors import TrainlabError
from trainlab.models import prefers_channels_last


def autocast(device: torch.device):
    """bf16 autocast on CUDA (faster convs and matmuls); the CPU stays fp32 for exact reproducibility."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


@torch.inference_mode()
def predict_logits(model: nn.Module, x: torch.Tensor, prep: Preprocess, batch_size: int, device: torch.device,
                   tta: str = "none") -> torch.Tensor:
    """Logits for uint8 images (N, C, H, W) in batches; float32 on the model's device."""
    model.eval()
    channels_last = prefers_channels_last(model)
    out = []
    for i in range(0, len(x), batch_size):
        xb = prep(x[i:i + batch_size].to(device))
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast(device):
            logits = model(xb).float()
            if tta == "flip" and xb.ndim == 4:
                logits = 0.5 * (logits + model(xb.flip(3)).float())
        out.append(logits)
    return torch.cat(out) if out else torch.zeros(0)


def loss_and_accuracy(logits: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of logits (N, K) against labels (N,)."""
    y = y.to(logits.device)
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, prep: Preprocess, batch_size: int,
             device: torch.device, tta: str = "none") -> tuple[float, float]:
    """Mean cross-entropy and accuracy on a split."""
    return loss_and_accuracy(predict_logits(model, x, prep, batch_size, device, tta), y)


# ---------------------------------------------------------------------------------------------
# Out-of-distribution warning
# ---------------------------------------------------------------------------------------------

def input_stats(x: torch.Tensor, prep: Preprocess) -> tuple[np.ndarray, np.ndarray]:
    """Per-image mean and std of the model input (after normalisation)."""
    z = prep(x).flatten(1).double()
    return z.mean(1).numpy(), z.std(1).numpy()


@torch.inference_mode()
def calibrate_ood(model: nn.Module, x: torch.Tensor, prep: Preprocess, batch_size: int, device: torch.device,
                  logits: torch.Tensor | None = None) -> dict:
    """Thresholds for the out-of-distribution warning from one split (the validation split), as the
    fields of `trainlab.runs.record.OODThresholds`; `logits` are the model's on `x` when the caller
    already has them."""
    if logits is None:
        logits = predict_logits(model, x, prep, batch_size, device)
    conf = torch.softmax(logits.float(), 1).cpu().numpy().max(1)
    means, stds = input_stats(x.cpu(), prep)
    return {"confidence_p02": float(np.quantile(conf, 0.02)),
            "mean_range": (float(np.quantile(means, 0.005)), float(np.quantile(means, 0.995))),
            "std_range": (float(np.quantile(stds, 0.005)), float(np.quantile(stds, 0.995))), "n": int(len(conf))}


def ood_warnings(ood, conf: float, mean: float, std: float) -> list[str]:
    """Why one input looks unlike the training data, by a run's `OODThresholds` (None: no warnings)."""
    if ood is None:
        return []
    out = []
    if conf < ood.confidence_p02:
        digits = next((d for d in range(2, 7) if f"{conf:.{d}f}" != f"{ood.confidence_p02:.{d}f}"), 6)  # never "0.99 below 0.99"
        out.append(f"low confidence {conf:.{digits}f} (below {ood.confidence_p02:.{digits}f}, the 2nd percentile on "
                   f"validation images): the input may be unlike the training data")
    for name, value, (lo, hi) in (("mean", mean, ood.mean_range), ("contrast (std)", std, ood.std_range)):
        if not lo <= value <= hi:
            out.append(f"pixel {name} {value:.2f} is outside {lo:.2f}..{hi:.2f}, where 99% of validation images lie")
    return out


# ---------------------------------------------------------------------------------------------
# Probabilities for a batch of images
# ---------------------------------------------------------------------------------------------

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


def as_batch(images, shape: tuple[int, int, int]) -> torch.Tensor:
    """uint8 arrays in the dataset's format -> (N, C, H, W); accepts (H, W), (N, H, W), NHWC or NCHW."""
    c, h, w = shape
    arr = np.asarray(images)
    if arr.dtype == object or arr.dtype.kind not in "iufb" or (arr.dtype.kind == "f" and arr.size and not np.all(np.mod(arr, 1) == 0)):
        raise TrainlabError(f"predict: give uint8 pixels 0-255 (got {arr.dtype} values)")
    if arr.size and (arr.min() < 0 or arr.max() > 255):  # a wider type is refused, never wrapped (300 is not 44)
        raise TrainlabError(f"predict: pixel values run {arr.min()}..{arr.max()}; give 0-255")
    x = torch.as_tensor(arr)
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


def classify(model: nn.Module, x: torch.Tensor, prep: Preprocess, classes: list[str], ood,
             device: torch.device, batch_size: int = 256, tta: str = "none") -> Predictions:
    """Probabilities and warnings for uint8 images (N, C, H, W)."""
    if len(x) == 0:
        return Predictions(np.zeros((0, len(classes))), classes, [], [], [], np.zeros((0, *prep.shape[1:], prep.shape[0]), np.uint8))
    logits = predict_logits(model, x, prep, batch_size, device, tta)
    probs = torch.softmax(logits.float(), 1).cpu().numpy()
    means, stds = input_stats(x, prep)
    warnings = [ood_warnings(ood, float(p.max()), float(m), float(s)) for p, m, s in zip(probs, means, stds)]
    return Predictions(probs, classes, [f"[{i}]" for i in range(len(x))], warnings, [], x.permute(0, 2, 3, 1).numpy())
