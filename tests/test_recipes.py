"""Recipe validation: every preset is valid; bad keys and values are refused with their path."""

from __future__ import annotations

import pytest

from trainlab.errors import RecipeError
from trainlab.recipes import apply_overrides, load_recipe, parse_set, preset_names

SEED_RECIPES = ["fashion-mlp", "mnist-mlp", "mnist-tfjs-cnn", "cifar10-cnn", "cifar10-cnn-deeper", "walk-1-baseline",
                "walk-2-lower-lr", "walk-3-more-epochs", "walk-4-deeper", "walk-5-relu"]


def test_every_seed_experiment_has_a_preset():
    assert set(SEED_RECIPES) <= set(preset_names())


@pytest.mark.parametrize("name", SEED_RECIPES)
def test_presets_validate_and_round_trip(name):
    r = load_recipe(name)
    assert r.name == name and r.description
    assert load_recipe(r).to_dict() == r.to_dict()
    assert r.digest() == load_recipe(name).digest()


def test_presets_state_the_tutorial_settings():
    m = load_recipe("mnist-mlp")
    assert (m.optimizer.name, m.optimizer.lr, m.batch_size, m.epochs, m.data.flatten) == ("rmsprop", 1e-3, 100, 12, True)
    assert m.optimizer.rho == 0.9 and m.optimizer.eps == 1e-7  # Keras defaults
    t = load_recipe("mnist-tfjs-cnn")
    assert (t.optimizer.lr, t.batch_size, t.data.validation, t.epochs) == (0.001, 64, 0.15, 1)  # TF.js maps the string "rmsprop" to rmsprop(0.001)
    w4 = load_recipe("walk-4-deeper")
    assert sum(1 for layer in w4.model.layers if layer.type == "dense") == 12 and w4.data.normalize == "none"
    assert load_recipe("walk-5-relu").model.layers[0].activation == "relu"
    deeper = load_recipe("cifar10-cnn-deeper")
    assert [getattr(layer, "filters", None) for layer in deeper.model.layers[:2]] == [32, 64]


def test_overrides_and_shorthands():
    r = load_recipe("mnist-mlp", ["optimizer.lr=0.01", "model.layers.0.units=128", "data.validation=0.1"], epochs=2)
    assert r.optimizer.lr == 0.01 and r.model.layers[0].units == 128 and r.data.validation == 0.1 and r.epochs == 2
    r = load_recipe("mnist-mlp", {"callbacks.early_stopping.patience": 1})
    assert r.callbacks.early_stopping.patience == 1 and r.callbacks.early_stopping.monitor == "val_loss"


def test_parse_set_reads_yaml_scalars():
    assert parse_set(["a=1", "b=0.5", "c=true", "d=adam", "e=[1, 2]"]) == {"a": 1, "b": 0.5, "c": True, "d": "adam", "e": [1, 2]}
    with pytest.raises(RecipeError, match="expected key.path=value"):
        parse_set(["novalue"])


def _error(*sets) -> str:
    with pytest.raises(RecipeError) as err:
        load_recipe("mnist-mlp", list(sets))
    assert "\n" not in str(err.value)
    return str(err.value)


def test_unknown_key_names_its_path_and_suggests():
    msg = _error("optimizer.lrr=0.1")
    assert "optimizer.lrr: unknown key (did you mean 'lr'?)" in msg and "allowed: name, lr" in msg
    assert "model.layers[0].unit: unknown key (did you mean 'units'?)" in _error("model.layers.0.unit=3")
    assert "epoch: unknown key (did you mean 'epochs'?)" in _error("epoch=3")


def test_bad_values_name_the_allowed_ones():
    msg = _error("optimizer.name=adamm")
    assert "optimizer.name: 'adamm' is not allowed (did you mean 'adam'?)" in msg and "sgd, rmsprop, adam, adamw" in msg
    assert "model.layers[1]: 'dens' is not allowed (did you mean 'dense'?)" in _error("model.layers.1.type=dens")
    assert "data.validation: 'tset' is not allowed (did you mean 'test'?)" in _error("data.validation=tset")
    assert "data.validation: 1.5 is not allowed" in _error("data.validation=1.5")
    assert "optimizer.lr: Input should be greater than 0" in _error("optimizer.lr=-1")
    assert "data.normalize: 'unit' is not allowed" in _error("data.normalize=unit")
    assert "batch_size: Input should be greater than 0" in _error("batch_size=0")


def test_inconsistent_settings_are_refused():
    assert "nesterov needs name: sgd" in _error("optimizer.nesterov=true")
    assert "cannot be combined" in _error("schedule.name=onecycle", "callbacks.reduce_lr.factor=0.5")
    assert "val_ metric but data.validation is none" in _error("data.validation=none", "callbacks.early_stopping.patience=2")


def test_override_paths_are_checked():
    with pytest.raises(RecipeError, match="list index below 2"):
        apply_overrides(load_recipe("mnist-mlp").to_dict(), {"model.layers.7.units": 3})
    with pytest.raises(RecipeError, match="is a value, not a section"):
        apply_overrides({"epochs": 3}, {"epochs.x": 1})


def test_yaml_recipe_files(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("data: {name: mnist, flatten: true}\nmodel:\n  layers:\n    - {type: dense, units: 10}\n")
    r = load_recipe(str(f))
    assert r.name == "mine" and r.optimizer.name == "adam"
    f.write_text("model: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML at line"):
        load_recipe(str(f))
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(str(tmp_path / "missing.yaml"))
    with pytest.raises(RecipeError, match="did you mean 'mnist-mlp'"):
        load_recipe("mnist-mpl")
