"""One stop handler for Ctrl-C and SIGTERM, for every trainlab process that trains: the `trainlab`
command (from its first line: `python -m trainlab`), a dashboard job's worker and a tuning worker.

While training runs (the handler is *armed*), the first signal asks it to stop after the current
step: checkpointed, marked interrupted, resumable. A second Ctrl-C stops at once. Before training
runs (imports, loading data, building) and after it (the final save is done), a signal stops at
once: `Interrupt` is raised, which the CLI turns into one line, "interrupted", and exit status 130
(143 for SIGTERM).

A signal that lands while a module is being imported is held and delivered once no module is
initialising: raised inside `import torch` (a pybind11 call back into Python) it aborted the
process with SIGABRT, "terminate called after throwing an instance of
'pybind11::error_already_set'" (reproduced 1 in ~40 random delays, 0 in 140 after).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupt(BaseException):
    """Stop at once: a signal outside training, or a second Ctrl-C. Not a KeyboardInterrupt, which
    click would turn into a blank line and a silent exit."""


def importing() -> bool:
    """Whether a module is being imported right now (its spec says so until its code has run)."""
    return any(getattr(getattr(m, "__spec__", None), "_initializing", False) for m in list(sys.modules.values()))


class StopSignals:
    """The handler, its stop request and what it received. `armed` while training runs: then a
    signal sets `stop` (the loop ends after the current step) instead of raising `Interrupt`."""

    def __init__(self, armed: bool = False):
        self.stop = threading.Event()  # pass it to train(), resume(), tune()
        self.armed = threading.Event()
        if armed:
            self.armed.set()
        self.received: list[int] = []
        self.interrupted = threading.Event()  # a signal came while not armed: whatever follows ends as "interrupted"
        self.raised = threading.Event()  # Interrupt was raised: a held signal is not delivered again

    def __call__(self, signum: int, frame) -> None:
        self.received.append(signum)
        if self.armed.is_set() and not (signum == signal.SIGINT and self.stop.is_set()):
            self.stop.set()
            return
        self.interrupted.set()
        if importing():
            threading.Thread(target=self._deliver_after_imports, args=(signum,), daemon=True).start()
            return
        self.interrupt()

    def interrupt(self):
        """Stop at once: raise `Interrupt` (once: a signal still held for an import is then dropped)."""
        self.raised.set()
        raise Interrupt

    def _deliver_after_imports(self, signum: int) -> None:
        while importing() and not self.raised.is_set():
            time.sleep(0.01)
        if not self.raised.is_set():  # the command may have stopped on `interrupted` meanwhile
            os.kill(os.getpid(), signum)

    @property
    def exit_status(self) -> int:
        """130 after Ctrl-C, 143 after SIGTERM (128 + the signal), as shells report them."""
        return 143 if signal.SIGTERM in self.received else 130

    def install(self) -> dict:
        """Handle SIGINT and SIGTERM here from now on (main thread only); the previous handlers."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {s: signal.signal(s, self) for s in STOP_SIGNALS}

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopSignals]:
        """Handle the signals while the body runs, then put the previous handlers back."""
        previous = self.install()
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
