"""Training a recipe end to end: `build` the parts (build.py), `fit` them (engine/loop.py), `finish`
with the test pass. `train()`, `resume()` and `rerun()` are the public entry points.

What happens around training (the progress printer, the run writer, the checkpointer, your own
callbacks) is a list of callbacks, so a tuner, a dashboard or a multi-process launcher adds its own
instead of cutting these functions."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from trainlab.data.readers import Dataset
from trainlab.engine.callbacks import Callback
from trainlab.engine.checkpoint import CHECKPOINT, load_checkpoint, restore
from trainlab.engine.distributed import Group, local_device, teardown
from trainlab.engine.distributed import setup as setup_group
from trainlab.engine.inference import calibrate_ood, loss_and_accuracy, predict_logits
from trainlab.engine.loop import fit
from trainlab.engine.state import TrainState
from trainlab.errors import StopRun, TrainlabError
from trainlab.recipes import Recipe
from trainlab.runs.files import final_metrics, open_runs_folder, read_recipe
from trainlab.runs.record import OODThresholds, RunRecord, read_record, resolve_run_dir
from trainlab.runs.run import Run
from trainlab.runs.writer import RunWriter
from trainlab.settings import Settings, load_settings
from trainlab.system.cpus import cpu_sample
from trainlab.system.devices import pick_device, warm_up
from trainlab.system.process_wide import caller_state_kept
from trainlab.training.build import build, progress_callback, resolve_recipe, standard_callbacks
from trainlab.training.threads import match_threads, training_threads


def finish(state: TrainState, callbacks: list[Callback], timings: dict) -> dict:
    """The final test pass, out-of-distribution calibration, the run's metrics; then on_test_end."""
    r, d, net = state.recipe, state.data, state.model
    logits = predict_logits(net, d.x_test, d.preprocess, r.eval_batch_size, state.device, r.tta)
    test_loss, test_acc = loss_and_accuracy(logits, d.y_test)
    x_cal = d.x_val if d.x_val is not None else d.x_test
    # the thresholds come from the validation split; when that is the test split, reuse its logits
    reuse = logits if x_cal is d.x_test and r.tta == "none" else None
    state.ood = OODThresholds(**calibrate_ood(net, x_cal, d.preprocess, r.eval_batch_size, state.device, logits=reuse))
    state.metrics = final_metrics(state.history, r.monitor, test_loss, test_acc, **timings)
    # the printers last: "saved ..." is said only once the run writer has saved
    for cb in sorted(callbacks, key=lambda c: getattr(c, "reports_saved", False)):
        cb.on_test_end(state, state.metrics)
    return state.metrics


def notify_exception(state: TrainState, callbacks: list[Callback], exc: BaseException) -> None:
    """Tell every callback that training stopped; a failure in one of them is noted on the first
    exception, never raised over it."""
    for cb in callbacks:
        try:
            cb.on_exception(state, exc)
        except Exception as other:  # e.g. a full disk while marking the run failed
            exc.add_note(f"while handling it, {cb.key} failed too: {other}")


@dataclass
class Session:
    """What every run's training takes besides its recipe and settings (train() and resume() fill it)."""

    model: nn.Module | None = None  # your own module instead of the recipe's
    dataset: Dataset | None = None  # data already in memory instead of the recipe's dataset
    progress: str = "auto"  # auto, bar, plain, none
    callbacks: list[Callback] | tuple = ()
    checkpoint_every: float = 60.0  # seconds between mid-epoch checkpoints
    stop: threading.Event | None = None  # set it to stop after the current step, checkpointed
    live_plot: bool | None = None  # in a notebook: the live chart (on unless False)


@dataclass
class Start:
    """How a run begins: a new one (`store` is the run index when it is saved) or an interrupted one
    continued (`writer` reopens its folder on rank 0, every rank reads `checkpoint`)."""

    recipe: Recipe
    store: object | None = None
    writer: RunWriter | None = None
    checkpoint: Path | None = None
    custom_model: str | None = None
    study: tuple[str, int] | None = None
    precision: str | None = None  # a continued run's recorded precision (engine/precision.py)


@contextmanager
def process_group(settings: Settings, device: torch.device) -> Iterator[tuple[Group | None, torch.device]]:
    """Under torchrun, this process's group (torn down when the body ends, however it ends) and its
    device; (None, device) for a single process."""
    group = setup_group(settings, device)
    try:
        yield group, local_device(device, settings)
    finally:
        if group is not None:
            teardown()


def train(recipe: str | Path | Recipe = "mnist-mlp", *, model: nn.Module | None = None, epochs: int | None = None,
          seed: int | None = None, batch_size: int | None = None, overrides: dict | list[str] | None = None,
          settings: Settings | None = None, data_dir: str | Path | None = None, runs_dir: str | Path | None = None,
          db: str | None = None, device: str = "auto", progress: str = "auto", callbacks: list[Callback] | tuple = (),
          save: bool = True, dataset: Dataset | None = None, checkpoint_every: float = 60.0,
          stop: threading.Event | None = None, live_plot: bool | None = None, study: tuple[str, int] | None = None,
          **kw_overrides) -> Run:
    """Train a recipe (a preset name, a YAML path or a Recipe) and return the finished `Run`.

    Overrides: `epochs=`, `seed=`, `batch_size=`, `overrides={"optimizer.lr": 0.01}` or
    `optimizer__lr=0.01`. `model=` trains your own `nn.Module` on the recipe's data and optimizer;
    `stop` (an Event) ends training after the current step, checkpointed (continue it with
    `resume`). In a notebook, progress is a bar in the cell and `live_plot` (on unless False) draws
    loss and accuracy as training goes. `settings` (or `data_dir=`, `runs_dir=`, `db=`) say where
    data, runs and the run index are. `study=(name, trial)` links the run to a tuning study.
    Python's, numpy's and torch's random generators and torch's thread count are as they were after.
    """
    settings = (settings or load_settings()).with_(data_dir=data_dir, runs_dir=runs_dir, db=db)
    session = Session(model, dataset, progress, callbacks, checkpoint_every, stop, live_plot)
    with caller_state_kept():
        where = pick_device(device)  # a bad --device fails before anything is written
        r = resolve_recipe(recipe, overrides, kw_overrides, epochs=epochs, seed=seed, batch_size=batch_size)
        with process_group(settings, where) as (group, where):
            main = group is None or group.is_main  # only rank 0 writes the run, its events and checkpoints
            store = open_runs_folder(settings) if save and main else None  # a bad --runs-dir or --db fails before data loads
            start = Start(r, store=store, custom_model=None if model is None else type(model).__name__, study=study)
            return run_training(start, settings, where, group, session)


def resume(run: str | Path, *, model: nn.Module | None = None, settings: Settings | None = None,
           data_dir: str | Path | None = None, runs_dir: str | Path | None = None, db: str | None = None,
           device: str = "auto", progress: str = "auto", callbacks: list[Callback] | tuple = (),
           dataset: Dataset | None = None, checkpoint_every: float = 60.0, stop: threading.Event | None = None,
           live_plot: bool | None = None) -> Run:
    """Continue an interrupted, failed or stale run (its id, a unique part of one, or its folder)
    from its last checkpoint, in its own folder, with its own recipe, seed and thread count: the
    result is identical to the run never having stopped. A run trained with your own module needs
    `model=` (a fresh instance of the same class)."""
    settings = (settings or load_settings()).with_(data_dir=data_dir, runs_dir=runs_dir, db=db)
    session = Session(model, dataset, progress, callbacks, checkpoint_every, stop, live_plot)
    with caller_state_kept():
        where = pick_device(device)
        with process_group(settings, where) as (group, where):
            writer = RunWriter.reopen(run, settings) if group is None or group.is_main else None
            if writer is not None and writer.custom_model and model is None:
                raise TrainlabError(f"run {writer.run_id} trained a custom model ({writer.custom_model}); "
                                    f"resume it from Python with trainlab.resume(..., model={writer.custom_model}())")
            run_dir = writer.run_dir if writer else resolve_run_dir(run, settings)
            record = writer.record if writer else read_record(run_dir)
            start = Start(writer.recipe if writer else read_recipe(run_dir), writer=writer, checkpoint=run_dir / CHECKPOINT,
                          precision=recorded_precision(record))
            return run_training(start, settings, where, group, session)


def run_training(start: Start, settings: Settings, where: torch.device, group: Group | None, session: Session) -> Run:
    """Build, fit and finish one run as `start` says; the finished `Run`."""
    main = group is None or group.is_main
    t0, sample = time.perf_counter(), cpu_sample()
    warm_up(where)  # CUDA's context comes up while the data loads
    state = build(start.recipe, settings, where, session.model, session.dataset, session.progress != "none" and main,
                  group=group, precision=start.precision)
    data_seconds = time.perf_counter() - t0
    with training_threads(state, settings, sample):  # restored when training ends
        writer = start.writer
        if start.store is not None:
            writer = RunWriter.create(start.recipe, settings, start.store, custom_model=start.custom_model, study=start.study)
        try:  # until training begins, a failure or Ctrl-C leaves no folder behind (only its lock so far)
            cbs = standard_callbacks(state, progress_callback(session.progress if main else "none", session.live_plot),
                                     session.callbacks, writer, session.checkpoint_every)
            if start.checkpoint is not None:
                resume_state(state, cbs, writer, start.checkpoint)
            state.stop, state.run_dir = session.stop, writer and writer.run_dir
            state.run_id = group.broadcast(writer and writer.run_id) if group is not None else writer and writer.run_id
        except BaseException:
            if start.store is not None and writer is not None:  # a new run's writer: nothing recorded yet
                writer.abandon()
            raise
        try:
            t1 = time.perf_counter()
            fit(state, cbs)
            finish(state, cbs, {"train_seconds": time.perf_counter() - t1, "data_seconds": data_seconds,
                                "total_seconds": time.perf_counter() - t0})
        except BaseException as exc:
            if isinstance(exc, StopRun):
                exc.run_id = state.run_id
            notify_exception(state, cbs, exc)
            raise
    return Run(recipe=start.recipe, model=state.model, history=state.history, metrics=state.metrics,
               classes=state.data.classes, preprocess=state.data.preprocess, run_id=state.run_id, run_dir=state.run_dir,
               device=state.device, data=state.data, ood=state.ood, settings=settings)


def resume_state(state: TrainState, cbs: list[Callback], writer: RunWriter | None, checkpoint: Path) -> None:
    """Put the loop back where the run's checkpoint left it. Every rank of a multi-process run reads
    the same checkpoint; its running sums are the totals, so only rank 0 keeps them."""
    notes = match_threads(writer.record.threads) if writer is not None else []
    restore(load_checkpoint(checkpoint), state, cbs)  # CpuWatch's state, when it moved the count, wins
    state.notes += notes
    if state.group is not None and not state.group.is_main:
        state.loss_sum.zero_()
        state.correct.zero_()


def recorded_precision(record: RunRecord) -> str:
    """The precision a recorded run trained in; runs recorded before `precision` existed trained
    bf16-mixed on CUDA and fp32 elsewhere (the device they trained on, wherever they continue)."""
    return record.precision or ("bf16-mixed" if record.device.startswith("cuda") else "fp32")


def rerun(run: str | Path, settings: Settings | None = None, **kw) -> Run:
    """Train a run's exact recipe and seed again, as a new run, in its precision and on the thread count it started with
    (the count changes the order of floating-point sums, so the weights are identical only on the
    same count; TRAINLAB_THREADS chooses another)."""
    settings = settings or load_settings()
    src = resolve_run_dir(run, settings)
    record = read_record(src)
    custom = record.custom_model
    if record.threads and settings.threads is None and record.device == "cpu":
        settings = settings.with_(threads=record.threads)
    if record.precision and settings.precision is None:  # what it trained in, not what auto picks here
        settings = settings.with_(precision=record.precision)
    if custom:
        raise TrainlabError(f"run {src.name} trained a custom model ({custom}); rerun it from Python with "
                            f"trainlab.train('{src / 'recipe.yaml'}', model={custom}())")
    return train(read_recipe(src), settings=settings, **kw)
