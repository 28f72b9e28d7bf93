"""What every command shares: the common options, one way to resolve them into `Settings`, one-line
failures, the process speed-ups, and stopping cleanly on Ctrl-C or SIGTERM (system/signals.py)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from trainlab.errors import StopRun
from trainlab.system.signals import Interrupt, StopSignals

SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override a recipe field: key.path=value (repeatable).")]
DataDirOpt = Annotated[Optional[Path], typer.Option("--data-dir", help="Folder holding the dataset files (also TRAINLAB_DATA).")]
DbOpt = Annotated[Optional[str], typer.Option("--db", help="Run index URL (default sqlite:///<runs>/trainlab.db; also TRAINLAB_DB).")]
RunsDirOpt = Annotated[Optional[Path], typer.Option("--runs-dir", help="Where run folders go (default ./runs; also TRAINLAB_RUNS).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]

_current: dict[str, StopSignals] = {}


def use_signals(handler: StopSignals) -> None:
    """The stop handler the next command uses: main() installs one for the life of the process."""
    _current["pending"] = handler


def begin_command() -> StopSignals:
    """The stop handler of a command starting now: main()'s, else a fresh one (a command run in-process
    by typer's CliRunner, whose signals stay Python's own)."""
    _current["signals"] = _current.pop("pending", None) or StopSignals()
    return _current["signals"]


def signals() -> StopSignals:
    """This command's stop handler."""
    return _current.get("signals") or begin_command()


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def settings_for(data_dir=None, runs_dir=None, db=None):
    """The one place a command's --data-dir, --runs-dir and --db meet the environment (flags win)."""
    from trainlab.settings import load_settings
    return load_settings(data_dir=data_dir, runs_dir=runs_dir, db=db)


def prepare_for_work(server: bool = False) -> None:
    """Process speed-ups for commands that train or run models (system/process_wide.py: no dynamo
    import, glibc keeps freed memory). A long-running server keeps glibc's own trimming: with the
    raised thresholds its resident memory only grew (about 15 MB a minute under 30 live-event clients)."""
    from trainlab.system.process_wide import prepare_short_process, skip_dynamo_import
    if server:
        skip_dynamo_import()
    else:
        prepare_short_process()


def check_output(path: Path | None, flag: str, folder: bool = False) -> None:
    """An output path the user named: its folder must exist (trainlab makes no folders you did not
    ask for, as `export --out` refuses too); a file option must not name a folder, a folder option
    not a file. One line, exit 2, nothing written."""
    if path is None:
        return
    parent = path.expanduser().parent
    if not parent.is_dir():
        fail(f"{flag} {path}: the folder {parent} does not exist; create it first or give another path")
    if folder and path.exists() and not path.is_dir():
        fail(f"{flag} {path}: is a file; give a folder")
    if not folder and path.is_dir():
        fail(f"{flag} {path}: is a folder; give a file name")


def fmt(v, digits=4) -> str:
    return "" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


def options(**values) -> list[str]:
    """`--name=value` for each option given (not None), as the command line spells it."""
    return [f"--{k.replace('_', '-')}={v}" for k, v in values.items() if v is not None]


def arm_callback():
    """A training callback that arms the stop handler from the start of training to the end of the
    final save: a stop request is then honoured at the next step, or (after the last epoch) lets
    the final save finish."""
    from trainlab.engine.callbacks import Callback
    handler = signals()

    class Arm(Callback):
        def on_train_begin(self, state):
            if handler.interrupted.is_set():  # a Ctrl-C during start-up, held or swallowed by some import
                handler.interrupt()
            handler.armed.set()

        def on_test_end(self, state, metrics):
            handler.armed.clear()

        def on_exception(self, state, exc):
            handler.armed.clear()

    return Arm()


@contextlib.contextmanager
def stoppable(said, armed_from_start: bool = False):
    """The body runs with Ctrl-C and SIGTERM as clean stops; when it ends in a stop or an interrupt,
    `said(exc)` gives (message, to stderr?) or None, and the command exits 130 (Ctrl-C) or 143
    (SIGTERM). Yields the stop event to pass to the library."""
    handler = signals()
    if armed_from_start:
        handler.armed.set()
    try:
        yield handler.stop
    except (StopRun, KeyboardInterrupt, Interrupt) as exc:
        message = said(exc)
        if message is not None:
            typer.echo(message[0], err=message[1])
        raise typer.Exit(handler.exit_status) from None
    finally:
        handler.armed.clear()


def _train_json(run) -> str:
    m = run.metrics
    return json.dumps({"run_id": run.run_id, "run_dir": str(run.run_dir) if run.run_dir else None, "recipe": run.recipe.name,
                       **m.model_dump(include={"test_loss", "test_acc", "train_seconds", "total_seconds", "epochs", "val_acc",
                                               "val_acc_at_best", "best_epoch"}),
                       "seed": run.recipe.seed, "history": run.history})


def run_training(fn, json_out: bool, runs_dir, **kw) -> None:
    """Run `fn` (train, resume or rerun) as a stoppable command: a stop prints the resume hint."""
    def said(exc):
        if not isinstance(exc, StopRun):
            return "interrupted", True
        if kw["settings"].rank > 0:  # under torchrun rank 0 says it
            return None
        where = f" --runs-dir {runs_dir}" if runs_dir else ""
        return (f"\n{exc.status}; the last checkpoint is kept. Resume with: trainlab train --resume {exc.run_id}{where}"
                if exc.run_id else f"\n{exc.status}"), False

    with stoppable(said) as stop:
        prepare_for_work()
        run = fn(stop=stop, callbacks=[arm_callback()], **kw)
    if json_out and (run.settings is None or run.settings.rank == 0):  # under torchrun only rank 0 reports
        print(_train_json(run))
