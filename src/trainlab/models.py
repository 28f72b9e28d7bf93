"""Models: a recipe's layer list becomes a plain `nn.Sequential`; `summary` prints it as Keras does.

A final softmax is not built into the module: the model returns logits and the loss applies
log-softmax (the numerically stable equivalent of Keras' softmax + categorical cross-entropy).
`predict` applies the softmax.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from trainlab.errors import RecipeError
from trainlab.recipes import ActivationLayer, AvgPool, BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool, ModelConfig

_ACTIVATIONS = {
    "relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "gelu": nn.GELU, "elu": nn.ELU,
    "selu": nn.SELU, "silu": nn.SiLU, "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "softmax": lambda: nn.Softmax(dim=1),
}
_KERAS_NAMES = {Dense: "dense", Conv2D: "conv2d", MaxPool: "max_pooling2d", AvgPool: "average_pooling2d",
                Flatten: "flatten", Dropout: "dropout", BatchNorm: "batch_normalization",
                ActivationLayer: "activation"}


@dataclass
class LayerInfo:
    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    trainable: int


def _pool_args(spec) -> tuple[int, int, bool]:
    """(stride, padding, ceil_mode) giving Keras' output size: 'same' means ceil(size / stride)."""
    stride = spec.strides or spec.pool_size
    if spec.padding == "valid":
        return stride, 0, False
    if stride == spec.pool_size:
        return stride, 0, True
    if stride == 1 and spec.pool_size % 2 == 1:
        return stride, spec.pool_size // 2, False
    raise RecipeError(f"model: {spec.type} padding 'same' needs strides equal to pool_size, or strides 1 with an odd pool_size")


def dense_units(spec: Dense, num_classes: int) -> int:
    """A dense layer's width: its number, or the data's class count for `units: classes`."""
    return num_classes if spec.units == "classes" else spec.units


def _make(spec, shape: tuple[int, ...], is_last: bool, act: str | None = None, num_classes: int = 0) -> list[nn.Module]:
    """Modules for one layer spec given the input shape (without batch); `act` overrides its activation."""
    act = act or getattr(spec, "activation", "linear")
    mods: list[nn.Module] = []
    if isinstance(spec, Dense):
        if len(shape) != 1:
            raise RecipeError(f"model: dense gets input of shape {shape}; put a flatten layer before it "
                              f"or set data.flatten: true")
        mods.append(nn.Linear(shape[0], dense_units(spec, num_classes), bias=spec.use_bias))
    elif isinstance(spec, Conv2D):
        if len(shape) != 3:
            raise RecipeError(f"model: conv2d needs (C, H, W) input but gets {shape}; set data.flatten: false")
        if spec.padding == "same" and spec.strides != 1:
            raise RecipeError("model: conv2d padding 'same' needs strides 1")
        mods.append(nn.Conv2d(shape[0], spec.filters, spec.kernel_size, spec.strides, padding=spec.padding,
                              bias=spec.use_bias))
    elif isinstance(spec, MaxPool):
        stride, pad, ceil = _pool_args(spec)
        mods.append(nn.MaxPool2d(spec.pool_size, stride, pad, ceil_mode=ceil))
    elif isinstance(spec, AvgPool):
        if spec.global_:
            mods.append(nn.AdaptiveAvgPool2d(1))
        else:
            stride, pad, ceil = _pool_args(spec)
            mods.append(nn.AvgPool2d(spec.pool_size, stride, pad, ceil_mode=ceil, count_include_pad=False))
        if spec.global_:
            mods.append(nn.Flatten())
    elif isinstance(spec, Flatten):
        mods.append(nn.Flatten())
    elif isinstance(spec, Dropout):
        mods.append(nn.Dropout(spec.rate))
    elif isinstance(spec, BatchNorm):
        bn = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
        mods.append(bn(shape[0], eps=spec.epsilon, momentum=1.0 - spec.momentum))
    if act != "linear" and not (is_last and act == "softmax"):
        mods.append(_activation(act, after=mods[-1] if mods else None))
    return mods


def _activation(act: str, after: nn.Module | None) -> nn.Module:
    """The activation module; ReLU works in place after a layer whose backward does not need its
    output (conv, dense, pooling, batch norm): one full-size tensor less to write and read."""
    if act == "relu" and isinstance(after, (nn.Conv2d, nn.Linear, nn.MaxPool2d, nn.AvgPool2d, nn.BatchNorm1d,
                                            nn.BatchNorm2d)):
        return nn.ReLU(inplace=True)
    return _ACTIVATIONS[act]()


def _pool_takes_relu(layers: list, i: int) -> bool:
    """Whether layers[i]'s relu moves behind the max-pool that follows it: relu(maxpool(x)) equals
    maxpool(relu(x)), values and gradients (relu is monotonic and exact), on a map 4x smaller:
    part of the tfjs CNN's NHWC step going from ~7.1 to ~4.4 ms (README, Speed)."""
    return (i + 1 < len(layers) and isinstance(layers[i + 1], MaxPool) and isinstance(layers[i], Conv2D)
            and getattr(layers[i], "activation", "linear") == "relu")


def layer_params(spec, shape: tuple[int, ...], num_classes: int = 0) -> int:
    """Parameters of a dense or conv layer on input `shape`, known before it is allocated."""
    if isinstance(spec, Dense) and len(shape) == 1:
        units = dense_units(spec, num_classes)
        return shape[0] * units + units
    if isinstance(spec, Conv2D) and len(shape) == 3:
        return shape[0] * spec.kernel_size ** 2 * spec.filters + spec.filters
    return 0


def build_model(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int,
                memory: int | None = None) -> tuple[nn.Sequential, list[LayerInfo]]:
    """The model for `cfg` on inputs of `input_shape` (C, H, W) or (D,), and one LayerInfo per spec.
    With `memory` (bytes available), a model too large to train in it is refused before its
    parameters are allocated."""
    modules: OrderedDict[str, nn.Module] = OrderedDict()
    infos: list[LayerInfo] = []
    counts: dict[str, int] = {}
    shape, params_needed = tuple(input_shape), 0
    for i, spec in enumerate(cfg.layers):
        params_needed += layer_params(spec, shape, num_classes)
        if memory is not None and training_bytes(params_needed) > 0.8 * memory:
            raise RecipeError(f"model: model.layers[{i}] brings it to {params_needed:,} parameters, which need about "
                              f"{training_bytes(params_needed) / 2**30:.1f} GiB to train (weights, gradients, optimizer "
                              f"state) but {memory / 2**30:.1f} GiB is available; make the layers smaller")
        base = _KERAS_NAMES[type(spec)]
        name = base if base not in counts else f"{base}_{counts[base]}"
        counts[base] = counts.get(base, 0) + 1
        is_last = i == len(cfg.layers) - 1
        if _pool_takes_relu(cfg.layers, i):  # the block keeps its Sequential (and state_dict keys), minus the relu
            block = nn.Sequential(*_make(spec, shape, is_last, act="linear", num_classes=num_classes))
        elif i and _pool_takes_relu(cfg.layers, i - 1):
            block = nn.Sequential(*_make(spec, shape, is_last, num_classes=num_classes), nn.ReLU(inplace=True))
        else:
            mods = _make(spec, shape, is_last, num_classes=num_classes)
            block = mods[0] if len(mods) == 1 else nn.Sequential(*mods)
        with torch.no_grad():
            try:
                out = block.eval()(torch.zeros(2, *shape))
            except RuntimeError as exc:
                raise RecipeError(f"model.layers[{i}] ({spec.type}): cannot take input of shape {shape} ({exc}); "
                                  f"the feature map is too small for it, remove a pooling layer or use padding: same") from None
        shape = tuple(out.shape[1:])
        modules[name] = block
        params = sum(p.numel() for p in block.parameters())
        buffers = sum(b.numel() for n, b in block.named_buffers() if "running" in n)
        infos.append(LayerInfo(name, type(spec).__name__ if spec.type != "activation" else "Activation",
                               shape, params + buffers, params))
    if shape != (num_classes,):
        raise RecipeError(f"model: the last layer outputs shape {shape} but the data has {num_classes} classes; "
                          f"end with a dense layer of {num_classes} units (or `units: classes`, which follows the data)")
    model = nn.Sequential(modules)
    if cfg.init == "keras":
        keras_init(model)
    return model, infos


def keras_init(model: nn.Module) -> None:
    """Glorot-uniform kernels and zero biases, as Keras initialises Dense and Conv2D."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def is_convolutional(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def prefers_channels_last(model: nn.Module) -> bool:
    """Whether to run the model on NHWC tensors: conv nets, on every device (CUDA and the CPU alike). With torch 2.13's
    oneDNN every conv recipe's CPU training step is faster in NHWC (bench/profile_steps.py --only cnn,
    bench/results/profile_fused_cnn.txt: the tfjs CNN 7.9 -> 5.1 ms, mnist-fast 19.0 -> 15.6,
    cifar10-cnn 20.5 -> 14.4)."""
    return is_convolutional(model)


def place(model: nn.Module, device: torch.device) -> nn.Module:
    """The model on `device`, in the memory format it runs fastest in there (see prefers_channels_last)."""
    model = model.to(device)
    if prefers_channels_last(model):
        model = model.to(memory_format=torch.channels_last)
    return model


def training_bytes(params: int) -> int:
    """Memory to train `params` fp32 parameters: weights, gradients and two optimizer states (Adam's)."""
    return 4 * 4 * params


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux: MemAvailable), None where unknown."""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def size_note(model: nn.Module) -> str | None:
    """A notice for a model that needs over 1 GiB to train."""
    params = count_params(model)
    need = training_bytes(params)
    return f"note: the model has {params:,} parameters and needs about {need / 2**30:.1f} GiB to train" if need > 2**30 else None


def device_memory(device: torch.device) -> int | None:
    """Bytes free for training on `device`: available RAM on the CPU, free memory on CUDA."""
    return available_memory() if device.type == "cpu" else torch.cuda.mem_get_info(device)[0]


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def summary_text(title: str, infos: list[LayerInfo], input_shape: tuple[int, ...]) -> str:
    """A Keras `model.summary()`-style table (shapes are PyTorch's channels-first)."""
    rows = [("Layer (type)", "Output Shape", "Param #")]
    rows += [(f"{li.name} ({li.kind})", str((None, *li.output_shape)), f"{li.params:,}") for li in infos]
    w = [max(len(r[i]) for r in rows) + 2 for i in range(3)]
    total = sum(li.params for li in infos)
    trainable = sum(li.trainable for li in infos)
    line = "─" * (sum(w) + 2)
    out = [f'Model: "{title}"   input: {(None, *input_shape)}', line]
    for k, r in enumerate(rows):
        out.append(f"{r[0]:<{w[0]}} {r[1]:<{w[1]}} {r[2]:>{w[2]}}")
        if k == 0:
            out.append(line)
    out += [line, f" Total params: {total:,}", f" Trainable params: {trainable:,}",
            f" Non-trainable params: {total - trainable:,}"]
    return "\n".join(out)
