"""`python -m trainlab` and the `trainlab` console script. The stop handler (system/signals.py) is
installed first of all, so a Ctrl-C at any moment of start-up ends in one line and exit status 130;
then the CPU policy, which must come before torch loads (system/process_wide.py); then the CLI."""

import sys

from trainlab.system.signals import Interrupt, StopSignals

HANDLER = StopSignals()


def run() -> None:
    try:
        HANDLER.install()  # inside the try: a Ctrl-C from this line on ends as "interrupted", never a traceback
        from trainlab.system.process_wide import prepare_process, role_of
        prepare_process(role_of(sys.argv))  # the servers' OpenMP wait policy, before torch loads
        from trainlab.cli import main
        main(HANDLER)
    except SystemExit:
        raise
    except BaseException as exc:  # a Ctrl-C inside an extension's import can surface as ImportError
        if HANDLER.interrupted.is_set() or isinstance(exc, (KeyboardInterrupt, Interrupt)):
            sys.stderr.write("interrupted\n")
            sys.exit(HANDLER.exit_status)
        raise


if __name__ == "__main__":
    run()
