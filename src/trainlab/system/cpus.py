"""CPU threads on a machine that is never idle: how many this process may really use, how many of
those other programs keep busy, and how a run's thread count follows them.

Measured on this 2-core machine (bench/under_load.py; docs/speed.md "Speed on a busy machine"): torch's
OpenMP threads meet at a barrier after every parallel operation. With libgomp's default policy a
thread that arrives first spins there; when a sibling is descheduled because another program holds
its core, the spinner burns the time the sibling needs and each barrier costs a scheduler time
slice: `mnist-mlp` on 2 threads trained in 30 s beside one busy process against 4-6 s idle. The
passive policy (`OMP_WAIT_POLICY=PASSIVE`: sleep at once) held it at 8.7 s but cost 22-58% when
idle (a futex wake per operation), and one thread took 6.1 s beside the busy process. So the
fix is the thread count, not the wait policy:

- `plan_threads()` picks a run's count at its start: the CPUs this process may use (affinity and
  the cgroup's CPU quota), shared between trainlab's own concurrent processes (tune --jobs,
  dashboard jobs, DDP ranks: the launcher writes TRAINLAB_CPU_SHARE for its children), less the
  CPUs other programs kept busy since the run began (at least 0.1 s of /proc/stat).
- `CpuWatch` (callbacks.py) looks again every few seconds while training and moves the count down
  when other programs take CPUs, back up when they leave. Each change is recorded (run.json `cpu`,
  the checkpoint), so a resume continues on the count the run had; TRAINLAB_THREADS=N pins the
  count and turns the watch off, and then the same seed gives bit-identical weights whatever the
  load (the thread count changes the arithmetic's order; the wait policy only timing).
- Training processes keep libgomp's spinning default (fastest idle); the servers (dashboard,
  `trainlab serve`), whose torch work comes in bursts beside training jobs, sleep at once:
  `process_wide.prepare_process("server")` sets OMP_WAIT_POLICY=PASSIVE before torch loads, unless you set a
  wait policy yourself.

The environment this depends on (OpenMP's wait policy, TRAINLAB_CPU_SHARE) is read and written in
process_wide.py, the one place for process-wide changes.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from trainlab.system.process_wide import cpu_share

# ---------------------------------------------------------------------------------------------
# What this process may use, and what others use now
# ---------------------------------------------------------------------------------------------

def affinity() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return set(range(os.cpu_count() or 1))


def cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs' worth of time the cgroup may use (cgroup v2 cpu.max, v1 cfs quota), None when unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def allowed_cpus() -> int:
    """The CPUs this process may really run on: its affinity mask, within its cgroup's quota."""
    n = len(affinity()) or 1
    quota = cgroup_quota()
    return max(1, min(n, math.floor(quota + 0.25))) if quota else n


@dataclass(frozen=True)
class CpuSample:
    at: float  # time.monotonic()
    busy: float  # seconds of CPU time, all processes, on this process's CPUs
    own: float  # seconds of CPU time of this process


def cpu_sample(cpus: set[int] | None = None) -> CpuSample | None:
    """/proc/stat's busy time on our CPUs and our own CPU time; None where there is no /proc."""
    cpus = affinity() if cpus is None else cpus
    try:
        lines = Path("/proc/stat").read_text().splitlines()
        tick = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):
        return None
    busy = 0
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            values = [int(f) for f in fields[:8]]
            busy += sum(values) - values[3] - values[4]  # all but idle and iowait
    t = os.times()
    return CpuSample(time.monotonic(), busy / tick, t.user + t.system)


def busy_elsewhere(since: CpuSample | None = None, min_window: float = 0.1) -> float:
    """CPUs' worth of work other processes did on our CPUs since `since`: 0.0 on an idle machine,
    ~1.0 beside one busy program. A window shorter than `min_window` (a tiny dataset loads in
    milliseconds, and /proc/stat counts in 10 ms ticks) is not waited out: the kernel's count of
    runnable threads right now, less this one, stands in."""
    last = cpu_sample()
    if since is None or last is None or last.at - since.at < min_window:
        return runnable_elsewhere()
    others = (last.busy - since.busy) - (last.own - since.own)
    return max(0.0, others / (last.at - since.at))


def runnable_elsewhere() -> float:
    """Threads ready to run on the machine now (/proc/stat procs_running) other than the caller's."""
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("procs_running"):
                return max(0.0, float(line.split()[1]) - 1)
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


@dataclass(frozen=True)
class ThreadPlan:
    threads: int
    allowed: int
    busy: float
    share: int
    reason: str


def plan_threads(share: int | None = None, busy: float | None = None) -> ThreadPlan:
    """The thread count for a run starting now: this process's CPUs (affinity, cgroup quota), shared
    between the `share` trainlab processes that run at once (tune --jobs, dashboard jobs, DDP
    ranks; default: what the launcher wrote into TRAINLAB_CPU_SHARE), less the CPUs other
    programs kept busy since this process started (at least 0.1 s)."""
    allowed = allowed_cpus()
    if share is None:
        share = cpu_share()
    busy = busy_elsewhere() if busy is None else busy
    mine = max(1, allowed // share)
    # trainlab's siblings are among the "others"; only load beyond theirs takes from this share
    others = max(0.0, busy - (share - 1) * mine)
    free = max(1, min(mine, (allowed - math.floor(others + 0.5)) // share))
    if free < mine:
        reason = f"{others:.1f} of {allowed} CPUs busy with other programs"
    elif share > 1:
        reason = f"{allowed} CPUs shared by {share} trainlab processes"
    else:
        reason = f"{allowed} CPUs free"
    return ThreadPlan(free, allowed, round(busy, 2), share, reason)


def cpu_flags(path: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags as Linux lists them (empty where there is no /proc/cpuinfo)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16(flags: set[str] | None = None) -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX-512 BF16 or AMX): oneDNN's bf16 convolutions
    and matmuls then do twice the fp32 work per cycle. Elsewhere bf16 is emulated, and slower."""
    flags = cpu_flags() if flags is None else flags
    return bool(flags & {"avx512_bf16", "amx_bf16"})
