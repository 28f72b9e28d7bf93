"""Progress: a rich bar in a terminal, one plain line per epoch elsewhere (CI, pipes, notebooks).
It writes to the stream it is given (stdout by default) and nowhere else."""

from __future__ import annotations

import sys

from trainlab.engine.callbacks import Callback
from trainlab.history import LiveCurve


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel. A kernel has imported IPython long before: when it is not
    loaded, this is no notebook (and importing it to ask would cost a CLI run ~0.2 s)."""
    if "IPython" not in sys.modules:
        return False
    try:
        from IPython import get_ipython  # type: ignore
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def resolve_mode(mode: str, file=None) -> str:
    """auto -> bar in a terminal, plain otherwise (a notebook gets plain lines: no flood of redraws)."""
    if mode != "auto":
        return mode
    return "bar" if (file or sys.stdout).isatty() and not in_notebook() else "plain"


def epoch_line(epoch: int, epochs: int, logs: dict, steps: int) -> str:
    """Keras-style: 'Epoch 3/12 - 600/600 - 1.8s 3.0ms/step - loss: 0.1234 - acc: 0.9634 - ...'."""
    secs = logs["seconds"]
    parts = [f"Epoch {epoch + 1}/{epochs}", f"{steps}/{steps}", f"{secs:.1f}s {1000 * secs / max(steps, 1):.1f}ms/step"]
    for key in ("loss", "acc", "val_loss", "val_acc"):
        if logs.get(key) is not None:
            parts.append(f"{key}: {logs[key]:.4f}")
    parts.append(f"lr: {logs['lr']:.3g}")
    return " - ".join(parts)


class ProgressPrinter(Callback):
    """Prints progress: `mode` is bar, plain, none or auto."""

    def __init__(self, mode: str = "auto", file=None):
        self.file = file or sys.stdout
        self.mode = resolve_mode(mode, self.file)
        self._bar = None
        self._task = None
        self._notes_shown = 0

    def _line(self, text: str) -> None:
        if self.mode != "none":
            self.file.write(text + "\n")
            self.file.flush()

    def on_train_begin(self, state):
        r, d = state.recipe, state.data
        n_val = 0 if d.x_val is None else len(d.x_val)
        self._line(f"Training {r.name} on {d.name}: {len(d.x_train)} train, {n_val} val, {len(d.x_test)} test examples; "
                   f"{state.steps_per_epoch} steps/epoch, {r.epochs} epoch{'s' * (r.epochs != 1)}, batch {r.batch_size}, device {state.device}"
                   + (f" ({state.precision})" if state.precision != "fp32" else "")
                   + (f", {state.group.world} processes" if state.group is not None else ""))
        for note in state.notes:  # what data loading and model building noticed
            self._line(note)
        self._notes_shown = len(state.notes)

    def on_epoch_begin(self, state, epoch):
        if self.mode != "bar":
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
        self._bar = Progress(TextColumn(f"Epoch {epoch + 1}/{state.recipe.epochs}"), BarColumn(), MofNCompleteColumn(),
                             TaskProgressColumn(), TimeRemainingColumn(), TextColumn("{task.fields[stats]}"),
                             console=Console(file=self.file), transient=True, refresh_per_second=8)
        self._bar.start()
        self._task = self._bar.add_task("train", total=state.steps_per_epoch, stats="")

    def on_batch_end(self, state, batch, logs):
        if self._bar is not None:
            self._bar.update(self._task, completed=batch + 1, stats=f"loss: {logs['loss']:.4f} - acc: {logs['acc']:.4f}")

    def on_epoch_end(self, state, epoch, logs):
        self.close()
        self._line(epoch_line(epoch, state.recipe.epochs, logs, state.steps_per_epoch))

    def close(self) -> None:
        """Take a live bar off the screen (also when training stops with an error or Ctrl-C)."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def on_train_end(self, state):
        self.close()
        for note in state.notes[self._notes_shown:]:
            self._line(note)

    reports_saved = True  # finish() calls it after the run writer

    def on_test_end(self, state, metrics):
        self._line(f"test_loss: {metrics.test_loss:.4f} - test_acc: {metrics.test_acc:.4f} - "
                   f"train {metrics.train_seconds:.1f}s" + (f" - saved {state.run_dir}" if state.run_dir else ""))

    def on_exception(self, state, exc):
        self.close()


class NotebookProgress(Callback):
    """Progress in a Jupyter cell: an HTML progress bar ("Training... (37.2%)") and, with
    `live_plot`, a loss and accuracy chart (the training curve smoothed across epochs, as the
    dashboard draws it: history.LiveCurve; validation per epoch) that is redrawn every
    `plot_every` reported batches and at every epoch end. Both are display outputs updated in
    place, so the saved notebook keeps the final bar and chart as static output."""

    def __init__(self, live_plot: bool = True, plot_every: int = 30):
        from IPython.display import HTML, display
        self._HTML, self._display = HTML, display
        self.live_plot, self.plot_every = live_plot, plot_every
        self.points: list[tuple[float, float, float]] = []  # (epoch + fraction, smoothed loss, smoothed acc)
        self.curve = LiveCurve()
        self.lines: list[str] = []
        self._bar = self._chart = None
        self._reports = 0

    def on_train_begin(self, state):
        r, d = state.recipe, state.data
        head = (f"Training {r.name} on {d.name}: {len(d.x_train)} train, {0 if d.x_val is None else len(d.x_val)} val, "
                f"{len(d.x_test)} test; {r.epochs} epoch{'s' * (r.epochs != 1)} of {state.steps_per_epoch} steps, batch {r.batch_size}, {state.device}")
        self.lines = [head, *state.notes]
        self._bar = self._display(self._HTML(self._html(0.0, "")), display_id=True)
        if self.live_plot:
            self._chart = self._display(self._png(state), display_id=True)

    def _html(self, done: float, stats: str) -> str:
        log = "<br>".join(self.lines[-12:])
        return (f"<div style='font-family:monospace;font-size:12px'>{log}<br>"
                f"<progress value='{1000 * done:.0f}' max='1000' style='width:40%'></progress> "
                f"Training... ({100 * done:.1f}%) {stats}</div>")

    def _png(self, state):
        from IPython.display import Image

        from trainlab.plots import plot_live
        return Image(data=plot_live(self.points, state.history, state.recipe.name))

    def on_batch_end(self, state, batch, logs):
        done = (state.epoch * state.steps_per_epoch + batch + 1) / (state.recipe.epochs * state.steps_per_epoch)
        n = len(state.data.x_train)
        loss, acc = self.curve.update(state.epoch, min((batch + 1) * state.recipe.batch_size, n), n, logs["loss"], logs["acc"])
        self.points.append((state.epoch + (batch + 1) / state.steps_per_epoch, loss, acc))
        self._bar.update(self._HTML(self._html(done, f"epoch {state.epoch + 1} - loss {logs['loss']:.4f} - acc {logs['acc']:.4f}")))
        self._reports += 1
        if self._chart is not None and self._reports % self.plot_every == 0:
            self._chart.update(self._png(state))

    def on_epoch_end(self, state, epoch, logs):
        self.lines.append(epoch_line(epoch, state.recipe.epochs, logs, state.steps_per_epoch))
        self._bar.update(self._HTML(self._html(state.epoch / state.recipe.epochs, "")))
        if self._chart is not None:
            self._chart.update(self._png(state))

    reports_saved = True

    def on_test_end(self, state, metrics):
        self.lines.append(f"test_loss: {metrics.test_loss:.4f} - test_acc: {metrics.test_acc:.4f} - "
                          f"train {metrics.train_seconds:.1f}s" + (f" - saved {state.run_dir}" if state.run_dir else ""))
        self._bar.update(self._HTML(self._html(1.0, "done")))

    def on_exception(self, state, exc):
        if self._bar is not None:
            self.lines.append(f"stopped: {type(exc).__name__}: {exc}")
            self._bar.update(self._HTML(self._html(len(state.history) / state.recipe.epochs, "")))
