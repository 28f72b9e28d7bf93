"""What several test files share: running the `trainlab` command as a user does, and a free port."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from trainlab.training.launcher import free_local_port as free_port  # the library's own, as --nproc uses it

__all__ = ["free_port", "trainlab_cli"]


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
