"""The training loop: zero_grad, forward, backward, step over batches sliced from device tensors.

Reading order: `train_epoch` (one pass over the shuffled training split, one call of the run's
`Step` per batch: step.py, chosen once by strategy.py), `fit` (epochs, validation and callbacks).
Building the parts is training/build.py's job; saving them, checkpoint.py's and the runs package's.
"""

from __future__ import annotations

import math
import time

import torch

from trainlab.engine.callbacks import Callback
from trainlab.engine.inference import evaluate
from trainlab.engine.state import TrainState
from trainlab.errors import Interrupted, TrainingDiverged

REPORT_EVERY = 0.1  # seconds between on_batch_end calls (and host syncs) unless a callback wants every batch


def train_epoch(state: TrainState, callbacks: list[Callback]) -> tuple[float, float]:
    """One pass over the shuffled training split, from `state.step` on; the epoch's mean loss and accuracy."""
    train_step, group, bs = state.train_step, state.group, state.recipe.batch_size
    n = len(state.data.x_train)
    per_batch = any(cb.per_batch for cb in callbacks)
    state.model.train()
    if state.perm is None:  # a fresh epoch (a resumed one keeps its saved order, draws and sums)
        start_epoch(state)
    next_report, last = 0.0, state.steps_per_epoch - 1
    for step in range(state.step, state.steps_per_epoch):
        idx = state.perm[step * bs:(step + 1) * bs]
        draws = None if state.draws is None else state.draws[step * bs:(step + 1) * bs]
        if group is not None:  # this rank's slice of the global batch
            idx, draws = group.shard(idx), None if draws is None else group.shard(draws)
        loss = train_step(idx, draws)  # gather, prepare, forward, backward, update, running sums (step.py)
        state.step = step + 1
        now = time.perf_counter()
        report = group.report_now(step, last) if group is not None else (per_batch or now >= next_report or step == last)
        stopping = False
        if report:
            next_report = now + REPORT_EVERY
            loss_total, correct_total, stopping = _totals(state, state.stop is not None and state.stop.is_set())
            seen = min((step + 1) * bs, n)
            logs = {"loss": loss_total / seen, "acc": correct_total / seen, "batch_loss": loss.item(), "step": step + 1,
                    "epoch": state.epoch + 1}  # 1-based, as history.csv and the progress line count
            check_finite(state, logs["loss"])
            for cb in callbacks:
                cb.on_batch_end(state, step, logs)
        if group is None:  # one process: a stop set by anyone, a callback of this step included, ends it now
            stopping = state.stop is not None and state.stop.is_set()
        if stopping:
            check_finite(state, _totals(state, True)[0])  # a stop is checkpointed: never from a diverged state
            raise Interrupted("stopped on request")
    loss, acc = (t / n for t in _totals(state, False)[:2])
    train_step.sync()
    state.perm = state.draws = None
    state.step = 0
    return loss, acc


def start_epoch(state: TrainState) -> None:
    """The epoch's order and augmentation draws from the run's generator, on the device; sums at zero."""
    gen, n = state.gen, len(state.data.x_train)
    if state.group is not None:
        state.group.sync_generator(gen)  # every rank draws the same order
    state.perm = torch.randperm(n, generator=gen, device=gen.device).to(state.device)
    state.draws = None if state.augment is None else state.augment.draw(n, gen).to(state.device)
    state.loss_sum.zero_()
    state.correct.zero_()
    state.step = 0


def _totals(state: TrainState, stopping: bool) -> tuple[float, float, bool]:
    """The epoch's running loss and correct sums so far, over every rank, and whether any rank was
    asked to stop. With several processes, one all-reduce: afterwards rank 0 holds the totals and
    the other ranks zero, so the next report sums only what they added since (and a checkpoint,
    written by rank 0, holds the totals)."""
    group = state.group
    if group is None:
        return state.loss_sum.item(), state.correct.item(), stopping
    both = torch.stack([state.loss_sum.float(), state.correct.float(),
                        torch.tensor(float(stopping), device=state.loss_sum.device)])
    group.sum_(both)
    if group.is_main:
        state.loss_sum.copy_(both[0])
        state.correct.copy_(both[1].round().long())
    else:
        state.loss_sum.zero_()
        state.correct.zero_()
    return both[0].item(), float(round(both[1].item())), bool(both[2].item() > 0)


def check_finite(state: TrainState, loss: float) -> None:
    if not math.isfinite(loss):
        r = state.recipe
        raise TrainingDiverged(
            f"training diverged at epoch {state.epoch + 1}, batch {state.step}: the loss is {loss}; lower the learning "
            f"rate (optimizer.lr={r.optimizer.lr}) or normalise the inputs (data.normalize)")


def fit(state: TrainState, callbacks: list[Callback]) -> list[dict]:
    """Train from `state.epoch` to the recipe's epochs (or until a callback stops it); the history."""
    try:
        return _fit(state, callbacks)
    finally:
        state.train_step.close()  # e.g. the parameters get their own storage back (safetensors needs it)


def _fit(state: TrainState, callbacks: list[Callback]) -> list[dict]:
    r, data = state.recipe, state.data
    for cb in callbacks:
        cb.on_train_begin(state)
    for epoch in range(state.epoch, r.epochs):
        if state.stop_training:  # a resumed run that early stopping had already ended
            break
        state.epoch = epoch
        t0 = time.perf_counter()
        for cb in callbacks:
            cb.on_epoch_begin(state, epoch)
        if state.perm is None:  # not a resumed, half-done epoch: record the lr it starts with
            state.epoch_lr = float(state.optimizer.param_groups[0]["lr"])  # a device tensor under a CUDA graph
        loss, acc = train_epoch(state, callbacks)
        logs = {"epoch": epoch + 1, "loss": loss, "acc": acc, "val_loss": None, "val_acc": None, "lr": state.epoch_lr}
        if data.x_val is not None:
            logs["val_loss"], logs["val_acc"] = evaluate(state.model, data.x_val, data.y_val, data.preprocess,
                                                         r.eval_batch_size, state.device, r.tta)
        logs["seconds"] = time.perf_counter() - t0
        state.history.append(logs)
        state.epoch = epoch + 1
        for cb in callbacks:
            cb.on_epoch_end(state, epoch, logs)
        if state.stop_training:
            break
    for cb in callbacks:
        cb.on_train_end(state)
    return state.history
