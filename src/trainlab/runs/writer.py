"""`RunWriter`: the callback that writes one run's folder and index entry as it trains (record,
history, best weights, events, heartbeat, final files), holding the folder's lock throughout."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import torch

from trainlab.engine.callbacks import Callback
from trainlab.engine.checkpoint import CHECKPOINT
from trainlab.engine.state import TrainState
from trainlab.errors import NotResumable, StopRun, TrainlabError, first_line
from trainlab.fileio import atomic_write
from trainlab.history import LiveCurve, best_epoch
from trainlab.recipes import Recipe
from trainlab.runs.events import EVENTS, EventLog
from trainlab.runs.files import history_csv, new_run_id, now, open_index, read_recipe, save_weights, versions
from trainlab.runs.record import (
    LOCK,
    RUN_HEARTBEAT_SECONDS,
    DatasetInfo,
    ProcessInfo,
    RunLock,
    RunRecord,
    read_record,
    resolve_run_dir,
)
from trainlab.settings import Settings
from trainlab.system.signals import Interrupt
from trainlab.system.usage import UsageSampler
from trainlab.version import __version__


def check_resumable(run_dir: Path) -> tuple[RunRecord, Recipe]:
    """The record and recipe of a run that resume can continue; `NotResumable` (one line with the
    fix) for a completed run, one whose process still trains it, or one without a checkpoint."""
    record, recipe = read_record(run_dir), read_recipe(run_dir)
    again = f"`trainlab train {recipe.name} --seed {recipe.seed}`"
    if record.status == "completed":
        raise NotResumable(f"run {run_dir.name} already completed; train again with {again}")
    if record.live_status() == "running":
        who = f"pid {record.process.pid} on {record.process.host}" if record.process else "another process"
        raise NotResumable(f"run {run_dir.name} is being trained right now by {who}; stop that process first "
                           f"(Ctrl-C in its terminal, or Stop on the dashboard), then resume")
    if not (run_dir / CHECKPOINT).is_file():
        raise NotResumable(f"run {run_dir.name} has no checkpoint (it stopped before its first one); start it again with {again}")
    return record, recipe


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
        self.curve = LiveCurve()  # the live chart's smoothed training curve (history.py)
        self.usage: UsageSampler | None = None  # CPU, memory, threads, GPU: `system` events and run.json's `system`

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
        record, recipe = check_resumable(run_dir)
        return cls(run_dir, recipe, open_index(settings.with_(runs_dir=run_dir.parent)), record, record.custom_model)

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT

    def on_train_begin(self, state: TrainState) -> None:
        self.usage = UsageSampler(state.device)
        live = dict(process=ProcessInfo.current(), heartbeat_at=now(), threads=torch.get_num_threads(),
                    processes=state.group.world if state.group is not None else 1, precision=state.precision,
                    train_step=state.train_step.kind)
        if self.record is not None:  # resumed
            self.record = self.record.model_copy(update={"status": "running", "ended_at": None, "error": None,
                                                         "resumed_at": [*self.record.resumed_at, now()], **live})
        else:
            d = state.data
            self.record = RunRecord(
                run_id=self.run_id, recipe=self.recipe.name, recipe_digest=self.recipe.digest(), status="running",
                seed=self.recipe.seed, device=str(state.device), versions=versions(), started_at=now(),
                custom_model=self.custom_model, preprocess=d.preprocess.to_dict(), **live, cpu=state.cpu or None,
                precision_reason=state.precision_reason,
                study=self.study and self.study[0], trial=self.study and self.study[1],
                dataset=DatasetInfo(name=d.name, source=d.source, classes=d.classes, n_train=len(d.x_train),
                                    n_val=0 if d.x_val is None else len(d.x_val), n_test=len(d.x_test),
                                    corrections=d.info.get("corrections")))
            atomic_write(self.run_dir / "recipe.yaml", self.recipe.to_yaml())
        self.record.save(self.run_dir)
        if self.store:
            self.store.record_start(self.record, self.recipe.to_dict(), self.run_dir)
        self.events.append("status", status="running", epochs=self.recipe.epochs, steps=state.steps_per_epoch)
        self.next_beat = time.monotonic() + RUN_HEARTBEAT_SECONDS

    def on_batch_end(self, state, batch, logs):
        done = state.epoch * state.steps_per_epoch + batch + 1
        n = len(state.data.x_train)
        seen = min((batch + 1) * self.recipe.batch_size, n)
        smooth_loss, smooth_acc = self.curve.update(state.epoch, seen, n, logs["loss"], logs["acc"])
        self.events.append("batch", epoch=state.epoch + 1, step=batch + 1, steps=state.steps_per_epoch,
                           loss=logs["loss"], acc=logs["acc"], batch_loss=logs["batch_loss"],
                           smooth_loss=smooth_loss, smooth_acc=smooth_acc,
                           progress=done / (self.recipe.epochs * state.steps_per_epoch))
        self._usage(state, state.epoch + 1, batch + 1)

    def _usage(self, state, epoch: int, step: int, every: float | None = None) -> None:
        """A `system` event when the sampler has a new sample (every 2 s; at an epoch's end, 0.2 s)."""
        sample = self.usage.maybe_sample(every) if self.usage is not None else None
        if sample is not None:
            self.events.append("system", epoch=epoch, step=step, steps=state.steps_per_epoch,
                               threads_torch=torch.get_num_threads(), **sample)
        if time.monotonic() >= self.next_beat:
            self._beat()

    def _beat(self) -> None:
        self.record = self.record.model_copy(update={"heartbeat_at": now()})
        self.record.save(self.run_dir)
        self.next_beat = time.monotonic() + RUN_HEARTBEAT_SECONDS

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
        self._usage(state, logs["epoch"], state.steps_per_epoch, every=0.2)  # short runs get their samples too
        self._beat()

    def on_test_end(self, state, metrics):
        """Every file first, the record last: a run marked completed has all its files."""
        atomic_write(self.run_dir / "metrics.json", metrics.model_dump_json(indent=2) + "\n")
        self._save_artifacts(state)
        self._mark(state, "completed", None, metrics)

    def on_exception(self, state, exc):
        """The record first (small, most likely to be written on a full disk), then what else can be saved."""
        stopped_at_once = isinstance(exc, (KeyboardInterrupt, Interrupt))  # a second Ctrl-C, or one before training ran
        status = exc.status if isinstance(exc, StopRun) else "interrupted" if stopped_at_once else "failed"
        error = "interrupted" if stopped_at_once else first_line(exc, 500)
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
        if self.usage is not None and self.usage.samples == 0:  # a run shorter than one sampling interval: one now
            try:
                self._usage(state, max(1, len(state.history)), state.steps_per_epoch, every=0.0)
            except Exception:  # noqa: BLE001 - a full disk here must not hide how the run ended
                pass
        timings = {k: getattr(metrics, k) for k in ("data_seconds", "train_seconds", "total_seconds")} if metrics else None
        self.record = self.record.model_copy(update=dict(
            status=status, ended_at=now(), error=error, notes=list(state.notes), ood=state.ood, timings=timings,
            metrics=metrics, epochs=len(state.history), threads=self.record.threads,
            cpu=_cpu_record(self.record.cpu, state.cpu),
            system=_system_record(self.record.system, self.usage.summary() if self.usage else None)))
        if status == "completed":
            self.record.save(self.run_dir)
            self.events.append("status", status=status, error=error, metrics=metrics and metrics.model_dump())
            if self.store:
                self.store.record_end(self.record, state.history, self.recipe.monitor)
        else:  # ending badly, perhaps on a full disk: each place told on its own, the record above all
            failures = []
            for write in (lambda: self.record.save(self.run_dir, last_resort=True),
                          lambda: self.events.append("status", status=status, error=error, metrics=metrics and metrics.model_dump()),
                          lambda: self.store and self.store.record_end(self.record, state.history, self.recipe.monitor)):
                try:
                    write()
                except Exception as exc:  # noqa: PERF203 - the others are still worth a try
                    failures.append(exc)
            if failures:
                raise failures[0]
        if status == "completed":
            self.lock.release()


def _system_record(recorded: dict | None, now: dict | None) -> dict | None:
    """run.json's `system`: this process's usage, joined with what the run's earlier processes used
    (a resumed run): the higher peaks, the sample-weighted means."""
    if not recorded or not now:
        return now or recorded
    out = dict(now)
    n0, n1 = recorded.get("samples") or 0, now.get("samples") or 0
    for k in ("peak_rss_mb", "peak_gpu_mem_mb"):
        values = [v for v in (recorded.get(k), now.get(k)) if v is not None]
        out[k] = max(values) if values else None
    for k in ("cpu_mean", "starved_fraction", "gpu_util_mean"):
        a, b = recorded.get(k), now.get(k)
        if a is not None and b is not None and n0 + n1:
            out[k] = round((a * n0 + b * n1) / (n0 + n1), 3)
        elif a is not None:
            out[k] = a
    out["samples"] = n0 + n1
    return out


def _cpu_record(recorded: dict | None, now: dict) -> dict | None:
    """run.json's `cpu`: how the run's first process chose its threads, with every change CpuWatch
    made since (a resumed run keeps its first process's choice)."""
    out = dict(recorded or now or {})
    if now.get("changes"):
        out["changes"] = now["changes"]
    return out or None
