"""`trainlab train ... --nproc N`: one training command as N processes of this machine, with the
environment torchrun gives its workers (RANK, WORLD_SIZE, MASTER_ADDR/PORT) and each its share of
the CPU threads (cpus.SHARE_VARIABLE)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

from trainlab.system.process_wide import SHARE_VARIABLE, child_environment


def free_local_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch_ranks(nproc: int, train_args: list[str]) -> int:
    """Run `trainlab train *train_args` as `nproc` processes and wait for them. Ctrl-C reaches every
    process (the terminal signals the whole group) and each stops cleanly; when one process fails
    the others are ended (they would wait for it forever). Returns the first non-zero exit status,
    else 0."""
    port = free_local_port()
    procs = [subprocess.Popen([sys.executable, "-m", "trainlab", "train", *train_args], env=child_environment(
        RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(nproc), LOCAL_WORLD_SIZE=str(nproc), MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port), **{SHARE_VARIABLE: str(nproc)})) for r in range(nproc)]
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # the ranks handle Ctrl-C; wait for them
    try:
        while any(p.poll() is None for p in procs):
            if any(p.returncode not in (None, 0, 130, 143) for p in procs):
                for p in procs:
                    if p.poll() is None:
                        p.terminate()
            time.sleep(0.2)
    finally:
        signal.signal(signal.SIGINT, previous)
    return next((p.returncode for p in procs if p.returncode), 0)
