"""What the training loop works on and where it is: `TrainState`.

`TrainState` holds everything a checkpoint needs (with the RNG states) to continue exactly.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from trainlab.data.tensors import TensorData
from trainlab.engine.step import Step
from trainlab.recipes import Recipe


@dataclass
class TrainState:
    """The loop's position and parts: what callbacks see and what a checkpoint saves."""

    recipe: Recipe
    model: nn.Module
    train_step: Step  # the one step the loop calls per batch, with its optimizer and scheduler (strategy.py)
    data: TensorData
    device: torch.device
    steps_per_epoch: int
    gen: torch.Generator | None = None  # shuffles and draws the augmentation; its state is checkpointed
    epoch: int = 0  # epochs done (during an epoch: its index)
    step: int = 0  # next batch of the current epoch
    perm: torch.Tensor | None = None  # the current epoch's shuffled order (None between epochs)
    draws: torch.Tensor | None = None  # the current epoch's augmentation draws, (N, width) (data/augment.py)
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
    ddp: nn.Module | None = None  # the DistributedDataParallel wrapper of `model` the step runs through
    cpu: dict = field(default_factory=dict)  # how the thread count was chosen (cpus.py); run.json's `cpu`
    precision: str = "fp32"  # the step's arithmetic, fp32 or bf16-mixed (precision.py); run.json's `precision`
    precision_reason: str = ""

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.train_step.optimizer

    @property
    def scheduler(self):
        """The torch LR scheduler the step advances per batch, or None."""
        return self.train_step.scheduler

    @property
    def loss_sum(self) -> torch.Tensor:
        """The current epoch's running loss sum, on the device (the step adds to it in place)."""
        return self.train_step.feed.loss_sum

    @property
    def correct(self) -> torch.Tensor:
        return self.train_step.feed.correct

    @property
    def augment(self):
        """The recipe's augmentation (data/augment.py), or None."""
        return self.train_step.feed.augment
