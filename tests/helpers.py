"""What several test files share: running the `trainlab` command as a user does, a free port, and a
callback that stops training where a test wants it to."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import traceback
from pathlib import Path

from trainlab.engine.callbacks import Callback
from trainlab.training.launcher import free_local_port as free_port  # the library's own, as --nproc uses it

__all__ = ["StopAt", "free_port", "trainlab_cli", "trainlab_here"]


class StopAt(Callback):
    """Asks training to stop (as Ctrl-C does) after a given batch of a given epoch."""

    per_batch = True

    def __init__(self, epoch: int, batch: int, stop: threading.Event):
        self.at, self.stop = (epoch, batch), stop

    def on_batch_end(self, state, batch, logs):
        if (state.epoch, batch) == self.at:
            self.stop.set()


def trainlab_cli(*args, env: dict | None = None, extra_env: dict | None = None, runs: Path | None = None,
                 data_dir: Path | None = None, db: str | None = None, cwd=None, timeout: float = 300,
                 **kw) -> subprocess.CompletedProcess:
    """`python -m trainlab ARGS` in a subprocess, text output captured, stdin closed (so a prompt
    fails instead of waiting). `env` replaces the environment (default: this one); `extra_env`,
    `runs`, `data_dir` and `db` are set on top (TRAINLAB_RUNS, TRAINLAB_DATA, TRAINLAB_DB)."""
    full = dict(os.environ if env is None else env, **(extra_env or {}))
    for name, value in (("TRAINLAB_RUNS", runs), ("TRAINLAB_DATA", data_dir), ("TRAINLAB_DB", db)):
        if value is not None:
            full[name] = str(value)
    kw.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run([sys.executable, "-m", "trainlab", *map(str, args)], capture_output=True, text=True,
                          env=full, cwd=cwd, timeout=timeout, **kw)


_IN_PROCESS = threading.Lock()


def trainlab_here(*args, env: dict | None = None, extra_env: dict | None = None, runs: Path | None = None,
                  data_dir: Path | None = None, db: str | None = None, cwd=None, timeout: float | None = None,
                  **kw) -> subprocess.CompletedProcess:
    """The same command as `trainlab_cli`, run in this process through typer's `CliRunner` (the
    command's own error handling included: app.py's root command), with the environment `env`
    and stdout/stderr captured: no interpreter and torch import per call, for the many one-line-error
    checks. It takes `trainlab_cli`'s arguments (`timeout` and subprocess options are ignored). An
    exception that escapes is added to stderr as a traceback, as the real command would show it.
    The entry point itself (`python -m trainlab`, signals, start-up Ctrl-C) is tested through
    `trainlab_cli`."""
    from typer.testing import CliRunner

    from trainlab.cli import app
    full = dict(os.environ if env is None else env, **(extra_env or {}))
    for name, value in (("TRAINLAB_RUNS", runs), ("TRAINLAB_DATA", data_dir), ("TRAINLAB_DB", db)):
        if value is not None:
            full[name] = str(value)
    changes: dict[str, str | None] = {k: None for k in os.environ if k not in full}
    changes.update(full)
    where = os.getcwd()
    with _IN_PROCESS:
        if cwd is not None:
            os.chdir(cwd)
        try:
            result = CliRunner().invoke(app, [str(a) for a in args], env=changes)
        finally:
            os.chdir(where)
    err = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        err += "".join(traceback.format_exception(*result.exc_info))
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, err)
