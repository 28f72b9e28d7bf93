"""The captured CUDA step (engine/graphed.py), checked without a GPU: its body runs eagerly on the CPU
(`capture=False`) against the autograd step, its learning-rate table against torch's schedulers,
and its optimizer state against torch's per-parameter layout. The capture itself is checked on a
GPU by tests/test_cuda.py (bench/gpu_check.sh)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from trainlab.data.augment import make_augment
from trainlab.data.preprocess import Preprocess
from trainlab.data.tensors import TensorData
from trainlab.engine.graphed import GraphedStep, tensor_learning_rates
from trainlab.engine.step import AutogradStep, Feed
from trainlab.engine.strategy import choose_step
from trainlab.errors import TrainlabError
from trainlab.optim import make_optimizer, make_scheduler
from trainlab.recipes import AugmentConfig, OptimizerConfig, ScheduleConfig

CPU = torch.device("cpu")


def _data(n=40):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    prep = Preprocess("scale", (1, 8, 8), False)
    return TensorData("toy", ["a", "b", "c"], prep, x, y, None, None, x[:8], y[:8])


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def _steps(cfg: OptimizerConfig, schedule: ScheduleConfig | None, augment: AugmentConfig | None, total: int):
    data = _data()
    aug = make_augment(augment) if augment else None
    pair = []
    for kind in ("autograd", "graphed"):
        net = _net()
        opt = make_optimizer(cfg, net.parameters())
        sched = make_scheduler(schedule, opt, cfg.lr, total, 5) if schedule else None
        feed = Feed(data, aug)
        if kind == "autograd":
            pair.append(AutogradStep(net, opt, 0.1, CPU, "fp32", sched, feed))
        else:
            pair.append(GraphedStep(net, opt, 0.1, CPU, "fp32", sched, feed, capture=False))
    return pair, data, aug


@pytest.mark.parametrize("cfg", [OptimizerConfig(name="sgd", lr=0.05, momentum=0.9),
                                 OptimizerConfig(name="rmsprop", lr=1e-3),
                                 OptimizerConfig(name="rmsprop", lr=1e-3, momentum=0.5),
                                 OptimizerConfig(name="adam", lr=1e-3)], ids=lambda c: f"{c.name}-m{c.momentum}")
def test_the_graph_body_trains_as_the_autograd_step(cfg):
    total = 12
    sched = ScheduleConfig(name="onecycle")
    (auto, graphed), data, aug = _steps(cfg, sched, AugmentConfig(flip=True, crop=1), total)
    gen = torch.Generator().manual_seed(3)
    order = torch.randperm(40, generator=gen)
    draws = aug.draw(40, gen)
    losses = []
    for i in range(total):
        rows = slice((i % 4) * 10, (i % 4) * 10 + (10 if i % 4 < 3 else 7))  # a shorter last batch too
        losses.append((auto(order[rows], draws[rows]).item(), graphed(order[rows], draws[rows]).item()))
    for a, b in losses:
        assert b == pytest.approx(a, rel=1e-4, abs=1e-6)
    for p, q in zip(auto.forward.parameters(), graphed.forward.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-6)
    # the running sums are the same, made in place on the feed's tensors
    torch.testing.assert_close(graphed.feed.loss_sum, auto.feed.loss_sum, rtol=1e-4, atol=1e-5)
    assert int(graphed.feed.correct) == int(auto.feed.correct)
    # the learning rate came from the table inside the step; the host scheduler catches up on sync()
    assert graphed.pending == total and graphed.scheduler.last_epoch == 0
    graphed.sync()
    assert graphed.pending == 0 and graphed.scheduler.last_epoch == auto.scheduler.last_epoch == total
    assert float(graphed.optimizer.param_groups[0]["lr"]) == pytest.approx(auto.optimizer.param_groups[0]["lr"], rel=1e-6)
    assert isinstance(graphed.optimizer.param_groups[0]["lr"], torch.Tensor)  # still the tensor the graph reads


def test_the_optimizer_state_is_saved_as_numbers_and_loading_it_drops_the_graphs():
    (auto, graphed), data, _ = _steps(OptimizerConfig(name="adam", lr=1e-3), None, None, 4)
    idx = torch.arange(10)
    for _ in range(3):
        graphed(idx)
    saved = graphed.optimizer.state_dict()
    assert isinstance(saved["param_groups"][0]["lr"], float)  # as every other step saves it: portable
    graphed.graphs[10] = ("a graph", None)  # stands for one captured on a GPU
    graphed.optimizer.load_state_dict(copy.deepcopy(saved))
    assert graphed.graphs == {} and isinstance(graphed.optimizer.param_groups[0]["lr"], torch.Tensor)
    # a plain optimizer reads it, and so does another graphed step
    plain = make_optimizer(OptimizerConfig(name="adam", lr=1e-3), _net().parameters())
    plain.load_state_dict(copy.deepcopy(saved))
    assert plain.param_groups[0]["lr"] == pytest.approx(1e-3)


def test_a_plateau_callback_keeps_the_schedule_on_the_host():
    net = _net()
    opt = make_optimizer(OptimizerConfig(name="sgd", lr=0.1), net.parameters())
    sched = make_scheduler(ScheduleConfig(name="cosine"), opt, 0.1, 20, 5)
    step = GraphedStep(net, opt, 0.0, CPU, "fp32", sched, Feed(_data()), lr_table=False, capture=False)
    for _ in range(3):
        step(torch.arange(10))
    assert step.table is None and step.pending == 0 and sched.last_epoch == 3  # stepped by the host, in place
    assert isinstance(opt.param_groups[0]["lr"], torch.Tensor)


def test_learning_rates_become_device_tensors_in_place_of_numbers():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=0.25)
    tensor_learning_rates(opt, CPU)
    lr = opt.param_groups[0]["lr"]
    assert isinstance(lr, torch.Tensor) and float(lr) == 0.25
    tensor_learning_rates(opt, CPU)
    assert opt.param_groups[0]["lr"] is lr  # already there: the same tensor (a graph holds its address)


def test_the_strategy_is_chosen_once_by_model_device_and_setting():
    dense = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    conv = _net()
    cuda = torch.device("cuda")
    assert choose_step(dense, CPU) == "fused-dense"
    assert choose_step(dense, CPU, precision="bf16-mixed") == "autograd"
    assert choose_step(dense, CPU, distributed=True) == "autograd"
    assert choose_step(conv, CPU) == "autograd"
    assert choose_step(conv, cuda) == "cuda-graph" and choose_step(dense, cuda) == "cuda-graph"
    assert choose_step(conv, cuda, own_model=True) == "autograd"  # your own module: it may sync or branch on data
    assert choose_step(conv, cuda, distributed=True) == "autograd"
    assert choose_step(dense, CPU, "autograd") == "autograd"
    with pytest.raises(TrainlabError, match="TRAINLAB_STEP=fused-dense: .*use auto or autograd"):
        choose_step(conv, CPU, "fused-dense")
    with pytest.raises(TrainlabError, match="TRAINLAB_STEP=cuda-graph: that step needs a CUDA device"):
        choose_step(conv, CPU, "cuda-graph")


def test_trainlab_step_setting_is_one_line_when_bad(monkeypatch):
    from trainlab.settings import load_settings
    monkeypatch.setenv("TRAINLAB_STEP", "turbo")
    with pytest.raises(TrainlabError) as err:
        load_settings()
    assert "TRAINLAB_STEP" in str(err.value) and "autograd" in str(err.value) and "\n" not in str(err.value)
