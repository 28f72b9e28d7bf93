"""The speed work keeps results: fast recipes still reach their accuracy, conv nets train on NHWC
batches and save and reload exactly. (The process-wide speed-ups and their fallbacks are in
test_process_wide.py; the step strategies in test_fused.py and test_graphed.py.)"""

from __future__ import annotations

import pytest
import torch

import trainlab
from trainlab.recipes import load_recipe


@pytest.mark.parametrize("name,limit,floor", [
    # A short run on the first 12,000 training images, the full test set; the floors are what the
    # recipe reaches minus a margin (measured: see the recipe test's notes in the README), far above
    # what a broken recipe (no BN, wrong schedule, bad lr) reaches on the same budget.
    ("mnist-fast", 12000, 0.96),
    ("fashion-fast", 12000, 0.86),
])
def test_fast_recipes_reach_their_accuracy_on_a_short_run(data_dir, name, limit, floor):
    run = trainlab.train(name, overrides={"data.limit_train": limit}, data_dir=data_dir, save=False, progress="none")
    assert run.metrics["test_acc"] >= floor, run.metrics
    assert len(run.history) == load_recipe(name).epochs


def test_cifar10_fast_short_run(data_dir):
    zip_path = data_dir / "cifar10-jpeg.zip"
    if not zip_path.is_file():
        pytest.fail(f"cifar10-jpeg.zip is missing from {data_dir}: the shared data directory is incomplete")
    run = trainlab.train("cifar10-fast", epochs=1, overrides={"data.source": str(zip_path), "data.limit_train": 8000,
                                                                "data.limit_test": 2000},
                         data_dir=data_dir, save=False, progress="none")
    assert run.metrics["test_acc"] >= 0.42, run.metrics  # 8,000 images, one epoch; chance is 0.10


def test_conv_nets_train_on_nhwc_batches_and_save_and_reload_to_the_same_predictions(data_dir, tmp_path):
    layouts = []

    class Layout(trainlab.Callback):  # what the step really feeds the model
        def on_train_begin(self, state):
            x, _ = state.train_step.feed.batch(torch.arange(4, device=state.device))
            layouts.append(x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last))
    run = trainlab.train("mnist-fast", overrides={"data.limit_train": 1000, "data.limit_test": 300}, data_dir=data_dir,
                         runs_dir=tmp_path, progress="none", callbacks=[Layout()])
    trainlab.train("mnist-mlp", epochs=1, overrides={"data.limit_train": 500, "data.limit_test": 100}, data_dir=data_dir,
                   save=False, progress="none", callbacks=[Layout()])
    assert layouts == [True, False]  # the conv net's batches are NHWC; the MLP's are flat
    assert run.model[0].weight.is_contiguous(memory_format=torch.channels_last)
    loaded = trainlab.load_run(run.run_id, runs_dir=tmp_path, data_dir=data_dir)
    assert loaded.model[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = run.tensors().x_test[:50].permute(0, 2, 3, 1).numpy()
    assert (run.predict(x).probs - loaded.predict(x).probs).__abs__().max() < 1e-5
    assert loaded.evaluate().accuracy == pytest.approx(run.metrics["test_acc"])


