"""Checkpoints for exact resume: everything the loop needs to continue as if never stopped.

A checkpoint holds the model, optimizer, LR scheduler and callbacks' state, the RNG states of
torch (CPU and CUDA), numpy, Python and the batch generator, the epoch and the next batch, the
epoch's permutation and running sums, and the history. It is written at every epoch end and
every `checkpoint_every` seconds mid-epoch, atomically (temp file, then rename).
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import torch

from trainlab.runs import atomic_write

CHECKPOINT = "checkpoint.pt"


def rng_state(gen: torch.Generator) -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "batch_gen": gen.get_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict, gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    gen.set_state(state["batch_gen"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, payload: dict) -> None:
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write(path, buf.getvalue())


def load_checkpoint(path: Path) -> dict:
    # weights_only=False: the file holds numpy RNG state and Python tuples; it is our own file,
    # written by this run, in a folder the user owns
    return torch.load(path, map_location="cpu", weights_only=False)
