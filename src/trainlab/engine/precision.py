"""The training step's arithmetic: fp32, or bf16-mixed (the recipe's `precision`).

bf16-mixed is what Lightning calls it and Keras' `mixed_bfloat16` policy does: convolutions and
matmuls run in bf16 under `torch.autocast`, while weights, gradients and the optimizer stay fp32.
On CPUs that multiply bf16 in hardware (AVX-512 BF16, AMX; `cpus.native_bf16`) oneDNN's bf16
kernels do twice the fp32 work per cycle. Measured on this project's 2-core AMD EPYC (Zen 4), one
training step at the recipe's batch size (bench/profile_steps.py --only precision):

| recipe | fp32 | bf16-mixed |
|---|---|---|
| mnist-tfjs-cnn, 2 / 1 threads | 8.2 / 12.9 ms | 5.5 / 6.4 ms |
| cifar10-cnn, 2 / 1 threads | 19.9 / 28.3 ms | 12.4 / 18.8 ms |
| cifar10-cnn-deeper | 47.2 ms | 26.7 ms |
| mnist-fast, fashion-fast (batch norm) | 18.2, 19.5 ms | 18.8, 18.1 ms |

The batch-norm CNNs gain nothing (their bf16 max-pool and batch-norm kernels cost what the
convolutions save), so `auto` picks bf16-mixed for conv nets without batch norm on CPUs with native
bf16, and on CUDA (as trainlab always did there); fp32 for everything else, the fused dense step
included. Evaluation and prediction on the CPU stay fp32 whatever the training precision, so
`trainlab predict`, `evaluate` and the exported ONNX model compute the same numbers.

The choice is recorded in run.json (`precision`) and a resume or rerun keeps it: the same seed,
thread count and precision give bit-identical weights (autocast changes the arithmetic, so fp32
and bf16-mixed runs of one seed differ, as two thread counts do).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from trainlab.cpus import native_bf16

PRECISIONS = ("fp32", "bf16-mixed")


def resolve_precision(setting: str, model: nn.Module, device: torch.device, fused: bool = False) -> tuple[str, str]:
    """The precision a run trains in for the recipe's `setting` (auto, fp32, bf16-mixed), and why."""
    if setting != "auto":
        return setting, "set in the recipe"
    if device.type == "cuda":
        return "bf16-mixed", "auto: CUDA"
    if device.type != "cpu" or fused:
        return "fp32", "auto: the fused dense step is fp32" if fused else f"auto: {device.type}"
    if not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return "fp32", "auto: not a conv net"
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return "fp32", "auto: batch norm (no faster in bf16 on the CPU)"
    if not native_bf16():
        return "fp32", "auto: this CPU has no native bf16"
    return "bf16-mixed", "auto: conv net on a CPU with native bf16"


def train_autocast(device: torch.device, precision: str):
    """The context the training step's forward and loss run in."""
    if precision == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
