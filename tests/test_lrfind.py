"""The learning-rate range test (`trainlab lr-find`, `trainlab.find_lr`): its suggestion against a
brute-force sweep, the caller's model left untouched, the suggestion rules on a known curve, bad
ranges, and the command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import TREE_RECIPE, synthetic_dataset, tiny_recipe, write_tree
from helpers import trainlab_cli as cli

import trainlab
from trainlab.errors import TrainlabError
from trainlab.tuning.lrfind import find_lr, suggest


def _final_loss(lr: float, ds) -> float:
    run = trainlab.train(tiny_recipe(**{"optimizer.name": "sgd", "optimizer.lr": lr, "epochs": 3}), dataset=ds,
                         progress="none", save=False)
    loss = run.history[-1]["loss"]
    return loss if math.isfinite(loss) else float("inf")


def test_lr_find_suggests_a_rate_in_the_range_where_training_works():
    """The good range is found by brute force (3 epochs of SGD at each rate on the synthetic set);
    the suggestion, from 100 batches, must fall inside it."""
    ds = synthetic_dataset(n_train=600, n_test=60)
    r = tiny_recipe(**{"optimizer.name": "sgd", "optimizer.lr": 0.05})
    found = find_lr(r, dataset=ds, start=1e-5, end=100.0, steps=100)
    start_loss = math.log(3)
    rates = [10 ** (k / 2) for k in range(-10, 5)]
    works = [lr for lr in rates if _final_loss(lr, ds) < 0.9 * start_loss]  # measured: 0.1 and 0.32 of 1e-5..100
    assert works, "nothing trained: the test's data is broken"
    lo, hi = min(works), max(works)
    assert lo / 3 <= found.suggestion <= hi * 3, (found.suggestions, lo, hi)
    assert _final_loss(found.suggestion, ds) < 0.9 * start_loss
    assert found.stopped.startswith("the loss diverged")  # 100 is far beyond the stable range
    assert found.lrs == sorted(found.lrs) and len(found.lrs) == len(found.losses) == len(found.smoothed)


def test_lr_find_leaves_your_model_untouched(tmp_path):
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    found = find_lr(tiny_recipe(), model=net, dataset=synthetic_dataset(), steps=30)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    fig_path = found.plot(tmp_path / "lr.png")
    assert fig_path.stat().st_size > 10_000
    d = found.to_dict()
    assert d["method"] == "valley" and len(d["points"]) == len(found.lrs) and d["suggestion"] == found.suggestions["valley"]


def test_suggestions_on_a_known_curve():
    lrs = [10 ** (-6 + 6 * i / 99) for i in range(100)]
    # flat, then falling fastest around 1e-3, lowest near 1e-1, then diverging
    loss = [2.0 - 1.5 / (1 + math.exp(-(math.log10(x) + 3) * 3)) + (0 if x < 0.1 else 20 * (x - 0.1)) for x in lrs]
    s = suggest(lrs, loss)
    assert 3e-4 < s["steep"] < 3e-3
    assert 1e-4 < s["valley"] < 1e-1
    assert 3e-3 < s["minimum"] < 3e-2


def test_lr_find_refuses_bad_ranges():
    with pytest.raises(TrainlabError, match="give 0 < start < end"):
        find_lr(tiny_recipe(), dataset=synthetic_dataset(), start=1.0, end=0.1)
    with pytest.raises(TrainlabError, match="at least 20 steps"):
        find_lr(tiny_recipe(), dataset=synthetic_dataset(), steps=5)


def test_lr_find_cli(tmp_path, data_dir):
    tree = write_tree(tmp_path / "tree", classes=("dark", "light"), per_class=16, splits=(), size=(6, 6))
    recipe = tmp_path / "tree.yaml"
    recipe.write_text(TREE_RECIPE.format(tree=tree, epochs=2))
    p = cli("lr-find", recipe, "--steps", "40", "--json", "--out", tmp_path / "lr.png", data_dir=data_dir, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert len(d["points"]) <= 40 and d["suggestion"] > 0 and Path(d["plot"]).stat().st_size > 10_000
    default = cli("lr-find", recipe, "--steps", "20", "--runs-dir", tmp_path / "runs", data_dir=data_dir, cwd=tmp_path)
    assert default.returncode == 0, default.stderr
    assert (tmp_path / "runs" / "lr-find" / "tiny-tree.png").is_file() and not (tmp_path / "lr-find.png").exists()
