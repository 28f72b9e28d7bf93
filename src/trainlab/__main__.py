"""`python -m trainlab` and the `trainlab` console script. Importing the CLI happens inside the
guard, so a Ctrl-C at any moment of start-up ends in one line and exit status 130."""

import sys


def run() -> None:
    try:
        from trainlab.cli import main
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    main()


if __name__ == "__main__":
    run()
