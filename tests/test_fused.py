"""The fused dense step (trainlab.fused) against autograd: same gradients, same updates, same training."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import trainlab
from trainlab.callbacks import Callback
from trainlab.fused import (AutogradStep, FusedDenseStep, adapt_optimizer_state, dense_plan, flatten_parameters,
                            fused_applies)
from trainlab.models import build_model
from trainlab.optim import make_optimizer
from trainlab.recipes import OptimizerConfig, load_recipe

CPU = torch.device("cpu")


def _mlp(act=nn.ReLU, bias=True, depth=3, width=24, inputs=20, flatten=False):
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Flatten()] if flatten else []
    d = inputs
    for _ in range(depth - 1):
        layers += [nn.Linear(d, width, bias=bias), act()]
        d = width
    layers.append(nn.Linear(d, 5, bias=bias))
    return nn.Sequential(*layers)


def _batch(n=16, inputs=20, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, inputs, generator=g), torch.randint(0, 5, (n,), generator=g)


def _fused(model, cfg=OptimizerConfig(name="sgd", lr=1.0).model_copy(update={"lr": 0.0}), smoothing=0.0):
    flat = flatten_parameters(model)
    opt = make_optimizer(cfg, [flat])
    return FusedDenseStep(model, dense_plan(model), flat, opt, smoothing), flat


@pytest.mark.parametrize("act", [nn.ReLU, nn.Sigmoid, nn.Tanh, nn.GELU, nn.SiLU])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_gradients_loss_and_logits_equal_autograds(act, bias, smoothing):
    ref = _mlp(act, bias)
    model = copy.deepcopy(ref)
    x, y = _batch()
    logits_ref = ref(x)
    loss_ref = F.cross_entropy(logits_ref, y, label_smoothing=smoothing)
    loss_ref.backward()
    step, _ = _fused(model, smoothing=smoothing)  # lr 0: the step leaves the weights, the gradients stay
    logits, loss = step(x, y)
    torch.testing.assert_close(logits, logits_ref.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss, loss_ref.detach(), rtol=1e-6, atol=1e-7)
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7, msg=name)
        assert not torch.equal(q.grad, torch.zeros_like(q.grad)), name  # a real gradient, not two zeros


def test_a_last_smaller_batch_and_flatten_first():
    ref = _mlp(flatten=True, inputs=12)
    model = copy.deepcopy(ref)
    step, _ = _fused(model)
    for n in (8, 3, 8):  # the per-batch-size target cache must not leak between sizes
        x, y = _batch(n, 12, seed=n)
        x = x.view(n, 1, 3, 4)
        ref.zero_grad()
        F.cross_entropy(ref(x), y).backward()
        step(x, y)
        for p, q in zip(model.parameters(), ref.parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("cfg", [
    OptimizerConfig(name="rmsprop", lr=1e-2),
    OptimizerConfig(name="rmsprop", lr=1e-2, momentum=0.9, weight_decay=1e-3),
    OptimizerConfig(name="adam", lr=1e-2),
    OptimizerConfig(name="adamw", lr=1e-2, weight_decay=0.05),
    OptimizerConfig(name="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
    OptimizerConfig(name="sgd", lr=0.1),
], ids=lambda c: f"{c.name}-m{c.momentum}-wd{c.weight_decay}")
def test_twenty_updates_match_autograd_and_torch_optim(cfg):
    ref = _mlp()
    model = copy.deepcopy(ref)
    auto = AutogradStep(ref, make_optimizer(cfg, ref.parameters()), 0.0, CPU)
    step, flat = _fused(model, cfg)
    for i in range(20):
        x, y = _batch(seed=i)
        auto(x, y)
        step(x, y)
    assert step.update.started and step.update.direct is not None  # the direct kernels ran, not optimizer.step
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
    moved = sum((p - p0).abs().sum().item() for p, p0 in zip(ref.parameters(), _mlp().parameters()))
    assert moved > 0.1  # the updates did something


def test_dense_plan_takes_dense_stacks_only():
    fast = load_recipe("mnist-fast").model
    assert dense_plan(build_model(load_recipe("walk-5-relu").model, (784,), 10)[0]) is not None
    assert dense_plan(build_model(load_recipe("fashion-mlp").model, (1, 28, 28), 10)[0]) is not None
    assert dense_plan(build_model(fast, (1, 28, 28), 10)[0]) is None  # conv and batch norm
    assert dense_plan(_mlp(nn.ELU)) is None  # no fused backward for it
    assert dense_plan(nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Linear(4, 2))) is None
    assert dense_plan(nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.0), nn.Linear(4, 2))) is not None
    assert dense_plan(nn.Sequential(nn.Linear(4, 2), nn.ReLU())) is None  # logits must come from a Linear
    assert dense_plan(nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Sigmoid(), nn.Linear(4, 2))) is None

    class Custom(nn.Sequential):
        def forward(self, x):
            return super().forward(x) * 2
    assert dense_plan(Custom(nn.Linear(4, 2))) is None
    assert not fused_applies(_mlp(), torch.device("cuda"))
    assert not fused_applies(_mlp(), CPU, enabled=False) and fused_applies(_mlp(), CPU)


def test_flat_parameters_are_views_until_closed():
    model = _mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    step, flat = _fused(model)
    ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
    assert ptrs == {flat.untyped_storage().data_ptr()}
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    step.close()
    assert len({p.untyped_storage().data_ptr() for p in model.parameters()}) == len(before)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("name", ["adam", "rmsprop", "sgd"])
def test_optimizer_state_moves_between_flat_and_per_parameter(name):
    cfg = OptimizerConfig(name=name, lr=1e-2, momentum=0.9 if name != "adam" else 0.0)
    ref = _mlp()
    model = copy.deepcopy(ref)
    auto_opt = make_optimizer(cfg, ref.parameters())
    auto = AutogradStep(ref, auto_opt, 0.0, CPU)
    step, flat = _fused(model, cfg)
    for i in range(5):
        auto(*_batch(seed=i))
        step(*_batch(seed=i))
    shapes = [p.shape for p in ref.parameters()]
    # per parameter -> flat: a fresh fused optimizer loads the autograd one's state and continues alike
    m2 = copy.deepcopy(ref)
    s2, f2 = _fused(m2, cfg)
    s2.optimizer.load_state_dict(adapt_optimizer_state(auto_opt.state_dict(), s2.optimizer, shapes))
    # flat -> per parameter
    m3 = copy.deepcopy(model)
    for p in m3.parameters():
        p.data = p.data.clone()
    o3 = make_optimizer(cfg, m3.parameters())
    o3.load_state_dict(adapt_optimizer_state(step.optimizer.state_dict(), o3, shapes))
    a3 = AutogradStep(m3, o3, 0.0, CPU)
    for i in range(5, 10):
        auto(*_batch(seed=i))
        s2(*_batch(seed=i))
        a3(*_batch(seed=i))
    for p, q, r in zip(ref.parameters(), m2.parameters(), m3.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(r, p, rtol=1e-4, atol=1e-5)


class _Seen(Callback):
    def on_train_begin(self, state):
        self.fused = state.fused is not None


def test_train_picks_the_fused_step_and_trains_alike(data_dir, monkeypatch):
    ov = {"data.limit_train": 3000, "data.limit_test": 500}
    seen = _Seen()
    fused = trainlab.train("mnist-mlp", epochs=2, overrides=ov, data_dir=data_dir, save=False, progress="none",
                           callbacks=[seen])
    assert seen.fused
    assert len({p.untyped_storage().data_ptr() for p in fused.model.parameters()}) == 4  # own storage again
    monkeypatch.setenv("TRAINLAB_FUSED", "0")
    auto = trainlab.train("mnist-mlp", epochs=2, overrides=ov, data_dir=data_dir, save=False, progress="none",
                          callbacks=[seen])
    assert not seen.fused
    for a, b in zip(fused.history, auto.history):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4) and a["val_acc"] == pytest.approx(b["val_acc"], abs=2e-3)
    trainlab.train("mnist-tfjs-cnn", overrides={**ov, "data.limit_train": 300}, data_dir=data_dir, save=False,
                   progress="none", callbacks=[seen])
    assert not seen.fused  # a CNN trains with autograd


class _StopAt(Callback):
    per_batch = True

    def __init__(self, stop, epoch, step):
        self.stop, self.at = stop, (epoch, step)

    def on_batch_end(self, state, batch, logs):
        if (state.epoch, batch) == self.at:
            self.stop.set()


def test_a_run_checkpointed_by_autograd_resumes_fused(data_dir, tmp_path, monkeypatch):
    import threading

    from trainlab.errors import Interrupted
    ov = {"data.limit_train": 2000, "data.limit_test": 300}
    ref = trainlab.train("fashion-mlp", epochs=2, overrides=ov, data_dir=data_dir, runs_dir=tmp_path, progress="none")
    monkeypatch.setenv("TRAINLAB_FUSED", "0")
    stop = threading.Event()
    with pytest.raises(Interrupted) as info:
        trainlab.train("fashion-mlp", epochs=2, overrides=ov, data_dir=data_dir, runs_dir=tmp_path, progress="none",
                       stop=stop, callbacks=[_StopAt(stop, 1, 10)])
    monkeypatch.setenv("TRAINLAB_FUSED", "1")
    seen = _Seen()
    done = trainlab.train(resume=info.value.run_id, data_dir=data_dir, runs_dir=tmp_path, progress="none",
                          callbacks=[_StopAt(threading.Event(), -1, -1), seen])
    assert seen.fused and len(done.history) == 2
    for p, q in zip(done.model.parameters(), ref.model.parameters()):  # Adam's moments carried over
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4)
