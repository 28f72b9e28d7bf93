"""The engine through the Python API, on small subsets of the real data."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import trainlab
from trainlab.data.augment import make_augment, random_crop
from trainlab.errors import TrainlabError
from trainlab.recipes import AugmentConfig

SMALL = {"data.limit_train": 2000, "data.limit_test": 500}


def small_train(recipe="mnist-mlp", data_dir=None, **kw):
    overrides = dict(SMALL)
    overrides.update(kw.pop("overrides", {}))
    kw.setdefault("epochs", 1)
    return trainlab.train(recipe, overrides=overrides, data_dir=data_dir, progress="none", **kw)


def test_train_returns_a_run_and_writes_its_record(data_dir, tmp_path):
    run = small_train(data_dir=data_dir, epochs=2, runs_dir=tmp_path / "runs")
    assert [h["epoch"] for h in run.history] == [1, 2]
    assert set(run.history[0]) >= {"loss", "acc", "val_loss", "val_acc", "lr", "seconds"}
    assert run.metrics["test_acc"] > 0.8  # 2,000 MNIST digits, two epochs
    files = sorted(p.name for p in run.run_dir.iterdir() if not p.name.startswith("."))  # .lock aside
    assert files == ["best.safetensors", "checkpoint.pt", "events.jsonl", "history.csv", "metrics.json",
                     "model.safetensors", "recipe.yaml", "run.json"]
    assert trainlab.curves_png(run.run_dir) == run.run_dir / "curves.png"  # drawn on first view
    info = json.loads((run.run_dir / "run.json").read_text())
    assert info["status"] == "completed" and info["seed"] == 0 and info["versions"]["torch"] == torch.__version__
    assert info["dataset"]["n_train"] == 2000 and info["preprocess"]["normalize"] == "scale"
    rows = list(csv.DictReader(open(run.run_dir / "history.csv")))
    assert len(rows) == 2 and float(rows[1]["val_acc"]) == pytest.approx(run.history[1]["val_acc"])
    weights = load_file(run.run_dir / "model.safetensors")
    assert torch.equal(weights["dense.0.weight"], run.model.state_dict()["dense.0.weight"])
    assert trainlab.load_recipe(str(run.run_dir / "recipe.yaml")).to_dict() == run.recipe.to_dict()


def test_same_seed_same_history_other_seed_differs(data_dir):
    a = small_train(data_dir=data_dir, epochs=2, seed=3, save=False)
    b = small_train(data_dir=data_dir, epochs=2, seed=3, save=False)
    c = small_train(data_dir=data_dir, epochs=2, seed=4, save=False)
    strip = lambda h: [{k: v for k, v in row.items() if k != "seconds"} for row in h]  # noqa: E731
    assert strip(a.history) == strip(b.history)
    assert strip(a.history) != strip(c.history)


def test_evaluate_matches_the_reported_test_accuracy_after_reload(data_dir, tmp_path):
    run = small_train(data_dir=data_dir, runs_dir=tmp_path)
    assert run.evaluate().accuracy == pytest.approx(run.metrics["test_acc"])
    loaded = trainlab.load_run(run.run_id, runs_dir=tmp_path, data_dir=data_dir)
    again = loaded.evaluate()
    assert again.accuracy == pytest.approx(run.metrics["test_acc"]) and again.n == 500
    assert len(loaded.history) == 1 and loaded.history[0]["val_acc"] == pytest.approx(run.history[0]["val_acc"])


def test_predict_names_the_class(data_dir):
    run = small_train("fashion-mlp", data_dir=data_dir, save=False, overrides={"data.limit_train": 5000})
    ds = trainlab.load_dataset("fashion-mnist", data_dir=data_dir)
    preds = run.predict(ds.x_test[:200])
    assert preds.probs.shape == (200, 10) and np.allclose(preds.probs.sum(1), 1, atol=1e-5)
    assert (preds.labels == ds.y_test[:200]).mean() > 0.7
    one = run.predict(ds.x_test[0, :, :, 0])  # a single (28, 28) image
    assert len(one) == 1 and one.class_names[0] in run.classes
    with pytest.raises(TrainlabError, match="do not fit"):
        run.predict(np.zeros((2, 32, 32, 3), np.uint8))


def test_a_users_own_module_trains_on_the_recipe(data_dir, tmp_path):
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))

        def forward(self, x):
            return self.net(x)

    run = small_train(data_dir=data_dir, model=Tiny(), runs_dir=tmp_path, epochs=3)
    assert isinstance(run.model, Tiny) and run.metrics["test_acc"] > 0.7
    assert json.loads((run.run_dir / "run.json").read_text())["custom_model"] == "Tiny"
    with pytest.raises(TrainlabError, match=r"trained your own model \(Tiny\).*model=Tiny\(\)"):
        trainlab.load_run(run.run_dir)
    assert trainlab.load_run(run.run_dir, model=Tiny(), data_dir=data_dir).evaluate().accuracy == pytest.approx(run.metrics["test_acc"])


def test_validation_split_is_the_tail_as_in_keras(data_dir):
    run = small_train("mnist-tfjs-cnn", data_dir=data_dir, save=False,
                      overrides={"data.limit_train": 1000, "model.layers.0.filters": 4})
    assert len(run.data.x_train) == 850 and len(run.data.x_val) == 150
    ds = trainlab.load_dataset("mnist", data_dir=data_dir)
    assert torch.equal(run.data.x_val[:, 0].cpu(), torch.from_numpy(ds.x_train[850:1000, :, :, 0]))


def test_standardize_uses_training_statistics(data_dir):
    run = small_train(data_dir=data_dir, save=False, overrides={"data.normalize": "standardize"})
    assert run.preprocess.mean[0] == pytest.approx(0.13, abs=0.01)
    x = run.preprocess(run.data.x_train[:2000])
    assert x.mean().item() == pytest.approx(0, abs=1e-3) and x.std().item() == pytest.approx(1, abs=1e-2)


def test_augmentation_runs_on_whole_batches_and_is_a_function_of_the_draws():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6)
    out = random_crop(x, 2, "constant", torch.rand(2, 2, generator=torch.Generator().manual_seed(0)))
    assert out.shape == x.shape
    for i in range(2):  # each output is a shifted window of its own image
        padded = torch.nn.functional.pad(x[i], (2, 2, 2, 2))
        assert any(torch.equal(out[i], padded[:, r:r + 6, c:c + 6]) for r in range(5) for c in range(5))
    # the extreme draws reach the extreme offsets: 0 and 2 * pad
    corner = random_crop(x, 2, "constant", torch.tensor([[0.0, 0.0], [0.9999, 0.9999]]))
    assert torch.equal(corner[0], torch.nn.functional.pad(x[0], (2, 2, 2, 2))[:, :6, :6])
    assert torch.equal(corner[1], torch.nn.functional.pad(x[1], (2, 2, 2, 2))[:, 4:, 4:])
    aug = make_augment(AugmentConfig(flip=True, crop=2))
    assert aug.width == 3  # two offsets and a flip per image
    draws = aug.draw(16, torch.Generator().manual_seed(1))
    assert draws.shape == (16, 3) and torch.equal(draws, aug.draw(16, torch.Generator().manual_seed(1)))
    batch = torch.rand(16, 3, 8, 8) * 255
    assert torch.equal(aug(batch, draws), aug(batch, draws.clone()))  # the same rows and draws: the same batch
    assert not torch.equal(aug(batch, draws), aug(batch, aug.draw(16, torch.Generator().manual_seed(2))))
    assert torch.equal(aug(batch[:4], draws[:4]), aug(batch, draws)[:4])  # a row's result does not depend on its batch
    assert make_augment(AugmentConfig()) is None


def test_augmented_training_runs(data_dir):
    run = small_train("mnist-tfjs-cnn", data_dir=data_dir, save=False, overrides={
        "augment.translate": 2, "augment.crop": 1, "loss.label_smoothing": 0.1, "tta": "flip",
        "model.layers.0.filters": 4, "data.validation": "test"})
    assert run.metrics["test_acc"] > 0.25  # one short epoch of a 4-filter CNN; chance is 0.1


def test_image_tree_as_the_dataset(tmp_path):
    from conftest import write_tree
    root = write_tree(tmp_path / "tree", classes=("dark", "light"), per_class=20, splits=(), size=(8, 8))
    run = trainlab.train("mnist-mlp", progress="none", save=False, epochs=40, overrides={
        "data.name": str(root), "data.test_fraction": 0.25, "model.layers.1.units": 2, "optimizer.lr": 0.01, "batch_size": 8})
    assert run.classes == ["dark", "light"] and run.metrics["test_acc"] == 1.0


def test_trainlab_train_stays_the_function_after_submodule_imports():
    import importlib

    importlib.import_module("trainlab.training.api")
    importlib.import_module("trainlab.cli")
    assert callable(trainlab.train) and trainlab.train.__name__ == "train"


def test_keras_rmsprop_matches_the_keras_formula():
    from trainlab.optim import KerasRMSprop
    torch.manual_seed(0)
    w = torch.randn(5, requires_grad=True)
    w0 = w.detach().clone()
    opt = KerasRMSprop([w], lr=0.01, rho=0.9, eps=1e-7)
    v = torch.zeros(5)
    for _ in range(3):
        g = torch.randn(5)
        w.grad = g.clone()
        opt.step()
        v = 0.9 * v + 0.1 * g * g
        w0 = w0 - 0.01 * g / torch.sqrt(v + 1e-7)  # keras/src/optimizers/rmsprop.py update_step
    assert torch.allclose(w.detach(), w0, atol=1e-6)
    # with momentum: m = momentum * m + lr * g / sqrt(v + eps); w -= m
    w = torch.zeros(3, requires_grad=True)
    opt = KerasRMSprop([w], lr=0.1, momentum=0.5)
    w.grad = torch.ones(3)
    opt.step()
    w.grad = torch.ones(3)
    opt.step()
    v1, v2 = 0.1, 0.19
    m1 = 0.1 / (v1 + 1e-7) ** 0.5
    m2 = 0.5 * m1 + 0.1 / (v2 + 1e-7) ** 0.5
    assert torch.allclose(w.detach(), torch.full((3,), -(m1 + m2)), atol=1e-5)


def test_run_files_are_not_private(data_dir, tmp_path):
    import stat
    run = small_train(data_dir=data_dir, runs_dir=tmp_path)
    for f in run.run_dir.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) & 0o044, f"{f.name} is private"


def test_the_browser_lessons_cnn_at_its_real_learning_rate(data_dir):
    """mnist-tfjs-cnn as the TF.js lesson runs it (RMSprop 0.001, one epoch, validation split 0.15):
    the Keras reference reached 0.971 test accuracy; bench/recipes.py has the 3-seed mean."""
    run = trainlab.train("mnist-tfjs-cnn", data_dir=data_dir, save=False, progress="none")
    assert run.recipe.optimizer.lr == 0.001 and len(run.data.x_val) == 9000
    assert run.metrics["test_acc"] >= 0.96


def test_train_leaves_the_callers_global_state_as_it_found_it(tiny_train):
    """A notebook's random streams and torch's thread count are the same after trainlab.train()
    (it seeds and may change threads while it runs)."""
    import random
    random.seed(123)
    np.random.seed(456)
    torch.manual_seed(789)
    threads = torch.get_num_threads()
    py, npy, th = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    tiny_train(overrides={"seed": 5})
    assert random.getstate() == py and torch.equal(torch.random.get_rng_state(), th)
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), npy))
    assert torch.get_num_threads() == threads
    expected = random.random()  # the next draws are the ones the caller would have had
    random.setstate(py)
    assert random.random() == expected


def test_a_presets_output_layer_follows_the_datas_classes(tmp_path, capsys):
    """`units: classes`: a preset trains on a folder of 3 classes without a --set, says so, and a
    recipe's explicit count still has to match."""
    from conftest import write_tree
    tree = write_tree(tmp_path / "pets", classes=("birds", "cats", "dogs"), per_class=8, splits=(), size=(28, 28))
    run = trainlab.train("mnist-tfjs-cnn", overrides={"data.name": str(tree)}, epochs=1, runs_dir=tmp_path / "runs",
                         progress="plain")
    assert run.model[-1].out_features == 3 and run.classes == ["birds", "cats", "dogs"]
    assert "the output layer has 3 units, one per class of pets" in capsys.readouterr().out
    assert run.recipe.model.layers[-1].units == "classes"
    with pytest.raises(TrainlabError, match="the data has 3 classes; end with a dense layer of 3 units"):
        trainlab.train("mnist-tfjs-cnn", overrides={"data.name": str(tree), "model.layers.7.units": 10}, epochs=1,
                       save=False, progress="none")
