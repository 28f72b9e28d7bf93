"""What trainlab changes for the whole process (system/process_wide.py): the speed-ups trainlab's own
processes take are torch's own arithmetic, each is skipped on a torch it was not tested with (and
training then takes the public path, to the same numbers), and a library call from a notebook
leaves the process as it found it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from trainlab.system import process_wide


def _python(code: str, timeout: float = 300) -> str:
    """Run `code` in a fresh interpreter (process-wide changes stay there); its stdout."""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_the_dynamo_free_step_is_torchs_update(name):
    out = _python(f"""
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
""")
    ours = torch.tensor(eval(out.strip()))
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


def test_versions_outside_the_tested_range_take_the_public_paths(monkeypatch):
    assert process_wide.torch_version("2.13.0+cpu") == (2, 13) and process_wide.torch_version("nonsense") == (0, 0)
    assert process_wide.torch_tested(torch.__version__)  # this project's pin is a tested one
    assert not process_wide.torch_tested("2.4.1") and not process_wide.torch_tested("3.0.0")
    monkeypatch.setattr(process_wide, "TESTED_TORCH", ((9, 0), (9, 9)))
    assert process_wide.private_kernel("_fused_adam_") is None and not process_wide.aten_backward_ops()
    assert not process_wide.eager_optimizer_step()
    from trainlab.engine.strategy import choose_step
    assert choose_step(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), torch.device("cpu")) == "autograd"


def test_a_run_on_an_untested_torch_trains_to_the_same_numbers(tmp_path, data_dir):
    # the same recipe in two fresh processes: one takes the private paths (the fused dense step, its
    # direct optimizer kernels, the dynamo-free step), the other is told its torch is untested
    code = """
import json, sys
from trainlab.system import process_wide
if sys.argv[1] == "untested":
    process_wide.TESTED_TORCH = ((9, 0), (9, 9))
print(json.dumps({"patched": process_wide.skip_dynamo_import()}))
import trainlab
seen = []
class Seen(trainlab.Callback):
    def on_train_begin(self, state):
        seen.append(state.train_step.kind)
run = trainlab.train("mnist-mlp", epochs=2, overrides={"data.limit_train": 2000, "data.limit_test": 400,
                     "optimizer.name": "adam", "optimizer.lr": 0.002}, data_dir=sys.argv[2], save=False,
                     progress="none", callbacks=[Seen()])
print(json.dumps({"step": seen[0], "loss": run.history[-1]["loss"], "test_acc": run.metrics["test_acc"],
                  "dynamo": "torch._dynamo" in sys.modules}))
"""
    out = {}
    for kind in ("tested", "untested"):
        p = subprocess.run([sys.executable, "-c", code, kind, str(data_dir)], capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr[-3000:]
        patched, result = (json.loads(line) for line in p.stdout.strip().splitlines()[-2:])
        out[kind] = {**patched, **result}
    assert out["tested"]["patched"] and out["tested"]["step"] == "fused-dense" and not out["tested"]["dynamo"]
    assert not out["untested"]["patched"] and out["untested"]["step"] == "autograd"
    assert out["untested"]["loss"] == pytest.approx(out["tested"]["loss"], rel=1e-3)
    assert abs(out["untested"]["test_acc"] - out["tested"]["test_acc"]) <= 0.005


def test_a_library_call_leaves_the_process_as_it_found_it(tmp_path, data_dir):
    # a notebook's process: training, the LR range test and an export to TensorBoard change nothing
    # process-wide that they do not put back (generators, threads, loggers, signal handlers, the
    # environment, torch's optimizer methods, warning filters)
    out = _python(f"""
import json, logging, os, random, signal, sys, warnings
import numpy as np, torch
import trainlab
DATA_DIR = "{data_dir}"
def snapshot():
    loggers = {{n: logging.getLogger(n).level for n in list(logging.root.manager.loggerDict)}}
    env = {{k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}}  # torch's own import writes it
    return {{"env": env, "threads": torch.get_num_threads(), "py": random.random(),
            "np": float(np.random.rand()), "torch": float(torch.rand(1)),
            "loggers": {{n: v for n, v in loggers.items() if not n.startswith(("matplotlib", "PIL"))}},
            "signals": [str(signal.getsignal(s)) for s in (signal.SIGINT, signal.SIGTERM)],
            "patched": [getattr(f, "__dynamo_disable", None) is f for f in
                        [getattr(torch.optim.Optimizer.zero_grad, "__wrapped__", None)]],  # skip_dynamo_import's mark
            "filters": [str(f) for f in warnings.filters]}}
random.seed(1); np.random.seed(1); torch.manual_seed(1)
import optuna, pooch, sympy  # their loggers and import-time warning filters exist before, as in a notebook using them
before = snapshot()
random.seed(1); np.random.seed(1); torch.manual_seed(1)
run = trainlab.train("mnist-mlp", epochs=1, overrides={{"data.limit_train": 500, "data.limit_test": 100}},
                     data_dir=DATA_DIR, runs_dir="{tmp_path / 'runs'}", progress="none")
trainlab.find_lr("mnist-mlp", steps=30, overrides={{"data.limit_train": 500}}, data_dir=DATA_DIR)
trainlab.to_tensorboard([run.run_id], "{tmp_path / 'tb'}", trainlab.load_settings(runs_dir="{tmp_path / 'runs'}"))
after = snapshot()
after["loggers"] = {{n: v for n, v in after["loggers"].items() if n in before["loggers"]}}  # loggers made by imports since
after["filters"] = [f for f in after["filters"] if f not in before["filters"]]  # a filter added (not one put back)
before["filters"] = []
print(json.dumps({{k: [before[k], after[k]] for k in before if before[k] != after[k]}}))
""")
    changed = json.loads(out.strip().splitlines()[-1])
    assert changed == {}, changed


def test_quiet_loggers_puts_the_levels_back():
    import logging
    lg = logging.getLogger("trainlab-test-quiet")
    lg.setLevel(logging.DEBUG)
    with process_wide.quiet_loggers("trainlab-test-quiet"):
        assert lg.level == logging.ERROR
    assert lg.level == logging.DEBUG


def test_the_servers_speed_up_on_glibc_only_where_there_is_one():
    out = _python("from trainlab.system.process_wide import keep_freed_memory; print(keep_freed_memory())")
    assert out.strip() == ("True" if sys.platform.startswith("linux") else "False")
