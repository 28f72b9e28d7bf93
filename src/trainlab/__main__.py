"""`python -m trainlab` and the `trainlab` console script. Importing the CLI happens inside the
guard (after the CPU policy, which must come before torch: cpus.py), so a Ctrl-C at any moment of start-up ends in one line and exit status 130."""

import signal
import sys


def run() -> None:
    from trainlab.cpus import prepare_process, role_of
    prepare_process(role_of(sys.argv))  # the servers' OpenMP wait policy, before torch loads
    seen = []

    def startup_interrupt(signum, frame):
        seen.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, startup_interrupt)
    try:
        from trainlab.cli import main
    except BaseException:  # a Ctrl-C inside an extension's import can surface as ImportError
        if seen or sys.exc_info()[0] is KeyboardInterrupt:
            sys.stderr.write("interrupted\n")
            sys.exit(130)
        raise
    main()


if __name__ == "__main__":
    run()
