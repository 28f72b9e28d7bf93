"""Everything trainlab changes for the whole process, and every private torch API it calls, in one
place, each gated on the torch versions it was tested with.

A library function called from a notebook (`trainlab.train()`, `check_data()`, `to_mlflow()`)
changes nothing here that it does not put back: the random generators and the thread count
(`caller_state_kept`), loggers (`quiet_loggers`). The changes that stay for the life of the
process are made only by trainlab's own short-lived processes: the CLI, a dashboard worker, a
tuning worker (`prepare_short_process`, `prepare_process`).

| what | who | torch | elsewhere |
|---|---|---|---|
| `seed_everything`, `caller_state_kept` | train(), resume(), lr-find | any | - |
| `quiet_loggers` (pooch, MLflow, alembic) | downloads, `runs export --mlflow` | any | - |
| `environment`: variables set and put back (MLflow's HTTP retries) | `runs export --mlflow` | any | - |
| `keep_freed_memory`: glibc `mallopt` | the CLI and workers | any | musl, macOS: nothing |
| `skip_dynamo_import`: a monkeypatch of `torch.optim.Optimizer` | the CLI and workers | TESTED_TORCH | torch imports torch._dynamo as usual (2.2 s) |
| `eager_optimizer_step`: torch's Adam/AdamW/SGD step without its dynamo wrapper (optim.py) | every run | TESTED_TORCH | torch's own `step()` |
| `private_kernel`: `torch._fused_adam_`, `_fused_adamw_`, `_fused_sgd_` and the aten backward ops of the fused dense step (engine/fused.py) | dense stacks on the CPU | TESTED_TORCH | the autograd step |
| OpenMP's wait policy, the CPU share, settings for workers: environment writes | the CLI, launchers, `serve --workers` | any | - |

TESTED_TORCH is what this project's tests and benchmarks ran on (2.13 on the CPU, 2.11 with CUDA 13
on an H200); pyproject admits torch 2.4-3. On a torch outside it, each private path is skipped and
the public one taken: the same numbers, somewhat slower (tests/test_process_wide.py runs both).

Measured on this project's 2-core machine (bench/profile_steps.py): `skip_dynamo_import` saves the
2.2 s import of torch._dynamo, a quarter of a short CLI run; `keep_freed_memory` stops glibc
returning big freed blocks to the kernel, which made every step page-fault its activation buffers
back in (a batch-128 BN CNN on MNIST: 15% of the step).

Only this module and settings.py touch the environment: OpenMP's variables must be in place
before torch is imported, before any Settings object can exist. torch itself is imported inside
the functions that need it, so `python -m trainlab` can call `prepare_process` first.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import random
import re
import sys
from collections.abc import Iterator

TESTED_TORCH = ((2, 11), (2, 13))  # lowest and highest (major, minor) the private paths were tested on

WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
SERVER_POLICY = "PASSIVE"
SHARE_VARIABLE = "TRAINLAB_CPU_SHARE"  # set for its children by a trainlab launcher: how many of them run at once
SERVER_COMMANDS = {"dashboard", "serve"}
_set_here: set[str] = set()  # the wait-policy variables this process set for itself (not passed to training children)


# ---------------------------------------------------------------------------------------------
# Which torch this is
# ---------------------------------------------------------------------------------------------

def torch_version(version: str | None = None) -> tuple[int, int]:
    """(major, minor) of the installed torch (or of `version`, e.g. '2.13.0+cpu')."""
    if version is None:
        import torch
        version = torch.__version__
    found = re.match(r"(\d+)\.(\d+)", str(version))
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


def torch_tested(version: str | None = None) -> bool:
    """Whether the private torch paths below were tested on this torch (TESTED_TORCH)."""
    low, high = TESTED_TORCH
    return low <= torch_version(version) <= high


# ---------------------------------------------------------------------------------------------
# Random generators and the thread count: set, and put back
# ---------------------------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (every device's)."""
    import numpy as np
    import torch
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def caller_state_kept() -> Iterator[None]:
    """Run the body, then restore what it changed of the process's global state: the Python, numpy,
    torch CPU (and initialised CUDA) generators and torch's intra-op thread count."""
    import numpy as np
    import torch
    py, np_state, cpu = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(np_state)
        torch.random.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    """Environment variables set for the body (a library read at call time: MLflow's HTTP retries),
    then put back as they were."""
    was = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in was.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def quiet_loggers(*names: str, level: int = logging.ERROR) -> Iterator[None]:
    """Libraries' loggers raised to `level` for the body (their retry notices, "Updating database
    tables"), then put back as they were."""
    loggers = [logging.getLogger(n) for n in names]
    was = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(level)
    try:
        yield
    finally:
        for lg, lvl in zip(loggers, was):
            lg.setLevel(lvl)


# ---------------------------------------------------------------------------------------------
# For trainlab's own short-lived processes only
# ---------------------------------------------------------------------------------------------

def prepare_short_process() -> None:
    """The process-wide speed-ups, for a process that trains or predicts and then exits (the CLI, a
    dashboard or tuning worker); never called by the library on a notebook's behalf."""
    skip_dynamo_import()
    keep_freed_memory()


def keep_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 1 << 30) -> bool:
    """glibc mallopt(M_MMAP_THRESHOLD) and mallopt(M_TRIM_THRESHOLD); False where there is no glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, mmap_threshold)) and bool(libc.mallopt(m_trim_threshold, trim_threshold))
    except (OSError, AttributeError):  # musl or another libc: nothing to tune
        return False


DYNAMO_WRAPPED = ("add_param_group", "zero_grad", "state_dict", "load_state_dict", "_cuda_graph_capture_health_check")


def skip_dynamo_import() -> bool:
    """Spare a process that never compiles the 2.2 s import of torch._dynamo (a quarter of a short
    CLI run's wall time); True when the patch is in place.

    torch.optim.Optimizer marks add_param_group, zero_grad, state_dict and load_state_dict with
    torch._disable_dynamo, whose wrapper imports torch._dynamo on the first call only to build a
    "do not trace this" version of the method. The wrapper looks that version up first in the
    function's `__dynamo_disable` attribute; outside tracing the plain method is the same thing.
    Only on TESTED_TORCH, and only for processes that never call torch.compile.
    """
    if "torch._dynamo" in sys.modules or not torch_tested():
        return False
    import torch
    for name in DYNAMO_WRAPPED:
        fn = getattr(getattr(torch.optim.Optimizer, name, None), "__wrapped__", None)
        if fn is not None and not hasattr(fn, "__dynamo_disable"):
            setattr(fn, "__dynamo_disable", fn)
    return True


# ---------------------------------------------------------------------------------------------
# Private torch paths the training steps take on a tested torch
# ---------------------------------------------------------------------------------------------

def eager_optimizer_step(differentiable: bool = False) -> bool:
    """Whether optim.py may run torch's Adam/AdamW/SGD update without `_use_grad_for_differentiable`,
    the wrapper that imports torch._dynamo on every step only to place graph breaks: on a tested
    torch, while nothing in the process has imported torch._dynamo (then nothing is compiling)."""
    return not differentiable and "torch._dynamo" not in sys.modules and torch_tested()


def private_kernel(name: str):
    """torch's private `name` (e.g. `_fused_adam_`) on a tested torch that has it, else None."""
    if not torch_tested():
        return None
    import torch
    return getattr(torch, name, None)


def aten_backward_ops() -> bool:
    """Whether the fused dense step may call aten's backward kernels directly (threshold_backward,
    sigmoid_backward, ...): the ops autograd itself runs, reached through `torch.ops.aten`."""
    if not torch_tested():
        return False
    import torch
    return all(hasattr(torch.ops.aten, op) for op in ("threshold_backward", "sigmoid_backward", "tanh_backward",
                                                        "silu_backward", "gelu_backward"))


# ---------------------------------------------------------------------------------------------
# The environment: OpenMP's wait policy, the CPU share, settings for worker processes
# ---------------------------------------------------------------------------------------------

def prepare_process(role: str = "train", share: int | None = None) -> str:
    """Call before torch is imported. A "server" process gets OMP_WAIT_POLICY=PASSIVE (unless a
    wait policy is set already, or torch is loaded and it is too late); `share` is how many
    trainlab processes like this one run at once (written for the children this one starts).
    Returns the wait policy in force."""
    if share is not None:
        os.environ[SHARE_VARIABLE] = str(max(1, share))
    chosen = any(os.environ.get(v) for v in WAIT_VARIABLES)
    if role == "server" and not chosen and "torch" not in sys.modules:
        os.environ["OMP_WAIT_POLICY"] = SERVER_POLICY
        _set_here.add("OMP_WAIT_POLICY")
    return wait_policy()


def role_of(argv: list[str]) -> str:
    """The role of a `trainlab ...` command line: "server" for the long-running servers."""
    return "server" if len(argv) > 1 and argv[1] in SERVER_COMMANDS else "train"


def wait_policy() -> str:
    """The OpenMP wait policy of this process as run.json records it: 'spin (default)' or the
    variables that set another."""
    given = {v: os.environ[v] for v in WAIT_VARIABLES if os.environ.get(v)}
    return ", ".join(f"{k}={v}" for k, v in given.items()) or "spin (default)"


def cpu_share() -> int:
    """How many trainlab processes share this one's CPUs, as its launcher wrote (TRAINLAB_CPU_SHARE)."""
    try:
        return max(1, int(os.environ.get(SHARE_VARIABLE, "1")))
    except ValueError:
        return 1


def training_child_environment(share: int) -> dict[str, str]:
    """The environment for a training process this one starts (a dashboard job): its CPU share,
    and without the wait policy this process set for itself as a server."""
    env = {k: v for k, v in os.environ.items() if k not in _set_here}
    env[SHARE_VARIABLE] = str(max(1, share))
    return env


def child_environment(**extra: str) -> dict[str, str]:
    """This process's environment with `extra` set: for a child process such as a DDP rank."""
    return {**os.environ, **extra}


def export_to_environment(settings) -> None:
    """Put `settings` into this process's environment under their own variable names, for the
    child processes that read them (uvicorn's workers of `trainlab serve --workers N`). Only
    TRAINLAB_ variables: the rank fields belong to torchrun."""
    for name, value in settings.environment().items():
        os.environ[name] = value
