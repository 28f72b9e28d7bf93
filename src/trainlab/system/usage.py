"""What a run uses of the machine while it trains, sampled as it goes: its own CPU use, resident
memory and thread count, the CPUs other programs keep busy beside it, and on CUDA the GPU's
utilisation and memory (NVML through nvidia-ml-py where it is installed, else torch's own count
of the memory it holds). Experiment trackers record the same beside the loss (MLflow's system
metrics, W&B): it is how a user sees that a run was starved by another program or ran out of
memory.

A sample reads /proc (about 50 us) every `every` seconds at the loop's reports, so it costs far
under 1% of a step. `summary()` is what run.json keeps (`system`): peak memory, mean CPU use, the
share of samples starved by other programs.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from trainlab.system.cpus import allowed_cpus, busy_elsewhere, cpu_sample

STARVED = 0.5  # CPUs' worth of other programs' work beside a run: a sample "starved" above it


def resident_mb() -> float | None:
    """This process's resident memory, MB (/proc/self/statm), None where there is no /proc."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def os_threads() -> int:
    """This process's threads, as the kernel counts them (torch's OpenMP pool included)."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return threading.active_count()


class GpuProbe:
    """GPU utilisation and memory for one CUDA device: NVML when nvidia-ml-py is there (what
    nvidia-smi reads), else torch's count of the memory this process holds; None fields otherwise."""

    def __init__(self, device):
        self.handle = self.torch_index = None
        if getattr(device, "type", None) != "cuda":
            return
        import torch
        self.torch_index = device.index if device.index is not None else torch.cuda.current_device()
        try:
            import pynvml
            pynvml.nvmlInit()
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(self.torch_index)
            self._nvml = pynvml
        except Exception:  # no nvidia-ml-py, no NVML library, another vendor: torch's own numbers
            self.handle = None

    def sample(self) -> dict:
        if self.torch_index is None:
            return {}
        if self.handle is not None:
            try:
                util = self._nvml.nvmlDeviceGetUtilizationRates(self.handle)
                mem = self._nvml.nvmlDeviceGetMemoryInfo(self.handle)
                return {"gpu_util": float(util.gpu), "gpu_mem_mb": mem.used / 1e6}
            except Exception:  # a driver hiccup: this sample goes without
                return {}
        import torch
        return {"gpu_mem_mb": torch.cuda.memory_reserved(self.torch_index) / 1e6}


class UsageSampler:
    """Samples at most every `every` seconds (`maybe_sample`), keeps what `summary()` needs."""

    def __init__(self, device=None, every: float = 2.0):
        self.every, self.gpu = every, GpuProbe(device)
        self.allowed = allowed_cpus()
        self.last = cpu_sample()
        self.samples = 0
        self.cpu_total = self.starved = 0.0
        self.peak_rss = self.peak_gpu_mem = 0.0
        self.gpu_util_total, self.gpu_samples = 0.0, 0

    def maybe_sample(self, every: float | None = None) -> dict | None:
        """A new sample when `every` seconds (default: the sampler's) have passed since the last one, else None."""
        if self.last is not None and time.monotonic() - self.last.at < (self.every if every is None else every):
            return None
        return self.sample()

    def sample(self) -> dict:
        now, before = cpu_sample(), self.last
        out: dict = {"threads": os_threads()}
        rss = resident_mb()
        if rss is not None:
            out["rss_mb"] = round(rss, 1)
            self.peak_rss = max(self.peak_rss, rss)
        if before is not None and now is not None and now.at > before.at:
            out["cpu"] = round((now.own - before.own) / (now.at - before.at), 3)  # CPUs' worth used by this run
            out["busy_elsewhere"] = round(busy_elsewhere(before), 2)  # CPUs' worth other programs used meanwhile
            self.cpu_total += out["cpu"]
            self.starved += out["busy_elsewhere"] >= STARVED
            self.samples += 1
        gpu = self.gpu.sample()
        if gpu.get("gpu_mem_mb") is not None:
            self.peak_gpu_mem = max(self.peak_gpu_mem, gpu["gpu_mem_mb"])
        if gpu.get("gpu_util") is not None:
            self.gpu_util_total += gpu["gpu_util"]
            self.gpu_samples += 1
        out.update({k: round(v, 1) for k, v in gpu.items()})
        self.last = now
        return out

    def summary(self) -> dict:
        """What run.json keeps: peak memory, mean CPU use (of the CPUs allowed), how often starved."""
        out = {"peak_rss_mb": round(self.peak_rss, 1) if self.peak_rss else None,
               "cpu_mean": round(self.cpu_total / self.samples, 3) if self.samples else None,
               "cpus_allowed": self.allowed, "samples": self.samples,
               "starved_fraction": round(self.starved / self.samples, 3) if self.samples else None}
        if self.peak_gpu_mem:
            out["peak_gpu_mem_mb"] = round(self.peak_gpu_mem, 1)
        if self.gpu_samples:
            out["gpu_util_mean"] = round(self.gpu_util_total / self.gpu_samples, 1)
        return out
