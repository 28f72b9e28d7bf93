"""The learning-rate range test (Smith 2015, as fastai's `lr_find`): train a copy of the model for a
few hundred batches while the LR grows exponentially from `start` to `end`, record the smoothed loss,
stop when it diverges, and suggest an LR from the curve. The recipe's model and optimizer are never
touched: the test trains its own copy and throws it away.

Suggestions (fastai's names): `valley` (the default, fastai's since 2.5: the point halfway down the
longest stretch where the loss keeps falling, robust to noise), `steep` (where the smoothed loss falls
fastest) and `minimum` (a tenth of the LR at the lowest loss, the classic rule of thumb).
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from trainlab.data.readers import Dataset
from trainlab.engine.precision import train_autocast
from trainlab.errors import TrainlabError
from trainlab.optim import make_optimizer
from trainlab.plots import plot_lr_find
from trainlab.recipes import Recipe
from trainlab.settings import Settings, load_settings
from trainlab.system.devices import pick_device
from trainlab.system.process_wide import caller_state_kept
from trainlab.training.build import build, resolve_recipe

METHODS = ("valley", "steep", "minimum")


@dataclass
class LRFinding:
    """The range test's curve and suggestions; `plot()` draws it, `to_dict()` is the `--json` form."""

    recipe: Recipe
    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestions: dict[str, float] = field(default_factory=dict)
    method: str = "valley"
    stopped: str = ""

    @property
    def suggestion(self) -> float:
        return self.suggestions[self.method]

    def plot(self, path: str | os.PathLike | None = None):
        title = f"LR range test: {self.recipe.name} ({self.recipe.optimizer.name}, batch {self.recipe.batch_size})"
        return plot_lr_find(self.lrs, self.losses, self.smoothed, self.suggestions, self.method, title, path)

    def to_dict(self) -> dict:
        return {"recipe": self.recipe.name, "optimizer": self.recipe.optimizer.name, "method": self.method,
                "suggestion": self.suggestion, "suggestions": self.suggestions, "stopped": self.stopped,
                "points": [{"lr": lr, "loss": lo, "smoothed": s} for lr, lo, s in zip(self.lrs, self.losses, self.smoothed)]}


def find_lr(recipe: str | Path | Recipe = "mnist-mlp", *, start: float = 1e-7, end: float = 10.0, steps: int = 100,
            method: str = "valley", overrides: dict | list[str] | None = None, model: nn.Module | None = None,
            settings: Settings | None = None, data_dir: str | Path | None = None, device: str = "auto",
            dataset: Dataset | None = None, beta: float = 0.98, diverge: float = 4.0) -> LRFinding:
    """Run the LR range test on the recipe's training data and optimizer (its LR aside) and return the
    curve with the suggestions. `model=` tests your own module (a copy of it; yours is untouched)."""
    check_range(start, end, steps, method)
    settings = (settings or load_settings()).with_(data_dir=data_dir)
    r = resolve_recipe(recipe, overrides, {})
    with caller_state_kept():  # the test seeds and draws; the caller's generators and threads are put back after
        # the autograd step's model and data: the test drives its own optimizer through the LR range
        state = build(r, settings.with_(step="autograd"), pick_device(device),
                      copy.deepcopy(model) if model is not None else None, dataset)
        lrs, losses, smoothed, stopped = _range_test(state, start, end, steps, beta, diverge)
    if len(lrs) < 10:
        raise TrainlabError(f"the loss diverged after {len(lrs)} steps, at lr {lrs[-1]:.2e}; start lower (--start)")
    return LRFinding(r, lrs, losses, smoothed, suggest(lrs, smoothed), method, stopped)


def _range_test(state, start: float, end: float, steps: int, beta: float, diverge: float):
    """Train `steps` batches with the LR growing exponentially; (lrs, losses, smoothed losses, why it stopped)."""
    r, net = state.recipe, state.model
    opt = make_optimizer(r.optimizer.model_copy(update={"lr": start}), net.parameters())
    lrs, losses, smoothed = [], [], []
    avg, best, stopped = 0.0, math.inf, f"reached the end of the range ({end:g})"
    net.train()
    for i, (x, y) in enumerate(_batches(state, steps)):
        lr = start * (end / start) ** (i / max(steps - 1, 1))
        for group in opt.param_groups:
            group["lr"] = lr
        with train_autocast(state.device, state.precision):
            loss = F.cross_entropy(net(x), y, label_smoothing=r.loss.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = loss.item()
        avg = beta * avg + (1 - beta) * value
        smooth = avg / (1 - beta ** (i + 1))
        lrs.append(lr), losses.append(value), smoothed.append(smooth)
        if not math.isfinite(smooth) or smooth > diverge * best:
            stopped = f"the loss diverged at lr {lr:.2e}"
            break
        best = min(best, smooth)
    return lrs, losses, smoothed, stopped


def check_range(start: float, end: float, steps: int, method: str) -> None:
    if not (0 < start < end < math.inf):
        raise TrainlabError(f"--start {start:g} --end {end:g}: give 0 < start < end")
    if steps < 20:
        raise TrainlabError(f"--steps {steps}: give at least 20 steps (100 to 300 is usual)")
    if method not in METHODS:
        raise TrainlabError(f"--method {method!r}: use {', '.join(METHODS)}")


def _batches(state, steps: int):
    """`steps` shuffled training batches, normalised and augmented as in training (a new order each pass)."""
    feed, bs, gen = state.train_step.feed, state.recipe.batch_size, state.gen
    n, done = len(state.data.x_train), 0
    while done < steps:
        perm = torch.randperm(n, generator=gen, device=gen.device).to(state.device)
        draws = None if feed.augment is None else feed.augment.draw(n, gen).to(state.device)
        for s in range(0, n, bs):
            if done == steps:
                return
            yield feed.batch(perm[s:s + bs], None if draws is None else draws[s:s + bs])
            done += 1


def suggest(lrs: list[float], smoothed: list[float]) -> dict[str, float]:
    """fastai's suggestions on the curve, leaving out its first tenth and last few points (warm-up
    noise and the divergence)."""
    lo, hi = len(lrs) // 10, max(len(lrs) - 5, len(lrs) // 10 + 2)
    xs, ys = lrs[lo:hi], smoothed[lo:hi]
    logs = [math.log(x) for x in xs]
    slopes = [(ys[i + 1] - ys[i]) / (logs[i + 1] - logs[i]) for i in range(len(xs) - 1)]
    steep = xs[min(range(len(slopes)), key=slopes.__getitem__)]
    minimum = xs[min(range(len(ys)), key=ys.__getitem__)] / 10
    return {"valley": _valley(xs, ys), "steep": steep, "minimum": minimum}


def _valley(lrs: list[float], losses: list[float]) -> float:
    """fastai's valley: the longest run of decreasing loss (as a longest decreasing subsequence), and
    the point halfway along it."""
    n = len(losses)
    run = [1] * n
    start = end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and run[i] < run[j] + 1:
                run[i] = run[j] + 1
        if run[end] < run[i]:
            end = i
            start = end - run[end]
    third = (end - start) / 3
    return lrs[max(0, min(n - 1, start + int(third) + int(third / 2)))]
