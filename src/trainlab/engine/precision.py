"""The training step's arithmetic: fp32, or bf16-mixed (the recipe's `precision`).

bf16-mixed is what Lightning calls it and Keras' `mixed_bfloat16` policy does: convolutions and
matmuls run in bf16 under `torch.autocast`, while weights, gradients and the optimizer stay fp32.
On CPUs that multiply bf16 in hardware (AVX-512 BF16, AMX; `cpus.native_bf16`) oneDNN's bf16
kernels do twice the fp32 work per cycle. Measured on this project's 2-core AMD EPYC (Zen 4), one
training step at the recipe's batch size, NHWC, medians of 3 alternating processes
(`bench/profile_steps.py --only precision`, bench/results/profile_precision.txt):

| recipe | fp32, 2 / 1 threads | bf16-mixed, 2 / 1 threads |
|---|---|---|
| mnist-tfjs-cnn | 4.75 / 7.12 ms | 5.00 / 5.92 ms |
| cifar10-cnn | 20.2 / 24.3 ms | 12.3 / 17.5 ms |
| cifar10-cnn-deeper | 42.2 / 77.2 ms | 28.1 / 43.5 ms |
| mnist-fast | 13.8 / 17.9 ms | 10.7 / 16.1 ms |
| fashion-fast | 14.5 / 24.1 ms | 11.8 / 18.1 ms |
| cifar10-fast | 20.3 / 35.9 ms | 15.0 / 26.9 ms |
| mnist-draw | 82.2 / 136 ms | 51.9 / 85.4 ms |

(the tfjs CNN is small enough that its step is mostly per-operator cost: no gain on 2 threads,
17% on one, which is what it gets beside a busy program). Accuracy held: `mnist-fast` 0.9913 /
0.9910 against fp32's 0.9911 / 0.9906 (seeds 0, 1), `fashion-fast` 0.9132 / 0.9171 against 0.9130 /
0.9098, `mnist-tfjs-cnn` 0.9713 against 0.9706 (mean of 3 seeds), `cifar10-cnn` (1 epoch) within
its seeds' spread (bench/results/under_load.json). So `auto` picks bf16-mixed for conv nets on
CPUs with native bf16, and on CUDA (as trainlab always did there); fp32 for everything else, the
fused dense step included. Evaluation and prediction on the CPU stay fp32 whatever the training
precision, so `trainlab predict`, `evaluate` and the exported ONNX model compute the same numbers.

`engine.strategy.precision_setting` says what decides it (a resumed run's record, the recipe's own
value, then `settings.precision`, TRAINLAB_PRECISION). The choice is recorded in run.json
(`precision`, `precision_reason`) and a resume or rerun keeps it: the same seed,
thread count and precision give bit-identical weights (autocast changes the arithmetic, so fp32
and bf16-mixed runs of one seed differ, as two thread counts do).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from trainlab.system.cpus import native_bf16


def resolve_precision(setting: str, model: nn.Module, device: torch.device, fp32_step: str | None = None) -> tuple[str, str]:
    """The precision a run trains in for the recipe's `setting` (auto, fp32, bf16-mixed), and why.
    `fp32_step`: the name of a step strategy that computes in fp32 only (the fused dense step)."""
    if setting != "auto":
        return setting, "set"
    if device.type == "cuda":
        return "bf16-mixed", "auto: CUDA"
    if device.type != "cpu" or fp32_step:
        return "fp32", f"auto: the {fp32_step} step is fp32" if fp32_step else f"auto: {device.type}"
    if not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return "fp32", "auto: not a conv net"
    if not native_bf16():
        return "fp32", "auto: this CPU has no native bf16"
    return "bf16-mixed", "auto: conv net on a CPU with native bf16"


def train_autocast(device: torch.device, precision: str, cache: bool = True):
    """The context the training step's forward and loss run in (`cache=False` inside a CUDA graph:
    autocast's cache of cast weights cannot outlive the capture)."""
    if precision == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=cache)
    return contextlib.nullcontext()
