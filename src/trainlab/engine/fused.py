"""The fused training step: a hand-derived forward, backward and update for dense stacks.

On this kind of machine a dense recipe's step is mostly per-operator overhead, not arithmetic
(bench/profile_steps.py --only fused): autograd records a graph, allocates every gradient and
runs the optimizer over each parameter tensor. For a model that is an `nn.Sequential` of Flatten,
Linear and elementwise activations, trained with softmax cross-entropy on the CPU, `FusedDenseStep`
instead
- keeps every parameter in one flat buffer (the model's parameters become views of it) and every
  gradient in another, so the optimizer updates one tensor: a handful of in-place ops whatever
  the depth; each Linear is one [weight | bias] block of it (LAYOUT), so a layer whose input
  carries a column of ones computes its output, and its weight-and-bias gradient, in one mm;
- runs forward and backward by hand with the kernels autograd itself calls (addmm, mm,
  threshold_backward, sigmoid_backward, ...), each gradient written in place into its slice.
It computes the same gradients (tests/test_fused.py compares them, the updates and a whole run with
autograd's; bench/compare.py gives the 3-seed accuracies). `fused_applies` says when it
applies (strategy.py then builds the optimizer over the flat parameter); anything else trains
with `AutogradStep` (step.py). `TRAINLAB_STEP=autograd` turns it off. The optimizer's state_dict
is torch's usual per-parameter one (`per_parameter_state_dict`): checkpoints do not depend on
which step wrote them. It calls aten's backward kernels and torch's private fused optimizer
kernels, so it runs only on the torch versions those were tested with (system/process_wide.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainlab.engine.step import BatchStep, Feed
from trainlab.optim import KerasRMSprop
from trainlab.system.process_wide import aten_backward_ops, private_kernel

# A dense stack's step made of matmuls smaller than this (multiply-adds, batch x in x out of its
# biggest layer) runs faster on one thread than on two here: splitting a 50x784x30 matmul costs
# more in synchronisation than it saves, and a second spinning thread loses the most when the
# machine is shared (bench/profile_steps.py --only threads).
SMALL_MATMUL = 2_000_000

# activation module -> (forward on the pre-activation, in place where safe; backward from the saved tensor)
# Each backward is the aten kernel autograd runs for that module, fed what autograd saves.
_ACTS = {
    nn.ReLU: (torch.relu_, lambda g, out, pre: torch.ops.aten.threshold_backward(g, out, 0), "out"),
    nn.Sigmoid: (torch.sigmoid_, lambda g, out, pre: torch.ops.aten.sigmoid_backward(g, out), "out"),
    nn.Tanh: (torch.tanh_, lambda g, out, pre: torch.ops.aten.tanh_backward(g, out), "out"),
    nn.SiLU: (F.silu, lambda g, out, pre: torch.ops.aten.silu_backward(g, pre), "pre"),
    nn.GELU: (F.gelu, lambda g, out, pre: torch.ops.aten.gelu_backward(g, pre), "pre"),
}


def dense_plan(model: nn.Module) -> list[tuple[nn.Linear, type | None]] | None:
    """(Linear, activation class or None) per dense layer when `model` is a plain stack the fused
    step computes exactly: Flatten first, Linear, the activations above, Dropout(0); else None."""
    if type(model) is not nn.Sequential:
        return None
    plan: list[list] = []
    for m in _leaves(model):
        if isinstance(m, nn.Flatten) and not plan and (m.start_dim, m.end_dim) == (1, -1):
            continue
        if type(m) is nn.Linear and all(m is not lin for lin, _ in plan):
            plan.append([m, None])
        elif type(m) in _ACTS and plan and plan[-1][1] is None and _plain_activation(m):
            plan[-1][1] = type(m)
        elif type(m) is nn.Dropout and m.p == 0:
            continue
        else:
            return None
    if not plan or plan[-1][1] is not None:  # the last dense layer gives the logits
        return None
    return [(lin, act) for lin, act in plan]


def _leaves(model: nn.Module):
    for m in model.modules():
        if type(m) is nn.Sequential:
            continue
        yield m


def _plain_activation(m: nn.Module) -> bool:
    return getattr(m, "approximate", "none") == "none" and (type(m) is nn.ReLU or not getattr(m, "inplace", False))


# How parameters sit in a flat buffer. "blocks" (what flatten_parameters makes): each Linear of the
# dense plan is one row-major (out, in + 1) block [weight | bias], so a layer's input with a column
# of ones appended gives z = input @ block.T and the block's gradient (bias included) in one matmul
# each. "concat": the parameters one after the other (checkpoints written before blocks existed).
LAYOUT = "blocks"


def parameter_views(model: nn.Module, buf: torch.Tensor, layout: str = LAYOUT) -> list[torch.Tensor]:
    """Views of the flat `buf`, one per parameter of `model` in parameters() order, as `layout` places them."""
    params = list(model.parameters())
    plan = dense_plan(model) if layout == "blocks" else None
    views, offset = [], 0
    if plan is None:
        for p in params:
            views.append(buf[offset:offset + p.numel()].view(p.shape))
            offset += p.numel()
        return views
    for lin, _ in plan:  # the plan's Linears are the model's parameters, in order (dense_plan refuses others)
        out_f, in_f = lin.weight.shape
        cols = in_f + (lin.bias is not None)
        block = buf[offset:offset + out_f * cols].view(out_f, cols)
        views.append(block[:, :in_f])
        if lin.bias is not None:
            views.append(block[:, in_f])
        offset += out_f * cols
    return views


def flatten_parameters(model: nn.Module) -> nn.Parameter:
    """One flat parameter holding all of `model`'s, which become views of it (laid out as LAYOUT
    says); its gradient buffer is allocated, and each parameter's `.grad` is the same view of
    that. The optimizer is then built over the flat parameter alone: its update is elementwise,
    so the numbers are the same."""
    params = list(model.parameters())
    dtypes = {(p.dtype, p.device) for p in params}
    if len(dtypes) != 1:
        raise ValueError("flat parameters need one dtype and device")
    total = sum(p.numel() for p in params)
    flat = torch.empty(total, dtype=params[0].dtype, device=params[0].device)
    grad = torch.zeros_like(flat)
    for p, view, gview in zip(params, parameter_views(model, flat), parameter_views(model, grad)):
        view.copy_(p.detach())
        p.data = view
        p.grad = gview
    out = nn.Parameter(flat)
    out.grad = grad
    return out


def unflatten_parameters(model: nn.Module) -> None:
    """Give each parameter its own contiguous storage again (safetensors refuses shared storage)."""
    with torch.no_grad():
        for p in model.parameters():
            p.data = p.data.clone(memory_format=torch.contiguous_format)
            p.grad = None


class _Dense:
    """One layer of the plan: views of its parameters and gradients in the flat buffers, cached
    (each transposed view is an op of its own when made per step)."""

    def __init__(self, lin: nn.Linear, act: type | None):
        self.weight, self.bias = lin.weight.data, None if lin.bias is None else lin.bias.data
        self.in_f = self.weight.shape[1]
        if lin.bias is not None and (self.weight.stride() != (self.in_f + 1, 1) or lin.weight.grad is None):
            raise ValueError("the fused step needs the model's parameters in flat blocks: flatten_parameters(model) first")
        self.weight_t = self.weight.t()
        self.grad_w, self.grad_b = lin.weight.grad, None if lin.bias is None else lin.bias.grad
        if self.bias is not None:  # the [weight | bias] block and its gradient (see LAYOUT)
            self.block_t = self.weight.as_strided((self.in_f + 1, self.weight.shape[0]), (1, self.in_f + 1))
            self.grad_block = self.grad_w.as_strided((self.weight.shape[0], self.in_f + 1), (self.in_f + 1, 1))
        self.fwd, self.bwd, self.keeps = _ACTS[act] if act is not None else (None, None, None)


class FusedDenseStep(BatchStep):
    """The hand-derived step of a dense stack on flat buffers (see the module's docstring).

    Each layer after the first reads its input from a buffer with a column of ones appended (one
    per batch size, reused across steps), so its forward is one mm into the next layer's buffer
    and its weight-and-bias gradient one mm; the first layer reads the batch itself (addmm, and
    the bias gradient as a sum)."""

    kind = "fused-dense"

    def __init__(self, model: nn.Module, plan: list[tuple[nn.Linear, type | None]], flat: nn.Parameter,
                 optimizer: torch.optim.Optimizer, label_smoothing: float = 0.0, scheduler=None, feed: Feed | None = None):
        super().__init__(optimizer, scheduler, feed)
        self.model, self.plan, self.flat = model, plan, flat
        self.smoothing = label_smoothing
        self.apply_update = FlatUpdate(optimizer, flat)
        self.layers = [_Dense(lin, act) for lin, act in plan]
        self._hit: dict[int, torch.Tensor] = {}  # batch size -> the value added at the true class
        self._inputs: dict[int, list] = {}  # batch size -> per layer after the first: (input, its first in_f columns)

    def _target(self, n: int, device: torch.device) -> torch.Tensor:
        hit = self._hit.get(n)
        if hit is None:
            hit = self._hit[n] = torch.full((n, 1), -(1.0 - self.smoothing) / n, device=device)
        return hit

    def _buffers(self, n: int, like: torch.Tensor) -> list:
        """The input buffers of the layers after the first for batch size n, made once."""
        bufs = self._inputs.get(n)
        if bufs is None:
            bufs = []
            for layer in self.layers[1:]:
                full = torch.ones(n, layer.in_f + 1, dtype=like.dtype, device=like.device)
                x = full[:, :layer.in_f]
                bufs.append((full if layer.bias is not None else x, x))
            self._inputs[n] = bufs
        return bufs

    @torch.no_grad()
    def update(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One update on the prepared batch; its logits and mean loss."""
        h = x.flatten(1)
        ins = [(h, h), *self._buffers(len(h), h)]  # per layer: (what its matmul reads, its first in_f columns)
        pre = [None] * len(self.layers)  # pre-activations kept for the backward (SiLU, GELU)
        for i, layer in enumerate(self.layers):
            dst = ins[i + 1][1] if i + 1 < len(self.layers) else None  # the next layer's input, or None: the logits
            if layer.keeps == "pre":
                z = pre[i] = self._linear(i, layer, ins[i][0], None)
                dst.copy_(layer.fwd(z))
            else:
                z = self._linear(i, layer, ins[i][0], dst)
                if layer.fwd is not None:
                    layer.fwd(z)
        logits = z
        logp = torch.log_softmax(logits, 1)
        if self.smoothing:
            loss = F.cross_entropy(logits, y, label_smoothing=self.smoothing)
        else:
            loss = F.nll_loss(logp, y)
        # d(mean loss)/d(logits) = (softmax - target) / n, target = (1 - eps) one-hot + eps / classes
        n, k = logits.shape
        g = logp.exp_().mul_(1.0 / n) if not self.smoothing else logp.exp_().sub_(self.smoothing / k).mul_(1.0 / n)
        g.scatter_add_(1, y.unsqueeze(1), self._target(n, g.device))
        self._backward(g, ins, pre)
        self.apply_update()
        return logits, loss

    @staticmethod
    def _linear(i: int, layer: _Dense, inp: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
        """The layer's pre-activation (into `out` when given): the first layer adds its bias (its
        input is the batch itself), a later one has it in its block (its input ends in ones)."""
        if i == 0 and layer.bias is not None:
            return torch.addmm(layer.bias, inp, layer.weight_t, out=out)
        return torch.mm(inp, layer.block_t if i and layer.bias is not None else layer.weight_t, out=out)

    def _backward(self, g: torch.Tensor, ins: list, pre: list) -> None:
        for i in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[i]
            if layer.bwd is not None:
                g = layer.bwd(g, ins[i + 1][1], pre[i])
            if i == 0:
                torch.mm(g.t(), ins[0][0], out=layer.grad_w)
                if layer.bias is not None:
                    torch.sum(g, 0, out=layer.grad_b)
            else:
                torch.mm(g.t(), ins[i][0], out=layer.grad_block if layer.bias is not None else layer.grad_w)
                g = torch.mm(g, layer.weight)

    def threads(self, batch_size: int) -> tuple[int, str] | None:
        """One thread when the biggest matmul is small (SMALL_MATMUL): splitting it costs more than it saves."""
        biggest = max(batch_size * lin.in_features * lin.out_features for lin, _ in self.plan)
        return (1, "small dense stack") if biggest < SMALL_MATMUL else None

    def close(self) -> None:
        unflatten_parameters(self.model)


class FlatUpdate:
    """`optimizer.step()` for the one flat parameter as direct kernel calls: torch.optim's step
    spends more in Python than in arithmetic on a tensor this size (~60 us a step, measured).
    The first call goes through `optimizer.step()` (it creates the state, e.g. SGD's first momentum
    buffer, and marks the optimizer stepped for the LR schedulers); the later ones call the same
    kernel torch does (Adam/AdamW/SGD built fused) or the same ops (KerasRMSprop) with the group's
    current hyperparameters, so schedulers and ReduceLROnPlateau still drive them. Any other
    optimizer always goes through `optimizer.step()`."""

    def __init__(self, optimizer: torch.optim.Optimizer, flat: nn.Parameter):
        self.optimizer, self.flat = optimizer, flat
        self.direct = _direct_update(optimizer)
        self.started = False

    def __call__(self) -> None:
        if self.direct is None or not self.started:
            self.optimizer.step()
            self.started = True
            return
        # read the group each time: load_state_dict (resume) replaces it, schedulers change its lr
        self.direct(self.flat, self.flat.grad, self.optimizer.state[self.flat], self.optimizer.param_groups[0])


def _direct_update(optimizer: torch.optim.Optimizer):
    g = optimizer.param_groups[0]
    if isinstance(optimizer, KerasRMSprop):
        return _rmsprop
    plain = not g.get("maximize") and not g.get("capturable") and not g.get("differentiable") and g.get("fused")
    if isinstance(optimizer, torch.optim.Adam) and plain and not g.get("amsgrad"):
        adamw = g.get("decoupled_weight_decay") or isinstance(optimizer, torch.optim.AdamW)
        if private_kernel("_fused_adamw_" if adamw else "_fused_adam_") is not None:  # a tested torch that has it
            return _adamw if adamw else _adam
    if isinstance(optimizer, torch.optim.SGD) and plain and private_kernel("_fused_sgd_") is not None:
        return _sgd
    return None  # the optimizer's own step (FlatUpdate), as exact, a little slower


def _rmsprop(p, grad, st, group) -> None:
    """KerasRMSprop.step on one tensor: the same operations in the same order."""
    if group["weight_decay"]:
        grad = grad.add(p, alpha=group["weight_decay"])
    v = st["velocity"]
    v.mul_(group["rho"]).addcmul_(grad, grad, value=1 - group["rho"])
    denom = v.add(group["eps"]).sqrt_()
    if group["momentum"] > 0:
        p.sub_(st["momentum"].mul_(group["momentum"]).addcdiv_(grad, denom, value=group["lr"]))
    else:
        p.addcdiv_(grad, denom, value=-group["lr"])


def _adam(p, grad, st, group, kernel: str = "_fused_adam_") -> None:
    """torch.optim.Adam(fused=True)'s step on one tensor: the step count, then its fused kernel
    (torch's private `_fused_adam_`, found when the step runs rather than when trainlab imports)."""
    kernel = private_kernel(kernel)
    st["step"].add_(1)
    beta1, beta2 = group["betas"]
    kernel([p], [grad], [st["exp_avg"]], [st["exp_avg_sq"]], [], [st["step"]], amsgrad=False, lr=group["lr"],
           beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"], maximize=False,
           grad_scale=None, found_inf=None)


def _adamw(p, grad, st, group) -> None:
    _adam(p, grad, st, group, kernel="_fused_adamw_")


def _sgd(p, grad, st, group) -> None:
    """torch.optim.SGD(fused=True)'s step on one tensor after its first (which made the buffer)."""
    buf = [] if group["momentum"] == 0 else [st["momentum_buffer"]]
    private_kernel("_fused_sgd_")([p], [grad], buf, weight_decay=group["weight_decay"], momentum=group["momentum"], lr=group["lr"],
                      dampening=group["dampening"], nesterov=group["nesterov"], maximize=False, is_first_step=False,
                      grad_scale=None, found_inf=None)


def fused_applies(model: nn.Module, device: torch.device, enabled: bool = True) -> bool:
    """Whether the fused step can train this model (asked before its optimizer is built): a plain
    dense stack of fp32 parameters on the CPU, on a torch whose aten backward kernels were tested."""
    return enabled and device.type == "cpu" and dense_plan(model) is not None and \
        all(p.requires_grad and p.dtype == torch.float32 for p in model.parameters()) and aten_backward_ops()


def flat_to_per_parameter(saved: dict, model: nn.Module, layout: str = LAYOUT) -> dict:
    """An optimizer state_dict over the one flat parameter (laid out as `layout` says) as torch's usual
    one over `model`'s parameters: per-element state tensors split through the layout's views,
    scalar state (Adam's step) copied to each. Elementwise updates make the two the same optimizer."""
    params = list(model.parameters())
    groups = saved["param_groups"]
    if len(groups) != 1 or len(groups[0]["params"]) != 1 or len(params) == 1:
        return saved
    one = saved["state"].get(groups[0]["params"][0], {})
    per: list[dict] = [{} for _ in params] if one else []
    total = sum(p.numel() for p in params)
    for key, value in one.items():
        parts = parameter_views(model, value, layout) if _per_element(value, total) else [value] * len(params)
        for d, part in zip(per, parts):
            d[key] = part.clone(memory_format=torch.contiguous_format) if part is not value else _copy(value)
    return {"state": dict(enumerate(per)), "param_groups": [{**groups[0], "params": list(range(len(params)))}]}


def per_parameter_to_flat(saved: dict, model: nn.Module, layout: str = LAYOUT) -> dict:
    """torch's per-parameter optimizer state_dict over `model`'s parameters as one over the flat
    parameter (laid out as `layout` says): the inverse of `flat_to_per_parameter`."""
    params = list(model.parameters())
    groups = saved["param_groups"]
    if len(groups) != 1 or len(groups[0]["params"]) != len(params) or len(params) == 1:
        return saved
    per = [saved["state"].get(i, {}) for i in groups[0]["params"]]
    per = per if per and all(per) else []
    merged = {}
    for key, value in (per[0].items() if per else ()):
        if _per_element(value, params[0].numel()):
            merged[key] = torch.empty(sum(p.numel() for p in params), dtype=value.dtype, device=value.device)
            for view, d in zip(parameter_views(model, merged[key], layout), per):
                view.copy_(d[key].reshape(view.shape))
        else:
            merged[key] = _copy(value)
    return {"state": {0: merged} if merged else {}, "param_groups": [{**groups[0], "params": [0]}]}


def per_parameter_state_dict(optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
    """Make the fused optimizer (over one flat parameter) save and load torch's usual per-parameter
    state_dict, through torch's own optimizer hooks: checkpoints never see the flat layout."""
    optimizer.register_state_dict_post_hook(lambda opt, sd: flat_to_per_parameter(sd, model))
    optimizer.register_load_state_dict_pre_hook(lambda opt, sd: per_parameter_to_flat(sd, model))


def _copy(value):
    return value.clone() if isinstance(value, torch.Tensor) else value


def _per_element(value, numel: int) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() > 0 and value.numel() == numel
