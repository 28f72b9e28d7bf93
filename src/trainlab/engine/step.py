"""The training step: what the loop calls once per batch. Any object with `__call__(x, y)` that
updates the model and returns (logits, mean loss), and `close()` that ends it, is a `Step`:

- `AutogradStep`: zero_grad, forward, cross-entropy, backward, optimizer step; any model, any device;
  the forward in fp32 or bf16-mixed (precision.py).
- `FusedDenseStep` (fused.py): the same arithmetic by hand for a plain dense stack on the CPU. While
  it is open (from `training.build` to the `finally` in `engine.loop.fit`) the model's parameters
  are views into one flat buffer; `close()` gives every parameter its own storage back, which
  saving (safetensors) and anything that replaces a parameter need.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from trainlab.engine.precision import train_autocast


class Step(Protocol):
    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One update on the batch; its logits and mean loss (detached)."""

    def close(self) -> None:
        """Training is over: release what the step holds (the fused step's flat parameter views)."""


class AutogradStep:
    """zero_grad, forward, cross-entropy, backward, optimizer step: any model, any device."""

    def __init__(self, forward: nn.Module, optimizer: torch.optim.Optimizer, label_smoothing: float,
                 device: torch.device, precision: str = "fp32"):
        self.forward, self.optimizer, self.smoothing, self.device = forward, optimizer, label_smoothing, device
        self.precision = precision  # fp32 or bf16-mixed (precision.py)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One update on the batch; its logits and mean loss (detached)."""
        with train_autocast(self.device, self.precision):
            logits = self.forward(x)
            loss = F.cross_entropy(logits, y, label_smoothing=self.smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return logits.detach(), loss.detach()

    def close(self) -> None:
        """Nothing to release: the model owns its parameters."""
