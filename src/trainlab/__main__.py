"""`python -m trainlab` and the `trainlab` console script. Importing the CLI happens inside the
guard (after the CPU policy, which must come before torch: cpus.py), so a Ctrl-C at any moment of start-up ends in one line and exit status 130."""

import signal
import sys

_seen: list[int] = []


def _startup_interrupt(signum, frame):
    _seen.append(signum)
    raise KeyboardInterrupt


signal.signal(signal.SIGINT, _startup_interrupt)  # first of all: a Ctrl-C from here on is one line, not a traceback


def run() -> None:
    try:
        from trainlab.cpus import prepare_process, role_of
        prepare_process(role_of(sys.argv))  # the servers' OpenMP wait policy, before torch loads
        from trainlab.cli import main
    except BaseException:  # a Ctrl-C inside an extension's import can surface as ImportError
        if _seen or sys.exc_info()[0] is KeyboardInterrupt:
            sys.stderr.write("interrupted\n")
            sys.exit(130)
        raise
    main()


if __name__ == "__main__":
    run()
