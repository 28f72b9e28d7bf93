"""The speed work keeps results: fast recipes still reach their accuracy, the dynamo-free optimizer
step is torch's update, NHWC models save and reload exactly, and the CLI's process tuning is inert."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

import trainlab
from trainlab.models import build_model, prefers_channels_last
from trainlab.optim import make_optimizer
from trainlab.recipes import OptimizerConfig, load_recipe


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


@pytest.mark.parametrize("name", ["mnist-fast", "fashion-fast", "cifar10-fast"])
def test_fast_recipes_use_the_documented_techniques(name):
    r = load_recipe(name)
    assert any(layer.type == "batchnorm" for layer in r.model.layers)
    assert r.schedule.name == "onecycle" and r.loss.label_smoothing > 0


def test_cifar10_fast_short_run(data_dir):
    zip_path = data_dir / "cifar10-jpeg.zip"
    if not zip_path.is_file():
        pytest.fail(f"cifar10-jpeg.zip is missing from {data_dir}: the shared data directory is incomplete")
    run = trainlab.train("cifar10-fast", epochs=1, overrides={"data.source": str(zip_path), "data.limit_train": 8000,
                                                                "data.limit_test": 2000},
                         data_dir=data_dir, save=False, progress="none")
    assert run.metrics["test_acc"] >= 0.42, run.metrics  # 8,000 images, one epoch; chance is 0.10


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_dynamo_free_step_is_torchs_update(name):
    code = f"""
import sys, torch
from trainlab.system.process_wide import prepare_short_process
from trainlab.optim import make_optimizer
from trainlab.recipes import OptimizerConfig
prepare_short_process()
torch.manual_seed(0)
m = torch.nn.Linear(5, 3)
cfg = OptimizerConfig(name="{name}", lr=0.05, momentum=0.5 if "{name}" == "sgd" else 0.0, weight_decay=0.01)
opt = make_optimizer(cfg, m.parameters())
for i in range(4):
    opt.zero_grad()
    m(torch.ones(2, 5) * (i + 1)).pow(2).sum().backward()
    opt.step()
assert "torch._dynamo" not in sys.modules, "the step imported torch._dynamo"
opt.load_state_dict(opt.state_dict())
print(repr(m.weight.detach().flatten().tolist()))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    ours = torch.tensor(eval(out.stdout.strip()))
    torch.manual_seed(0)
    m = nn.Linear(5, 3)
    kw = dict(lr=0.05, weight_decay=0.01)
    ref = {"adam": lambda p: torch.optim.Adam(p, eps=1e-7, **kw), "adamw": lambda p: torch.optim.AdamW(p, eps=1e-7, **kw),
           "sgd": lambda p: torch.optim.SGD(p, momentum=0.5, **kw)}[name](m.parameters())
    for i in range(4):
        ref.zero_grad()
        m(torch.ones(2, 5) * (i + 1)).pow(2).sum().backward()
        ref.step()
    assert torch.allclose(ours, m.weight.detach().flatten(), atol=1e-6)


def test_optimizer_state_survives_a_checkpoint_round_trip():
    m = nn.Linear(3, 2)
    opt = make_optimizer(OptimizerConfig(name="adam"), m.parameters())
    m(torch.ones(1, 3)).sum().backward()
    opt.step()
    again = make_optimizer(OptimizerConfig(name="adam"), m.parameters())
    again.load_state_dict(opt.state_dict())
    assert again.state_dict()["state"][0]["exp_avg"].equal(opt.state_dict()["state"][0]["exp_avg"])


def test_channels_last_for_conv_nets_where_it_was_measured_faster():
    bn_cnn, _ = build_model(load_recipe("mnist-fast").model, (1, 28, 28), 10)
    plain_cnn, _ = build_model(load_recipe("mnist-tfjs-cnn").model, (1, 28, 28), 10)
    mlp, _ = build_model(load_recipe("mnist-mlp").model, (784,), 10)
    assert prefers_channels_last(bn_cnn) and prefers_channels_last(plain_cnn)
    assert not prefers_channels_last(mlp)


def test_an_nhwc_model_saves_and_reloads_to_the_same_predictions(data_dir, tmp_path):
    run = trainlab.train("mnist-fast", overrides={"data.limit_train": 1000, "data.limit_test": 300}, data_dir=data_dir,
                         runs_dir=tmp_path, progress="none")
    assert run.model[0].weight.is_contiguous(memory_format=torch.channels_last)
    loaded = trainlab.load_run(run.run_id, runs_dir=tmp_path, data_dir=data_dir)
    assert loaded.model[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = run.tensors().x_test[:50].permute(0, 2, 3, 1).numpy()
    assert (run.predict(x).probs - loaded.predict(x).probs).__abs__().max() < 1e-5
    assert loaded.evaluate().accuracy == pytest.approx(run.metrics["test_acc"])


def test_process_tuning_keeps_freed_memory_on_glibc():
    from trainlab.system.process_wide import keep_freed_memory
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc only")
    assert keep_freed_memory() is True
