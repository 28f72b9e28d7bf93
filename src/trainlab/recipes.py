"""Recipes: typed, validated experiment config. YAML presets and `--set key.path=value` use the same fields."""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import typing
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trainlab.errors import RecipeError
from trainlab.fileio import load_yaml, read_text

Activation = Literal["linear", "relu", "sigmoid", "tanh", "softmax", "gelu", "elu", "selu", "leaky_relu", "silu"]


class Strict(BaseModel):
    # no NaN or infinity anywhere in a recipe (optimizer.lr=.inf trained a run to NaN)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# ---------------------------------------------------------------------------------------------
# Layers (Keras-like parameters; the input shape of each is inferred from the one before)
# ---------------------------------------------------------------------------------------------

class Dense(Strict):
    type: Literal["dense"]
    units: Annotated[int, Field(gt=0)] | Literal["classes"] = Field(
        description="output features; `classes`: one per class of the data (the presets' output layer)")
    activation: Activation = "linear"
    use_bias: bool = True

    @field_validator("units", mode="before")
    @classmethod
    def _units(cls, v):
        """One message for both forms, not one per member of the union."""
        if v == "classes":
            return v
        if isinstance(v, str) and v.strip().lstrip("+").isdigit():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"give a positive whole number of units, or classes (one per class of the data); got {v!r}")
        return v


class Conv2D(Strict):
    type: Literal["conv2d"]
    filters: int = Field(gt=0)
    kernel_size: int = Field(3, gt=0)
    strides: int = Field(1, gt=0)
    padding: Literal["valid", "same"] = "valid"
    activation: Activation = "linear"
    use_bias: bool = True


class MaxPool(Strict):
    type: Literal["maxpool"]
    pool_size: int = Field(2, gt=0)
    strides: int | None = Field(None, gt=0, description="defaults to pool_size, as in Keras")
    padding: Literal["valid", "same"] = "valid"


class AvgPool(Strict):
    type: Literal["avgpool"]
    pool_size: int = Field(2, gt=0)
    strides: int | None = Field(None, gt=0)
    padding: Literal["valid", "same"] = "valid"
    global_: bool = Field(False, alias="global", description="average over the whole feature map")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Flatten(Strict):
    type: Literal["flatten"]


class Dropout(Strict):
    type: Literal["dropout"]
    rate: float = Field(ge=0.0, lt=1.0)


class BatchNorm(Strict):
    type: Literal["batchnorm"]
    momentum: float = Field(0.99, gt=0.0, lt=1.0, description="Keras convention: weight of the old running stat")
    epsilon: float = Field(1e-3, gt=0.0)


class ActivationLayer(Strict):
    type: Literal["activation"]
    activation: Activation


Layer = Annotated[Union[Dense, Conv2D, MaxPool, AvgPool, Flatten, Dropout, BatchNorm, ActivationLayer],
                  Field(discriminator="type")]


# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------

class DataConfig(Strict):
    name: str = Field("mnist", description="mnist, fashion-mnist, cifar10, or a path to an image tree")
    source: str | None = Field(None, description="an image tree with the same classes, used instead of the canonical files")
    normalize: Literal["none", "scale", "standardize"] = Field("scale", description="none: raw 0-255; scale: /255; standardize: per-channel mean/std of the training split")
    flatten: bool = Field(False, description="feed (N, H*W*C) vectors instead of (N, C, H, W) images")
    validation: float | Literal["test", "none"] = Field("test", description="a fraction held out from the end of the training data (as Keras validation_split), the test set, or none")
    limit_train: int | None = Field(None, gt=0, description="use only the first N training examples (quick runs, tests)")
    limit_test: int | None = Field(None, gt=0, description="use only the first N test examples")
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="image trees without split folders: the held-out fraction")
    split_seed: int = Field(0, description="image trees without split folders: the seed of the hold-out")
    image_size: list[int] | int | None = Field(None, description="image trees: [height, width] (or one number) to resize every image to; "
                                                                  "unset: the trees' median size, scaled down to at most 64 px a side")
    corrections: str | None = Field(None, description="a corrections file (trainlab data check / data fix): relabels and "
                                                      "exclusions applied when the data is loaded; the run records its sha256")
    predict_style: Literal["auto", "digit", "fashion", "photo"] = Field(
        "auto", description="how image files are prepared for prediction: digit (MNIST: invert, crop, fit 20x20, centre of mass), "
                            "fashion (invert, crop, fit 28x28), photo (resize); auto picks by dataset")

    @field_validator("image_size", mode="after")
    @classmethod
    def _check_image_size(cls, v):
        if v is None:
            return v
        size = [v, v] if isinstance(v, int) else list(v)
        if len(size) != 2 or not all(isinstance(n, int) and 4 <= n <= 1024 for n in size):
            raise ValueError(f"{v!r} is not allowed; allowed: [height, width] or one number, each 4-1024 pixels")
        return size

    @field_validator("validation", mode="before")
    @classmethod
    def _check_validation(cls, v):
        if isinstance(v, str) and v in ("test", "none"):
            return v
        if isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 < v < 1.0:
            return float(v)
        close = difflib.get_close_matches(str(v), ["test", "none"], n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ValueError(f"{v!r} is not allowed{hint}; allowed: a fraction between 0 and 1, test, none")


class ModelConfig(Strict):
    layers: list[Layer] = Field(min_length=1)
    init: Literal["keras", "torch"] = Field("keras", description="keras: glorot-uniform weights, zero biases; torch: PyTorch defaults")


class OptimizerConfig(Strict):
    name: Literal["sgd", "rmsprop", "adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0.0)
    momentum: float = Field(0.0, ge=0.0, lt=1.0, description="sgd and rmsprop")
    nesterov: bool = Field(False, description="sgd")
    rho: float = Field(0.9, gt=0.0, lt=1.0, description="rmsprop decay (Keras default 0.9)")
    beta1: float = Field(0.9, ge=0.0, lt=1.0)
    beta2: float = Field(0.999, ge=0.0, lt=1.0)
    eps: float = Field(1e-7, gt=0.0, description="Keras default 1e-7")
    weight_decay: float = Field(0.0, ge=0.0)

    @model_validator(mode="after")
    def _check_nesterov(self):
        if self.nesterov and (self.name != "sgd" or self.momentum <= 0):
            raise ValueError("nesterov needs name: sgd and momentum > 0")
        return self


class LossConfig(Strict):
    name: Literal["cross_entropy"] = "cross_entropy"
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)


class ScheduleConfig(Strict):
    name: Literal["constant", "onecycle", "cosine"] = "constant"
    max_lr: float | None = Field(None, gt=0.0, description="onecycle peak; defaults to optimizer.lr")
    pct_start: float = Field(0.25, gt=0.0, lt=1.0, description="onecycle: fraction of steps spent warming up")
    div_factor: float = Field(25.0, gt=0.0, description="onecycle: initial lr = max_lr / div_factor")
    final_div_factor: float = Field(1e4, gt=0.0, description="onecycle: final lr = initial lr / final_div_factor")
    warmup_epochs: float = Field(0.0, ge=0.0, description="cosine: linear warm-up length")
    min_lr: float = Field(0.0, ge=0.0, description="cosine: the lr it decays to")


Monitor = Literal["val_loss", "val_acc", "loss", "acc"]


class EarlyStoppingConfig(Strict):
    monitor: Monitor = "val_loss"
    patience: int = Field(3, ge=0)
    min_delta: float = Field(0.0, ge=0.0)
    restore_best: bool = True


class ReduceLRConfig(Strict):
    monitor: Monitor = "val_loss"
    factor: float = Field(0.1, gt=0.0, lt=1.0)
    patience: int = Field(2, ge=0)
    min_lr: float = Field(0.0, ge=0.0)
    min_delta: float = Field(1e-4, ge=0.0)  # an improvement is at least this much (absolute), as Keras
    cooldown: int = Field(0, ge=0)  # epochs to wait after a reduction before counting again, as Keras


class CallbacksConfig(Strict):
    early_stopping: EarlyStoppingConfig | None = None
    reduce_lr: ReduceLRConfig | None = None


class AugmentConfig(Strict):
    flip: bool = Field(False, description="random horizontal flips")
    translate: int = Field(0, ge=0, description="random shifts of up to N pixels, zero-filled")
    crop: int = Field(0, ge=0, description="pad N pixels (reflect), then crop back at a random place")
    rotate: float = Field(0.0, ge=0, le=180, description="random rotations of up to N degrees")
    scale: float = Field(0.0, ge=0, lt=1, description="random zoom by a factor in [1-N, 1+N]")
    shift: float = Field(0.0, ge=0, lt=1, description="random sub-pixel shifts of up to N of the image size (with rotate/scale)")
    stroke: float = Field(0.0, ge=0, le=1, description="fraction of images whose strokes are thickened or thinned (3x3 dilate/erode)")
    blur: float = Field(0.0, ge=0, le=1, description="fraction of images blurred (3x3 Gaussian)")
    contrast: float = Field(0.0, ge=0, lt=1, description="random intensity scaling by a factor in [1-N, 1]")


class Recipe(Strict):
    """One experiment: data, model, optimizer, loss, schedule and training length."""

    name: str = "custom"
    description: str = ""
    data: DataConfig = DataConfig()
    model: ModelConfig
    optimizer: OptimizerConfig = OptimizerConfig()
    loss: LossConfig = LossConfig()
    batch_size: int = Field(32, gt=0)
    epochs: int = Field(1, gt=0)
    seed: int = Field(0, ge=0, lt=2**63, description="seeds torch, numpy, Python and the batch order")
    schedule: ScheduleConfig = ScheduleConfig()
    callbacks: CallbacksConfig = CallbacksConfig()
    augment: AugmentConfig = AugmentConfig()
    tta: Literal["none", "flip"] = Field("none", description="test-time augmentation at evaluation")
    eval_batch_size: int = Field(256, gt=0, description="batch size of evaluation and prediction (256 beat 1000 on every CPU model measured: cache-sized activations)")
    precision: Literal["auto", "fp32", "bf16-mixed"] = Field(
        "auto", description="the training step's arithmetic: fp32, or bf16-mixed (bf16 convolutions and matmuls, fp32 "
                            "weights, gradients and optimizer, as Lightning's bf16-mixed); auto: bf16-mixed on CUDA and for "
                            "conv nets on CPUs with native bf16, else fp32 (trainlab.engine.precision)")

    @model_validator(mode="after")
    def _check(self):
        if self.callbacks.reduce_lr and self.schedule.name != "constant":
            raise ValueError("callbacks.reduce_lr cannot be combined with a schedule; pick one")
        needs_val = [c for c in (self.callbacks.early_stopping, self.callbacks.reduce_lr)
                     if c is not None and c.monitor.startswith("val_")]
        if needs_val and self.data.validation == "none":
            raise ValueError("callbacks monitor a val_ metric but data.validation is none")
        return self

    @property
    def monitor(self) -> str:
        """The metric that picks the best epoch and best.safetensors: early stopping's, else val_acc."""
        es = self.callbacks.early_stopping
        return es.monitor if es else "val_acc"

    def to_dict(self) -> dict:
        return self.model_dump(mode="json", by_alias=True)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def digest(self) -> str:
        """A short hash of the resolved recipe, the same for the same settings."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Presets, overrides and error messages
# ---------------------------------------------------------------------------------------------

def flatten_recipe(d, prefix: str = "") -> dict:
    """A recipe mapping as {"optimizer.lr": 0.01, ...}; a layer list becomes one short description."""
    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten_recipe(v, f"{prefix}{k}."))
    elif isinstance(d, list):
        out[prefix[:-1]] = _describe_layers(d) if all(isinstance(x, dict) and "type" in x for x in d) else str(d)
    else:
        out[prefix[:-1]] = d
    return out


def _describe_layers(layers: list[dict]) -> str:
    dense = [x for x in layers if x["type"] == "dense"]
    acts = sorted({x.get("activation", "linear") for x in dense[:-1]}) if len(dense) > 1 else []
    return f"{len(layers)} layers" + (f" ({'/'.join(acts)})" if acts else "")


def differing_keys(flat: list[dict]) -> list[str]:
    """The keys (name and description aside) whose values differ between flattened recipes, in first-seen order."""
    keys = list(dict.fromkeys(k for f in flat for k in f))
    return [k for k in keys if k not in ("name", "description") and len({str(f.get(k)) for f in flat}) > 1]


def preset_names() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in resources.files("trainlab.presets").iterdir()
                  if p.name.endswith(".yaml"))


def _read_yaml(text: str, where: str) -> dict:
    try:
        data = load_yaml(text, where)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise RecipeError(f"{where}: not valid YAML{at} ({getattr(exc, 'problem', exc)}); fix the syntax") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: a recipe must be a mapping of keys to values")
    return data


def recipe_dict(name_or_path: str | Path) -> tuple[dict, str]:
    """The raw mapping of a preset name or a YAML file, and where it came from."""
    text = str(name_or_path)
    if text in preset_names():
        return _read_yaml(resources.files("trainlab.presets").joinpath(text + ".yaml").read_text(), f"preset {text}"), text
    path = Path(text).expanduser()
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise RecipeError(f"recipe file {path} not found; give a preset name (`trainlab recipes`) or a YAML path")
        data = _read_yaml(read_text(path, "give a YAML recipe file"), str(path))
        data.setdefault("name", path.stem)
        return data, str(path)
    close = difflib.get_close_matches(text, preset_names(), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise RecipeError(f"unknown recipe '{text}'{hint}; see `trainlab recipes` for the presets, or pass a YAML file")


def parse_set(items: list[str] | dict | None) -> dict[str, Any]:
    """Turn `["optimizer.lr=0.01", ...]` into {"optimizer.lr": 0.01}; values are read as YAML scalars."""
    if not items:
        return {}
    if isinstance(items, dict):
        return dict(items)
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"--set {item!r}: expected key.path=value, for example --set optimizer.lr=0.01")
        try:
            out[key.strip()] = load_yaml(value, f"--set {key.strip()}") if value.strip() else None
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def apply_overrides(data: dict, overrides: dict[str, Any]) -> dict:
    """Set each dotted path in a copy of `data`; numeric parts index lists (model.layers.1.units)."""
    data = json.loads(json.dumps(data))
    for path, value in overrides.items():
        parts = path.split(".")
        node: Any = data
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            where = ".".join(parts[: i + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise RecipeError(f"--set {path}: '{where}' needs a list index below {len(node)}")
                if last:
                    node[int(part)] = value
                else:
                    node = node[int(part)]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    if node.get(part) is None:
                        node[part] = {}
                    node = node[part]
            else:
                raise RecipeError(f"--set {path}: '{'.'.join(parts[:i])}' is a value, not a section")
    return data


def _annotation_at(loc: tuple) -> Any:
    """The type found by walking Recipe's fields along a pydantic error location."""
    tp: Any = Recipe
    for part in loc:
        tp = _strip(tp)
        if isinstance(part, int):
            args = typing.get_args(tp)
            tp = args[0] if args else tp
            continue
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(part) or next((f for f in tp.model_fields.values() if f.alias == part), None)
            if field is None:
                return None
            tp = field.annotation
        else:  # a union of layer models: the part is the tag
            options = [a for a in typing.get_args(tp) if isinstance(a, type) and issubclass(a, BaseModel)]
            match = [a for a in options if typing.get_args(a.model_fields["type"].annotation) == (part,)] if options else []
            if not match:
                return None
            tp = match[0]
    return _strip(tp)


def _strip(tp: Any) -> Any:
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    args = [a for a in typing.get_args(tp) if a is not type(None)] if typing.get_origin(tp) in (Union, getattr(__import__("types"), "UnionType", Union)) else None
    if args is not None and len(args) == 1:
        return _strip(args[0])
    return tp


def _fmt_loc(loc: tuple, tags: set[str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in tags:
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


_LAYER_TAGS = {"dense", "conv2d", "maxpool", "avgpool", "flatten", "dropout", "batchnorm", "activation"}


def _describe(err: dict) -> str:
    loc = tuple(err["loc"])
    # pydantic appends the tag of a discriminated union to the location; drop it for the reader
    tags = {p for i, p in enumerate(loc) if p in _LAYER_TAGS and i > 0 and isinstance(loc[i - 1], int)}
    path = _fmt_loc(loc, tags)
    kind, ctx, got = err["type"], err.get("ctx", {}), err.get("input")
    if kind == "extra_forbidden":
        parent = _annotation_at(loc[:-1])
        allowed = [f.alias or n for n, f in parent.model_fields.items()] if isinstance(parent, type) and issubclass(parent, BaseModel) else []
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"{path}: unknown key{hint}; allowed: {', '.join(allowed)}"
    if kind in ("literal_error", "union_tag_invalid", "enum"):
        expected = ctx.get("expected_tags") or ctx.get("expected") or ""
        allowed = re.findall(r"'([^']*)'", str(expected))
        value = ctx.get("tag", got)
        close = difflib.get_close_matches(str(value), allowed, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"{path}: {value!r} is not allowed{hint}; allowed: {', '.join(allowed)}"
    if kind == "union_tag_not_found":
        return f"{path}: a layer needs a 'type'; allowed: {', '.join(sorted(_LAYER_TAGS))}"
    if kind == "missing":
        return f"{path}: required key is missing"
    msg = err["msg"].removeprefix("Value error, ")
    if kind == "value_error" or isinstance(got, (dict, list)):
        return f"{path}: {msg}"
    return f"{path}: {msg} (got {got!r})"


def validate(data: dict, where: str = "recipe") -> Recipe:
    """Validate a mapping into a Recipe; every problem is named by its key path on one line."""
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        lines = list(dict.fromkeys(_describe(e) for e in errors))
        raise RecipeError(f"{where}: " + "; ".join(lines)) from None


def load_recipe(name_or_path: str | Path | Recipe = "mnist-mlp", overrides: dict | list[str] | None = None,
                **shorthands) -> Recipe:
    """Resolve a preset name, a YAML path or a Recipe, then apply overrides (`epochs=3`, `optimizer.lr=...`)."""
    if isinstance(name_or_path, Recipe):
        data, where = name_or_path.to_dict(), name_or_path.name
    else:
        data, where = recipe_dict(name_or_path)
    merged = parse_set(overrides)
    merged.update({k: v for k, v in shorthands.items() if v is not None})
    return validate(apply_overrides(data, merged), where=f"recipe {where}")
