"""Optimizers with Keras' semantics, so that the tutorials' numbers reproduce, and the per-step
learning-rate schedules (torch's own schedulers)."""

from __future__ import annotations

import inspect

import torch

from trainlab.recipes import OptimizerConfig, ScheduleConfig
from trainlab.system.process_wide import eager_optimizer_step


class KerasRMSprop(torch.optim.Optimizer):
    """RMSprop as Keras 3 and TF.js compute it: w -= lr * g / sqrt(v + eps).

    torch's RMSprop divides by sqrt(v) + eps instead. With Keras' eps = 1e-7 the smallest
    denominator differs ~3000x (sqrt(1e-7) = 3.2e-4), which changes results at lr 0.01.
    """

    def __init__(self, params, lr: float = 1e-3, rho: float = 0.9, eps: float = 1e-7, momentum: float = 0.0,
                 weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if group["weight_decay"]:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            states = [self.state[p] for p in params]
            for p, st in zip(params, states):
                if not st:
                    st["velocity"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    if group["momentum"] > 0:
                        st["momentum"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            velocity = [st["velocity"] for st in states]
            torch._foreach_mul_(velocity, group["rho"])
            torch._foreach_addcmul_(velocity, grads, grads, value=1 - group["rho"])
            denom = torch._foreach_add(velocity, group["eps"])
            torch._foreach_sqrt_(denom)
            if isinstance(group["lr"], torch.Tensor):  # a device learning rate (a captured CUDA graph reads it)
                _tensor_lr_update(params, grads, denom, states, group)
            elif group["momentum"] > 0:
                mom = [st["momentum"] for st in states]
                torch._foreach_mul_(mom, group["momentum"])
                torch._foreach_addcdiv_(mom, grads, denom, value=group["lr"])
                torch._foreach_sub_(params, mom)
            else:
                torch._foreach_addcdiv_(params, grads, denom, value=-group["lr"])
        return loss


def _tensor_lr_update(params, grads, denom, states, group) -> None:
    """The update with the learning rate as a tensor: no host number is read, so it can be captured."""
    update = torch._foreach_div(grads, denom)
    torch._foreach_mul_(update, group["lr"])
    if group["momentum"] > 0:
        mom = [st["momentum"] for st in states]
        torch._foreach_mul_(mom, group["momentum"])
        torch._foreach_add_(mom, update)
        update = mom
    torch._foreach_sub_(params, update)


class _EagerStep:
    """torch's Adam/AdamW/SGD with the same update, minus one import.

    torch wraps their step() in `_use_grad_for_differentiable`, which runs `import torch._dynamo`
    on every call (2.2 s the first time, measured here) only to place graph breaks for
    torch.compile. While nothing in the process has imported torch._dynamo nothing can be
    compiling, so the step runs the undecorated update under no_grad (what the wrapper does with
    differentiable=False); once torch._dynamo is loaded, or on a torch this was not tested with,
    it defers to torch's own step (system/process_wide.eager_optimizer_step).
    """

    def step(self, closure=None):
        if not eager_optimizer_step(self.defaults.get("differentiable", False)):
            return super().step(closure)
        with torch.no_grad():
            return inspect.unwrap(self._base.step)(self, closure)


class Adam(_EagerStep, torch.optim.Adam):
    _base = torch.optim.Adam


class AdamW(_EagerStep, torch.optim.AdamW):
    _base = torch.optim.AdamW


class SGD(_EagerStep, torch.optim.SGD):
    _base = torch.optim.SGD


def make_optimizer(cfg: OptimizerConfig, params, capturable: bool = False) -> torch.optim.Optimizer:
    """Keras-matching defaults (eps 1e-7, RMSprop rho 0.9); fused kernels where torch has them.
    `capturable`: every number the step reads stays on the device (Adam's step count), so a CUDA
    graph can capture it (engine/graphed.py makes the learning rate a device tensor too)."""
    params = list(params)
    if cfg.name == "sgd":
        return _with_fused(SGD, params, dict(lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                                             weight_decay=cfg.weight_decay))
    if cfg.name == "rmsprop":
        return KerasRMSprop(params, lr=cfg.lr, rho=cfg.rho, eps=cfg.eps, momentum=cfg.momentum,
                            weight_decay=cfg.weight_decay)
    cls = Adam if cfg.name == "adam" else AdamW
    extra = {"capturable": True} if capturable else {}
    return _with_fused(cls, params, dict(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                                         weight_decay=cfg.weight_decay, **extra))


def _with_fused(cls, params, kw):
    try:
        return cls(params, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):  # no fused kernel for this device or dtype
        return cls(params, foreach=True, **kw)


def make_scheduler(cfg: ScheduleConfig, opt: torch.optim.Optimizer, lr: float, total_steps: int, steps_per_epoch: int):
    """A per-step LR scheduler (torch's own), or None for a constant LR."""
    if cfg.name == "onecycle":
        pct = cfg.pct_start
        if abs(pct * total_steps - 1) < 1e-9:  # a one-step warm-up divides by zero in torch (4 steps at 0.25)
            pct += 0.5 / total_steps
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=cfg.max_lr or lr, total_steps=total_steps, pct_start=pct,
            div_factor=cfg.div_factor, final_div_factor=cfg.final_div_factor, cycle_momentum=False)
    if cfg.name == "cosine":
        warm = min(int(round(cfg.warmup_epochs * steps_per_epoch)), total_steps - 1)
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total_steps - warm, 1), eta_min=cfg.min_lr)
        if warm <= 0:
            return cosine
        linear = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1e-3, total_iters=warm)
        return torch.optim.lr_scheduler.SequentialLR(opt, [linear, cosine], milestones=[warm])
    return None
