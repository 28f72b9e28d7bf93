"""`trainlab evaluate`, `predict`, `plot` and `report`: what a saved run does and how it learned."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from trainlab.cli.app import app
from trainlab.cli.common import DataDirOpt, JsonOpt, RunsDirOpt, check_output, fail, prepare_for_work, settings_for


@app.command()
def evaluate(run: Annotated[str, typer.Argument(help="A run id or run folder.")],
             split: Annotated[str, typer.Option(help="test or val.")] = "test",
             out: Annotated[Optional[Path], typer.Option(help="Folder for confusion-<split>.png and misclassified-<split>.png (default: the run folder).")] = None,
             no_pictures: Annotated[bool, typer.Option("--no-pictures", help="Only the report; write no PNGs.")] = False,
             data_dir: DataDirOpt = None, runs_dir: RunsDirOpt = None, json_out: JsonOpt = False) -> None:
    """Evaluate a saved run: loss, accuracy, top-k, per-class precision/recall/F1, confusion matrix, mistakes."""
    from trainlab.analysis.evaluate import evaluate_run
    check_output(out, "--out", folder=True)
    prepare_for_work()
    report, files, warnings = evaluate_run(run, split=split, out_dir=out, settings=settings_for(data_dir, runs_dir),
                                           pictures=not no_pictures)
    for w in warnings:
        typer.echo(f"warning: {w}", err=True)
    if json_out:
        print(json.dumps(dict(report.to_dict(), files=[str(f) for f in files])))
        return
    typer.echo(report.text())
    if files:
        typer.echo("\nwrote " + ", ".join(str(f) for f in files))


@app.command()
def plot(runs: Annotated[list[str], typer.Argument(help="One or more run ids or folders.")],
         out: Annotated[Optional[Path], typer.Option(help="PNG path (default: the run's curves.png, or compare.png in the runs folder).")] = None,
         title: Annotated[Optional[str], typer.Option(help="Figure title.")] = None,
         runs_dir: RunsDirOpt = None) -> None:
    """Learning curves (accuracy and loss, train vs validation); several runs overlay in one figure."""
    check_output(out, "--out")
    from trainlab.runs.curves import plot_runs
    typer.echo(f"wrote {plot_runs(runs, settings_for(runs_dir=runs_dir), out, title)}")


def _print_predictions(preds, top_k: int, json_out: bool) -> int:
    """Print one line (or JSON object) per input; the number of inputs that failed."""
    for rec in preds.records(top_k):
        if json_out:
            print(json.dumps(rec))
            continue
        tops = ", ".join(f"{t['class_name']} {t['probability']:.3f}" for t in rec["top_k"])
        typer.echo(f"{rec['file']}: {rec['class_name']} ({rec['probability']:.3f})   top-{top_k}: {tops}")
        for w in rec["warnings"]:
            typer.echo(f"  warning: {w}")
    for f, err in preds.failures:
        typer.echo(f"error: {f}: {err}", err=True)
    return len(preds.failures)


@app.command()
def predict(run: Annotated[str, typer.Argument(help="A run id or run folder.")],
            inputs: Annotated[Optional[list[str]], typer.Argument(help="Image files or folders.")] = None,
            test_index: Annotated[Optional[list[str]], typer.Option("--test-index", help="Predict item N, or items A:B, of the run's test set (repeatable).")] = None,
            top_k: Annotated[int, typer.Option("--top-k", min=1, help="How many classes to list.")] = 3,
            style: Annotated[Optional[str], typer.Option(help="Override the run's preparation: digit, fashion or photo.")] = None,
            show: Annotated[Optional[Path], typer.Option("--show", help="Write 'what the model sees' PNGs here.")] = None,
            plot: Annotated[Optional[Path], typer.Option("--plot", help="Write the predictions figure (images and probability bars) here.")] = None,
            data_dir: DataDirOpt = None, runs_dir: RunsDirOpt = None,
            json_out: Annotated[bool, typer.Option("--json", help="One JSON object per input.")] = False) -> None:
    """Predict the class of image files (prepared as the run's training data was) or test-set items.
    Each input that cannot be read is named on stderr; exit status 1 when some failed, 2 when all did."""
    from trainlab.analysis.predict import check_style, plot_results, predict_inputs, write_model_views
    from trainlab.runs.run import check_usable, load_run
    check_style(style)
    if not inputs and not test_index:
        fail("give image files or folders, or --test-index N")
    check_output(show, "--show", folder=True)
    check_output(plot, "--plot")
    prepare_for_work()
    settings = settings_for(data_dir, runs_dir)
    r = load_run(run, settings)
    check_usable(r)  # a failed or diverged run: one line, exit 2 (not NaN)
    results, indices = predict_inputs(r, inputs, test_index, style, settings)
    failed = 0
    for preds in results:
        failed += _print_predictions(preds, top_k, json_out)
        if show is not None and len(preds):
            files = write_model_views(r, preds, show, style)
            typer.echo(f"wrote {len(files)} images to {show}", err=json_out)
    if plot is not None and any(len(p) for p in results):
        typer.echo(f"wrote {plot_results(r, results, indices, plot, settings)}", err=json_out)
    if failed:
        raise typer.Exit(2 if failed == sum(len(p) + len(p.failures) for p in results) else 1)


@app.command()
def report(runs: Annotated[list[str], typer.Argument(help="One or more run ids (several are compared).")],
           out: Annotated[Path, typer.Option(help="The HTML file to write.")] = Path("report.html"),
           runs_dir: RunsDirOpt = None, data_dir: DataDirOpt = None) -> None:
    """One self-contained HTML report (opens offline): recipes and what differs, interactive learning curves,
    per-class test metrics, the confusion matrix, the highest-loss mistakes, the environment, the model card."""
    check_output(out, "--out")
    prepare_for_work()
    from trainlab.analysis.report import write_report
    path = write_report(runs, out, settings_for(data_dir, runs_dir))
    typer.echo(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB, {len(runs)} run{'s' if len(runs) > 1 else ''})")
