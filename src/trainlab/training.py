"""Training a recipe end to end: `build` the parts, `fit` them (loop.py), `finish` with the test pass.

`train()` is the public entry point; it composes those steps. What happens around training
(the progress printer, the run writer, the checkpointer, your own callbacks) is a list of
callbacks, so a tuner, a dashboard or a multi-process launcher adds its own instead of cutting
this function.
"""

from __future__ import annotations

import math
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from trainlab.callbacks import Callback, CpuWatch, EarlyStopping, ReduceLROnPlateau
from trainlab.distributed import local_device, setup as setup_group, teardown, wrap as wrap_ddp
from trainlab.cpus import CpuSample, allowed_cpus, busy_elsewhere, cpu_sample, plan_threads, wait_policy
from trainlab.checkpoint import CHECKPOINT, Checkpointer, load_checkpoint, restore
from trainlab.data import input_spec, load_dataset
from trainlab.errors import StopRun, TrainlabError
from trainlab.fused import FusedDenseStep, dense_plan, fused_applies, optimizer_params
from trainlab.inference import calibrate_ood, loss_and_accuracy, predict_logits
from trainlab.loop import fit, make_scheduler, seed_everything
from trainlab.models import build_model, device_memory, place, size_note, summary_text
from trainlab.optim import make_optimizer
from trainlab.progress import NotebookProgress, ProgressPrinter, in_notebook
from trainlab.readers import Dataset
from trainlab.recipes import Recipe, load_recipe, parse_set
from trainlab.runs import Run, RunWriter, final_metrics, open_runs_folder, read_recipe, resolve_run_dir
from trainlab.record import read_record
from trainlab.runtime import pick_device
from trainlab.settings import Settings, load_settings
from trainlab.state import TrainState, prepare_data


def resolve_recipe(recipe: str | Path | Recipe, overrides: dict | list[str] | None = None,
                   kw_overrides: dict | None = None, **shorthands) -> Recipe:
    """A preset name, YAML path or Recipe with `overrides` ({"optimizer.lr": 0.01} or ["optimizer.lr=0.01"]),
    `optimizer__lr=0.01`-style keywords and shorthands (epochs=, seed=, batch_size=) applied."""
    sets = {k.replace("__", "."): v for k, v in (kw_overrides or {}).items()}
    sets.update(parse_set(overrides))
    return load_recipe(recipe, sets, **shorthands)


def build(r: Recipe, settings: Settings, device: torch.device, model: nn.Module | None = None,
          dataset: Dataset | None = None, progress: bool = False, fuse: bool = True) -> TrainState:
    """Data on the device, the model (the recipe's, or yours), optimizer, scheduler, the loop's state.
    A dense stack on the CPU gets the fused step (trainlab.fused) unless `fuse` or settings.fused is off."""
    seed_everything(r.seed)
    ds = dataset or load_dataset(r.data.name, source=r.data.source, settings=settings, test_fraction=r.data.test_fraction,
                                 split_seed=r.data.split_seed, progress=progress, image_size=r.data.image_size)
    data = prepare_data(ds, r, device)
    seed_everything(r.seed)  # the model's init depends on the seed alone, not on data loading
    net = model if model is not None else build_model(r.model, data.preprocess.input_shape, len(data.classes),
                                                      memory=device_memory(device))[0]
    notes = [n for n in [size_note(net)] if n]
    net = place(net, device)
    fused = fuse and fused_applies(net, device, settings.fused)
    params = optimizer_params(net, fused)
    opt = make_optimizer(r.optimizer, params)
    steps = math.ceil(len(data.x_train) / r.batch_size)
    state = TrainState(r, net, opt, data, device, steps, scheduler=make_scheduler(r.schedule, opt, r.optimizer.lr, r.epochs * steps, steps),
                       gen=torch.Generator(device="cpu").manual_seed(r.seed), notes=[*ds.notes, *notes])
    if fused:
        state.fused = FusedDenseStep(net, dense_plan(net), params[0], opt, r.loss.label_smoothing)
    return state


def progress_callback(progress: str, live_plot: bool | None) -> Callback:
    """In a notebook, a progress bar and (unless live_plot=False) a live chart in the cell; elsewhere
    a terminal bar or plain lines (progress: auto, bar, plain, none)."""
    if progress == "auto" and in_notebook():
        return NotebookProgress(live_plot=live_plot is not False)
    return ProgressPrinter(progress)


def standard_callbacks(state: TrainState, progress: Callback, extra: list[Callback] | tuple,
                       writer: RunWriter | None, checkpoint_every: float) -> list[Callback]:
    """Progress, the recipe's callbacks, yours, then the run writer and the checkpointer (last: it
    saves everyone's state after they ran)."""
    r = state.recipe
    cbs: list[Callback] = [progress]
    if r.callbacks.reduce_lr:
        cbs.append(ReduceLROnPlateau(r.callbacks.reduce_lr, state.optimizer))
    if r.callbacks.early_stopping:
        cbs.append(EarlyStopping(r.callbacks.early_stopping))
    cbs += list(extra)
    cbs.append(CpuWatch(state.cpu.get("adaptive", False), state.cpu.get("allowed", 1) // max(1, state.cpu.get("share", 1))))
    if writer is not None:
        cbs += [writer, Checkpointer(writer.checkpoint_path, checkpoint_every, cbs)]
    return cbs


def finish(state: TrainState, callbacks: list[Callback], timings: dict) -> dict:
    """The final test pass, out-of-distribution calibration, the run's metrics; then on_test_end."""
    r, d, net = state.recipe, state.data, state.model
    logits = predict_logits(net, d.x_test, d.preprocess, r.eval_batch_size, state.device, r.tta)
    test_loss, test_acc = loss_and_accuracy(logits, d.y_test)
    x_cal = d.x_val if d.x_val is not None else d.x_test
    # the thresholds come from the validation split; when that is the test split, reuse its logits
    reuse = logits if x_cal is d.x_test and r.tta == "none" else None
    state.ood = calibrate_ood(net, x_cal, d.preprocess, r.eval_batch_size, state.device, logits=reuse)
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


def train(recipe: str | Path | Recipe = "mnist-mlp", *, model: nn.Module | None = None, epochs: int | None = None,
          seed: int | None = None, batch_size: int | None = None, overrides: dict | list[str] | None = None,
          settings: Settings | None = None, data_dir: str | Path | None = None, runs_dir: str | Path | None = None,
          db: str | None = None, device: str = "auto", progress: str = "auto", callbacks: list[Callback] | tuple = (),
          save: bool = True, dataset: Dataset | None = None, resume: str | Path | None = None,
          checkpoint_every: float = 60.0, stop: threading.Event | None = None, live_plot: bool | None = None,
          study: tuple[str, int] | None = None, **kw_overrides) -> Run:
    """Train a recipe (a preset name, a YAML path or a Recipe) and return the finished `Run`.

    Overrides: `epochs=`, `seed=`, `batch_size=`, `overrides={"optimizer.lr": 0.01}` or
    `optimizer__lr=0.01`. `model=` trains your own `nn.Module` on the recipe's data and optimizer;
    `resume=RUN_ID` continues an interrupted run from its last checkpoint; `stop` (an Event) ends
    training after the current step, checkpointed. In a notebook, progress is a bar in the cell and
    `live_plot` (on unless False) draws loss and accuracy as training goes. `settings` (or `data_dir=`, `runs_dir=`, `db=`)
    say where data, runs and the run index are. `study=(name, trial)` links the run to a tuning study.
    """
    settings = (settings or load_settings()).with_(data_dir=data_dir, runs_dir=runs_dir, db=db)
    where = pick_device(device)  # a bad --device fails before anything is written
    group = setup_group(settings, where)  # several processes under torchrun; None for one
    main = group is None or group.is_main  # only rank 0 writes the run, its events and checkpoints
    where = local_device(where, settings)
    writer = RunWriter.reopen(resume, settings) if resume is not None and main else None
    if writer is not None and writer.custom_model and model is None:
        raise TrainlabError(f"run {writer.run_id} trained a custom model ({writer.custom_model}); "
                            f"resume it from Python with trainlab.train(resume=..., model={writer.custom_model}())")
    r = (writer.recipe if writer else read_recipe(resolve_run_dir(resume, settings)) if resume is not None
         else resolve_recipe(recipe, overrides, kw_overrides, epochs=epochs, seed=seed, batch_size=batch_size))
    store = open_runs_folder(settings) if save and resume is None and main else None  # a bad --runs-dir or --db fails before data loads
    t0, sample = time.perf_counter(), cpu_sample()
    state = build(r, settings, where, model, dataset, progress != "none" and main, fuse=group is None)
    data_seconds = time.perf_counter() - t0
    with training_threads(state, settings, sample):  # restored when train() returns
        if store is not None:
            writer = RunWriter.create(r, settings, store, custom_model=None if model is None else type(model).__name__, study=study)
        try:  # until training begins, a failure or Ctrl-C leaves no folder behind (only its lock so far)
            cbs = standard_callbacks(state, progress_callback(progress if main else "none", live_plot), callbacks, writer, checkpoint_every)
            state.group, state.ddp = (group, wrap_ddp(state.model, state.device)) if group is not None else (None, None)
            if resume is not None:
                resume_state(state, cbs, writer, writer.checkpoint_path if writer else resolve_run_dir(resume, settings) / CHECKPOINT)
            state.stop, state.run_dir = stop, writer and writer.run_dir
            state.run_id = group.broadcast(writer and writer.run_id) if group is not None else writer and writer.run_id
        except BaseException:
            writer.abandon() if store is not None else None  # a new run's writer: nothing recorded yet
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
        finally:
            if group is not None:
                teardown()
    return Run(recipe=r, model=state.model, history=state.history, metrics=state.metrics, classes=state.data.classes,
               preprocess=state.data.preprocess, run_id=state.run_id, run_dir=state.run_dir, device=state.device,
               data=state.data, ood=state.ood, settings=settings)


# A dense stack's step made of matmuls smaller than this (multiply-adds, batch x in x out of its
# biggest layer) runs faster on one thread than on two here: splitting a 50x784x30 matmul costs
# more in synchronisation than it saves, and a second spinning thread loses the most when the
# machine is shared (bench/profile_steps.py --only threads).
SMALL_MATMUL = 2_000_000


def pick_threads(state: TrainState, settings: Settings, since: CpuSample | None = None) -> tuple[int | None, dict]:
    """The intra-op thread count to train with, and what decided it (recorded in run.json as `cpu`):
    settings.threads when given; torch's own count when OMP_NUM_THREADS chose it or the model runs
    on a GPU; one thread for a fused dense stack whose biggest matmul is under SMALL_MATMUL; else
    `plan_threads`: this process's CPUs, shared between trainlab's concurrent processes, less those
    other programs keep busy now (measured since `since`)."""
    info = {"wait_policy": wait_policy(), "allowed": allowed_cpus()}
    if settings.threads:
        return settings.threads, {**info, "reason": "TRAINLAB_THREADS"}
    if settings.omp_num_threads or state.device.type != "cpu":
        return None, {**info, "reason": "OMP_NUM_THREADS" if settings.omp_num_threads else f"device {state.device.type}"}
    if state.fused is not None:
        biggest = max(state.recipe.batch_size * lin.in_features * lin.out_features for lin, _ in state.fused.plan)
        if biggest < SMALL_MATMUL:
            return 1, {**info, "reason": "small dense stack"}
    plan = plan_threads(settings.world_size if settings.world_size > 1 else None, busy_elsewhere(since))
    info.update(busy_elsewhere=plan.busy, share=plan.share, reason=plan.reason, adaptive=True)
    if plan.threads < plan.allowed // plan.share:
        state.notes.append(f"note: training on {plan.threads} thread{'s' * (plan.threads > 1)}: {plan.reason} "
                           f"(TRAINLAB_THREADS=N to choose)")
    return plan.threads, info


@contextmanager
def training_threads(state: TrainState, settings: Settings, since: CpuSample | None = None):
    """Train with `pick_threads`' count (the run's record notes it, so a resume matches), then give
    the process its own count back (a resume's match_threads included)."""
    was = torch.get_num_threads()
    want, state.cpu = pick_threads(state, settings, since)
    if want and want != was:
        torch.set_num_threads(want)
    try:
        yield
    finally:
        if torch.get_num_threads() != was:
            torch.set_num_threads(was)


def resume_state(state: TrainState, cbs: list[Callback], writer: RunWriter | None, checkpoint: Path) -> None:
    """Put the loop back where the run's checkpoint left it. Every rank of a multi-process run reads
    the same checkpoint; its running sums are the totals, so only rank 0 keeps them."""
    notes = match_threads(writer.record.threads) if writer is not None else []
    restore(load_checkpoint(checkpoint), state, cbs)  # CpuWatch's state, when it moved the count, wins
    state.notes += notes
    if state.group is not None and not state.group.is_main and state.loss_sum is not None:
        state.loss_sum.zero_()
        state.correct.zero_()


def match_threads(threads: int | None) -> list[str]:
    """Use the thread count a run was trained with: CPU results (so bit-identical resume) depend on it."""
    if threads and threads != torch.get_num_threads():
        was = torch.get_num_threads()
        torch.set_num_threads(threads)
        return [f"note: resumed with {threads} threads as the run was trained (this process had {was})"]
    return []


def rerun(run: str | Path, settings: Settings | None = None, **kw) -> Run:
    """Train a run's exact recipe and seed again, as a new run."""
    settings = settings or load_settings()
    src = resolve_run_dir(run, settings)
    custom = read_record(src).custom_model
    if custom:
        raise TrainlabError(f"run {src.name} trained a custom model ({custom}); rerun it from Python with "
                            f"trainlab.train('{src / 'recipe.yaml'}', model={custom}())")
    return train(read_recipe(src), settings=settings, **kw)


def summarize(recipe: Recipe, settings: Settings | None = None) -> str:
    """A recipe's model as Keras' model.summary() prints it: layers, output shapes, parameters."""
    (h, w, c), classes = input_spec(recipe.data.name, settings, recipe.data.image_size)
    shape = (c * h * w,) if recipe.data.flatten else (c, h, w)
    with torch.device("meta"):  # shapes and counts only: a 10^9-unit layer allocates nothing
        _, infos = build_model(recipe.model, shape, len(classes))
    return summary_text(recipe.name, infos, shape)
