"""A run's history: its columns, the direction each metric improves in, and the one rule for the
best epoch (what best.safetensors, metrics.json's best_epoch and the run index all follow)."""

from __future__ import annotations

# The columns of a run's history, in order: history.csv, the run index and the plots all use these.
HISTORY_COLUMNS = ("epoch", "loss", "acc", "val_loss", "val_acc", "lr", "seconds")


def metric_mode(name: str) -> str:
    """'max' for accuracies, 'min' for losses: the direction in which a metric improves."""
    return "max" if name.endswith("acc") else "min"


def best_epoch(history: list[dict], monitor: str) -> dict | None:
    """The history row where `monitor` was best (the first such row on ties); None if never recorded.
    The run's best epoch, best.safetensors and early stopping all follow this one rule."""
    rows = [h for h in history if h.get(monitor) is not None]
    if not rows:
        return None
    pick = max if metric_mode(monitor) == "max" else min
    return pick(rows, key=lambda h: h[monitor])
