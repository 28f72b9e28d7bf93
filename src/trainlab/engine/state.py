"""What the training loop works on: the dataset's splits on the device, and the loop's position.

`TrainState` holds everything a checkpoint needs (with the RNG states) to continue exactly.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

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


@dataclass
class TrainState:
    """The loop's position and parts: what callbacks see and what a checkpoint saves."""

    recipe: Recipe
    model: nn.Module
    optimizer: torch.optim.Optimizer
    data: TensorData
    device: torch.device
    steps_per_epoch: int
    scheduler: object = None  # a torch LR scheduler stepped per batch, or None
    gen: torch.Generator | None = None  # shuffles and augments; its state is checkpointed
    epoch: int = 0  # epochs done (during an epoch: its index)
    step: int = 0  # next batch of the current epoch
    perm: torch.Tensor | None = None  # the current epoch's shuffled order
    loss_sum: torch.Tensor | None = None  # running sums over the current epoch, on the device
    correct: torch.Tensor | None = None
    epoch_lr: float = 0.0  # the lr at the start of the current epoch (what history records)
    history: list[dict] = field(default_factory=list)
    stop_training: bool = False  # set by a callback (early stopping): end after this epoch
    stop: threading.Event | None = None  # set from outside (Ctrl-C, SIGTERM, Stop button): end after this step
    notes: list[str] = field(default_factory=list)
    run_id: str | None = None
    run_dir: Path | None = None
    metrics: dict | None = None  # the final metrics, once the test pass is done
    ood: object | None = None  # runs.record.OODThresholds, once calibrated (training.api.finish)
    group: object = None  # distributed.Group when several processes train together
    ddp: nn.Module | None = None  # the DistributedDataParallel wrapper of `model` the loop steps through
    cpu: dict = field(default_factory=dict)  # how the thread count was chosen (cpus.py); run.json's `cpu`
    precision: str = "fp32"  # the step's arithmetic, fp32 or bf16-mixed (precision.py); run.json's `precision`
    precision_reason: str = ""
    fused: object = None  # fused.FusedDenseStep when the model's step is fused (its optimizer is over one flat buffer)
