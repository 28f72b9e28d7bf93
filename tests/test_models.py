"""Models built from layer specs: shapes and parameter counts match Keras'."""

from __future__ import annotations

import pytest
import torch

from trainlab.errors import RecipeError
from trainlab.models import build_model, count_params, summary_text
from trainlab.recipes import load_recipe

# Keras model.summary() totals for the tutorial models
KERAS_PARAMS = {"mnist-mlp": ((784,), 50_890), "fashion-mlp": ((1, 28, 28), 101_770),
                "mnist-tfjs-cnn": ((1, 28, 28), 33_194), "cifar10-cnn": ((3, 32, 32), 2_122_186),
                "walk-1-baseline": ((784,), 25_720), "walk-4-deeper": ((784,), 33_160)}


@pytest.mark.parametrize("name", sorted(KERAS_PARAMS))
def test_parameter_counts_match_keras(name):
    shape, expected = KERAS_PARAMS[name]
    model, infos = build_model(load_recipe(name).model, shape, 10)
    assert count_params(model) == expected
    assert sum(i.params for i in infos) == expected
    assert model(torch.zeros(3, *shape)).shape == (3, 10)


def test_final_softmax_is_left_to_the_loss():
    model, _ = build_model(load_recipe("mnist-mlp").model, (784,), 10)
    assert not isinstance(list(model.modules())[-1], torch.nn.Softmax)
    out = model(torch.rand(4, 784))
    assert not torch.allclose(out.exp().sum(1), torch.ones(4))  # logits, not probabilities


def test_keras_init_glorot_uniform_and_zero_bias():
    torch.manual_seed(0)
    model, _ = build_model(load_recipe("mnist-mlp").model, (784,), 10)
    w, b = model.dense[0].weight, model.dense[0].bias
    limit = (6 / (784 + 64)) ** 0.5
    assert w.abs().max() <= limit and w.abs().max() > 0.9 * limit and torch.all(b == 0)


def test_summary_lists_layers_shapes_and_totals():
    model, infos = build_model(load_recipe("mnist-tfjs-cnn").model, (1, 28, 28), 10)
    text = summary_text("mnist-tfjs-cnn", infos, (1, 28, 28))
    assert "conv2d (Conv2D)" in text and "(None, 16, 26, 26)" in text and "(None, 288)" in text
    assert "Total params: 33,194" in text


def test_all_layer_types_build():
    r = load_recipe("mnist-tfjs-cnn", {"model.layers": [
        {"type": "conv2d", "filters": 8, "padding": "same"}, {"type": "batchnorm"}, {"type": "activation", "activation": "gelu"},
        {"type": "maxpool", "pool_size": 2, "padding": "same"}, {"type": "avgpool", "pool_size": 3, "strides": 1, "padding": "same"},
        {"type": "dropout", "rate": 0.2}, {"type": "avgpool", "global": True}, {"type": "dense", "units": 16, "activation": "leaky_relu"},
        {"type": "batchnorm", "momentum": 0.9}, {"type": "dense", "units": 10, "activation": "softmax"}]})
    model, infos = build_model(r.model, (1, 28, 28), 10)
    assert [i.output_shape for i in infos][:5] == [(8, 28, 28), (8, 28, 28), (8, 28, 28), (8, 14, 14), (8, 14, 14)]
    assert model.batch_normalization.momentum == pytest.approx(0.01)  # Keras 0.99 == torch 0.01
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_shape_mistakes_are_explained():
    with pytest.raises(RecipeError, match="put a flatten layer before it"):
        build_model(load_recipe("fashion-mlp", {"model.layers.0.type": "dropout", "model.layers.0.rate": 0.1}).model, (1, 28, 28), 10)
    with pytest.raises(RecipeError, match="data has 10 classes"):
        build_model(load_recipe("mnist-mlp", ["model.layers.1.units=5"]).model, (784,), 10)
    with pytest.raises(RecipeError, match="set data.flatten: false"):
        build_model(load_recipe("mnist-tfjs-cnn").model, (784,), 10)
