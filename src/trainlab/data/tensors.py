"""A dataset's splits as tensors on the training device: uint8 images (N, C, H, W) and int64 labels,
with the recipe's limits, validation split and normalisation applied once (`prepare_data`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from trainlab.data.images import style_for
from trainlab.data.preprocess import Preprocess, to_nchw
from trainlab.data.readers import Dataset
from trainlab.errors import TrainlabError
from trainlab.recipes import Recipe


@dataclass
class TensorData:
    """Splits as uint8 (N, C, H, W) and int64 (N,) tensors on the training device."""

    name: str
    classes: list[str]
    preprocess: Preprocess
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor | None
    y_val: torch.Tensor | None
    x_test: torch.Tensor
    y_test: torch.Tensor
    source: str = ""
    info: dict = field(default_factory=dict)  # what the loader reports: the corrections applied, say


def prepare_data(ds: Dataset, recipe: Recipe, device: torch.device) -> TensorData:
    """Apply the recipe's limits and validation split, fit normalisation, move to the device once."""
    cfg = recipe.data
    x_tr, y_tr = ds.x_train[: cfg.limit_train], ds.y_train[: cfg.limit_train]
    x_te, y_te = ds.x_test[: cfg.limit_test], ds.y_test[: cfg.limit_test]
    x_val = y_val = None
    if isinstance(cfg.validation, float):
        # As Keras' validation_split: the last fraction of the training data, taken before shuffling.
        cut = int(len(x_tr) * (1.0 - cfg.validation))
        if cut == 0 or cut == len(x_tr):
            raise TrainlabError(f"data.validation={cfg.validation} leaves an empty split of {len(x_tr)} examples; "
                                f"use a fraction that keeps both sides non-empty")
        x_tr, x_val, y_tr, y_val = x_tr[:cut], x_tr[cut:], y_tr[:cut], y_tr[cut:]
    style = style_for(ds.name) if cfg.predict_style == "auto" else cfg.predict_style
    prep = Preprocess.fit(cfg.normalize, x_tr, cfg.flatten, style)

    def dev(a):
        return None if a is None else (to_nchw(a) if a.ndim == 4 else torch.from_numpy(np.ascontiguousarray(a))).to(device)

    x_test, y_test = dev(x_te), dev(y_te)
    if cfg.validation == "test":
        x_val_t, y_val_t = x_test, y_test  # the same tensors, not a copy
    else:
        x_val_t, y_val_t = dev(x_val), dev(y_val)
    return TensorData(ds.name, list(ds.classes), prep, dev(x_tr), dev(y_tr), x_val_t, y_val_t, x_test, y_test, ds.source,
                      dict(ds.info))
