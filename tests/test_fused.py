"""The fused dense step (trainlab.engine.fused) against autograd: same gradients, same updates, same training."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import trainlab
from trainlab.engine.callbacks import Callback
from trainlab.engine.fused import (
    FusedDenseStep,
    dense_plan,
    flat_to_per_parameter,
    flatten_parameters,
    fused_applies,
    per_parameter_state_dict,
    per_parameter_to_flat,
)
from trainlab.engine.step import AutogradStep
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
    per_parameter_state_dict(opt, model)  # as strategy.build_step makes it
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
    logits, loss = step.update(x, y)
    torch.testing.assert_close(logits, logits_ref.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss, loss_ref.detach(), rtol=1e-6, atol=1e-7)
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7, msg=name)
        assert not torch.equal(q.grad, torch.zeros_like(q.grad)), name  # a real gradient, not two zeros


def test_mixed_stack_bias_and_no_bias_layers_and_a_linear_after_a_linear():
    torch.manual_seed(3)
    ref = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 12, bias=False), nn.Linear(12, 10), nn.SiLU(),
                        nn.Linear(10, 8, bias=False), nn.Tanh(), nn.Linear(8, 5))
    model = copy.deepcopy(ref)
    step, _ = _fused(model)
    for n in (16, 7):
        x, y = _batch(n, seed=n)
        ref.zero_grad()
        loss_ref = F.cross_entropy(ref(x), y)
        loss_ref.backward()
        _, loss = step.update(x, y)
        torch.testing.assert_close(loss, loss_ref.detach(), rtol=1e-6, atol=1e-7)
        for (name, p), q in zip(model.named_parameters(), ref.parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7, msg=name)


def test_flat_layout_puts_each_bias_beside_its_weight_rows():
    model = _mlp(depth=2, width=6, inputs=4)  # Linear(4, 6), ReLU, Linear(6, 5)
    ref = copy.deepcopy(model)
    _, flat = _fused(model)
    first = flat.detach()[:6 * 5].view(6, 5)
    torch.testing.assert_close(first[:, :4], ref[0].weight.detach())
    torch.testing.assert_close(first[:, 4], ref[0].bias.detach())
    second = flat.detach()[30:].view(5, 7)
    torch.testing.assert_close(second[:, :6], ref[2].weight.detach())
    torch.testing.assert_close(second[:, 6], ref[2].bias.detach())
    assert model[0].weight.grad.data_ptr() == flat.grad.data_ptr()  # gradients sit in the same layout


def test_the_fused_step_refuses_parameters_not_in_flat_blocks():
    model = _mlp()
    with pytest.raises(ValueError, match="flatten_parameters"):
        FusedDenseStep(model, dense_plan(model), nn.Parameter(torch.zeros(1)), torch.optim.SGD([torch.zeros(1)]), 0.0)


def test_optimizer_state_of_an_older_concatenated_checkpoint_moves_into_blocks():
    # checkpoints written before the [weight | bias] blocks held the flat state "concat"enated
    cfg = OptimizerConfig(name="rmsprop", lr=1e-2, momentum=0.9)
    ref = _mlp()
    opt = make_optimizer(cfg, ref.parameters())
    auto = AutogradStep(ref, opt, 0.0, CPU)
    for i in range(3):
        auto.update(*_batch(seed=i))
    model = copy.deepcopy(ref)
    step, flat = _fused(model, cfg)
    old = per_parameter_to_flat(opt.state_dict(), model, layout="concat")  # as written before
    concat = old["state"][0]["velocity"]
    torch.testing.assert_close(concat, torch.cat([opt.state[p]["velocity"].reshape(-1) for p in ref.parameters()]))
    blocks = per_parameter_to_flat(opt.state_dict(), model)
    assert not torch.equal(blocks["state"][0]["velocity"], concat)  # the layouts really differ
    step.optimizer.load_state_dict(flat_to_per_parameter(old, model, "concat"))  # both continue alike from here
    for i in range(3, 8):
        auto.update(*_batch(seed=i))
        step.update(*_batch(seed=i))
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


def test_a_last_smaller_batch_and_flatten_first():
    ref = _mlp(flatten=True, inputs=12)
    model = copy.deepcopy(ref)
    step, _ = _fused(model)
    for n in (8, 3, 8):  # the per-batch-size target cache must not leak between sizes
        x, y = _batch(n, 12, seed=n)
        x = x.view(n, 1, 3, 4)
        ref.zero_grad()
        F.cross_entropy(ref(x), y).backward()
        step.update(x, y)
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
        auto.update(x, y)
        step.update(x, y)
    assert step.apply_update.started and step.apply_update.direct is not None  # the direct kernels ran, not optimizer.step
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
def test_the_fused_optimizer_saves_and_loads_torchs_per_parameter_state(name):
    cfg = OptimizerConfig(name=name, lr=1e-2, momentum=0.9 if name != "adam" else 0.0)
    ref = _mlp()
    model = copy.deepcopy(ref)
    auto_opt = make_optimizer(cfg, ref.parameters())
    auto = AutogradStep(ref, auto_opt, 0.0, CPU)
    step, flat = _fused(model, cfg)
    for i in range(5):
        auto.update(*_batch(seed=i))
        step.update(*_batch(seed=i))
    saved = step.optimizer.state_dict()  # what a checkpoint holds: one entry per parameter, as torch's own
    assert saved["param_groups"][0]["params"] == list(range(len(list(model.parameters()))))
    assert set(saved["state"]) == set(auto_opt.state_dict()["state"])
    for i, p in enumerate(model.parameters()):
        for key, value in saved["state"][i].items():
            assert value.shape == auto_opt.state_dict()["state"][i][key].shape
    # per parameter -> flat: a fresh fused optimizer loads the autograd one's state and continues alike
    m2 = copy.deepcopy(ref)
    s2, f2 = _fused(m2, cfg)
    s2.optimizer.load_state_dict(auto_opt.state_dict())
    # flat -> per parameter: a plain optimizer loads the fused one's state
    m3 = copy.deepcopy(model)
    for p in m3.parameters():
        p.data = p.data.clone()
    o3 = make_optimizer(cfg, m3.parameters())
    o3.load_state_dict(saved)
    a3 = AutogradStep(m3, o3, 0.0, CPU)
    for i in range(5, 10):
        auto.update(*_batch(seed=i))
        s2.update(*_batch(seed=i))
        a3.update(*_batch(seed=i))
    for p, q, r in zip(ref.parameters(), m2.parameters(), m3.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(r, p, rtol=1e-4, atol=1e-5)


class _Seen(Callback):
    def on_train_begin(self, state):
        self.fused = state.train_step.kind == "fused-dense"


def test_train_picks_the_fused_step_and_trains_alike(data_dir, monkeypatch):
    ov = {"data.limit_train": 3000, "data.limit_test": 500}
    seen = _Seen()
    fused = trainlab.train("mnist-mlp", epochs=2, overrides=ov, data_dir=data_dir, save=False, progress="none",
                           callbacks=[seen])
    assert seen.fused
    assert len({p.untyped_storage().data_ptr() for p in fused.model.parameters()}) == 4  # own storage again
    monkeypatch.setenv("TRAINLAB_STEP", "autograd")
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
    monkeypatch.setenv("TRAINLAB_STEP", "autograd")
    stop = threading.Event()
    with pytest.raises(Interrupted) as info:
        trainlab.train("fashion-mlp", epochs=2, overrides=ov, data_dir=data_dir, runs_dir=tmp_path, progress="none",
                       stop=stop, callbacks=[_StopAt(stop, 1, 10)])
    monkeypatch.setenv("TRAINLAB_STEP", "auto")
    seen = _Seen()
    done = trainlab.resume(info.value.run_id, data_dir=data_dir, runs_dir=tmp_path, progress="none",
                          callbacks=[_StopAt(threading.Event(), -1, -1), seen])
    assert seen.fused and len(done.history) == 2
    for p, q in zip(done.model.parameters(), ref.model.parameters()):  # Adam's moments carried over
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4)


def _state(recipe, sets=None):
    import numpy as np

    from trainlab.data.readers import Dataset
    from trainlab.settings import load_settings
    from trainlab.training.build import build
    r = load_recipe(recipe, {"data.validation": "test", **(sets or {})})
    rng = np.random.default_rng(0)
    ds = Dataset("mnist", [str(i) for i in range(10)], rng.integers(0, 255, (64, 28, 28, 1), dtype=np.uint8),
                 rng.integers(0, 10, 64), rng.integers(0, 255, (16, 28, 28, 1), dtype=np.uint8), rng.integers(0, 10, 16))
    return build(r, load_settings(), CPU, dataset=ds)


def test_small_dense_stacks_train_on_one_thread_unless_told(monkeypatch):
    from trainlab.settings import load_settings
    from trainlab.training.threads import pick_threads
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("TRAINLAB_THREADS", raising=False)
    monkeypatch.setattr("trainlab.training.threads.busy_elsewhere", lambda since: 0.0)  # an idle machine
    from trainlab.system.cpus import allowed_cpus
    walk = _state("walk-5-relu")  # 50 x 784 x 30: one thread
    assert pick_threads(walk, load_settings()) == (1, {"wait_policy": "spin (default)", "allowed": allowed_cpus(),
                                                        "reason": "small dense stack"})
    for state in (_state("mnist-mlp"), _state("walk-5-relu", {"batch_size": 200}),  # 100 x 784 x 64, 200 x 784 x 30
                  _state("mnist-tfjs-cnn", {"data.validation": "test"})):  # not fused
        threads, info = pick_threads(state, load_settings())
        assert threads == allowed_cpus() and info["adaptive"] and info["reason"] == f"{allowed_cpus()} CPUs free"
    assert pick_threads(walk, load_settings(threads=3))[0] == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert pick_threads(walk, load_settings())[0] is None  # the user chose


def test_train_uses_the_picked_threads_records_them_and_gives_the_count_back(data_dir, tmp_path, monkeypatch):
    from trainlab.runs.record import read_record
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    was = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = []

        class Threads(Callback):
            def on_train_begin(self, state):
                seen.append(torch.get_num_threads())
        run = trainlab.train("walk-5-relu", epochs=1, overrides={"data.limit_train": 500, "data.limit_test": 100},
                             data_dir=data_dir, runs_dir=tmp_path, progress="none", callbacks=[Threads()])
        assert seen == [1] and torch.get_num_threads() == 2
        assert read_record(run.run_dir).threads == 1  # a resume trains on one thread too
    finally:
        torch.set_num_threads(was)
