"""`trainlab tune ...`: search hyperparameters with Optuna and look at studies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from trainlab.cli.app import tune_app
from trainlab.cli.common import (
    DataDirOpt,
    DbOpt,
    JsonOpt,
    RunsDirOpt,
    SetOpt,
    check_output,
    fail,
    fmt,
    prepare_for_work,
    settings_for,
    stoppable,
)

# --- tuning -------------------------------------------------------------------------------------

StorageOpt = Annotated[Optional[str], typer.Option(
    "--storage", help="Optuna storage URL shared by the study's workers (default: --db when it is a server, else <runs>/studies.db).")]


def _short(v) -> str:
    return "" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v)


def _print_trial(t) -> None:
    """One line per finished trial (module level: tuning worker processes print through it too)."""
    value = "" if t.value is None else f"{t.value:.4f}"
    params = " ".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in t.params.items())
    extra = f"  ({t.error})" if t.error and t.state != "complete" else ""
    typer.echo(f"trial {t.number:>3}  {t.state:<11} {value:>7}  {fmt(t.seconds, 1):>6} s  {params}  "
               f"{t.run_id or ''}{extra}")


def _print_study(rep, show_trials: bool = True) -> None:
    counts = ", ".join(f"{n} {k}" for k, n in sorted(rep.counts().items()))
    typer.echo(f"study {rep.name}: recipe {rep.recipe.name}, {rep.direction} {rep.objective}; trials: {counts or 'none'}")
    typer.echo(f"storage: {rep.storage}")
    if show_trials and rep.trials:
        from rich.console import Console
        from rich.table import Column, Table
        longest = max([len(t.run_id or "") for t in rep.trials] + [3])
        run_column = Column("run", no_wrap=True, min_width=longest)  # whole ids: to read and copy
        table = Table("trial", "state", rep.objective, "test acc", "epochs run", "seconds", *rep.space.params, run_column,
                      Column("why", overflow="fold"))
        for t in rep.trials:
            table.add_row(str(t.number), t.state, fmt(t.value), fmt(t.test_acc), str(t.epochs or ""), fmt(t.seconds, 1),
                          *[_short(t.params.get(k)) for k in rep.space.params], t.run_id or "",
                          (t.error or "")[:60] if t.state != "complete" else "")
        Console(width=240).print(table)
    for note in rep.notes:
        typer.echo(f"note: {note}")
    b = rep.best
    if b is None:
        typer.echo("no complete trial yet")
        return
    typer.echo(f"best: trial {b.number}, {rep.objective} {b.value:.4f}, test acc {fmt(b.test_acc)} (run {b.run_id})")
    typer.echo("best params: " + ", ".join(f"{k}={_short(v)}" for k, v in b.params.items()))
    typer.echo(f"best recipe: trainlab tune best {rep.name} > best.yaml && trainlab train best.yaml")


@tune_app.command("run")
def tune_run(recipe: Annotated[str, typer.Argument(help="The recipe to start from: a preset name or a YAML file.")],
             space: Annotated[str, typer.Option(help="A preset space (`trainlab tune spaces`) or a space YAML file.")],
             set_: SetOpt = None,
             trials: Annotated[Optional[int], typer.Option(help="Trials this command runs, shared by its --jobs workers.")] = 20,
             timeout: Annotated[Optional[float], typer.Option(help="Seconds after which no new trial starts.")] = None,
             study: Annotated[Optional[str], typer.Option(help="Study name (default RECIPE-SPACE); the same name continues it.")] = None,
             storage: StorageOpt = None,
             jobs: Annotated[int, typer.Option(help="Worker processes on this machine.")] = 1,
             sampler: Annotated[str, typer.Option(help="tpe, random or grid.")] = "tpe",
             pruner: Annotated[str, typer.Option(help="median, hyperband or none.")] = "median",
             seed: Annotated[int, typer.Option(help="The sampler's seed (worker i uses seed + i).")] = 0,
             startup: Annotated[int, typer.Option(help="TPE: random trials before it models the results.")] = 10,
             heartbeat: Annotated[int, typer.Option(help="Seconds between a trial's heartbeats; a trial silent for 3 beats is failed.")] = 10,
             plots: Annotated[bool, typer.Option(help="Write the study's plots beside the runs at the end.")] = True,
             data_dir: DataDirOpt = None, runs_dir: RunsDirOpt = None, db: DbOpt = None,
             device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
             json_out: Annotated[bool, typer.Option("--json", help="End with the study report as JSON.")] = False) -> None:
    """Search a space around a recipe; every trial is a run. Ctrl-C stops after the current step."""
    from trainlab.tuning.study import plot_study, tune
    settings = settings_for(data_dir, runs_dir, db)
    said = (lambda exc: (f"\ninterrupted; the study keeps its finished trials. Continue with the same command "
                         f"(or `trainlab tune show {study or '<study>'}`)", True))
    if timeout is not None:
        typer.echo(f"note: --timeout {timeout:g}: no new trial starts after {timeout:g} s; the trials under way finish "
                   f"first (Ctrl-C stops them after their current step)")
    # armed from the start: between trials too, a Ctrl-C lets the study record the trial under way
    with stoppable(said, armed_from_start=True) as stop:
        prepare_for_work()
        rep = tune(recipe, space, trials=trials, timeout=timeout, study=study, storage=storage, jobs=jobs,
                   sampler=sampler, pruner=pruner, seed=seed, startup=startup, overrides=set_, settings=settings,
                   device=device, stop=stop, report=None if json_out else _print_trial, heartbeat=heartbeat)
    if plots:
        written = plot_study(rep.name, rep.storage, settings.runs_dir / "studies")
        rep.notes.append("plots: " + ", ".join(str(p) for p in written))
    if json_out:
        print(json.dumps(rep.to_dict()))
        return
    typer.echo("")
    _print_study(rep, show_trials=False)


@tune_app.command("show")
def tune_show(study: str, storage: StorageOpt = None, runs_dir: RunsDirOpt = None, db: DbOpt = None,
              json_out: JsonOpt = False) -> None:
    """A study: best value and recipe, and every trial with its state, value, duration and run."""
    from trainlab.tuning.study import storage_url, study_report
    rep = study_report(study, storage_url(settings_for(runs_dir=runs_dir, db=db), storage))
    if json_out:
        print(json.dumps(rep.to_dict()))
        return
    _print_study(rep)


@tune_app.command("best")
def tune_best(study: str, storage: StorageOpt = None, runs_dir: RunsDirOpt = None, db: DbOpt = None) -> None:
    """The best trial's recipe as YAML (`trainlab tune best S > best.yaml; trainlab train best.yaml`)."""
    from trainlab.tuning.study import storage_url, study_report
    rep = study_report(study, storage_url(settings_for(runs_dir=runs_dir, db=db), storage))
    if rep.best_recipe is None:
        fail(f"study {study!r} has no complete trial yet; run more trials with `trainlab tune`")
    typer.echo(rep.best_recipe.to_yaml(), nl=False)


@tune_app.command("list")
def tune_list(storage: StorageOpt = None, runs_dir: RunsDirOpt = None, db: DbOpt = None, json_out: JsonOpt = False) -> None:
    """The studies in a storage, with their trial counts and best values."""
    from trainlab.tuning.study import list_studies, storage_url
    rows = list_studies(storage_url(settings_for(runs_dir=runs_dir, db=db), storage))
    if json_out:
        print(json.dumps(rows))
        return
    for r in rows:
        typer.echo(f"{r['study']:<32} {r['trials']:>4} trials  best {fmt(r['best_value'])} (trial {r['best_trial']})  "
                   f"{r['direction']}  started {r['started']}")
    if not rows:
        typer.echo("no studies yet; start one with `trainlab tune RECIPE --space SPACE`")


@tune_app.command("plot")
def tune_plot(study: str, out: Annotated[Optional[Path], typer.Option(help="Folder for the PNGs (default <runs>/studies).")] = None,
              storage: StorageOpt = None, runs_dir: RunsDirOpt = None, db: DbOpt = None) -> None:
    """Optuna's plots of a study: optimisation history, intermediate values, parallel coordinates, importances."""
    check_output(out, "--out", folder=True)
    from trainlab.tuning.study import plot_study, storage_url
    settings = settings_for(runs_dir=runs_dir, db=db)
    for path in plot_study(study, storage_url(settings, storage), out or settings.runs_dir / "studies"):
        typer.echo(str(path))


@tune_app.command("spaces")
def tune_spaces() -> None:
    """The preset search spaces."""
    from trainlab.tuning.space import load_space, space_names
    for name in space_names():
        sp = load_space(name)
        typer.echo(f"{name:<6} {', '.join(sp.params)}\n       {sp.description}")
