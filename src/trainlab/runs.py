"""Run records: `runs/<run_id>/` holds recipe.yaml, run.json (the `RunRecord`), history.csv,
metrics.json, events.jsonl, model.safetensors, best.safetensors, checkpoint.pt and curves.png.
Every file but the append-only event log is written to a temp file and renamed.

`RunRecord` is the one typed shape of a run: run.json, the run index (store.py), the CLI and the
web API all read and write it through this module.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import re
import secrets
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save
from torch import nn

from trainlab.version import __version__
from trainlab.callbacks import Callback
from trainlab.checkpoint import CHECKPOINT
from trainlab.data import load_dataset
from trainlab.errors import RunNotFound, StopRun, TrainlabError, first_line
from trainlab.events import EVENTS, EventLog
from trainlab.fileio import atomic_write, load_yaml, read_text
from trainlab.images import expand_inputs, load_file as load_image_file
from trainlab.inference import Predictions, as_batch, classify, predict_logits
from trainlab.history import HISTORY_COLUMNS, best_epoch
from trainlab.metrics import EvalReport, classification_report
from trainlab.models import build_model, place
from trainlab.plots import plot_history, plot_predictions
from trainlab.preprocess import Preprocess
from trainlab.record import (HEARTBEAT_SECONDS, LOCK, RUN_ID_RE, DatasetInfo, ProcessInfo, RunLock, RunRecord, read_record,
                             resolve_run_dir)
from trainlab.recipes import Recipe, differing_keys, flatten_recipe, validate
from trainlab.settings import Settings, load_settings
from trainlab.state import TensorData, TrainState, prepare_data

# ---------------------------------------------------------------------------------------------
# Reading a run folder
# ---------------------------------------------------------------------------------------------

def read_recipe(run_dir: Path) -> Recipe:
    """recipe.yaml of a run folder, validated; a broken one is one line naming the file and the fix."""
    path, fix = run_dir / "recipe.yaml", f"the run folder is damaged: remove it with `trainlab runs rm {run_dir.name}`"
    try:
        data = load_yaml(read_text(path, fix), str(path))
    except yaml.YAMLError as exc:
        raise TrainlabError(f"{path}: not valid YAML ({first_line(exc)}); {fix}") from None
    return validate(data if isinstance(data, dict) else {}, where=f"run {run_dir.name}")


def final_metrics(history: list[dict], monitor: str, test_loss: float, test_acc: float, **timings: float) -> dict:
    """The run's summary: the last epoch, the best one (by the recipe's monitor), test results, timings."""
    last = history[-1] if history else {}
    best = best_epoch(history, monitor)
    return {"test_loss": test_loss, "test_acc": test_acc, "loss": last.get("loss"), "acc": last.get("acc"),
            "val_loss": last.get("val_loss"), "val_acc": last.get("val_acc"), "monitor": monitor,
            "best_epoch": best["epoch"] if best else None, "best_val_acc": best.get("val_acc") if best else None,
            "epochs": len(history), **timings}


# ---------------------------------------------------------------------------------------------
# Files of a run
# ---------------------------------------------------------------------------------------------

def save_weights(model: nn.Module, path: Path, metadata: dict) -> None:
    """safetensors with the metadata packed into one sorted-JSON value under "trainlab": safetensors
    writes its metadata map in hash order, so several keys would make identical weights differ in bytes."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, save(state, metadata={"trainlab": json.dumps(metadata, sort_keys=True)}))


def history_csv(history: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, HISTORY_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in history:
        w.writerow({k: ("" if row.get(k) is None else row[k]) for k in HISTORY_COLUMNS})
    return buf.getvalue()


def read_history(path: Path) -> list[dict]:
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        return [{k: (None if v == "" else (int(v) if k == "epoch" else float(v))) for k, v in r.items()} for r in rows]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, TypeError) as exc:
        raise TrainlabError(f"{path}: unreadable history ({exc}); remove the run with `trainlab runs rm {path.parent.name}`") from None


def versions() -> dict:
    return {"trainlab": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": sys.version.split()[0], "platform": platform.platform()}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_run_id(recipe_name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9-]+", "-", recipe_name).strip("-")[:40] or "run"
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}-{secrets.token_hex(3)}"


def open_runs_folder(settings: Settings):
    """Check that runs can be written under the runs folder and open its index (before any data loads)."""
    root = settings.runs_dir
    if root.exists() and not root.is_dir():
        raise TrainlabError(f"--runs-dir {root}: is a file, not a folder; pass a folder for the run folders")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrainlabError(f"--runs-dir {root}: cannot create it ({exc.strerror}); pass a writable folder") from None
    return open_index(settings)


def open_index(settings: Settings):
    """The run index (store.py); SQLAlchemy is imported only when an index is opened."""
    from trainlab.store import open_store
    return open_store(settings)


# ---------------------------------------------------------------------------------------------
# Writing a run as it trains
# ---------------------------------------------------------------------------------------------

class RunWriter(Callback):
    """Writes one run's folder and index entry as training goes: the record at the start, history,
    best weights and events each epoch, batch events and a heartbeat as they come, everything at
    the end. It holds the folder's lock from creation (or reopening) to the end."""

    def __init__(self, run_dir: Path, recipe: Recipe, store, record: RunRecord | None = None,
                 custom_model: str | None = None, study: tuple[str, int] | None = None):
        self.run_dir, self.recipe, self.store, self.record = run_dir, recipe, store, record
        self.run_id, self.custom_model, self.study = run_dir.name, custom_model, study
        self.lock = RunLock(run_dir).acquire(run_dir.name)
        self.events = EventLog(run_dir / EVENTS)
        self.next_beat = 0.0

    @classmethod
    def create(cls, recipe: Recipe, settings: Settings, store, custom_model: str | None = None,
               study: tuple[str, int] | None = None) -> "RunWriter":
        """A new run folder under the runs folder; `store` is the index (open_runs_folder); `study`
        (name, trial number) links it to a tuning study."""
        run_dir = settings.runs_dir / new_run_id(recipe.name)
        try:
            run_dir.mkdir(parents=True, exist_ok=False)
        except OSError as exc:
            raise TrainlabError(f"{run_dir}: cannot create the run folder ({exc.strerror}); pass a writable --runs-dir") from None
        return cls(run_dir, recipe, store, custom_model=custom_model, study=study)

    @classmethod
    def reopen(cls, run: str | os.PathLike, settings: Settings) -> "RunWriter":
        """The writer of an interrupted, failed or stale run, for `--resume`; a run whose process
        is still alive is refused (its lock is held)."""
        run_dir = resolve_run_dir(run, settings)
        record, recipe = read_record(run_dir), read_recipe(run_dir)
        if record.status == "completed":
            raise TrainlabError(f"run {run_dir.name} already completed; train again with `trainlab train {recipe.name} "
                                f"--seed {recipe.seed}`")
        if not (run_dir / CHECKPOINT).is_file():
            raise TrainlabError(f"run {run_dir.name} has no checkpoint (it stopped before its first one); "
                                f"start it again with `trainlab train {recipe.name} --seed {recipe.seed}`")
        return cls(run_dir, recipe, open_index(settings.with_(runs_dir=run_dir.parent)), record, record.custom_model)

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT

    def on_train_begin(self, state: TrainState) -> None:
        live = dict(process=ProcessInfo.current(), heartbeat_at=now(), threads=torch.get_num_threads())
        if self.record is not None:  # resumed
            self.record = self.record.model_copy(update={"status": "running", "ended_at": None, "error": None,
                                                         "resumed_at": [*self.record.resumed_at, now()], **live})
        else:
            d = state.data
            self.record = RunRecord(
                run_id=self.run_id, recipe=self.recipe.name, recipe_digest=self.recipe.digest(), status="running",
                seed=self.recipe.seed, device=str(state.device), versions=versions(), started_at=now(),
                custom_model=self.custom_model, preprocess=d.preprocess.to_dict(), **live, cpu=state.cpu or None,
                study=self.study and self.study[0], trial=self.study and self.study[1],
                dataset=DatasetInfo(name=d.name, source=d.source, classes=d.classes, n_train=len(d.x_train),
                                    n_val=0 if d.x_val is None else len(d.x_val), n_test=len(d.x_test)))
            atomic_write(self.run_dir / "recipe.yaml", self.recipe.to_yaml())
        self.record.save(self.run_dir)
        if self.store:
            self.store.record_start(self.record, self.recipe.to_dict(), self.run_dir)
        self.events.append("status", status="running", epochs=self.recipe.epochs, steps=state.steps_per_epoch)
        self.next_beat = time.monotonic() + HEARTBEAT_SECONDS

    def on_batch_end(self, state, batch, logs):
        done = state.epoch * state.steps_per_epoch + batch + 1
        self.events.append("batch", epoch=state.epoch + 1, step=batch + 1, steps=state.steps_per_epoch,
                           loss=logs["loss"], acc=logs["acc"], batch_loss=logs["batch_loss"],
                           progress=done / (self.recipe.epochs * state.steps_per_epoch))
        if time.monotonic() >= self.next_beat:
            self._beat()

    def _beat(self) -> None:
        self.record = self.record.model_copy(update={"heartbeat_at": now()})
        self.record.save(self.run_dir)
        self.next_beat = time.monotonic() + HEARTBEAT_SECONDS

    def on_epoch_end(self, state, epoch, logs):
        if not self.run_dir.is_dir():  # deleted while training: stop, rather than re-create a partial folder
            raise TrainlabError(f"the run folder {self.run_dir} was removed while the run was writing to it; "
                                f"the run is lost (train it again)")
        atomic_write(self.run_dir / "history.csv", history_csv(state.history))
        if self.store:
            self.store.record_epochs(self.run_id, state.history, self.recipe.monitor)
        best = best_epoch(state.history, self.recipe.monitor)
        if best is not None and best["epoch"] == logs["epoch"]:
            save_weights(state.model, self.run_dir / "best.safetensors",
                         {"recipe": self.recipe.to_yaml(), "epoch": logs["epoch"], self.recipe.monitor: logs[self.recipe.monitor]})
        self.events.append("epoch", **logs)
        self._beat()

    def on_test_end(self, state, metrics):
        """Every file first, the record last: a run marked completed has all its files."""
        atomic_write(self.run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        self._save_artifacts(state)
        self._mark(state, "completed", None, metrics)

    def on_exception(self, state, exc):
        """The record first (small, most likely to be written on a full disk), then what else can be saved."""
        status = exc.status if isinstance(exc, StopRun) else "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        error = first_line(exc, 500) if not isinstance(exc, KeyboardInterrupt) else "interrupted"
        if self.record is None or not self.run_dir.is_dir():  # nothing recorded yet, or the folder was deleted
            self.lock.release()
            self._remove_if_empty()
            return
        try:
            self._mark(state, status, error, None)
            self._save_artifacts(state)
        finally:
            self.lock.release()

    def abandon(self) -> None:
        """Give up a new run before it began: the lock released, the folder gone if it holds nothing else."""
        self.lock.release()
        self._remove_if_empty()

    def _remove_if_empty(self) -> None:
        """A run stopped before its record was written leaves no folder holding only its lock."""
        try:
            if {p.name for p in self.run_dir.iterdir()} <= {LOCK, "recipe.yaml"}:
                shutil.rmtree(self.run_dir, ignore_errors=True)
        except OSError:
            pass

    def _save_artifacts(self, state: TrainState) -> None:
        atomic_write(self.run_dir / "history.csv", history_csv(state.history))
        # metadata describes the model (recipe, version), not the run: the same training gives the same bytes
        save_weights(state.model, self.run_dir / "model.safetensors", {"recipe": self.recipe.to_yaml(), "trainlab": __version__})
        # curves.png is drawn on first view (curves_png): matplotlib would hold the command ~1 s

    def _mark(self, state: TrainState, status: str, error: str | None, metrics: dict | None) -> None:
        timings = {k: metrics[k] for k in ("data_seconds", "train_seconds", "total_seconds")} if metrics else None
        self.record = self.record.model_copy(update=dict(
            status=status, ended_at=now(), error=error, notes=list(state.notes), ood=state.ood, timings=timings,
            metrics=metrics, epochs=len(state.history), threads=self.record.threads,
            cpu=_cpu_record(self.record.cpu, state.cpu)))
        if status == "completed":
            self.record.save(self.run_dir)
            self.events.append("status", status=status, error=error, metrics=metrics)
            if self.store:
                self.store.record_end(self.record, state.history, self.recipe.monitor)
        else:  # ending badly, perhaps on a full disk: each place told on its own, the record above all
            failures = []
            for write in (lambda: self.record.save(self.run_dir, last_resort=True),
                          lambda: self.events.append("status", status=status, error=error, metrics=metrics),
                          lambda: self.store and self.store.record_end(self.record, state.history, self.recipe.monitor)):
                try:
                    write()
                except Exception as exc:  # noqa: PERF203 - the others are still worth a try
                    failures.append(exc)
            if failures:
                raise failures[0]
        if status == "completed":
            self.lock.release()


def _cpu_record(recorded: dict | None, now: dict) -> dict | None:
    """run.json's `cpu`: how the run's first process chose its threads, with every change CpuWatch
    made since (a resumed run keeps its first process's choice)."""
    out = dict(recorded or now or {})
    if now.get("changes"):
        out["changes"] = now["changes"]
    return out or None


@dataclass
class Curve:
    """A run's learning curves without its model (what plots.plot_history needs)."""

    recipe: Recipe
    history: list[dict]
    run_id: str | None = None


def curves_png(run: str | os.PathLike, settings: Settings | None = None) -> Path:
    """The run's learning curves as `curves.png` in its folder, drawn on first view and again
    whenever history.csv is newer (training itself does not wait for matplotlib)."""
    run_dir = resolve_run_dir(run, settings)
    out, history = run_dir / "curves.png", run_dir / "history.csv"
    if not history.is_file():
        raise TrainlabError(f"run {run_dir.name} has no history yet (it stopped before its first epoch ended)")
    if not out.is_file() or out.stat().st_mtime_ns < history.stat().st_mtime_ns:
        plot_history(Curve(read_recipe(run_dir), read_history(history), run_dir.name), out)
    return out


# ---------------------------------------------------------------------------------------------
# A finished run
# ---------------------------------------------------------------------------------------------

@dataclass
class Run:
    """A trained model with its recipe, history and metrics; what `trainlab.train` returns."""

    recipe: Recipe
    model: nn.Module
    history: list[dict]
    metrics: dict
    classes: list[str]
    preprocess: Preprocess
    run_id: str | None = None
    run_dir: Path | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    data: TensorData | None = None  # kept after training; loaded on demand for a saved run
    ood: dict | None = None  # out-of-distribution thresholds calibrated on the validation split
    settings: Settings | None = None  # where its data is found when it is loaded again

    def tensors(self, settings: Settings | None = None) -> TensorData:
        """The run's data splits on its device (kept from training, or loaded again for a saved run)."""
        if self.data is None:
            r = self.recipe
            ds = load_dataset(r.data.name, source=r.data.source, settings=settings or self.settings, test_fraction=r.data.test_fraction,
                              split_seed=r.data.split_seed, image_size=r.data.image_size)
            self.data = prepare_data(ds, r, self.device)
            self.data.preprocess = self.preprocess  # the run's own normalisation, not a refit
        return self.data

    def split(self, split: str = "test", settings: Settings | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(uint8 images (N, C, H, W), labels) of the test or val split."""
        if split not in ("test", "val"):
            raise TrainlabError(f"split {split!r}: use test or val")
        d = self.tensors(settings)
        x, y = (d.x_test, d.y_test) if split == "test" else (d.x_val, d.y_val)
        if x is None:
            raise TrainlabError(f"run {self.run_id}: it has no {split} split (data.validation is none); use --split test")
        return x, y

    def logits(self, split: str = "test", settings: Settings | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits, labels, uint8 images) of the test or val split, on the CPU."""
        x, y = self.split(split, settings)
        logits = predict_logits(self.model, x, self.preprocess, self.recipe.eval_batch_size, self.device, self.recipe.tta)
        return logits.float().cpu(), y.cpu(), x.cpu()

    def evaluate(self, split: str = "test", settings: Settings | None = None, top_k: tuple[int, ...] = (1, 3, 5)) -> EvalReport:
        """Loss, accuracy, top-k, per-class precision/recall/F1, confusion matrix, most-confused pairs."""
        logits, y, _ = self.logits(split, settings)
        return classification_report(logits, y, self.classes, split, ks=top_k)

    def predict(self, inputs, style: str | None = None) -> Predictions:
        """Class probabilities for image files, folders, or dataset-format uint8 arrays."""
        shape = self.preprocess.shape
        if isinstance(inputs, (str, os.PathLike)):
            inputs = [inputs]
        arrays = isinstance(inputs, (np.ndarray, torch.Tensor)) or (
            isinstance(inputs, (list, tuple)) and len(inputs) and isinstance(inputs[0], (np.ndarray, torch.Tensor)))
        if arrays:
            x = as_batch(np.stack([np.asarray(a) for a in inputs]) if isinstance(inputs, (list, tuple)) else inputs, shape)
            return self._classify(x)
        files, images, failures = [], [], []
        for f in expand_inputs(inputs):
            try:
                images.append(load_image_file(f, style or self.preprocess.style, shape)[1])
                files.append(f)
            except ValueError as exc:
                failures.append((f, str(exc)))
        x = as_batch(np.stack(images), shape) if images else torch.zeros((0, *shape), dtype=torch.uint8)
        preds = self._classify(x)
        preds.files, preds.failures = files, failures
        return preds

    def plot_predictions(self, indices=range(15), split: str = "test", out: str | os.PathLike | None = None,
                         cols: int = 3, settings: Settings | None = None):
        """The lesson's picture of predictions on items of a split: each image captioned
        'predicted (confidence) / true' in blue (right) or red (wrong), beside its class probabilities."""
        x, y = self.split(split, settings)
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        preds = self._classify(x[idx.to(x.device)])
        return plot_predictions(preds.inputs, preds.probs, self.classes, y.cpu()[idx].numpy(), cols=cols, path=out)

    def _classify(self, x: torch.Tensor) -> Predictions:
        return classify(self.model, x, self.preprocess, self.classes, self.ood, self.device,
                        self.recipe.eval_batch_size, self.recipe.tta)


def load_run(run: str | os.PathLike, settings: Settings | None = None, device: str = "cpu",
             model: nn.Module | None = None, *, runs_dir: str | os.PathLike | None = None,
             data_dir: str | os.PathLike | None = None) -> Run:
    """Rebuild a saved run (an id, a unique part of one, or a folder): recipe, model with its
    weights, history and metrics. `runs_dir`/`data_dir` override the settings' folders."""
    settings = (settings or load_settings()).with_(runs_dir=runs_dir, data_dir=data_dir)
    run_dir = resolve_run_dir(run, settings)
    record, recipe = read_record(run_dir), read_recipe(run_dir)
    if record.preprocess is None or record.dataset is None:
        raise TrainlabError(f"run {run_dir.name} stopped before its data was recorded; remove it with `trainlab runs rm {run_dir.name}`")
    prep, classes = Preprocess.from_dict(record.preprocess), record.dataset.classes
    weights = run_dir / "model.safetensors"
    if not weights.is_file():
        raise RunNotFound(f"run {run_dir.name} has no model.safetensors (status {record.status}); it did not finish")
    if model is None:
        if record.custom_model:
            raise TrainlabError(f"run {run_dir.name} trained a custom model ({record.custom_model}); pass model= to load it")
        model, _ = build_model(recipe.model, prep.input_shape, len(classes))
    try:
        model.load_state_dict(load_file(weights))
    except Exception as exc:  # safetensors' header errors and torch's shape mismatches
        raise TrainlabError(f"{weights}: cannot load these weights into the run's model ({first_line(exc)}); "
                            f"the file is truncated or from another model: remove the run with `trainlab runs rm {run_dir.name}`") from None
    dev = torch.device(device)
    model = place(model, dev).eval()
    metrics = record.metrics or {}
    return Run(recipe, model, read_history(run_dir / "history.csv"), metrics, classes, prep, record.run_id, run_dir, dev,
               ood=record.ood, settings=settings)


# ---------------------------------------------------------------------------------------------
# The run index and the runs folder
# ---------------------------------------------------------------------------------------------

def reindex(settings: Settings | None = None) -> tuple[list[str], list[str]]:
    """Index run folders that the index lacks; (added ids, warnings about folders skipped)."""
    settings = settings or load_settings()
    store = open_index(settings)
    known = {r.run_id for r in store.list()}
    added, skipped = [], []
    for info_path in sorted(settings.runs_dir.glob("*/run.json")):
        run_dir = info_path.parent
        try:
            record, recipe = read_record(run_dir), read_recipe(run_dir)
            if record.run_id in known:
                continue
            history = read_history(run_dir / "history.csv")
        except TrainlabError as exc:
            skipped.append(str(exc))
            continue
        store.record_start(record, recipe.to_dict(), run_dir)
        store.record_epochs(record.run_id, history, recipe.monitor)
        store.record_end(record)
        added.append(record.run_id)
    return added, skipped


def remove_run(run: str, settings: Settings | None = None) -> str:
    """Delete a run's folder (only ever a direct child of the runs folder) and its index entry; an
    index entry whose folder was deleted by hand is removed too. Returns what was removed."""
    settings = settings or load_settings()
    root = settings.runs_dir
    try:
        run_dir = resolve_run_dir(run, settings)
    except RunNotFound:
        index = open_index(settings)
        if RUN_ID_RE.match(str(run)) and any(r.run_id == str(run) for r in index.list()):
            index.remove(str(run))
            return f"{run} (index entry; its folder was already gone)"
        raise
    if run_dir.resolve().parent != root.resolve() or run_dir.is_symlink():
        raise TrainlabError(f"refusing to delete {run_dir}: it is not a run folder directly inside {root}")
    RunLock(run_dir).acquire(run_dir.name).release()  # never delete a run that is training
    open_index(settings).remove(run_dir.name)
    shutil.rmtree(run_dir)
    return str(run_dir)


def stop_run(run: str, settings: Settings | None = None) -> str:
    """Ask a run training in another process of this host to stop as Ctrl-C does (SIGINT: it stops
    after the current step, checkpointed, marked interrupted, resumable). Returns the run id."""
    settings = settings or load_settings()
    run_dir = resolve_run_dir(run, settings)
    record = read_record(run_dir)
    if record.status != "running":
        raise TrainlabError(f"run {record.run_id} is {record.status}, not running")
    alive = record.process.alive() if record.process else False
    if alive is None:
        raise TrainlabError(f"run {record.run_id} trains on host {record.process.host}; stop it there (Ctrl-C)")
    if not alive:
        raise TrainlabError(f"run {record.run_id}: its process is gone; resume it with `trainlab train --resume {record.run_id}`")
    os.kill(record.process.pid, signal.SIGINT)
    return record.run_id


def compare_runs(runs: list[str], settings: Settings | None = None) -> tuple[list[RunRecord], list[Curve], dict[str, list]]:
    """Records and curves of several runs (from the index: failed runs without weights compare too),
    and the recipe settings that differ between them, side by side."""
    settings = settings or load_settings()
    if len(runs) < 2:
        raise TrainlabError("compare needs two or more runs")
    store = open_index(settings)
    records = [store.get(resolve_run_dir(r, settings).name) for r in runs]
    recipes = [validate(store.recipe(r.run_id)) for r in records]
    flat = [flatten_recipe(rc.to_dict()) for rc in recipes]
    diff = {k: [f.get(k) for f in flat] for k in ["name", *differing_keys(flat)]}
    curves = [Curve(rc, store.history(r.run_id), r.run_id) for rc, r in zip(recipes, records)]
    return records, curves, diff
