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


CURVE_KEYS = ("loss", "acc", "val_loss", "val_acc")


def hidden_curves(histories: list[list[dict]], rel: float = 1e-9) -> list[tuple[int, int]]:
    """(i, j) for each history i that history j repeats for all of i's epochs, so that i's lines lie
    under j's in a comparison (the tuning walk's step 2 is step 3's first 5 epochs: same seed, same
    settings but the epoch count). j is the longest such history; equal ones pair with the later."""
    def same(a: dict, b: dict) -> bool:
        for k in CURVE_KEYS:
            x, y = a.get(k), b.get(k)
            if (x is None) != (y is None) or (x is not None and abs(x - y) > rel * max(abs(x), abs(y), 1e-12)):
                return False
        return True

    out = []
    for i, h in enumerate(histories):
        if not h:
            continue
        covers = [j for j, g in enumerate(histories) if j != i and len(g) >= len(h) and all(same(a, b) for a, b in zip(h, g))
                  and (len(g) > len(h) or j > i)]
        if covers:
            out.append((i, max(covers, key=lambda j: (len(histories[j]), j))))
    return out


def hidden_note(names: list[str], histories: list[list[dict]]) -> list[str]:
    """One line per hidden curve: '<name> lies under <name>: the same values for its N epochs'."""
    return [f"{names[i]} lies under {names[j]}: the same values for all its {len(histories[i])} epochs "
            f"(drawn on top, hollow markers)" for i, j in hidden_curves(histories)]
