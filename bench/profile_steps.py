"""Where the time goes: the measurements behind the README's performance notes.

    python bench/profile_steps.py                 # all sections
    python bench/profile_steps.py --recipe fashion-fast --only step,ops

Sections (each in fresh processes, medians of --repeat runs, alternating the variants):
- startup: `import torch`, `import trainlab`, and the torch._dynamo import that torch.optim
  triggers unless trainlab.system.process_wide.skip_dynamo_import() is applied.
- step: one training step of the recipe's model (its batch size, random data): NCHW against
  channels_last, and with glibc's default malloc thresholds against trainlab's.
- ops: the torch profiler's top operators over 20 steps of the NHWC model.
- fused: one training step of each dense recipe (its batch size, random data), autograd with a
  per-parameter optimizer against trainlab.engine.fused's hand-derived step on flat buffers.
- cnn: the step section's NCHW/NHWC comparison for each conv recipe.
- precision: one training step of each conv recipe (its batch size, random data, NHWC, trainlab's
  malloc settings) in fp32 and in bf16-mixed, on 2 threads and on 1 (trainlab.engine.precision).
- bnfold: evaluation of the test set (10,000 images, batch 256, the recipe's TTA) with the BN CNN's
  batch norms against the same network with them removed: the most folding BN into the
  convolutions for inference could save.
- compile: one training step of the tfjs CNN (batch 64, NHWC, fp32) eager against under
  torch.compile (inductor, C++ codegen), and the first compiled step's seconds (the compilation),
  with inductor's on-disk cache and without it (a first run).
- threads: the fused step of each dense recipe on one thread against two, with its biggest
  matmul (batch x in x out multiply-adds; trainlab.training.threads.SMALL_MATMUL is the cut).

    python bench/profile_steps.py --only fused,cnn --repeat 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

STARTUP = {
    "import torch": "import time; t=time.perf_counter(); import torch; print(time.perf_counter()-t)",
    "import trainlab": "import time; t=time.perf_counter(); import trainlab; print(time.perf_counter()-t)",
    "first torch Adam step (imports torch._dynamo)":
        "import torch, time; m=torch.nn.Linear(2,2); t=time.perf_counter(); o=torch.optim.Adam(m.parameters()); "
        "m(torch.ones(1,2)).sum().backward(); o.step(); print(time.perf_counter()-t)",
    "first trainlab Adam step (prepare_short_process)":
        "import torch, time; from trainlab.system.process_wide import prepare_short_process; prepare_short_process(); "
        "from trainlab.optim import make_optimizer; from trainlab.recipes import OptimizerConfig; "
        "m=torch.nn.Linear(2,2); t=time.perf_counter(); o=make_optimizer(OptimizerConfig(), m.parameters()); "
        "m(torch.ones(1,2)).sum().backward(); o.step(); print(time.perf_counter()-t)",
}

STEP = """
import sys, time, torch, torch.nn.functional as F
from trainlab.models import build_model
from trainlab.optim import make_optimizer
from trainlab.recipes import load_recipe
from trainlab.system.process_wide import keep_freed_memory, skip_dynamo_import
skip_dynamo_import()
layout, malloc = sys.argv[1], sys.argv[2]
if malloc == "tuned":
    keep_freed_memory()
r = load_recipe("{recipe}")
shape = (3, 32, 32) if r.data.name == "cifar10" else (1, 28, 28)
if r.data.flatten:
    shape = (shape[0] * shape[1] * shape[2],)
torch.manual_seed(0)
net, _ = build_model(r.model, shape, 10)
x = torch.randn(r.batch_size, *shape)
if layout == "nhwc":
    net = net.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 10, (r.batch_size,))
opt = make_optimizer(r.optimizer, net.parameters())
def step():
    loss = F.cross_entropy(net(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
for _ in range(10):
    step()
t = time.perf_counter()
for _ in range(50):
    step()
print((time.perf_counter() - t) / 50)
"""

FUSED = """
import sys, time, torch
from trainlab.system.process_wide import prepare_short_process
prepare_short_process()
from trainlab.engine.step import AutogradStep
from trainlab.engine.fused import FusedDenseStep, dense_plan, flatten_parameters
from trainlab.models import build_model
from trainlab.optim import make_optimizer
from trainlab.recipes import load_recipe
r, mode = load_recipe("{recipe}"), sys.argv[1]
if len(sys.argv) > 2:
    torch.set_num_threads(int(sys.argv[2]))
shape = (784,) if r.data.flatten else (1, 28, 28)
torch.manual_seed(0)
net, _ = build_model(r.model, shape, 10)
if mode == "fused":
    flat = flatten_parameters(net)
    step = FusedDenseStep(net, dense_plan(net), flat, make_optimizer(r.optimizer, [flat]), 0.0)
else:
    step = AutogradStep(net, make_optimizer(r.optimizer, net.parameters()), 0.0, torch.device("cpu"))
xs = [torch.rand(r.batch_size, *shape) for _ in range(16)]
ys = [torch.randint(0, 10, (r.batch_size,)) for _ in range(16)]
for i in range(200):
    step.update(xs[i % 16], ys[i % 16])
t = time.perf_counter()
for i in range(2000):
    step.update(xs[i % 16], ys[i % 16])
print((time.perf_counter() - t) / 2000)
"""

PRECISION = """
import sys, time, torch
from trainlab.system.process_wide import keep_freed_memory, skip_dynamo_import
skip_dynamo_import()
keep_freed_memory()
from trainlab.engine.step import AutogradStep
from trainlab.models import build_model, place
from trainlab.optim import make_optimizer
from trainlab.recipes import load_recipe
precision, threads = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(threads)
r = load_recipe("{recipe}")
shape = (3, 32, 32) if r.data.name == "cifar10" else (1, 28, 28)
torch.manual_seed(0)
net, _ = build_model(r.model, shape, 10)
net = place(net, torch.device("cpu"))
step = AutogradStep(net, make_optimizer(r.optimizer, net.parameters()), 0.0, torch.device("cpu"), precision)
xs = [torch.rand(r.batch_size, *shape).contiguous(memory_format=torch.channels_last) for _ in range(8)]
ys = [torch.randint(0, 10, (r.batch_size,)) for _ in range(8)]
for i in range(20):
    step.update(xs[i % 8], ys[i % 8])
t = time.perf_counter()
for i in range(100):
    step.update(xs[i % 8], ys[i % 8])
print((time.perf_counter() - t) / 100)
"""

CONV_RECIPES = ("mnist-tfjs-cnn", "cifar10-cnn", "cifar10-cnn-deeper", "mnist-fast", "fashion-fast", "cifar10-fast", "mnist-draw")

BNFOLD = """
import sys, time, torch
from torch import nn
from trainlab.engine.inference import predict_logits
from trainlab.models import build_model
from trainlab.data.preprocess import Preprocess
from trainlab.recipes import load_recipe
r = load_recipe("{recipe}")
shape = (3, 32, 32) if r.data.name == "cifar10" else (1, 28, 28)
torch.manual_seed(0)
net, _ = build_model(r.model, shape, 10)
if sys.argv[1] == "removed":
    for mod in list(net.modules()):
        for k, c in list(mod.named_children()):
            if isinstance(c, nn.BatchNorm2d):
                setattr(mod, k, nn.Identity())
x = torch.randint(0, 255, (10000, *shape), dtype=torch.uint8)
prep = Preprocess("standardize", shape, False, [0.5] * shape[0], [0.25] * shape[0])
predict_logits(net, x[:512], prep, 256, torch.device("cpu"), r.tta)
t = time.perf_counter()
predict_logits(net, x, prep, 256, torch.device("cpu"), r.tta)
print(time.perf_counter() - t)
"""

OPS = """
import torch, torch.nn.functional as F
from torch.profiler import profile
from trainlab.models import build_model
from trainlab.optim import make_optimizer
from trainlab.recipes import load_recipe
r = load_recipe("{recipe}")
shape = (3, 32, 32) if r.data.name == "cifar10" else (1, 28, 28)
net, _ = build_model(r.model, shape, 10)
net = net.to(memory_format=torch.channels_last)
x = torch.randn(r.batch_size, *shape).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 10, (r.batch_size,))
opt = make_optimizer(r.optimizer, net.parameters())
def step():
    loss = F.cross_entropy(net(x), y); opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
for _ in range(5):
    step()
with profile() as p:
    for _ in range(20):
        step()
print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=40))
"""

COMPILE = """
import os, sys
mode = sys.argv[1]
if mode == "first-compiled-cold":  # what a first run sees: no inductor cache (later runs hit it)
    os.environ["TORCHINDUCTOR_FORCE_DISABLE_CACHES"] = "1"
import time, torch, torch.nn.functional as F
from trainlab.models import build_model
from trainlab.recipes import load_recipe
from trainlab.system.process_wide import keep_freed_memory
keep_freed_memory()
r = load_recipe("mnist-tfjs-cnn")
torch.manual_seed(0)
net, _ = build_model(r.model, (1, 28, 28), 10)
net = net.to(memory_format=torch.channels_last)
x = torch.rand(64, 1, 28, 28).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 10, (64,))
opt = torch.optim.RMSprop(net.parameters(), lr=1e-3)
fwd = net if mode == "eager" else torch.compile(net)
def step():
    loss = F.cross_entropy(fwd(x), y); opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
t = time.perf_counter()
step()
if mode.startswith("first-compiled"):
    print(time.perf_counter() - t)
    raise SystemExit
for _ in range(10):
    step()
t = time.perf_counter()
for _ in range(100):
    step()
print((time.perf_counter() - t) / 100)
"""


def timed(code: str, *args: str) -> float:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-2000:])
    return float(out.stdout.strip().splitlines()[-1])


def alternate(code: str, variants: list[tuple[str, ...]], repeat: int) -> dict:
    """Each variant's times (the script's arguments) over `repeat` rounds, alternating so that
    drift hits every variant alike."""
    times: dict = {v: [] for v in variants}
    for _ in range(repeat):
        for v in variants:
            times[v].append(timed(code, *v))
    return times


def report(results: dict, key: str, line: str, ts: list[float], unit: str = "ms", fmt: str = ".3f") -> None:
    """The median into `results`, and one printed line with every run."""
    scale = 1e3 if unit == "ms" else 1.0
    results[key] = statistics.median(ts)
    print(f"{line} {scale * results[key]:7{fmt}} {unit} (runs: {', '.join(f'{scale * t:{fmt}}' for t in ts)})",
          flush=True)


def step_section(recipe: str, variants: list[tuple[str, str]], repeat: int, results: dict) -> None:
    for v, ts in alternate(STEP.format(recipe=recipe), variants, repeat).items():
        report(results, f"{recipe} step {v[0]} malloc={v[1]}", f"{recipe} training step, {v[0]}, malloc {v[1]:8s}",
               ts, fmt=".2f")


def threads_section(repeat: int, results: dict) -> None:
    from trainlab.models import build_model
    from trainlab.recipes import load_recipe
    for recipe in ("mnist-mlp", "fashion-mlp", "walk-5-relu"):
        r = load_recipe(recipe)
        net, _ = build_model(r.model, (784,) if r.data.flatten else (1, 28, 28), 10)
        biggest = max(r.batch_size * m.in_features * m.out_features for m in net.modules() if hasattr(m, "in_features"))
        for (_, n), ts in alternate(FUSED.format(recipe=recipe), [("fused", "1"), ("fused", "2")], repeat).items():
            report(results, f"{recipe} fused step threads={n}",
                   f"{recipe} fused step, biggest matmul {biggest / 1e6:.2f}M, {n} thread(s)", ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="mnist-fast")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", default="startup,step,ops,fused,cnn,threads,precision,bnfold")
    args = ap.parse_args()
    only = set(args.only.split(","))
    results: dict = {}
    if "startup" in only:
        for name, code in STARTUP.items():
            results[name] = statistics.median(timed(code) for _ in range(args.repeat))
            print(f"{name:50s} {results[name]:6.2f} s", flush=True)
    if "step" in only:
        step_section(args.recipe, [("nchw", "default"), ("nhwc", "default"), ("nhwc", "tuned")], args.repeat, results)
    if "cnn" in only:
        for recipe in ("mnist-tfjs-cnn", "mnist-fast", "cifar10-cnn"):
            step_section(recipe, [("nchw", "tuned"), ("nhwc", "tuned")], args.repeat, results)
    if "fused" in only:
        for recipe in ("mnist-mlp", "fashion-mlp", "walk-5-relu"):
            for (m,), ts in alternate(FUSED.format(recipe=recipe), [("autograd",), ("fused",)], args.repeat).items():
                report(results, f"{recipe} step {m}", f"{recipe} training step, {m:8s}", ts)
    if "threads" in only:
        threads_section(args.repeat, results)
    if "precision" in only:
        for recipe in CONV_RECIPES:
            variants = [("fp32", "2"), ("bf16-mixed", "2"), ("fp32", "1"), ("bf16-mixed", "1")]
            for (p, n), ts in alternate(PRECISION.format(recipe=recipe), variants, args.repeat).items():
                report(results, f"{recipe} step {p} threads={n}", f"{recipe} training step, {p:10s}, {n} thread(s)", ts,
                       fmt=".2f")
    if "compile" in only:
        for (m,), ts in alternate(COMPILE, [("eager",), ("compiled",), ("first-compiled",),
                                                   ("first-compiled-cold",)], args.repeat).items():
            report(results, f"mnist-tfjs-cnn {m}", f"mnist-tfjs-cnn training step, {m:19s}", ts,
                   unit="s" if m.startswith("first") else "ms", fmt=".2f")
    if "bnfold" in only:
        for recipe in ("mnist-fast", "cifar10-fast"):
            for (m,), ts in alternate(BNFOLD.format(recipe=recipe), [("with",), ("removed",)], args.repeat).items():
                report(results, f"{recipe} test-set eval BN {m}", f"{recipe} test-set evaluation, batch norm {m:7s}",
                       ts, unit="s")
    if "ops" in only:
        out = subprocess.run([sys.executable, "-c", OPS.format(recipe=args.recipe)], capture_output=True, text=True)
        print("\n".join(line for line in out.stdout.splitlines() if "USDT" not in line))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
