"""Building what a run trains: the recipe resolved with its overrides, the data on the device, the
model and its training step (with the optimizer and scheduler) in a `TrainState`, and the callbacks
every run gets."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from trainlab.data.readers import Dataset
from trainlab.data.registry import input_spec, load_for_recipe
from trainlab.data.tensors import prepare_data
from trainlab.engine.callbacks import Callback, CpuWatch, EarlyStopping, ReduceLROnPlateau
from trainlab.engine.checkpoint import Checkpointer
from trainlab.engine.distributed import wrap as wrap_ddp
from trainlab.engine.progress import NotebookProgress, ProgressPrinter, in_notebook
from trainlab.engine.state import TrainState
from trainlab.engine.strategy import build_step, precision_setting
from trainlab.models import build_model, device_memory, place, size_note, summary_text
from trainlab.recipes import Recipe, load_recipe, parse_set
from trainlab.runs.writer import RunWriter
from trainlab.settings import Settings
from trainlab.system.process_wide import seed_everything


def resolve_recipe(recipe: str | Path | Recipe, overrides: dict | list[str] | None = None,
                   kw_overrides: dict | None = None, **shorthands) -> Recipe:
    """A preset name, YAML path or Recipe with `overrides` ({"optimizer.lr": 0.01} or ["optimizer.lr=0.01"]),
    `optimizer__lr=0.01`-style keywords and shorthands (epochs=, seed=, batch_size=) applied."""
    sets = {k.replace("__", "."): v for k, v in (kw_overrides or {}).items()}
    sets.update(parse_set(overrides))
    return load_recipe(recipe, sets, **shorthands)


def build(r: Recipe, settings: Settings, device: torch.device, model: nn.Module | None = None,
          dataset: Dataset | None = None, progress: bool = False, group=None,
          precision: str | None = None) -> TrainState:
    """Data on the device, the model (the recipe's, or yours), its training step with the optimizer and
    scheduler (engine/strategy.py chooses it once), the loop's state. `group`: the process group when
    several processes train together (the model is wrapped in DistributedDataParallel). `precision`
    (a resumed run's recorded one) overrides the recipe's (engine/precision.py)."""
    seed_everything(r.seed)
    ds = dataset or load_for_recipe(r.data, settings, progress=progress)
    data = prepare_data(ds, r, device)
    seed_everything(r.seed)  # the model's init depends on the seed alone, not on data loading
    net = model if model is not None else build_model(r.model, data.preprocess.input_shape, len(data.classes),
                                                      memory=device_memory(device))[0]
    notes = [n for n in [size_note(net), classes_note(r, data.classes, data.name) if model is None else None] if n]
    net = place(net, device)
    setting, why = precision_setting(r, settings.precision, precision)
    steps = math.ceil(len(data.x_train) / r.batch_size)
    ddp = wrap_ddp(net, device) if group is not None else None
    step, resolved, reason = build_step(net, r, data, device, steps, wanted=settings.step, precision=setting,
                                        precision_why=why, ddp=ddp, own_model=model is not None)
    return TrainState(r, net, step, data, device, steps, gen=torch.Generator(device="cpu").manual_seed(r.seed),
                      notes=[*ds.notes, *notes], group=group, ddp=ddp, precision=resolved, precision_reason=reason)


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
