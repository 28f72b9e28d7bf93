"""Preprocessing: uint8 pixels to model input. One object, recorded with every run, so training,
evaluation and prediction normalise exactly alike."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch


@dataclass
class Preprocess:
    """Turns a uint8 batch (B, C, H, W) into the float tensor the model takes."""

    normalize: str  # none | scale | standardize
    shape: tuple[int, int, int]  # (C, H, W) of the stored images
    flatten: bool = False
    mean: list[float] = field(default_factory=list)  # per channel, on the 0-1 scale (standardize)
    std: list[float] = field(default_factory=list)
    style: str = "photo"  # how image files become dataset-format arrays: digit | fashion | photo

    @classmethod
    def fit(cls, normalize: str, x_train: np.ndarray, flatten: bool, style: str = "photo") -> "Preprocess":
        """Build from the training split; x_train is uint8 (N, H, W, C)."""
        shape = (x_train.shape[3], x_train.shape[1], x_train.shape[2])
        mean, std = [], []
        if normalize == "standardize":
            for c in range(shape[0]):  # float64 sums in chunks: exact and light on memory
                ch = x_train[..., c]
                s = s2 = 0.0
                for i in range(0, len(ch), 8192):
                    part = ch[i:i + 8192].astype(np.float64) / 255.0
                    s += part.sum()
                    s2 += (part * part).sum()
                n = ch.size
                m = s / n
                mean.append(float(m))
                std.append(float(max(np.sqrt(max(s2 / n - m * m, 0.0)), 1e-6)))
        return cls(normalize, shape, flatten, mean, std, style)

    @property
    def input_shape(self) -> tuple[int, ...]:
        c, h, w = self.shape
        return (c * h * w,) if self.flatten else (c, h, w)

    def scale_shift(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel (scale, shift) with model_input = pixel * scale + shift, pixels in 0-255."""
        c = self.shape[0]
        if self.normalize == "none":
            scale, shift = torch.ones(c), torch.zeros(c)
        elif self.normalize == "scale":
            scale, shift = torch.full((c,), 1 / 255.0), torch.zeros(c)
        else:
            mean, std = torch.tensor(self.mean), torch.tensor(self.std)
            scale, shift = 1 / (255.0 * std), -mean / std
        return scale.view(1, c, 1, 1).to(device), shift.view(1, c, 1, 1).to(device)

    def __call__(self, x: torch.Tensor, augment=None, draws: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 (B, C, H, W) -> float32 model input; `augment(x, draws)` (data/augment.py) runs on
        0-255 floats first, with the batch's rows of the epoch's draws."""
        scale, shift = self._cached(x.device)
        out = x.to(torch.float32, copy=True)  # a fresh tensor: normalised in place below
        if augment is not None:
            out = augment(out, draws)
        if self.normalize != "none":  # two in-place ops: 3x cheaper than one broadcast addcmul (35 -> 11 us a batch)
            out = out.mul_(scale) if self.normalize == "scale" else out.mul_(scale).add_(shift)
        return out.flatten(1) if self.flatten else out

    def _cached(self, device):
        key = str(device)
        cache = self.__dict__.setdefault("_tensors", {})
        if key not in cache:
            cache[key] = self.scale_shift(device)
        return cache[key]

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("_tensors", None)
        d["shape"] = list(self.shape)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        return cls(d["normalize"], tuple(d["shape"]), d.get("flatten", False), d.get("mean", []), d.get("std", []),
                   d.get("style", "photo"))


def to_nchw(x: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, C) numpy -> contiguous uint8 (N, C, H, W) tensor."""
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
