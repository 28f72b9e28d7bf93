"""Callbacks: hooks the training loop calls, plus early stopping and reduce-LR-on-plateau.

Order of calls: on_train_begin, then per epoch on_epoch_begin, on_batch_end (about 10 times a
second, or every batch with `per_batch = True`), on_epoch_end; then on_train_end; after the final
test pass on_test_end; if training stops with an exception (an error, a stop request, Ctrl-C)
on_exception instead of the last two. A callback whose `state_dict()` is not empty is saved in
checkpoints under its `key` and restored by that key on resume.
"""

from __future__ import annotations

import copy
import math
import time

import torch

from trainlab.engine.state import TrainState
from trainlab.history import metric_mode
from trainlab.recipes import EarlyStoppingConfig, ReduceLRConfig
from trainlab.system.cpus import busy_elsewhere, cpu_sample


class Callback:
    """Override what you need. `on_batch_end` gets running `loss` and `acc` (epoch averages so far)
    and `batch_loss`; set `per_batch = True` to be called after every batch.

    One numbering: the `epoch` and `batch` arguments are 0-based positions, as Keras passes them;
    every `logs` dict counts from 1 (`logs["epoch"]`, the batch logs' `logs["step"]`), as
    history.csv, run.json's `best_epoch` and the progress line ("Epoch 1/12 - 600/600") do."""

    per_batch = False

    @property
    def key(self) -> str:
        """The name its checkpoint state is stored under."""
        return type(self).__name__

    def on_train_begin(self, state: TrainState) -> None: ...
    def on_epoch_begin(self, state: TrainState, epoch: int) -> None: ...
    def on_batch_end(self, state: TrainState, batch: int, logs: dict) -> None: ...
    def on_epoch_end(self, state: TrainState, epoch: int, logs: dict) -> None: ...
    def on_train_end(self, state: TrainState) -> None: ...
    def on_test_end(self, state: TrainState, metrics) -> None: ...  # runs.record.Metrics
    def on_exception(self, state: TrainState, exc: BaseException) -> None: ...

    def state_dict(self) -> dict:
        """What a checkpoint must keep for an exact resume."""
        return {}

    def load_state_dict(self, state: dict) -> None: ...


def _better(mode: str, value: float, best: float, min_delta: float) -> bool:
    return value < best - min_delta if mode == "min" else value > best + min_delta


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved for `patience` epochs; optionally restore the best weights.

    Keras' rule (keras.callbacks.EarlyStopping): every epoch without improvement counts one; once the
    count reaches `patience` (and not on the first epoch), training stops after that epoch. With
    patience 2 and the best epoch 3, training ends after epoch 5."""

    def __init__(self, cfg: EarlyStoppingConfig):
        self.cfg = cfg
        self.mode = metric_mode(cfg.monitor)
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = -1
        self.best_weights: dict | None = None
        self.wait = 0
        self.stopped_epoch: int | None = None

    def on_epoch_end(self, state, epoch, logs):
        value = logs[self.cfg.monitor]
        if _better(self.mode, value, self.best, self.cfg.min_delta):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.cfg.restore_best:
                self.best_weights = copy.deepcopy(state.model.state_dict())
        else:
            self.wait += 1
            if self.wait >= self.cfg.patience and epoch > 0:
                state.stop_training = True
                self.stopped_epoch = epoch
                state.notes.append(f"stopped early after epoch {epoch + 1}")

    def state_dict(self):
        return {"best": self.best, "best_epoch": self.best_epoch, "best_weights": self.best_weights,
                "wait": self.wait, "stopped_epoch": self.stopped_epoch}

    def load_state_dict(self, state):
        self.best, self.best_epoch, self.best_weights = state["best"], state["best_epoch"], state["best_weights"]
        self.wait, self.stopped_epoch = state["wait"], state["stopped_epoch"]

    def on_train_end(self, state):
        last = state.epoch - 1  # state.epoch counts the epochs done
        if self.cfg.restore_best and self.best_weights is not None and self.best_epoch != last:
            state.model.load_state_dict(self.best_weights)
            state.notes.append(f"restored the weights of epoch {self.best_epoch + 1} "
                               f"({self.cfg.monitor} {self.best:.4f})")


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by `factor` when `monitor` has not improved for `patience` epochs,
    as Keras' ReduceLROnPlateau does: an improvement beats the best by `min_delta` (absolute); once
    `patience` epochs in a row have not improved, the rate drops (not below `min_lr`), the count
    restarts and `cooldown` epochs pass before it counts again. (torch's own scheduler waits one
    epoch longer: it reduces after patience + 1 bad epochs.)"""

    def __init__(self, cfg: ReduceLRConfig, optimizer: torch.optim.Optimizer):
        self.cfg, self.optimizer = cfg, optimizer
        self.mode = metric_mode(cfg.monitor)
        self.best = math.inf if self.mode == "min" else -math.inf
        self.wait = self.cooldown = 0

    def on_epoch_end(self, state, epoch, logs):
        value = logs[self.cfg.monitor]
        if self.cooldown > 0:
            self.cooldown -= 1
            self.wait = 0
        if _better(self.mode, value, self.best, self.cfg.min_delta):
            self.best, self.wait = value, 0
        elif self.cooldown == 0:
            self.wait += 1
            if self.wait >= self.cfg.patience:
                self._reduce(state, epoch)

    def _reduce(self, state, epoch: int) -> None:
        reduced = False
        for group in self.optimizer.param_groups:
            old = float(group["lr"])
            new = max(old * self.cfg.factor, self.cfg.min_lr)
            if old - new > 1e-12:
                if isinstance(group["lr"], torch.Tensor):  # a device learning rate a captured graph reads: in place
                    group["lr"].fill_(new)
                else:
                    group["lr"] = new
                reduced = True
        if reduced:
            state.notes.append(f"epoch {epoch + 1}: learning rate reduced to {float(self.optimizer.param_groups[0]['lr']):.3g}")
            self.cooldown, self.wait = self.cfg.cooldown, 0

    def state_dict(self):
        return {"best": self.best, "wait": self.wait, "cooldown": self.cooldown}

    def load_state_dict(self, state):
        if "num_bad_epochs" in state:  # a checkpoint from before: torch's scheduler's state
            self.best, self.wait, self.cooldown = state["best"], state["num_bad_epochs"], state.get("cooldown_counter", 0)
            return
        self.best, self.wait, self.cooldown = state["best"], state["wait"], state["cooldown"]


class CpuWatch(Callback):
    """Moves the training thread count with the load (cpus.py): every `every` seconds it measures
    the CPUs other programs keep busy; down at once when they take ours, back up after two quiet
    looks. Every change is noted, recorded in `state.cpu["changes"]` (run.json) and checkpointed,
    so a resume continues on the count the run had. Off when the count was pinned
    (TRAINLAB_THREADS, OMP_NUM_THREADS), on a GPU and for a small dense stack."""

    def __init__(self, active: bool, most: int, every: float = 2.0):
        self.active, self.most, self.every = active, most, every
        self.changes: list[dict] = []
        self.sample, self.quiet = None, 0

    def on_train_begin(self, state: TrainState) -> None:
        self.sample = cpu_sample() if self.active else None

    def on_batch_end(self, state: TrainState, batch: int, logs: dict) -> None:
        if self.sample is None or time.monotonic() - self.sample.at < self.every:
            return
        others = busy_elsewhere(self.sample)
        self.sample = cpu_sample()
        now = torch.get_num_threads()
        free = max(1, min(self.most, self.most - math.floor(others + 0.4)))
        if free < now:
            self._change(state, free, others)
        elif free > now:
            self.quiet += 1
            if self.quiet >= 2:
                self._change(state, free, others)
        else:
            self.quiet = 0

    def _change(self, state: TrainState, threads: int, others: float) -> None:
        self.quiet = 0
        torch.set_num_threads(threads)
        where = {"epoch": state.epoch + 1, "step": state.step}
        self.changes.append({**where, "threads": threads, "busy_elsewhere": round(others, 2)})
        state.cpu["changes"] = list(self.changes)
        state.notes.append(f"note: epoch {where['epoch']} step {where['step']}: now {threads} thread"
                           f"{'s' * (threads > 1)} ({others:.1f} CPUs busy with other programs)")

    def state_dict(self) -> dict:
        return {"threads": torch.get_num_threads(), "changes": self.changes} if self.changes else {}

    def load_state_dict(self, sd: dict) -> None:
        self.changes = list(sd.get("changes", []))
        if sd.get("threads"):
            torch.set_num_threads(int(sd["threads"]))
