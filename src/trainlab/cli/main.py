"""The `trainlab` command's entry point: every command module registered on the app (app.py turns
their outcomes into one-line errors and exit statuses)."""

from __future__ import annotations

from trainlab.cli import analysis, data, runs, serving, train, tune  # noqa: F401 - each registers its commands
from trainlab.cli.app import app
from trainlab.cli.common import use_signals
from trainlab.system.signals import StopSignals


def main(handler: StopSignals | None = None) -> None:
    """Console entry point. `handler`: the stop handler `python -m trainlab` installed first of all
    (else one is installed here, for the life of the process)."""
    handler = handler or StopSignals()
    handler.install()
    use_signals(handler)
    app()
