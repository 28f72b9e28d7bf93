"""The `trainlab` command's Typer apps: the root and its groups (data, runs, tune). The command
modules beside this one register their commands on them; main.py imports them all.

The root command turns every outcome into what a user should see: user errors as one line on
stderr and exit status 2, Ctrl-C as "interrupted" and 130 (SIGTERM: 143), never a traceback for
a known error. It does so in its own `main()`, so `typer.testing.CliRunner` runs exactly what the
console script runs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import get_args

import typer
from typer.core import TyperGroup

try:  # typer >= 0.2x carries its own click; older ones use click itself
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import exceptions as click_errors

from trainlab.cli.common import begin_command
from trainlab.errors import TrainlabError
from trainlab.system.signals import Interrupt, StopSignals


class TrainlabCommand(TyperGroup):
    """The root command: one-line errors and exit statuses around click's own processing."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        plain_metavars(self)
        handler = begin_command()
        try:  # click's own errors come back here (standalone_mode=False), to be said in one line
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click_errors.NoArgsIsHelpError as exc:
            typer.echo(exc.ctx.get_help())
            sys.exit(0)
        except click_errors.UsageError as exc:  # an unknown option, a bad or missing value: one line, as every error
            where = exc.ctx.command_path if exc.ctx is not None else "trainlab"
            typer.echo(f"error: {exc.format_message()} (see `{where} --help`)", err=True)
            sys.exit(2)
        except click_errors.ClickException as exc:
            typer.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except (typer.Abort, KeyboardInterrupt, Interrupt):
            _interrupted_exit(handler)
        except TrainlabError as exc:
            if handler.interrupted.is_set():
                _interrupted_exit(handler)
            typer.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except SystemExit:
            raise
        except BaseException:
            if handler.interrupted.is_set():
                _interrupted_exit(handler)
            raise
        sys.exit(code if isinstance(code, int) else 0)


METAVARS = {int: "N", float: "NUMBER", str: "TEXT", Path: "PATH"}


def plain_metavars(command) -> None:
    """Help that names what to type (`--epochs N`, `--set TEXT`, `--data-dir PATH`) instead of Python's
    types (`<int>`, `<list[str]>`, `<bool>`): every option without a metavar of its own gets one."""
    from typer.core import TyperOption
    for sub in getattr(command, "commands", {}).values():
        plain_metavars(sub)
    params = list(getattr(command, "params", []))
    if hasattr(command, "get_help_option"):  # --help is made on first use and kept: make it now, without a type
        help_opt = command.get_help_option(typer.Context(command))
        params += [help_opt] if help_opt is not None else []
    for param in params:
        if isinstance(param, TyperOption) and param.metavar is None and param.is_flag:
            param.metavar = ""  # a flag takes no value: nothing to show
        elif isinstance(param, TyperOption) and param.metavar is None:
            desc = param.type_descriptor
            base = get_args(desc.annotation)[0] if desc.is_list and get_args(desc.annotation) else desc.annotation
            if desc.is_choice:
                continue
            param.metavar = METAVARS.get(base, "PATH" if desc.is_path else "VALUE")


def _interrupted_exit(handler: StopSignals):
    typer.echo("interrupted", err=True)
    sys.exit(handler.exit_status)


app = typer.Typer(cls=TrainlabCommand, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train, evaluate and use image classifiers on MNIST, Fashion-MNIST, CIFAR-10 and image trees.")
datasets_app = typer.Typer(no_args_is_help=True, help="Look at, list, fetch, verify, check and fix datasets.")
app.add_typer(datasets_app, name="data")
app.add_typer(datasets_app, name="datasets", help="The same as `trainlab data`.")
runs_app = typer.Typer(help="List, inspect, compare, tag and remove runs (the run index).")
app.add_typer(runs_app, name="runs")


class _RunByDefault(TyperGroup):
    """`trainlab tune RECIPE ...` means `trainlab tune run RECIPE ...`; `show`, `best`, ... are subcommands."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


tune_app = typer.Typer(cls=_RunByDefault, no_args_is_help=True,
                       help="Search hyperparameters with Optuna (`trainlab tune RECIPE --space SPACE`) and look at studies.")
app.add_typer(tune_app, name="tune")


def _version(value: bool) -> None:
    if value:
        from trainlab.version import __version__
        typer.echo(f"trainlab {__version__}")
        raise typer.Exit()


@app.callback()
def root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print trainlab's version and exit.")) -> None:
    """Train, evaluate and use image classifiers on MNIST, Fashion-MNIST, CIFAR-10 and image trees."""
