"""`trainlab runs ...`: list, show, compare, tag, export, remove and reindex runs (the run index)."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Optional

import typer

from trainlab.cli.app import runs_app
from trainlab.cli.common import DataDirOpt, DbOpt, JsonOpt, RunsDirOpt, check_output, fail, fmt, prepare_for_work, settings_for


def _age(iso: str | None) -> str:
    if not iso:
        return ""
    secs = (datetime.now(timezone.utc) - datetime.fromisoformat(iso)).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{int(secs // size)}{unit} ago"
    return f"{int(secs)}s ago"


@runs_app.callback(invoke_without_command=True)
def runs_list(ctx: typer.Context,
              recipe: Annotated[Optional[str], typer.Option(help="Only this recipe.")] = None,
              status: Annotated[Optional[str], typer.Option(help="running, completed, interrupted, failed, pruned, stale (its process is gone) or missing (its folder is).")] = None,
              tag: Annotated[Optional[str], typer.Option(help="Only runs with this tag.")] = None,
              study: Annotated[Optional[str], typer.Option(help="Only the trials of this tuning study (`trainlab tune`).")] = None,
              sort: Annotated[str, typer.Option(help="started_at, val_acc_at_best, test_acc, train_seconds, recipe, epochs.")] = "started_at",
              limit: Annotated[Optional[int], typer.Option(help="At most N rows.")] = None,
              runs_dir: RunsDirOpt = None, db: DbOpt = None,
              json_out: Annotated[bool, typer.Option("--json", help="One JSON array.")] = False) -> None:
    """List runs: id, recipe, status, epochs, val acc at the best epoch, test acc, duration and age."""
    if ctx.invoked_subcommand is not None:
        return
    from trainlab.runs.record import Metrics
    from trainlab.runs.store import open_store
    rows = open_store(settings_for(runs_dir=runs_dir, db=db)).list(recipe, status, sort, limit, tag, study)
    if json_out:
        # status is what the table shows (stale for a dead process); recorded_status what the index holds
        print(json.dumps([dict(r.model_dump(), status=(live := r.live_status()), live_status=live, recorded_status=r.status)
                          for r in rows]))
        return
    from rich.console import Console
    from rich.table import Column, Table
    longest = max([len(r.run_id) for r in rows] + [2])
    table = Table(Column("id", no_wrap=True, min_width=longest), "recipe", "status", "epochs", "val acc at best", "test acc",
                  "train s", "age", "tags")
    for r in rows:
        m = r.metrics or Metrics()
        table.add_row(r.run_id, r.recipe, r.live_status(), str(r.epochs), fmt(m.val_acc_at_best), fmt(m.test_acc),
                      fmt(m.train_seconds, 1), _age(r.started_at), ",".join(r.tags))
    Console(width=200).print(table)


@runs_app.command("show")
def runs_show(run: str, runs_dir: RunsDirOpt = None, db: DbOpt = None, json_out: JsonOpt = False) -> None:
    """Everything recorded about one run."""
    from trainlab.runs.record import Metrics, resolve_run_dir
    from trainlab.runs.store import open_store
    settings = settings_for(runs_dir=runs_dir, db=db)
    store = open_store(settings)
    record = store.get(resolve_run_dir(run, settings).name)
    history = store.history(record.run_id)
    if json_out:
        print(json.dumps(dict(record.model_dump(), history=history)))
        return
    m = record.metrics or Metrics()
    fields = {"id": record.run_id, "recipe": record.recipe, "status": record.live_status(), "error": record.error,
              "seed": record.seed, "device": record.device, "started_at": record.started_at, "ended_at": record.ended_at,
              "epochs": record.epochs, **{k: getattr(m, k) for k in ("best_epoch", "val_acc_at_best", "test_acc", "test_loss", "train_seconds")},
              **{f"{k}_version": v for k, v in record.versions.items() if k != "platform"}, "run_dir": record.run_dir,
              "note": record.note, "tags": ", ".join(record.tags) or None,
              "study": f"{record.study} trial {record.trial}" if record.study else None}
    for k, v in fields.items():
        if v is not None:
            typer.echo(f"{k:>16}: {fmt(v)}")
    typer.echo("\nepoch      loss       acc  val_loss   val_acc        lr   seconds")
    for h in history:
        typer.echo(f"{h['epoch']:>5} " + " ".join(f"{fmt(h[k]):>9}" for k in ("loss", "acc", "val_loss", "val_acc", "lr", "seconds")))


@runs_app.command("compare")
def runs_compare(runs: Annotated[list[str], typer.Argument(help="Two or more run ids.")],
                 out: Annotated[Optional[Path], typer.Option(help="Curves PNG (default <runs>/compare.png).")] = None,
                 runs_dir: RunsDirOpt = None, db: DbOpt = None) -> None:
    """The hyperparameters that differ, side by side, then the metrics; overlays the curves."""
    from trainlab.history import hidden_note
    from trainlab.plots import plot_history
    from trainlab.runs.admin import compare_runs, metric_rows
    check_output(out, "--out")
    settings = settings_for(runs_dir=runs_dir, db=db)
    records, curves, diff = compare_runs(runs, settings)
    labels = [chr(ord("A") + i) if i < 26 else f"R{i + 1}" for i in range(len(records))]
    for label, r in zip(labels, records):  # whole ids, to read and copy; the columns below use the letters
        typer.echo(f"{label}  {r.run_id}")
    typer.echo("")
    width = max([len(k) for k in [*diff, *metric_rows(records)]] + [14])
    cell = max([12, *(len(fmt(v)) for values in diff.values() for v in values)])
    cell = min(cell, 40)
    typer.echo(f"{'':<{width}}  " + "  ".join(f"{label:>{cell}}" for label in labels))
    if not diff:
        typer.echo("(the recipes are the same)")
    for k, values in diff.items():
        typer.echo(f"{k:<{width}}  " + "  ".join(f"{fmt(v)[:cell]:>{cell}}" for v in values))
    typer.echo("")
    for k, values in metric_rows(records).items():
        typer.echo(f"{k:<{width}}  " + "  ".join(f"{fmt(v):>{cell}}" for v in values))
    for line in hidden_note([r.run_id for r in records], [c.history for c in curves]):
        typer.echo(f"note: {line}")
    typer.echo(f"\nwrote {plot_history(curves, out or settings.runs_dir / 'compare.png')}")


@runs_app.command("tag")
def runs_tag(run: str, tags: Annotated[Optional[list[str]], typer.Argument(help="Tags to add.")] = None,
             note: Annotated[Optional[str], typer.Option(help="Set the run's note.")] = None,
             runs_dir: RunsDirOpt = None, db: DbOpt = None) -> None:
    """Add tags (and a note) to a run."""
    from trainlab.runs.record import resolve_run_dir
    from trainlab.runs.store import open_store
    if not tags and note is None:
        fail("give tags to add, or --note TEXT")
    settings = settings_for(runs_dir=runs_dir, db=db)
    run_id = resolve_run_dir(run, settings).name
    open_store(settings).tag(run_id, tags or [], note)
    typer.echo(f"tagged {run_id}")


@runs_app.command("export")
def runs_export(runs: Annotated[list[str], typer.Argument(help="Run ids.")],
                tensorboard: Annotated[Optional[Path], typer.Option(help="Write TensorBoard event files under DIR (a folder per run).")] = None,
                mlflow: Annotated[Optional[str], typer.Option(help="Log to the MLflow tracking store at URI (file:./mlruns, sqlite:///mlflow.db, http://...).")] = None,
                experiment: Annotated[str, typer.Option(help="The MLflow experiment.")] = "trainlab",
                runs_dir: RunsDirOpt = None, data_dir: DataDirOpt = None) -> None:
    """Share runs with TensorBoard (event files: scalars per epoch and batch, HParams, curves and confusion
    matrix) or MLflow (params, per-epoch metrics, weights, ONNX, model card and report as artifacts)."""
    if not tensorboard and not mlflow:
        fail("say where: --tensorboard DIR and/or --mlflow URI")
    prepare_for_work()
    from trainlab.analysis import share
    settings = settings_for(data_dir, runs_dir)
    if tensorboard:
        folders = share.to_tensorboard(runs, tensorboard, settings)
        typer.echo(f"wrote TensorBoard event files for {len(folders)} run{'s' if len(folders) != 1 else ''} under {tensorboard} "
                   f"(tensorboard --logdir {tensorboard}); exporting again replaces them")
    if mlflow:
        for run_id, mlflow_id in share.to_mlflow(runs, mlflow, settings, experiment):
            typer.echo(f"{run_id}: " + (f"MLflow run {mlflow_id} in experiment {experiment!r} at {mlflow}" if mlflow_id
                                        else f"already in MLflow experiment {experiment!r}; skipped"))
        where = share.mlflow_artifact_location(mlflow, experiment)
        if where:
            typer.echo(f"artifacts (weights, ONNX, report) are in {where}")


@runs_app.command("rm")
def runs_rm(runs: Annotated[list[str], typer.Argument(help="Run ids to delete.")],
            yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
            runs_dir: RunsDirOpt = None, db: DbOpt = None) -> None:
    """Delete runs: their folders (only inside the runs folder) and their index entries."""
    from trainlab.runs.admin import remove_run
    settings = settings_for(runs_dir=runs_dir, db=db)
    if not yes:
        if not sys.stdin.isatty():
            fail("runs rm asks for confirmation; pass --yes when not at a terminal")
        if not typer.confirm(f"delete {len(runs)} run(s): {', '.join(runs)}?"):
            raise typer.Exit(1)
    for r in runs:  # remove_run also drops an index entry whose folder was deleted by hand
        typer.echo(f"deleted {remove_run(r, settings)}")


@runs_app.command("reindex")
def runs_reindex(runs_dir: RunsDirOpt = None, db: DbOpt = None) -> None:
    """Add run folders that the index lacks; damaged folders are skipped with a warning."""
    from trainlab.runs.admin import reindex
    added, skipped = reindex(settings_for(runs_dir=runs_dir, db=db))
    for w in skipped:
        typer.echo(f"warning: skipped: {w}", err=True)
    shown = ", ".join(added[:5]) + (f" and {len(added) - 5} more" if len(added) > 5 else "")
    typer.echo(f"indexed {len(added)} run(s)" + (f": {shown}" if added else ""))
