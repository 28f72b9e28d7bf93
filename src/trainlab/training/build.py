"""Building what a run trains: the recipe resolved with its overrides, the data on the device, the
model, optimizer and scheduler in a `TrainState`, and the callbacks every run gets."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from trainlab.data.readers import Dataset
from trainlab.data.registry import input_spec, load_for_recipe
from trainlab.engine.callbacks import Callback, CpuWatch, EarlyStopping, ReduceLROnPlateau
from trainlab.engine.checkpoint import Checkpointer
from trainlab.engine.fused import FusedDenseStep, dense_plan, fused_applies, optimizer_params
from trainlab.engine.precision import resolve_precision
from trainlab.engine.progress import NotebookProgress, ProgressPrinter, in_notebook
from trainlab.engine.state import TrainState, prepare_data
from trainlab.models import build_model, device_memory, place, size_note, summary_text
from trainlab.optim import make_optimizer, make_scheduler
from trainlab.recipes import Recipe, load_recipe, parse_set
from trainlab.runs.writer import RunWriter
from trainlab.runtime import seed_everything
from trainlab.settings import Settings


def resolve_recipe(recipe: str | Path | Recipe, overrides: dict | list[str] | None = None,
                   kw_overrides: dict | None = None, **shorthands) -> Recipe:
    """A preset name, YAML path or Recipe with `overrides` ({"optimizer.lr": 0.01} or ["optimizer.lr=0.01"]),
    `optimizer__lr=0.01`-style keywords and shorthands (epochs=, seed=, batch_size=) applied."""
    sets = {k.replace("__", "."): v for k, v in (kw_overrides or {}).items()}
    sets.update(parse_set(overrides))
    return load_recipe(recipe, sets, **shorthands)


def build(r: Recipe, settings: Settings, device: torch.device, model: nn.Module | None = None,
          dataset: Dataset | None = None, progress: bool = False, fuse: bool = True,
          precision: str | None = None) -> TrainState:
    """Data on the device, the model (the recipe's, or yours), optimizer, scheduler, the loop's state.
    A dense stack on the CPU gets the fused step (trainlab.engine.fused) unless `fuse` or settings.fused is off
    or the recipe asks for bf16-mixed. `precision` (a resumed run's recorded one) overrides the recipe's
    (trainlab.engine.precision)."""
    seed_everything(r.seed)
    ds = dataset or load_for_recipe(r.data, settings, progress=progress)
    data = prepare_data(ds, r, device)
    seed_everything(r.seed)  # the model's init depends on the seed alone, not on data loading
    net = model if model is not None else build_model(r.model, data.preprocess.input_shape, len(data.classes),
                                                      memory=device_memory(device))[0]
    notes = [n for n in [size_note(net), classes_note(r, data.classes, data.name) if model is None else None] if n]
    net = place(net, device)
    setting, why = precision_setting(r, settings, precision)
    fused = fuse and setting != "bf16-mixed" and fused_applies(net, device, settings.fused)
    resolved, auto_why = resolve_precision(setting, net, device, fused)
    params = optimizer_params(net, fused)
    opt = make_optimizer(r.optimizer, params)
    steps = math.ceil(len(data.x_train) / r.batch_size)
    state = TrainState(r, net, opt, data, device, steps, scheduler=make_scheduler(r.schedule, opt, r.optimizer.lr, r.epochs * steps, steps),
                       gen=torch.Generator(device="cpu").manual_seed(r.seed), notes=[*ds.notes, *notes],
                       precision=resolved, precision_reason=why or auto_why)
    if fused:  # from here to the `finally` in engine.loop.fit, the model's parameters are views into one flat buffer
        state.fused = FusedDenseStep(net, dense_plan(net), params[0], opt, r.loss.label_smoothing)
    return state


def precision_setting(r: Recipe, settings: Settings, recorded: str | None) -> tuple[str, str | None]:
    """What decides a run's precision, and why (None: `auto` says): a continued run's recorded one,
    the recipe's own fp32 or bf16-mixed, then settings.precision (TRAINLAB_PRECISION, or the run a
    rerun repeats) for recipes that say auto."""
    if recorded:
        return recorded, "as the run started"
    if r.precision != "auto":
        return r.precision, "set in the recipe"
    if settings.precision:
        return settings.precision, "settings.precision (TRAINLAB_PRECISION, or the run a rerun repeats)"
    return "auto", None


def classes_note(r: Recipe, classes: list[str], dataset: str) -> str | None:
    """Said when a recipe's output layer (`units: classes`) takes a class count other than the
    tutorials' ten: the user's own folder of images, say."""
    last = next((layer for layer in reversed(r.model.layers) if layer.type == "dense"), None)
    if last is not None and last.units == "classes" and len(classes) != 10:
        return f"note: the output layer has {len(classes)} units, one per class of {dataset} ({', '.join(classes[:5])}" \
               f"{', ...' if len(classes) > 5 else ''})"
    return None


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


def summarize(recipe: Recipe, settings: Settings | None = None) -> str:
    """A recipe's model as Keras' model.summary() prints it: layers, output shapes, parameters."""
    (h, w, c), classes = input_spec(recipe.data.name, settings, recipe.data.image_size)
    shape = (c * h * w,) if recipe.data.flatten else (c, h, w)
    with torch.device("meta"):  # shapes and counts only: a 10^9-unit layer allocates nothing
        _, infos = build_model(recipe.model, shape, len(classes))
    return summary_text(recipe.name, infos, shape)
