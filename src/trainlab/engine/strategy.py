"""Which training step a run gets, chosen once when training is built (Keras' `make_train_function`).

| step | when `auto` picks it | what it is |
|---|---|---|
| `fused-dense` | a plain dense stack (Flatten, Linear, ReLU/Sigmoid/Tanh/SiLU/GELU) on the CPU, one process, fp32 | fused.py: forward, backward and update by hand on one flat buffer (2-3x the autograd step's speed on small MLPs) |
| `cuda-graph` | a recipe's model on CUDA, one process | graphed.py: the whole step captured once as a CUDA graph and replayed |
| `autograd` | everything else: conv nets on the CPU, your own modules, several processes (DDP) | step.py: zero_grad, forward, backward, optimizer step |

`settings.step` (TRAINLAB_STEP) forces one: `autograd` always works; asking for a step that cannot
train the model is a one-line error. The choice is recorded in run.json (`train_step`) beside the
precision. The loop only calls the step (loop.py); the optimizer's state is torch's usual
per-parameter one whichever step ran, so a run resumes under any of them.
"""

from __future__ import annotations

import torch
from torch import nn

from trainlab.data.augment import make_augment
from trainlab.data.tensors import TensorData
from trainlab.engine.fused import FusedDenseStep, dense_plan, flatten_parameters, fused_applies, per_parameter_state_dict
from trainlab.engine.graphed import GraphedStep
from trainlab.engine.precision import resolve_precision
from trainlab.engine.step import AutogradStep, Feed, Step
from trainlab.errors import TrainlabError
from trainlab.models import prefers_channels_last
from trainlab.optim import make_optimizer, make_scheduler
from trainlab.recipes import Recipe

STEPS = ("auto", "autograd", "fused-dense", "cuda-graph")


def choose_step(model: nn.Module, device: torch.device, wanted: str = "auto", precision: str = "auto",
                distributed: bool = False, own_model: bool = False) -> str:
    """The step strategy for this model (see the module's table); `precision` is the setting before auto resolves it."""
    fused_ok = not distributed and precision != "bf16-mixed" and fused_applies(model, device)
    graph_ok = device.type == "cuda" and not distributed
    if wanted == "auto":
        if fused_ok:
            return "fused-dense"
        return "cuda-graph" if graph_ok and not own_model else "autograd"
    if wanted == "fused-dense" and not fused_ok:
        raise TrainlabError("TRAINLAB_STEP=fused-dense: that step trains a plain dense stack in fp32 on the CPU in one "
                            "process; this run is not one (use auto or autograd)")
    if wanted == "cuda-graph" and not graph_ok:
        raise TrainlabError("TRAINLAB_STEP=cuda-graph: that step needs a CUDA device and one process "
                            "(use auto or autograd)")
    if wanted not in STEPS:
        raise TrainlabError(f"TRAINLAB_STEP={wanted!r}: use one of {', '.join(STEPS)}")
    return wanted


def precision_setting(r: Recipe, env_precision: str | None, recorded: str | None) -> tuple[str, str | None]:
    """What decides a run's precision, and why (None: `auto` says): a continued run's recorded one,
    the recipe's own fp32 or bf16-mixed, then settings.precision (TRAINLAB_PRECISION, or the run a
    rerun repeats) for recipes that say auto."""
    if recorded:
        return recorded, "as the run started"
    if r.precision != "auto":
        return r.precision, "set in the recipe"
    if env_precision:
        return env_precision, "settings.precision (TRAINLAB_PRECISION, or the run a rerun repeats)"
    return "auto", None


def build_step(model: nn.Module, r: Recipe, data: TensorData, device: torch.device, steps_per_epoch: int, *,
               wanted: str = "auto", precision: str = "auto", precision_why: str | None = None,
               ddp: nn.Module | None = None, own_model: bool = False) -> tuple[Step, str, str]:
    """The run's step with its optimizer and LR scheduler, the precision it trains in and why.
    `ddp`: the DistributedDataParallel wrapper the step runs the model through (several processes)."""
    kind = choose_step(model, device, wanted, precision, distributed=ddp is not None, own_model=own_model)
    resolved, auto_why = resolve_precision(precision, model, device, "fused dense" if kind == "fused-dense" else None)
    feed = Feed(data, make_augment(r.augment), prefers_channels_last(model))
    total = r.epochs * steps_per_epoch
    smoothing = r.loss.label_smoothing
    if kind == "fused-dense":  # from here to step.close(), the model's parameters are views into one flat buffer
        flat = flatten_parameters(model)
        opt = make_optimizer(r.optimizer, [flat])
        per_parameter_state_dict(opt, model)
        sched = make_scheduler(r.schedule, opt, r.optimizer.lr, total, steps_per_epoch)
        step: Step = FusedDenseStep(model, dense_plan(model), flat, opt, smoothing, sched, feed)
    elif kind == "cuda-graph":
        opt = make_optimizer(r.optimizer, model.parameters(), capturable=True)
        sched = make_scheduler(r.schedule, opt, r.optimizer.lr, total, steps_per_epoch)
        # a plateau callback changes the learning rate between epochs: then the host steps the schedule
        step = GraphedStep(model, opt, smoothing, device, resolved, sched, feed, lr_table=not r.callbacks.reduce_lr)
    else:
        opt = make_optimizer(r.optimizer, model.parameters())
        sched = make_scheduler(r.schedule, opt, r.optimizer.lr, total, steps_per_epoch)
        step = AutogradStep(ddp or model, opt, smoothing, device, resolved, sched, feed)
    return step, resolved, precision_why or auto_why
