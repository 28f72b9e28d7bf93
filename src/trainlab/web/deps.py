"""What every router needs: the settings, the run index, loaded runs (an LRU cache: a model and its
test-set logits are loaded once, not per request), the job queue, and the guards on input."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import torch
from fastapi import HTTPException, Request

from trainlab.errors import TrainlabError
from trainlab.record import RUN_ID_RE, resolve_run_dir
from trainlab.runs import Run, load_run, open_index
from trainlab.settings import Settings

MAX_UPLOAD_BYTES = 8 << 20  # per request
MAX_FILES = 64  # per predict request


class RunCache:
    """Loaded runs and their test-set logits, the `size` most recently used."""

    def __init__(self, settings: Settings, size: int = 4):
        self.settings, self.size = settings, size
        self.runs: OrderedDict[str, Run] = OrderedDict()
        self.logits: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self.lock = threading.Lock()

    def run(self, run_id: str) -> Run:
        with self.lock:
            if run_id in self.runs:
                self.runs.move_to_end(run_id)
                return self.runs[run_id]
            run = load_run(run_id, self.settings)
            self.runs[run_id] = run
            while len(self.runs) > self.size:
                old, _ = self.runs.popitem(last=False)
                self.logits.pop(old, None)
            return run

    def test_logits(self, run_id: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        run = self.run(run_id)
        with self.lock:
            if run_id not in self.logits:
                self.logits[run_id] = run.logits("test", self.settings)
            return self.logits[run_id]

    def forget(self, run_id: str) -> None:
        with self.lock:
            self.runs.pop(run_id, None)
            self.logits.pop(run_id, None)


def settings(request: Request) -> Settings:
    return request.app.state.settings


def index(request: Request):
    return open_index(request.app.state.settings)


def run_dir(run_id: str, request: Request) -> Path:
    """A run folder from a validated id; 404 for an id that is malformed or unknown."""
    if not RUN_ID_RE.match(run_id):
        raise HTTPException(404, f"no run '{run_id[:80]}': run ids are letters, digits, '.', '_' and '-'")
    try:
        found = resolve_run_dir(run_id, request.app.state.settings)
    except TrainlabError as exc:
        raise HTTPException(404, str(exc)) from None
    if found.name != run_id or found.resolve().parent != request.app.state.settings.runs_dir.resolve():
        raise HTTPException(404, f"no run '{run_id}' (did you mean {found.name}?)")
    return found
