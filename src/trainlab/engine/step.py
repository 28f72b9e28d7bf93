"""The training step: what the loop calls once per batch, as Keras' `train_function`.

A `Step` is built once per run (`strategy.build_step`) and called with the positions of one batch
in the training split and their augmentation draws. It does everything one batch needs: gather the
uint8 rows, prepare and augment them, forward, loss, backward, the optimizer and LR-schedule steps,
and the epoch's running sums on the device; it returns the batch's mean loss (on the device: no
host sync). The loop knows nothing else about it. Three strategies:

- `AutogradStep` (here): zero_grad, forward, cross-entropy, backward, optimizer step; any model,
  any device, fp32 or bf16-mixed (precision.py).
- `FusedDenseStep` (fused.py): the same arithmetic by hand for a plain dense stack on the CPU, its
  parameters and optimizer on one flat buffer.
- `GraphedStep` (graphed.py): on CUDA, the whole step captured once as a CUDA graph and replayed.

Whatever ran, the optimizer's state_dict is torch's usual per-parameter one, so a checkpoint
resumes under any of them.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from trainlab.data.tensors import TensorData
from trainlab.engine.precision import train_autocast


class Step(Protocol):
    kind: str  # "autograd", "fused-dense" or "cuda-graph": run.json's `train_step`
    optimizer: torch.optim.Optimizer
    scheduler: object  # a torch LR scheduler stepped per batch, or None

    def __call__(self, idx: torch.Tensor, draws: torch.Tensor | None = None) -> torch.Tensor:
        """One update on the training rows `idx` (their augmentation draws); the batch's mean loss."""

    def threads(self, batch_size: int) -> tuple[int, str] | None:
        """The CPU thread count this step runs best on, and why; None: the machine decides (cpus.py)."""

    def sync(self) -> None:
        """Bring what the host reads (the LR scheduler) up to date before callbacks or checkpoints read it."""

    def close(self) -> None:
        """Training is over: release what the step holds (the fused step's flat parameter views)."""


class Feed:
    """Where a step's batches come from and where its counts go: the training split on the device,
    its preparation and augmentation, the memory layout, and the epoch's running sums."""

    def __init__(self, data: TensorData, augment=None, channels_last: bool = False,
                 loss_sum: torch.Tensor | None = None, correct: torch.Tensor | None = None):
        self.data, self.augment, self.channels_last = data, augment, channels_last
        device = data.x_train.device
        self.loss_sum = torch.zeros((), device=device) if loss_sum is None else loss_sum
        self.correct = torch.zeros((), dtype=torch.long, device=device) if correct is None else correct

    def batch(self, idx: torch.Tensor, draws: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows `idx` as a normalised float batch (augmented with their `draws`; none without) and their labels."""
        data = self.data
        # index_select is ~5x cheaper than x[idx] for row gathers on CPU (measured: 9 vs 41 us)
        x = data.preprocess(data.x_train.index_select(0, idx), self.augment if draws is not None else None, draws)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, data.y_train.index_select(0, idx)

    def count(self, logits: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> None:
        """Add the batch to the epoch's running sums (on the device: one host sync per report, not per step)."""
        self.loss_sum.add_(loss, alpha=len(y))
        self.correct.add_((logits.argmax(1) == y).sum())


class BatchStep:
    """A step as gather, `update` (the arithmetic, per strategy), schedule, count."""

    kind = "autograd"

    def __init__(self, optimizer: torch.optim.Optimizer, scheduler=None, feed: Feed | None = None):
        self.optimizer, self.scheduler, self.feed = optimizer, scheduler, feed

    def __call__(self, idx: torch.Tensor, draws: torch.Tensor | None = None) -> torch.Tensor:
        x, y = self.feed.batch(idx, draws)
        logits, loss = self.update(x, y)
        if self.scheduler is not None:
            self.scheduler.step()
        self.feed.count(logits, y, loss)
        return loss

    def update(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer update on a prepared batch; its logits and mean loss (detached)."""
        raise NotImplementedError

    def threads(self, batch_size: int) -> tuple[int, str] | None:
        return None

    def sync(self) -> None:
        """Nothing runs ahead of the host here."""

    def close(self) -> None:
        """Nothing to release: the model owns its parameters."""


class AutogradStep(BatchStep):
    """zero_grad, forward, cross-entropy, backward, optimizer step: any model, any device."""

    kind = "autograd"

    def __init__(self, forward: nn.Module, optimizer: torch.optim.Optimizer, label_smoothing: float = 0.0,
                 device: torch.device = torch.device("cpu"), precision: str = "fp32", scheduler=None,
                 feed: Feed | None = None):
        super().__init__(optimizer, scheduler, feed)
        self.forward, self.smoothing, self.device = forward, label_smoothing, device
        self.precision = precision  # fp32 or bf16-mixed (precision.py)

    def update(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with train_autocast(self.device, self.precision):
            logits = self.forward(x)
            loss = F.cross_entropy(logits, y, label_smoothing=self.smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return logits.detach(), loss.detach()
