"""What every router needs, as FastAPI dependencies (`SettingsDep`, `RunDirDep`, ...): the settings,
the run index, loaded runs (an LRU cache: a model and its test-set logits are loaded once, not per
request), the job queue, the models to predict with, the inference limiter, and the guards on input.
Each lives on its app's state, never in a module global."""

from __future__ import annotations

import asyncio
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Annotated, Protocol

import anyio
import torch
from fastapi import Depends, HTTPException, Request

from trainlab.data.registry import load_dataset
from trainlab.errors import TrainlabError
from trainlab.runs.files import open_index
from trainlab.runs.record import RUN_ID_RE, Metrics, resolve_run_dir
from trainlab.runs.run import Run, check_usable, load_run
from trainlab.runs.store import Store
from trainlab.settings import Settings
from trainlab.web.jobs import JobQueue

MAX_UPLOAD_BYTES = 8 << 20  # per request: the request guard counts every body as it streams in (guard.py)
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
        run = self.cache.run(checked_run_dir(run_id, self.settings).name)
        check_usable(run)  # a failed or diverged run answers nothing (422), as `trainlab serve` refuses it
        return run


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


class ModelSource(Protocol):
    """What a predict route predicts with: `DashboardModels` (any completed run) or `ServedModel` (one)."""

    def servable(self) -> list[dict]: ...

    def get(self, run_id: str | None) -> Predictor: ...


class Predictor(Protocol):
    """A run's model as the predict routes use it: `runs.run.Run` or `serving.export.OnnxRun`."""

    run_id: str
    classes: list[str]
    preprocess: object

    def predict(self, images) -> object: ...


async def run_model(limiter: anyio.CapacityLimiter, limit: float, work):
    """Run a model off the event loop on the app's bounded set of threads, within the server's
    request timeout (504 past it)."""
    try:
        return await asyncio.wait_for(anyio.to_thread.run_sync(work, limiter=limiter), limit)
    except asyncio.TimeoutError:
        raise HTTPException(504, f"the prediction took over {limit:g} s (TRAINLAB_SERVE_TIMEOUT)") from None


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_runs(request: Request) -> RunCache:
    return request.app.state.runs


def get_jobs(request: Request) -> JobQueue:
    return request.app.state.jobs


def get_models(request: Request) -> ModelSource:
    """The app's models to predict with (DashboardModels, or ServedModel under `trainlab serve`)."""
    return request.app.state.models


def get_data_roots(request: Request) -> tuple[str, ...]:
    return getattr(request.app.state, "data_roots", ())


def get_datasets(request: Request) -> "DatasetCache":
    return request.app.state.datasets


def get_reports(request: Request) -> ReportCache:
    return request.app.state.reports


def get_limiter(request: Request) -> anyio.CapacityLimiter:
    """The app's bound on models running at once (made on first use: it needs the event loop's thread)."""
    state = request.app.state
    if getattr(state, "limiter", None) is None:
        state.limiter = anyio.CapacityLimiter(INFERENCE_THREADS)
    return state.limiter


def get_index(settings: Annotated[Settings, Depends(get_settings)]) -> Store:
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


class ReportCache:
    """Built HTML reports, the last few, keyed by their runs and those runs' files' modification times
    (a report is seconds of CPU for many runs): asked again, it is answered from here; one is built
    at a time, so a flood of requests costs one build each, queued."""

    def __init__(self, settings: Settings, size: int = 8):
        self.settings, self.size = settings, size
        self.built: OrderedDict[tuple, str] = OrderedDict()
        self.lock, self.building = threading.Lock(), threading.Lock()

    def key(self, ids: list[str]) -> tuple:
        stamps = []
        for r in ids:
            folder = self.settings.runs_dir / r
            for name in ("run.json", "history.csv", "model.safetensors"):
                try:
                    stamps.append((r, name, os.lstat(folder / name).st_mtime_ns))
                except OSError:
                    stamps.append((r, name, None))
        return tuple(stamps)

    def get(self, ids: list[str], build) -> str:
        key = self.key(ids)
        with self.building:
            with self.lock:
                if key in self.built:
                    self.built.move_to_end(key)
                    return self.built[key]
            html = build()
            with self.lock:
                self.built[key] = html
                while len(self.built) > self.size:
                    self.built.popitem(last=False)
            return html


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
ModelsDep = Annotated[ModelSource, Depends(get_models)]
ServedDep = Annotated[ServedModel, Depends(get_models)]  # `trainlab serve`'s one run (the Open Inference Protocol routes)
DataRootsDep = Annotated[tuple[str, ...], Depends(get_data_roots)]
DatasetsDep = Annotated[DatasetCache, Depends(get_datasets)]
ReportsDep = Annotated[ReportCache, Depends(get_reports)]
LimiterDep = Annotated[anyio.CapacityLimiter, Depends(get_limiter)]
IndexDep = Annotated[Store, Depends(get_index)]
RunDirDep = Annotated[Path, Depends(get_run_dir)]
