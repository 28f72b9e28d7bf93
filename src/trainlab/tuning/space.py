"""Search spaces for `trainlab tune`: a small YAML over recipe paths, validated like a recipe.

    objective: val_acc                 # any history metric: val_acc, val_loss, acc, loss
    fixed:                             # set in every trial
      data.validation: 0.1
    params:                            # one distribution per recipe path
      optimizer.lr: {loguniform: [1e-4, 1e-1]}
      optimizer.momentum: {uniform: [0, 0.95]}
      batch_size: {choice: [32, 64, 128]}
      model.hidden_layers: {int: [1, 12]}

A mapping without `params` is read as the params alone. Besides every recipe path
(`model.layers.0.units` too) four stack parameters reshape the hidden part of a layer stack:
`model.hidden_layers` (how many hidden dense blocks), `model.units` (their width),
`model.activation` (the hidden activations, dense, conv and activation layers) and `model.dropout`
(a dropout layer after each hidden dense block; 0 removes them).

Spaces are sampled through an Optuna-like `trial` (`suggest_float`, `suggest_int`,
`suggest_categorical`); this module does not import Optuna.
"""

from __future__ import annotations

import difflib
import json
import typing
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from trainlab.errors import RecipeError
from trainlab.fileio import load_yaml, read_text
from trainlab.history import HISTORY_COLUMNS
from trainlab.recipes import Activation, Recipe, apply_overrides, flatten_recipe, validate

STACK = ("model.hidden_layers", "model.units", "model.activation", "model.dropout")
OBJECTIVES = tuple(c for c in HISTORY_COLUMNS if c.endswith(("loss", "acc")))
KINDS = ("loguniform", "uniform", "int", "logint", "choice")


class Dist(BaseModel):
    """One parameter's distribution: exactly one of the kinds."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    loguniform: tuple[float, float] | None = None
    uniform: tuple[float, float] | None = None
    integer: tuple[int, int] | None = Field(None, alias="int")
    logint: tuple[int, int] | None = None
    choice: list[Any] | None = Field(None, min_length=1)

    def _value(self, kind: str):
        return getattr(self, "integer" if kind == "int" else kind)

    @model_validator(mode="after")
    def _one(self):
        given = [k for k in KINDS if self._value(k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(KINDS)}")
        kind = given[0]
        if kind != "choice":
            low, high = self._value(kind)
            if not low < high:
                raise ValueError(f"{kind} needs low < high (got [{low}, {high}])")
            if kind.startswith("log") and low <= 0:
                raise ValueError(f"{kind} needs low > 0 (got {low})")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if self._value(k) is not None)

    def edges(self) -> list:
        """The values a trial can reach at the edges of the range (every value of a choice)."""
        return list(self._value(self.kind))

    def grid(self) -> list:
        if self.kind == "choice":
            return list(self.choice)
        if self.kind == "int" and self.integer[1] - self.integer[0] <= 100:
            return list(range(self.integer[0], self.integer[1] + 1))
        raise ValueError(f"a grid needs choice or int (at most 101 values); it is {self.kind}")

    def sample(self, trial, name: str):
        kind = self.kind
        if kind == "choice":
            return trial.suggest_categorical(name, self.choice)
        low, high = self._value(kind)
        if kind in ("int", "logint"):
            return trial.suggest_int(name, low, high, log=kind == "logint")
        return trial.suggest_float(name, low, high, log=kind == "loguniform")


class Space(BaseModel):
    """A validated search space (see the module's docstring for the YAML)."""

    model_config = ConfigDict(extra="forbid")
    name: str = "space"
    description: str = ""
    objective: Literal["val_acc", "val_loss", "acc", "loss"] = "val_acc"
    fixed: dict[str, Any] = {}
    params: dict[str, Dist] = Field(min_length=1)

    @property
    def direction(self) -> str:
        return "maximize" if self.objective.endswith("acc") else "minimize"

    def to_dict(self) -> dict:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def suggest(self, trial) -> dict[str, Any]:
        """One value per parameter, drawn through an Optuna trial."""
        return {path: dist.sample(trial, path) for path, dist in self.params.items()}

    def grid(self) -> dict[str, list]:
        try:
            return {path: dist.grid() for path, dist in self.params.items()}
        except ValueError as exc:
            bad = next(p for p, d in self.params.items() if d.kind not in ("choice", "int"))
            raise RecipeError(f"--sampler grid: {bad}: {exc}; use tpe or random for continuous ranges") from None

    def apply(self, base: Recipe, values: dict[str, Any]) -> Recipe:
        """The base recipe with the fixed values and a trial's values set."""
        sets = {**self.fixed, **values}
        stack = {k.split(".")[1]: sets.pop(k) for k in STACK if k in sets}
        data = apply_overrides(base.to_dict(), sets)
        if stack:
            data["model"]["layers"] = reshape_stack(data["model"]["layers"], base.name, **stack)
        return validate(data, where=f"recipe {base.name}")

    def _try(self, base: Recipe, values: dict, what: str) -> Recipe:
        try:
            return self.apply(base, values)
        except RecipeError as exc:
            raise RecipeError(f"space '{self.name}': {what}: {exc}") from None

    def check(self, base: Recipe) -> None:
        """Every path exists, every bound and choice makes a valid recipe, the objective is recorded."""
        known = [*flatten_recipe(base.to_dict()), *STACK]
        for path in [*self.fixed, *self.params]:
            if path not in known and not path.startswith("model.layers.") and path.split(".")[0] not in Recipe.model_fields:
                close = difflib.get_close_matches(path, known, n=1, cutoff=0.5)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise RecipeError(f"space '{self.name}': {path}: not a recipe path{hint}; see `trainlab show {base.name}`")
        act = self.params.get("model.activation")
        allowed = typing.get_args(Activation)
        for value in act.edges() if act is not None else []:
            if value not in allowed:
                close = difflib.get_close_matches(str(value), allowed, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise RecipeError(f"space '{self.name}': model.activation: {value!r} is not allowed{hint}; allowed: {', '.join(allowed)}")
        fixed = self._try(base, {}, "fixed")
        for path, dist in self.params.items():
            for value in dist.edges():
                self._try(fixed, {path: value}, f"{path}={value}")
        if self.objective.startswith("val_") and fixed.data.validation == "none":
            raise RecipeError(f"space '{self.name}': the objective {self.objective} needs a validation split; "
                              f"add `fixed: {{data.validation: 0.1}}` or use objective: loss")


def reshape_stack(layers: list[dict], recipe: str, hidden_layers: int | None = None, units: int | None = None,
                  activation: str | None = None, dropout: float | None = None) -> list[dict]:
    """Rebuild the hidden dense blocks of a layer list: the layers before the first hidden dense layer
    and from the output layer on are kept; each block is a dense layer with what follows it up to the
    next dense layer."""
    dense = [i for i, layer in enumerate(layers) if layer["type"] == "dense"]
    hidden = dense[:-1]
    if not hidden and (hidden_layers is not None or units is not None or dropout is not None):
        raise RecipeError(f"model.hidden_layers, model.units and model.dropout need hidden dense layers; recipe {recipe} has none")
    out = [dict(layer) for layer in layers]
    if hidden:
        head, tail = out[:hidden[0]], out[dense[-1]:]
        block = out[hidden[0]:(hidden[1] if len(hidden) > 1 else dense[-1])]
        blocks = [[dict(x) for x in block] for _ in range(hidden_layers)] if hidden_layers is not None else \
            [out[a:b] for a, b in zip(hidden, [*hidden[1:], dense[-1]])]
        for b in blocks:
            if units is not None:
                b[0]["units"] = units
            if dropout is not None:
                b[:] = [x for x in b if x["type"] != "dropout"] + ([{"type": "dropout", "rate": dropout}] if dropout > 0 else [])
        out = head + [x for b in blocks for x in b] + tail
    if activation is not None:
        last = max(i for i, layer in enumerate(out) if layer["type"] == "dense")
        for i, layer in enumerate(out[:last]):
            if layer["type"] == "activation" or (layer["type"] in ("dense", "conv2d") and layer.get("activation", "linear") != "linear"):
                layer["activation"] = activation
    return out


def space_names() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in resources.files("trainlab.tuning.spaces").iterdir() if p.name.endswith(".yaml"))


def load_space(name_or_path: str | Path | Space | dict) -> Space:
    """A preset space (`trainlab tune --space walk`), a YAML file, a mapping or a Space."""
    if isinstance(name_or_path, Space):
        return name_or_path
    if isinstance(name_or_path, dict):
        return _validate(name_or_path, "space")
    text = str(name_or_path)
    if text in space_names():
        raw, where = resources.files("trainlab.tuning.spaces").joinpath(text + ".yaml").read_text(), f"space {text}"
    else:
        path = Path(text).expanduser()
        if not path.is_file():
            close = difflib.get_close_matches(text, space_names(), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise RecipeError(f"unknown space '{text}'{hint}; preset spaces: {', '.join(space_names())}, or give a YAML file")
        raw, where = read_text(path, "give a YAML search-space file"), str(path)
    try:
        data = load_yaml(raw, where)
    except yaml.YAMLError as exc:
        raise RecipeError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)}); fix the syntax") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: a search space must be a mapping of recipe paths to distributions")
    data.setdefault("name", Path(text).stem if where != f"space {text}" else text)
    return _validate(data, where)


def _validate(data: dict, where: str) -> Space:
    sections = {"name", "description", "objective", "fixed", "params"}
    if "params" not in data:  # the short form: a mapping of parameters alone
        data = {**{k: data[k] for k in sections & data.keys()}, "params": {k: v for k, v in data.items() if k not in sections}}
    try:
        return Space.model_validate(data)
    except ValidationError as exc:
        parts = []
        for e in exc.errors(include_url=False):
            loc = ".".join(str(p) for p in e["loc"] if not isinstance(p, int))
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] == "extra_forbidden" and len(e["loc"]) >= 3:
                msg = f"unknown distribution; use one of {', '.join(KINDS)}"
                loc = ".".join(str(p) for p in e["loc"][:-1])
            elif e["type"] == "extra_forbidden":
                msg = f"unknown section; allowed: {', '.join(sorted(sections))}"
            elif e["type"] == "literal_error":
                msg = f"{e.get('input')!r} is not allowed; allowed: {', '.join(OBJECTIVES)}"
            parts.append(f"{loc}: {msg}")
        raise RecipeError(f"{where}: " + "; ".join(dict.fromkeys(parts))) from None


def space_digest(space: Space) -> str:
    return json.dumps({k: v for k, v in space.to_dict().items() if k not in ("name", "description")}, sort_keys=True)


__all__ = ["Space", "Dist", "STACK", "load_space", "space_names", "reshape_stack", "Activation"]
