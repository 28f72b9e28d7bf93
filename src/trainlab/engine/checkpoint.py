"""Checkpoints for exact resume: what they hold, writing them, and putting the loop back.

A checkpoint holds the model, optimizer (torch's per-parameter state_dict, whichever step strategy
wrote it), LR scheduler and callbacks' state (keyed by callback name), the RNG states of torch (CPU
and CUDA), numpy, Python and the batch generator, the epoch and the next batch, the epoch's
permutation, augmentation draws and running sums, the history and notes. It holds
only tensors and plain Python values, so it is read with `torch.load(weights_only=True)`: a
crafted file cannot run code. It is written atomically at every epoch end, every
`checkpoint_every` seconds mid-epoch, and when a stop is requested.
"""

from __future__ import annotations

import io
import pickle
import random
import re
import time
from pathlib import Path

import numpy as np
import torch

from trainlab.engine.callbacks import Callback
from trainlab.engine.fused import flat_to_per_parameter
from trainlab.engine.state import TrainState
from trainlab.errors import Interrupted, TrainlabError, first_line
from trainlab.fileio import NotRegularFile, atomic_write, open_inside

CHECKPOINT = "checkpoint.pt"
FORMAT = 3  # 2: weights_only, callbacks by key; 3: optimizer state per parameter always, the epoch's augmentation draws
READS = (2, 3)  # format 2 is upgraded when read (upgrade_format_2); 1 (trainlab 0.1, pickled numpy state) is refused


# ---------------------------------------------------------------------------------------------
# RNG states as tensors and plain values
# ---------------------------------------------------------------------------------------------

def rng_state(gen: torch.Generator) -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, mt, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state(), "batch_gen": gen.get_state(),
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "python": {"version": version, "state": list(mt), "gauss_next": gauss_next},
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict, gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    gen.set_state(state["batch_gen"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------
# Snapshot and restore
# ---------------------------------------------------------------------------------------------

def callback_keys(callbacks: list[Callback]) -> list[str]:
    """Each callback's key, made unique by a '#2', '#3' suffix when a class appears twice."""
    seen: dict[str, int] = {}
    keys = []
    for cb in callbacks:
        seen[cb.key] = seen.get(cb.key, 0) + 1
        keys.append(cb.key if seen[cb.key] == 1 else f"{cb.key}#{seen[cb.key]}")
    return keys


def snapshot(state: TrainState, callbacks: list[Callback]) -> dict:
    """The checkpoint payload for the loop's current position."""
    state.train_step.sync()  # a captured step runs ahead of the host's scheduler
    states = {k: cb.state_dict() for k, cb in zip(callback_keys(callbacks), callbacks)}
    mid_epoch = state.perm is not None
    return {"format": FORMAT, "epoch": state.epoch, "step": state.step, "perm": state.perm, "draws": state.draws,
            "loss_sum": state.loss_sum if mid_epoch else None, "correct": state.correct if mid_epoch else None,
            "epoch_lr": state.epoch_lr, "history": state.history, "notes": state.notes,
            "stop_training": state.stop_training, "model": state.model.state_dict(),
            "optimizer": state.optimizer.state_dict(),
            "scheduler": state.scheduler.state_dict() if state.scheduler is not None else None,
            "callbacks": {k: v for k, v in states.items() if v}, "rng": rng_state(state.gen)}


def restore(ckpt: dict, state: TrainState, callbacks: list[Callback]) -> None:
    """Put the loop back exactly where the checkpoint left it."""
    keys = callback_keys(callbacks)
    saved = dict(ckpt["callbacks"])
    for key, cb in zip(keys, callbacks):
        if key in saved:
            cb.load_state_dict(saved.pop(key))
        elif cb.state_dict():
            raise TrainlabError(f"the checkpoint has no state for callback {key}; resume with the callbacks the run "
                                f"was trained with")
    if saved:
        raise TrainlabError(f"the checkpoint holds state for callback(s) {', '.join(sorted(saved))} that this resume "
                            f"lacks; pass the same callbacks as the original run")
    if ckpt["format"] == 2:
        upgrade_format_2(ckpt, state)
    state.model.load_state_dict(ckpt["model"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    if state.scheduler is not None and ckpt["scheduler"] is not None:
        state.scheduler.load_state_dict(ckpt["scheduler"])
    state.epoch, state.step, state.epoch_lr = ckpt["epoch"], ckpt["step"], ckpt["epoch_lr"]
    state.history, state.notes = list(ckpt["history"]), list(ckpt["notes"])
    state.stop_training = bool(ckpt["stop_training"])
    dev = state.device
    state.perm = None if ckpt["perm"] is None else ckpt["perm"].to(dev)
    state.draws = None if ckpt.get("draws") is None else ckpt["draws"].to(dev)
    if ckpt["loss_sum"] is not None:  # in place: the step holds these very tensors
        state.loss_sum.copy_(ckpt["loss_sum"])
        state.correct.copy_(ckpt["correct"])
    set_rng_state(ckpt["rng"], state.gen)


def upgrade_format_2(ckpt: dict, state: TrainState) -> None:
    """A format-2 checkpoint read by this trainlab: a fused dense run's optimizer state was saved over
    its one flat buffer ("blocks", or "concat" before that key existed) and becomes torch's
    per-parameter state; a mid-epoch one of an augmenting run lacks the epoch's draws, which are
    drawn afresh (the rest of that epoch augments differently from the uninterrupted run)."""
    layout = ckpt.get("flat_layout", "concat")
    if layout is not None:
        ckpt["optimizer"] = flat_to_per_parameter(ckpt["optimizer"], state.model, layout)
    if ckpt["perm"] is not None and state.augment is not None and ckpt.get("draws") is None:
        ckpt["draws"] = state.augment.draw(len(ckpt["perm"]), state.gen)


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------

def save_checkpoint(path: Path, state: TrainState, callbacks: list[Callback]) -> None:
    buf = io.BytesIO()
    torch.save(snapshot(state, callbacks), buf)
    atomic_write(path, buf.getvalue())


def load_checkpoint(path: Path) -> dict:
    """A checkpoint's payload, read without running any code from the file."""
    fix = "delete it and resume from the start with `trainlab train RECIPE --seed N`, or remove the run (`trainlab runs rm`)"
    try:
        with open_inside(path.parent, path.name) as fh:  # a regular file inside the run folder, no link followed
            ckpt = torch.load(fh, map_location="cpu", weights_only=True)
    except NotRegularFile as exc:
        raise TrainlabError(f"{path}: {exc.why}; {fix}") from None
    except FileNotFoundError:
        raise TrainlabError(f"{path}: no checkpoint; the run stopped before its first one") from None
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        if found is None:  # not a pickle that names code: random or damaged bytes
            raise TrainlabError(f"{path}: corrupt or truncated checkpoint (not a checkpoint's contents); {fix}") from None
        raise TrainlabError(f"{path}: refused: it holds objects other than tensors and plain values "
                            f"({found.group(1)}); it was not written by trainlab: {fix}") from None
    except Exception as exc:  # damaged bytes surface as any of a dozen errors from zipfile, pickle and torch
        raise TrainlabError(f"{path}: corrupt or truncated checkpoint ({type(exc).__name__}: {first_line(exc)}); {fix}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") not in READS:
        found = ckpt.get("format", ckpt.get("version")) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise TrainlabError(f"{path}: checkpoint format {found!r}, this trainlab reads formats "
                            f"{', '.join(map(str, READS))}; {fix}")
    return ckpt


class Checkpointer(Callback):
    """Saves a checkpoint at every epoch end, every `every` seconds mid-epoch, and on a stop request.

    Put it last in the callback list, so that it saves the other callbacks' state after they ran."""

    def __init__(self, path: Path, every: float, callbacks: list[Callback]):
        self.path, self.every, self.callbacks = Path(path), every, callbacks
        self.next_save = 0.0

    def save(self, state: TrainState) -> None:
        save_checkpoint(self.path, state, self.callbacks)
        self.next_save = time.perf_counter() + self.every

    def on_train_begin(self, state):
        self.next_save = time.perf_counter() + self.every

    def on_batch_end(self, state, batch, logs):
        # the loop has just checked that the loss is finite: never checkpoint a diverged state
        if time.perf_counter() >= self.next_save and state.step < state.steps_per_epoch:
            self.save(state)

    def on_epoch_end(self, state, epoch, logs):
        self.save(state)

    def on_exception(self, state, exc):
        if isinstance(exc, Interrupted):  # raised between steps: the state is consistent
            self.save(state)
