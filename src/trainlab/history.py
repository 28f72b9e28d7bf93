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


class LiveCurve:
    """The live chart's training curve: what the last few batches did, smoothed, continuous across
    epochs (the dashboard's and the notebook's "training, smoothed" line).

    The loop reports the epoch-to-date means (`loss`, `acc`), as Keras' progress bar prints them;
    they restart every epoch, and a new epoch's first reports are means of one or two batches, so
    plotted as one line they spike at every boundary (acc 1.0, loss 0.1 on a 3-epoch fashion-mlp
    run). Instead each report gives the mean over the examples since the one before (recovered
    exactly from the two running sums), and those windows are smoothed by an exponential moving
    average whose memory is `span` of an epoch's examples, the same across epochs. A learning curve
    then reads as one: no restart, no spike, the same value at an epoch's end as the window means
    around it."""

    def __init__(self, span: float = 0.1):
        self.span = span
        self.epoch, self.seen, self.loss_sum, self.acc_sum = 0, 0, 0.0, 0.0
        self.loss: float | None = None
        self.acc: float | None = None

    def update(self, epoch: int, seen: int, epoch_size: int, loss: float, acc: float) -> tuple[float, float]:
        """A report: `seen` examples of `epoch` so far with running means `loss` and `acc`; the
        smoothed (loss, acc)."""
        if epoch != self.epoch or seen < self.seen:  # a new epoch (or a resumed one): its sums start at zero
            self.epoch, self.seen, self.loss_sum, self.acc_sum = epoch, 0, 0.0, 0.0
        n = seen - self.seen
        if n <= 0:
            return self.loss if self.loss is not None else loss, self.acc if self.acc is not None else acc
        w_loss = (loss * seen - self.loss_sum) / n  # the window's own means
        w_acc = (acc * seen - self.acc_sum) / n
        self.epoch, self.seen, self.loss_sum, self.acc_sum = epoch, seen, loss * seen, acc * seen
        keep = 0.0 if self.loss is None else pow(0.5, n / max(1.0, self.span * epoch_size))  # half-life: `span` epochs
        self.loss = w_loss if self.loss is None else keep * self.loss + (1 - keep) * w_loss
        self.acc = w_acc if self.acc is None else keep * self.acc + (1 - keep) * w_acc
        return self.loss, self.acc
