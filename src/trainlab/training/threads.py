"""How many CPU threads a run trains with (recorded in run.json as `cpu`, matched on resume)."""

from __future__ import annotations

from contextlib import contextmanager

import torch

from trainlab.engine.state import TrainState
from trainlab.settings import Settings
from trainlab.system.cpus import CpuSample, allowed_cpus, busy_elsewhere, plan_threads
from trainlab.system.process_wide import wait_policy


def pick_threads(state: TrainState, settings: Settings, since: CpuSample | None = None) -> tuple[int | None, dict]:
    """The intra-op thread count to train with, and what decided it (recorded in run.json as `cpu`):
    settings.threads when given; torch's own count when OMP_NUM_THREADS chose it or the model runs
    on a GPU; the count the run's step asks for (the fused dense step: one thread for small matmuls); else
    `plan_threads`: this process's CPUs, shared between trainlab's concurrent processes, less those
    other programs keep busy now (measured since `since`)."""
    info = {"wait_policy": wait_policy(), "allowed": allowed_cpus()}
    if settings.threads:
        return settings.threads, {**info, "reason": "TRAINLAB_THREADS"}
    if settings.omp_num_threads or state.device.type != "cpu":
        return None, {**info, "reason": "OMP_NUM_THREADS" if settings.omp_num_threads else f"device {state.device.type}"}
    preferred = state.train_step.threads(state.recipe.batch_size)  # e.g. one thread for a small dense stack
    if preferred is not None:
        return preferred[0], {**info, "reason": preferred[1]}
    plan = plan_threads(settings.world_size if settings.world_size > 1 else None, busy_elsewhere(since))
    info.update(busy_elsewhere=plan.busy, share=plan.share, reason=plan.reason, adaptive=True)
    if plan.threads < plan.allowed // plan.share:
        state.notes.append(f"note: training on {plan.threads} thread{'s' * (plan.threads > 1)}: {plan.reason} "
                           f"(TRAINLAB_THREADS=N to choose)")
    return plan.threads, info


@contextmanager
def training_threads(state: TrainState, settings: Settings, since: CpuSample | None = None):
    """Train with `pick_threads`' count (the run's record notes it, so a resume matches), then give
    the process its own count back (a resume's match_threads included)."""
    was = torch.get_num_threads()
    want, state.cpu = pick_threads(state, settings, since)
    if want and want != was:
        torch.set_num_threads(want)
    try:
        yield
    finally:
        if torch.get_num_threads() != was:
            torch.set_num_threads(was)


def match_threads(threads: int | None) -> list[str]:
    """Use the thread count a run was trained with: CPU results (so bit-identical resume) depend on it."""
    if threads and threads != torch.get_num_threads():
        was = torch.get_num_threads()
        torch.set_num_threads(threads)
        return [f"note: resumed with {threads} threads as the run was trained (this process had {was})"]
    return []
