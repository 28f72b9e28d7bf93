"""The `trainlab` command: a thin map from subcommands to library functions, one module per group.

- `app`: the Typer apps; `main`: the entry point (one-line errors, exit statuses).
- `common`: the shared options, settings resolved once, stopping on Ctrl-C and SIGTERM.
- `train` (train, rerun, recipes, show, summary, lr-find), `data`, `runs`, `tune`, `analysis`
  (evaluate, predict, plot, report), `serving` (export, serve, dashboard).

Each command parses its flags, resolves the settings once (flags over the environment), calls one
library function and formats the result.
"""

from trainlab.cli.main import app, main

__all__ = ["app", "main"]
