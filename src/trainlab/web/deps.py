"""What every router needs, as FastAPI dependencies (`SettingsDep`, `RunDirDep`, ...): the settings,
the run index, loaded runs (an LRU cache: a model and its test-set logits are loaded once, not per
request), the job queue, the models to predict with, the inference limiter, and the guards on input.
Each lives on its app's state, never in a module global."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Annotated

import anyio
import torch
from fastapi import Depends, HTTPException, Request

from trainlab.data.registry import load_dataset
from trainlab.errors import TrainlabError
from trainlab.runs.files import open_index
from trainlab.runs.record import RUN_ID_RE, Metrics, resolve_run_dir
from trainlab.runs.run import Run, load_run
from trainlab.settings import Settings
from trainlab.web.jobs import JobQueue

MAX_UPLOAD_BYTES = 8 << 20  # per request
MAX_FILES = 64  # per predict request
MAX_PIXEL_IMAGES = 256  # images per JSON pixels request
INFERENCE_THREADS = 4  # models run at most this many at once: more only adds threads, memory and queueing


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
        run = load_run(run_id, self.settings)  # outside the lock: other runs stay served meanwhile
        with self.lock:
            run = self.runs.setdefault(run_id, run)  # two first requests at once: the first load wins
            while len(self.runs) > self.size:
                old, _ = self.runs.popitem(last=False)
                self.logits.pop(old, None)
            return run

    def test_logits(self, run_id: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        run = self.run(run_id)
        with self.lock:
            if run_id in self.logits:
                return self.logits[run_id]
        found = run.logits("test", self.settings)
        with self.lock:
            return self.logits.setdefault(run_id, found)

    def forget(self, run_id: str) -> None:
        with self.lock:
            self.runs.pop(run_id, None)
            self.logits.pop(run_id, None)


class DashboardModels:
    """What the dashboard predicts with: any completed run of its runs folder (torch, cached);
    the default is the newest `mnist-draw` run, else the newest completed run."""

    default_recipe = "mnist-draw"

    def __init__(self, settings: Settings, cache: RunCache):
        self.settings, self.cache = settings, cache

    def servable(self) -> list[dict]:
        runs = [r for r in open_index(self.settings).list(status="completed")
                if (self.settings.runs_dir / r.run_id / "model.safetensors").is_file() and not r.custom_model]
        # drawing first: mnist-draw, then other MNIST models; tuning trials after the runs you trained
        runs.sort(key=lambda r: (r.recipe == self.default_recipe, bool(r.dataset and r.dataset.name == "mnist"),
                                 r.study is None, r.started_at or ""), reverse=True)
        return [model_info(r) for r in runs]

    def get(self, run_id: str | None):
        if run_id is None:
            found = self.servable()
            if not found:
                raise HTTPException(404, "no completed run to predict with; train one first (trainlab train mnist-draw)")
            run_id = found[0]["run_id"]
        return self.cache.run(checked_run_dir(run_id, self.settings).name)


class ServedModel:
    """What `trainlab serve RUN` predicts with: that one run, through torch or onnxruntime."""

    def __init__(self, predictor, info: dict):
        self.predictor, self.info = predictor, info

    def servable(self) -> list[dict]:
        return [self.info]

    def get(self, run_id: str | None):
        if run_id not in (None, self.info["run_id"]):
            raise HTTPException(404, f"no run '{str(run_id)[:80]}' here: this server serves {self.info['run_id']}")
        return self.predictor


def model_info(record) -> dict:
    return {"run_id": record.run_id, "recipe": record.recipe, "dataset": record.dataset.name if record.dataset else None,
            "classes": record.dataset.classes if record.dataset else [], "test_acc": (record.metrics or Metrics()).test_acc,
            "started_at": record.started_at, "study": record.study}


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_runs(request: Request) -> RunCache:
    return request.app.state.runs


def get_jobs(request: Request) -> JobQueue:
    return request.app.state.jobs


def get_models(request: Request):
    """The app's models to predict with (DashboardModels, or ServedModel under `trainlab serve`)."""
    return request.app.state.models


def get_data_roots(request: Request) -> tuple[str, ...]:
    return getattr(request.app.state, "data_roots", ())


def get_datasets(request: Request) -> "DatasetCache":
    return request.app.state.datasets


def get_limiter(request: Request) -> anyio.CapacityLimiter:
    """The app's bound on models running at once (made on first use: it needs the event loop's thread)."""
    state = request.app.state
    if getattr(state, "limiter", None) is None:
        state.limiter = anyio.CapacityLimiter(INFERENCE_THREADS)
    return state.limiter


def get_index(settings: Annotated[Settings, Depends(get_settings)]):
    return open_index(settings)


def checked_run_dir(run_id: str, settings: Settings) -> Path:
    """A run folder from a validated id; 404 for an id that is malformed or unknown."""
    if not RUN_ID_RE.match(run_id):
        raise HTTPException(404, f"no run '{run_id[:80]}': run ids are letters, digits, '.', '_' and '-'")
    try:
        found = resolve_run_dir(run_id, settings)
    except TrainlabError as exc:
        raise HTTPException(404, str(exc)) from None
    if found.name != run_id or found.resolve().parent != settings.runs_dir.resolve():
        raise HTTPException(404, f"no run '{run_id}' (did you mean {found.name}?)")
    return found


def get_run_dir(run_id: str, settings: Annotated[Settings, Depends(get_settings)]) -> Path:
    """The `{run_id}` path parameter as a checked run folder."""
    return checked_run_dir(run_id, settings)


class DatasetCache:
    """The Data page's datasets, the last few loaded (per app, not per process)."""

    def __init__(self, settings: Settings, size: int = 3):
        self.settings, self.size = settings, size
        self.loaded: OrderedDict[str, object] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, name: str):
        with self.lock:
            if name in self.loaded:
                self.loaded.move_to_end(name)
                return self.loaded[name]
        ds = load_dataset(name, settings=self.settings, skip_unreadable=True)
        with self.lock:
            ds = self.loaded.setdefault(name, ds)
            while len(self.loaded) > self.size:
                self.loaded.popitem(last=False)
            return ds


SettingsDep = Annotated[Settings, Depends(get_settings)]
RunsDep = Annotated[RunCache, Depends(get_runs)]
JobsDep = Annotated[JobQueue, Depends(get_jobs)]
ModelsDep = Annotated[object, Depends(get_models)]
DataRootsDep = Annotated[tuple, Depends(get_data_roots)]
DatasetsDep = Annotated[DatasetCache, Depends(get_datasets)]
LimiterDep = Annotated[anyio.CapacityLimiter, Depends(get_limiter)]
IndexDep = Annotated[object, Depends(get_index)]
RunDirDep = Annotated[Path, Depends(get_run_dir)]
