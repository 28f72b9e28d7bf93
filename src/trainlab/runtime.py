"""The process around training: seeding, keeping the caller's global state, the device, and
process-wide settings for short-lived processes (the CLI), each measured on this 2-core machine
(bench/profile_steps.py prints the numbers).

- `seed_everything` seeds Python's, numpy's and torch's generators; `caller_state_kept` puts them
  (and torch's thread count) back as they were, so `trainlab.train()` in a notebook leaves the
  notebook's random streams alone.

- `skip_dynamo_import`: torch.optim imports torch._dynamo on first use (2.2 s), only to mark its
  methods as not-to-be-compiled. The CLI never compiles.
- `keep_freed_memory`: glibc returns big freed blocks to the kernel (mmap/munmap); every training
  step then page-faults its activation buffers back in (a batch-128 BN CNN on MNIST: 15% of the
  step). Raising the mmap and trim thresholds keeps them in the heap.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import random
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from trainlab.errors import TrainlabError


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (every device's)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextmanager
def caller_state_kept() -> Iterator[None]:
    """Run the body, then restore what it changed of the process's global state: the Python, numpy,
    torch CPU (and initialised CUDA) generators and torch's intra-op thread count."""
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


def prepare_short_process() -> None:
    """Everything below, for a process that trains or predicts and then exits."""
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


def skip_dynamo_import() -> None:
    """Spare a process that never compiles the 2.2 s import of torch._dynamo (a quarter of a short
    CLI run's wall time; trainlab's Adam/AdamW/SGD step without it too, see optim.py).

    torch.optim.Optimizer marks add_param_group, zero_grad, state_dict and load_state_dict with
    torch._disable_dynamo, whose wrapper imports torch._dynamo on the first call only to build a
    "do not trace this" version of the method. The wrapper looks that version up first in the
    function's `__dynamo_disable` attribute; outside tracing the plain method is the same thing.
    Only for processes that never call torch.compile (the CLI); a torch without the attribute
    simply imports as before.
    """
    if "torch._dynamo" in sys.modules:
        return
    for name in ("add_param_group", "zero_grad", "state_dict", "load_state_dict", "_cuda_graph_capture_health_check"):
        fn = getattr(getattr(torch.optim.Optimizer, name, None), "__wrapped__", None)
        if fn is not None and not hasattr(fn, "__dynamo_disable"):
            setattr(fn, "__dynamo_disable", fn)


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """auto: CUDA when there is one, else the CPU; a named device is checked to exist."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise TrainlabError(f"--device {device!r}: use auto, cpu or cuda") from None
    if dev.type not in ("cpu", "cuda"):
        raise TrainlabError(f"--device {device!r}: use auto, cpu or cuda")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TrainlabError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    return dev
