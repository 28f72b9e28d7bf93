"""The `trainlab` command: a thin map from subcommands to library functions.

Each command parses its flags, resolves the settings once (flags over the environment), calls one
library function and formats the result. Signals, exit statuses and printing live here.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Optional

import typer

try:  # typer >= 0.2x carries its own click; older ones use click itself
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import exceptions as click_errors
from typer.core import TyperGroup

from trainlab.errors import StopRun, TrainlabError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train, evaluate and use image classifiers on MNIST, Fashion-MNIST, CIFAR-10 and image trees.")
datasets_app = typer.Typer(no_args_is_help=True, help="Look at, list, fetch and verify datasets.")
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

SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override a recipe field: key.path=value (repeatable).")]
DataDirOpt = Annotated[Optional[Path], typer.Option("--data-dir", help="Folder holding the dataset files (also TRAINLAB_DATA).")]
DbOpt = Annotated[Optional[str], typer.Option("--db", help="Run index URL (default sqlite:///<runs>/trainlab.db; also TRAINLAB_DB).")]
RunsDirOpt = Annotated[Optional[Path], typer.Option("--runs-dir", help="Where run folders go (default ./runs; also TRAINLAB_RUNS).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def prepare_for_work(server: bool = False) -> None:
    """Process tuning for commands that train or run models (runtime.py: no dynamo import, glibc keeps
    freed memory). A long-running server keeps glibc's own trimming: with the raised thresholds its
    resident memory only grew (about 15 MB a minute under 30 live-event clients)."""
    from trainlab.runtime import skip_dynamo_import, prepare_short_process
    if server:
        skip_dynamo_import()
    else:
        prepare_short_process()


def settings_for(data_dir=None, runs_dir=None, db=None):
    from trainlab.settings import load_settings
    return load_settings(data_dir=data_dir, runs_dir=runs_dir, db=db)


class Armed(threading.Event):
    """Set from the start of training to the end of the final save: a stop request is then honoured
    at the next step, or (after the last epoch) simply lets the final save finish."""


def arm(flag: Armed):
    from trainlab.engine.callbacks import Callback

    class Arm(Callback):
        def on_train_begin(self, state):
            if SIGINT_SEEN.is_set():  # a Ctrl-C during start-up that some import swallowed
                raise KeyboardInterrupt
            flag.set()

        def on_test_end(self, state, metrics):
            flag.clear()

        def on_exception(self, state, exc):
            flag.clear()

    return Arm()


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event, armed: Armed):
    """While training runs, Ctrl-C and SIGTERM ask it to stop after the current step (checkpointed,
    marked interrupted); a second Ctrl-C stops at once. Before it runs (loading data, building),
    they stop at once. Yields the list of signals received."""
    received: list[int] = []

    def handler(signum, frame):
        received.append(signum)
        if signum == signal.SIGINT and not armed.is_set():
            SIGINT_SEEN.set()
        if not armed.is_set() or (signum == signal.SIGINT and stop.is_set()):
            raise KeyboardInterrupt
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _train_json(run) -> str:
    m = run.metrics
    return json.dumps({"run_id": run.run_id, "run_dir": str(run.run_dir) if run.run_dir else None, "recipe": run.recipe.name,
                       **m.model_dump(include={"test_loss", "test_acc", "train_seconds", "total_seconds", "epochs", "val_acc",
                                               "val_acc_at_best", "best_epoch"}),
                       "seed": run.recipe.seed, "history": run.history})


@contextlib.contextmanager
def stoppable(said, armed_from_start: bool = False):
    """The body runs with Ctrl-C and SIGTERM as clean stops (stop_on_signals); when it ends in a stop
    or an interrupt, `said(exc)` gives (message, to stderr?) or None, and the command exits 130
    (Ctrl-C) or 143 (SIGTERM). Yields (stop event, armed flag)."""
    stop, armed = threading.Event(), Armed()
    if armed_from_start:
        armed.set()
    with stop_on_signals(stop, armed) as received:
        try:
            yield stop, armed
        except (StopRun, KeyboardInterrupt) as exc:
            message = said(exc)
            if message is not None:
                typer.echo(message[0], err=message[1])
            raise typer.Exit(143 if signal.SIGTERM in received else 130) from None


def _run_training(fn, json_out: bool, runs_dir, **kw) -> None:
    """Run `fn` (train, resume or rerun) as a stoppable command: a stop prints the resume hint."""
    def said(exc):
        if isinstance(exc, KeyboardInterrupt):
            return "interrupted", True
        if kw["settings"].rank > 0:  # under torchrun rank 0 says it
            return None
        where = f" --runs-dir {runs_dir}" if runs_dir else ""
        return (f"\n{exc.status}; the last checkpoint is kept. Resume with: trainlab train --resume {exc.run_id}{where}"
                if exc.run_id else f"\n{exc.status}"), False

    with stoppable(said) as (stop, armed):
        prepare_for_work()
        run = fn(stop=stop, callbacks=[arm(armed)], **kw)
    if json_out and (run.settings is None or run.settings.rank == 0):  # under torchrun only rank 0 reports
        print(_train_json(run))


def _options(**values) -> list[str]:
    """`--name=value` for each option given (not None), as the command line spells it."""
    return [f"--{k.replace('_', '-')}={v}" for k, v in values.items() if v is not None]


@app.command()
def train(
    recipe: Annotated[Optional[str], typer.Argument(help="A preset name (see `trainlab recipes`) or a recipe YAML file.")] = None,
    set_: SetOpt = None,
    epochs: Annotated[Optional[int], typer.Option(help="Shorthand for --set epochs=N.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Shorthand for --set seed=N.")] = None,
    resume: Annotated[Optional[str], typer.Option(help="Continue an interrupted run (its id or folder) from its last checkpoint.")] = None,
    checkpoint_every: Annotated[float, typer.Option(help="Seconds between mid-epoch checkpoints (epoch ends are always saved).")] = 60.0,
    data_dir: DataDirOpt = None, runs_dir: RunsDirOpt = None, db: DbOpt = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="End stdout with one JSON object of the results.")] = False,
    no_save: Annotated[bool, typer.Option("--no-save", help="Do not write a run folder.")] = False,
    nproc: Annotated[int, typer.Option(min=1, max=64, help="Train on N processes of this machine (DistributedDataParallel, as torchrun would start them).")] = 1,
) -> None:
    """Train a recipe and save the run (recipe, history, metrics, weights, checkpoints, events)."""
    from trainlab.training.api import resume as resume_fn
    from trainlab.training.api import train as train_fn
    if nproc > 1:
        from trainlab.training.launcher import launch_ranks
        args = [*([recipe] if recipe else []), *[f"--set={s}" for s in set_ or []],
                *_options(epochs=epochs, seed=seed, resume=resume, checkpoint_every=checkpoint_every, data_dir=data_dir,
                          runs_dir=runs_dir, db=db, device=device), *(["--quiet"] if quiet else []),
                *(["--json"] if json_out else []), *(["--no-save"] if no_save else [])]
        raise typer.Exit(launch_ranks(nproc, args))
    if resume is None and recipe is None:
        fail("give a recipe (see `trainlab recipes`) or --resume RUN_ID")
    if resume is not None and (recipe is not None or set_ or epochs is not None or seed is not None or no_save):
        fail("--resume continues a run with its own recipe; drop the recipe, --set, --epochs, --seed and --no-save")
    if not 0 < checkpoint_every < float("inf"):
        fail(f"--checkpoint-every {checkpoint_every}: give a positive, finite number of seconds")
    common = dict(settings=settings_for(data_dir, runs_dir, db), device=device, progress="none" if quiet else "auto",
                  checkpoint_every=checkpoint_every)
    if resume is not None:
        _run_training(resume_fn, json_out, runs_dir, run=resume, **common)
    else:
        _run_training(train_fn, json_out, runs_dir, recipe=recipe or "mnist-mlp", overrides=set_, epochs=epochs, seed=seed,
                      save=not no_save, **common)


@app.command()
def rerun(run: Annotated[str, typer.Argument(help="A run id or folder.")], data_dir: DataDirOpt = None,
          runs_dir: RunsDirOpt = None, db: DbOpt = None,
          quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False, json_out: JsonOpt = False) -> None:
    """Train a run's exact recipe and seed again, as a new run."""
    from trainlab.training.api import rerun as rerun_fn
    _run_training(rerun_fn, json_out, runs_dir, run=run, settings=settings_for(data_dir, runs_dir, db),
                  progress="none" if quiet else "auto")


@app.command()
def recipes() -> None:
    """List the preset recipes."""
    from trainlab.recipes import load_recipe, preset_names
    names = preset_names()
    width = max(len(n) for n in names)
    for name in names:
        typer.echo(f"{name:<{width}}  {load_recipe(name).description}")


@app.command()
def show(recipe: Annotated[str, typer.Argument(help="A preset name or a recipe YAML file.")], set_: SetOpt = None) -> None:
    """Print a recipe, fully resolved (defaults filled in, overrides applied), as YAML."""
    from trainlab.recipes import load_recipe
    typer.echo(load_recipe(recipe, set_).to_yaml().rstrip())


@app.command()
def summary(recipe: Annotated[str, typer.Argument(help="A preset name or a recipe YAML file.")], set_: SetOpt = None,
            data_dir: DataDirOpt = None) -> None:
    """Print the model's layers, output shapes and parameter counts, as Keras' model.summary()."""
    from trainlab.recipes import load_recipe
    from trainlab.training.build import summarize
    typer.echo(summarize(load_recipe(recipe, set_), settings_for(data_dir)))


@datasets_app.command("show")
def data_show(dataset: Annotated[str, typer.Argument(help="mnist, fashion-mnist, cifar10, or the path of an image tree.")],
              split: Annotated[str, typer.Option(help="train or test.")] = "train",
              n: Annotated[int, typer.Option("--n", help="How many images in the grid.")] = 25,
              index: Annotated[Optional[int], typer.Option(help="Show this one image large, with a colour bar.")] = None,
              out: Annotated[Optional[Path], typer.Option(help="PNG path (default samples.png, or sample-<index>.png).")] = None,
              classes: Annotated[bool, typer.Option("--classes", help="Print the class table (index -> name); alone, no picture is written.")] = False,
              data_dir: DataDirOpt = None) -> None:
    """A grid of the first N images with their class names, or one image with a colour bar."""
    from trainlab.pictures import class_table, show_samples
    settings = settings_for(data_dir)
    if not classes or out is not None or index is not None:  # --classes alone prints the table, writes no picture
        out = out or Path("samples.png" if index is None else f"sample-{index}.png")
        typer.echo(f"wrote {show_samples(dataset, split, n, index, out, settings=settings)}")
    if classes:
        for i, name in class_table(dataset, settings):
            typer.echo(f"{i:>4}  {name}")


@datasets_app.command("list")
def datasets_list(data_dir: DataDirOpt = None, json_out: JsonOpt = False) -> None:
    """Show each built-in dataset and where its files were found."""
    from trainlab.data.registry import DATASETS, dataset_status
    settings = settings_for(data_dir)
    rows = [dataset_status(n, settings) for n in DATASETS]
    if json_out:
        print(json.dumps(rows))
        return
    for r in rows:
        where = sorted({str(Path(p).parent) for p in r["files"].values() if p})
        state = f"found in {', '.join(where)}" if r["available"] else "missing (trainlab datasets fetch " + r["name"] + ")"
        typer.echo(f"{r['name']:<14} {r['title']:<30} {'x'.join(map(str, r['shape'])):<8} {len(r['classes'])} classes  {state}")
    typer.echo("Any folder or .zip of images laid out as <split>/<class>/* or <class>/* also works as data.name.")


@datasets_app.command("check")
def data_check(dataset: Annotated[str, typer.Argument(help="mnist, fashion-mnist, cifar10, or the path of an image tree.")],
               split: Annotated[str, typer.Option(help="train, test, or all (leaks across train and test need all).")] = "all",
               recipe: Annotated[Optional[str], typer.Option(help="The recipe that cross-fits (default: the dataset's fast preset).")] = None,
               folds: Annotated[int, typer.Option(help="K of the K-fold cross-fitting (2-20).")] = 5,
               top: Annotated[Optional[int], typer.Option(help="Keep the N best-ranked findings of each kind.")] = None,
               limit: Annotated[Optional[int], typer.Option(help="Only the first N images of each split (a quick look).")] = None,
               picture: Annotated[Optional[Path], typer.Option(help="A PNG of the top 50 label issues, given and suggested label.")] = None,
               picture_split: Annotated[Optional[str], typer.Option(help="Draw only this split's label issues (train or test).")] = None,
               data_dir: DataDirOpt = None, json_out: JsonOpt = False) -> None:
    """Find mislabeled images (confident learning on K-fold out-of-sample predictions), near-duplicates,
    train/test leaks, outliers, class imbalance and unreadable files. --json: one finding a line."""
    prepare_for_work()
    from trainlab.health import check_data, write_picture
    settings = settings_for(data_dir)
    progress = None if json_out else (lambda stage, done, total: typer.echo(f"{stage} {done}/{total}", err=True)
                                      if stage == "training" and done < total else None)
    report = check_data(dataset, split=split, recipe=recipe, folds=folds, top=top, limit=limit, settings=settings,
                        progress=progress)
    if picture:
        write_picture(report, dataset, picture, settings, split=picture_split)
    if json_out:
        for item in report.issues:
            typer.echo(json.dumps(item))
        return
    typer.echo(report.summary())
    for line in report.lines(per_kind=10):
        typer.echo(line)
    if picture:
        typer.echo(f"wrote {picture}")


@datasets_app.command("fix")
def data_fix(file: Annotated[Path, typer.Argument(help="The corrections file (YAML), made if it does not exist.")],
             dataset: Annotated[Optional[str], typer.Option(help="The dataset it corrects (needed for a new file).")] = None,
             relabel: Annotated[Optional[list[str]], typer.Option(help="SPLIT:INDEX=LABEL (an image tree: SPLIT:FILE=LABEL); split defaults to test.")] = None,
             exclude: Annotated[Optional[list[str]], typer.Option(help="SPLIT:INDEX to leave out of training and testing.")] = None,
             keep: Annotated[Optional[list[str]], typer.Option(help="SPLIT:INDEX looked at and right as it is.")] = None,
             data_dir: DataDirOpt = None) -> None:
    """Record relabels, exclusions and keeps in a corrections file; the dataset's files are never changed.
    Train on them with --set data.corrections=FILE."""
    from trainlab.health import fix_data
    path, added = fix_data(file, dataset=dataset, relabel=relabel or [], exclude=exclude or [], keep=keep or [],
                           settings=settings_for(data_dir))
    typer.echo(f"{path}: {len(added)} decision{'s' if len(added) != 1 else ''} added "
               f"({', '.join(f'{c.action} {c.split}:{c.index if c.index is not None else c.file}' for c in added[:5])}"
               f"{', ...' if len(added) > 5 else ''}); train on them with --set data.corrections={path}")


@datasets_app.command("fetch")
def datasets_fetch(name: str, data_dir: DataDirOpt = None) -> None:
    """Download (if needed) and verify a dataset into the user cache."""
    from trainlab.data.registry import load_dataset
    ds = load_dataset(name, settings=settings_for(data_dir), progress=True)
    typer.echo(f"{name}: {len(ds.x_train)} train, {len(ds.x_test)} test, verified, from {ds.source}")


@datasets_app.command("verify")
def datasets_verify(name: str, data_dir: DataDirOpt = None) -> None:
    """Check a dataset's files against their known digests (SHA-256 of IDX contents, md5 of the CIFAR archive)."""
    from trainlab.data.registry import verify_dataset
    for line in verify_dataset(name, settings_for(data_dir)):
        typer.echo(line)


@app.command()
def evaluate(run: Annotated[str, typer.Argument(help="A run id or run folder.")],
             split: Annotated[str, typer.Option(help="test or val.")] = "test",
             out: Annotated[Optional[Path], typer.Option(help="Folder for confusion-<split>.png and misclassified-<split>.png (default: the run folder).")] = None,
             no_pictures: Annotated[bool, typer.Option("--no-pictures", help="Only the report; write no PNGs.")] = False,
             data_dir: DataDirOpt = None, runs_dir: RunsDirOpt = None, json_out: JsonOpt = False) -> None:
    """Evaluate a saved run: loss, accuracy, top-k, per-class precision/recall/F1, confusion matrix, mistakes."""
    from trainlab.evaluate import evaluate_run
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
    from trainlab.predict import check_style, plot_results, predict_inputs, write_model_views
    from trainlab.runs.run import load_run
    check_style(style)
    if not inputs and not test_index:
        fail("give image files or folders, or --test-index N")
    if show is not None and show.exists() and not show.is_dir():
        fail(f"--show {show}: is a file; give a folder for the pictures")
    prepare_for_work()
    settings = settings_for(data_dir, runs_dir)
    r = load_run(run, settings)
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


def _age(iso: str | None) -> str:
    if not iso:
        return ""
    secs = (datetime.now(timezone.utc) - datetime.fromisoformat(iso)).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{int(secs // size)}{unit} ago"
    return f"{int(secs)}s ago"


def _fmt(v, digits=4) -> str:
    return "" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


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
    from rich.table import Table
    table = Table("id", "recipe", "status", "epochs", "val acc at best", "test acc", "train s", "age", "tags")
    for r in rows:
        m = r.metrics or Metrics()
        table.add_row(r.run_id, r.recipe, r.live_status(), str(r.epochs), _fmt(m.val_acc_at_best), _fmt(m.test_acc),
                      _fmt(m.train_seconds, 1), _age(r.started_at), ",".join(r.tags))
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
            typer.echo(f"{k:>16}: {_fmt(v)}")
    typer.echo("\nepoch      loss       acc  val_loss   val_acc        lr   seconds")
    for h in history:
        typer.echo(f"{h['epoch']:>5} " + " ".join(f"{_fmt(h[k]):>9}" for k in ("loss", "acc", "val_loss", "val_acc", "lr", "seconds")))


@runs_app.command("compare")
def runs_compare(runs: Annotated[list[str], typer.Argument(help="Two or more run ids.")],
                 out: Annotated[Optional[Path], typer.Option(help="Curves PNG (default <runs>/compare.png).")] = None,
                 runs_dir: RunsDirOpt = None, db: DbOpt = None) -> None:
    """The hyperparameters that differ, side by side, then the metrics; overlays the curves."""
    from trainlab.history import hidden_note
    from trainlab.plots import plot_history
    from trainlab.runs.admin import compare_runs, metric_rows
    settings = settings_for(runs_dir=runs_dir, db=db)
    records, curves, diff = compare_runs(runs, settings)
    width = max([len(k) for k in diff] + [14])
    typer.echo(f"{'':<{width}}  " + "  ".join(f"{r.run_id[-22:]:>22}" for r in records))
    for k, values in diff.items():
        typer.echo(f"{k:<{width}}  " + "  ".join(f"{str(v)[:22]:>22}" for v in values))
    typer.echo("")
    for k, values in metric_rows(records).items():
        typer.echo(f"{k:<{width}}  " + "  ".join(f"{_fmt(v):>22}" for v in values))
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
    from trainlab import share
    settings = settings_for(data_dir, runs_dir)
    if tensorboard:
        folders = share.to_tensorboard(runs, tensorboard, settings)
        typer.echo(f"wrote TensorBoard event files for {len(folders)} run{'s' if len(folders) != 1 else ''} under {tensorboard} "
                   f"(tensorboard --logdir {tensorboard})")
    if mlflow:
        for run_id, mlflow_id in share.to_mlflow(runs, mlflow, settings, experiment):
            typer.echo(f"{run_id}: " + (f"MLflow run {mlflow_id} in experiment {experiment!r} at {mlflow}" if mlflow_id
                                        else f"already in MLflow experiment {experiment!r}; skipped"))


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


# --- tuning -------------------------------------------------------------------------------------

StorageOpt = Annotated[Optional[str], typer.Option(
    "--storage", help="Optuna storage URL shared by the study's workers (default: --db when it is a server, else <runs>/studies.db).")]


@app.command("lr-find")
def lr_find(recipe: Annotated[str, typer.Argument(help="A preset name or a recipe YAML file.")], set_: SetOpt = None,
            start: Annotated[float, typer.Option(help="The smallest learning rate tried.")] = 1e-7,
            end: Annotated[float, typer.Option(help="The largest learning rate tried.")] = 10.0,
            steps: Annotated[int, typer.Option(help="Batches in the test (the LR grows exponentially over them).")] = 100,
            method: Annotated[str, typer.Option(help="Which suggestion to make: valley, steep or minimum.")] = "valley",
            out: Annotated[Optional[Path], typer.Option(help="Where to write the curve (default <runs>/lr-find/RECIPE.png).")] = None,
            runs_dir: RunsDirOpt = None,
            data_dir: DataDirOpt = None, device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
            json_out: Annotated[bool, typer.Option("--json", help="Print the points and suggestions as JSON.")] = False) -> None:
    """The learning-rate range test: suggest a learning rate for a recipe and plot the loss against it."""
    from trainlab.tuning.lrfind import check_range, find_lr
    check_range(start, end, steps, method)
    prepare_for_work()
    settings = settings_for(data_dir, runs_dir)
    found = find_lr(recipe, start=start, end=end, steps=steps, method=method, overrides=set_, settings=settings,
                    device=device)
    path = found.plot(out or settings.runs_dir / "lr-find" / f"{found.recipe.name}.png")
    if json_out:
        print(json.dumps(dict(found.to_dict(), plot=str(path))))
        return
    r = found.recipe
    others = " · ".join(f"{k} {v:.2e}" for k, v in found.suggestions.items() if k != method)
    typer.echo(f"lr-find {r.name} ({r.optimizer.name}, batch {r.batch_size}): {len(found.lrs)} steps; {found.stopped}")
    typer.echo(f"suggested lr: {found.suggestion:.2e} ({method})   {others}   (the recipe has {r.optimizer.lr:g})")
    typer.echo(f"curve: {path}")
    typer.echo(f"try: trainlab train {recipe} --set optimizer.lr={found.suggestion:.3g}")


def _short(v) -> str:
    return "" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v)


def _print_trial(t) -> None:
    """One line per finished trial (module level: tuning worker processes print through it too)."""
    value = "" if t.value is None else f"{t.value:.4f}"
    params = " ".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in t.params.items())
    extra = f"  ({t.error})" if t.error and t.state != "complete" else ""
    typer.echo(f"trial {t.number:>3}  {t.state:<11} {value:>7}  {_fmt(t.seconds, 1):>6} s  {params}  "
               f"{t.run_id or ''}{extra}")


def _print_study(rep, show_trials: bool = True) -> None:
    counts = ", ".join(f"{n} {k}" for k, n in sorted(rep.counts().items()))
    typer.echo(f"study {rep.name}: recipe {rep.recipe.name}, {rep.direction} {rep.objective}; trials: {counts or 'none'}")
    typer.echo(f"storage: {rep.storage}")
    if show_trials and rep.trials:
        from rich.console import Console
        from rich.table import Table
        table = Table("trial", "state", rep.objective, "test acc", "epochs run", "seconds", *rep.space.params, "run", "why")
        for t in rep.trials:
            table.add_row(str(t.number), t.state, _fmt(t.value), _fmt(t.test_acc), str(t.epochs or ""), _fmt(t.seconds, 1),
                          *[_short(t.params.get(k)) for k in rep.space.params], t.run_id or "",
                          (t.error or "")[:60] if t.state != "complete" else "")
        Console(width=240).print(table)
    for note in rep.notes:
        typer.echo(f"note: {note}")
    b = rep.best
    if b is None:
        typer.echo("no complete trial yet")
        return
    typer.echo(f"best: trial {b.number}, {rep.objective} {b.value:.4f}, test acc {_fmt(b.test_acc)} (run {b.run_id})")
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
    # armed from the start: between trials too, a Ctrl-C lets the study record the trial under way
    with stoppable(said, armed_from_start=True) as (stop, _):
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
        typer.echo(f"{r['study']:<32} {r['trials']:>4} trials  best {_fmt(r['best_value'])} (trial {r['best_trial']})  "
                   f"{r['direction']}  started {r['started']}")
    if not rows:
        typer.echo("no studies yet; start one with `trainlab tune RECIPE --space SPACE`")


@tune_app.command("plot")
def tune_plot(study: str, out: Annotated[Optional[Path], typer.Option(help="Folder for the PNGs (default <runs>/studies).")] = None,
              storage: StorageOpt = None, runs_dir: RunsDirOpt = None, db: DbOpt = None) -> None:
    """Optuna's plots of a study: optimisation history, intermediate values, parallel coordinates, importances."""
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


@app.command()
def dashboard(host: Annotated[str, typer.Option(help="Interface to listen on; anything but loopback needs the token.")] = "127.0.0.1",
              port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
              runs_dir: RunsDirOpt = None, db: DbOpt = None, data_dir: DataDirOpt = None,
              token: Annotated[Optional[str], typer.Option(help="Access token (also TRAINLAB_TOKEN); generated for a non-loopback host.")] = None,
              workers: Annotated[int, typer.Option(min=1, max=8, help="Trainings run at the same time (others queue).")] = 1,
              allow_host: Annotated[Optional[list[str]], typer.Option(help="Another Host name to answer for (repeatable; * for any). Loopback names always are.")] = None,
              data_root: Annotated[Optional[list[Path]], typer.Option(help="A folder whose image trees recipes from the page may train on (repeatable).")] = None,
              no_browser: Annotated[bool, typer.Option("--no-browser", help="Do not open a browser.")] = False) -> None:
    """The live dashboard: train from the browser and watch every batch, compare runs, look at
    errors, draw a digit. Runs trained in a terminal show up live too."""
    prepare_for_work(server=True)
    from trainlab.web.app import is_loopback, serve
    settings = settings_for(data_dir, runs_dir, db)

    def ready(tok: str | None) -> None:
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        url = f"http://{shown}:{port}/" + (f"?token={tok}" if tok else "")
        typer.echo(f"trainlab dashboard on {url}  (runs: {settings.runs_dir}; Ctrl-C stops)")
        if tok and not is_loopback(host):
            typer.echo(f"token: {tok}  (every request needs it; the link above sets it in the browser)")
        if not no_browser:
            import webbrowser
            threading.Timer(1.0, lambda: webbrowser.open(url)).start()

    roots = [str(p.expanduser().resolve()) for p in data_root or []]
    missing = [r for r in roots if not Path(r).is_dir()]
    if missing:
        fail(f"--data-root {missing[0]}: no such folder")
    serve(settings, host, port, token, workers, on_ready=ready, allow_hosts=[*settings.allowed_host_names, *(allow_host or [])],
          data_roots=roots)


@app.command()
def report(runs: Annotated[list[str], typer.Argument(help="One or more run ids (several are compared).")],
           out: Annotated[Path, typer.Option(help="The HTML file to write.")] = Path("report.html"),
           runs_dir: RunsDirOpt = None, data_dir: DataDirOpt = None) -> None:
    """One self-contained HTML report (opens offline): recipes and what differs, interactive learning curves,
    per-class test metrics, the confusion matrix, the highest-loss mistakes, the environment, the model card."""
    prepare_for_work()
    from trainlab.report import write_report
    path = write_report(runs, out, settings_for(data_dir, runs_dir))
    typer.echo(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB, {len(runs)} run{'s' if len(runs) > 1 else ''})")


@app.command()
def export(run: Annotated[str, typer.Argument(help="A run id or run folder.")],
           format_: Annotated[str, typer.Option("--format", help="onnx (the only format).")] = "onnx",
           out: Annotated[Optional[Path], typer.Option(help="Output file (default: model.onnx, or model-full.onnx, in the run folder).")] = None,
           opset: Annotated[int, typer.Option(help="ONNX opset, 14-23.")] = 18,
           prepare: Annotated[str, typer.Option(help="dataset: dataset-format uint8 arrays in; full: any photo in "
                                                     "(uint8 H x W x C), the whole preparation of `trainlab predict` inside.")] = "dataset",
           runs_dir: RunsDirOpt = None, data_dir: DataDirOpt = None, json_out: JsonOpt = False) -> None:
    """Export a run to ONNX: uint8 images in, probabilities out, the run's preparation inside;
    checked before it is written (against torch on 1,000 test images, or, with --prepare full,
    against `trainlab predict` on drawn and photographed images)."""
    if format_ != "onnx":
        fail(f"--format {format_!r}: use onnx")
    prepare_for_work()
    from trainlab.export import export_onnx
    report = export_onnx(run, out, opset, settings_for(data_dir, runs_dir), prepare=prepare)
    if json_out:
        typer.echo(json.dumps(report.to_dict()))
    else:
        typer.echo(report.text())


@app.command()
def serve(run: Annotated[str, typer.Argument(help="A run id or run folder.")],
          onnx: Annotated[bool, typer.Option("--onnx", help="Serve through onnxruntime (exports model.onnx first if needed).")] = False,
          host: Annotated[str, typer.Option(help="Interface; anything but loopback needs the token.")] = "127.0.0.1",
          port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
          workers: Annotated[int, typer.Option(min=1, max=32, help="Server processes.")] = 1,
          token: Annotated[Optional[str], typer.Option(help="Access token (also TRAINLAB_TOKEN); generated for a non-loopback host.")] = None,
          timeout: Annotated[float, typer.Option(min=0.1, help="Seconds a predict request may take.")] = 10.0,
          allow_host: Annotated[Optional[list[str]], typer.Option(help="Another Host name to answer for (repeatable; * for any).")] = None,
          runs_dir: RunsDirOpt = None, data_dir: DataDirOpt = None) -> None:
    """Serve one run's predict API: POST /api/v1/predict, GET /api/v1/models, GET /healthz."""
    prepare_for_work(server=True)
    from trainlab.web.app import is_loopback
    from trainlab.web.serve import serve_run
    settings = settings_for(data_dir, runs_dir).with_(serve_run=run, serve_onnx=onnx or None, token=token,
                                                      serve_timeout=timeout)
    if allow_host:
        settings = settings.with_(allow_hosts=",".join([*settings.allowed_host_names, *allow_host]))

    def ready(tok: str | None) -> None:
        typer.echo(f"serving {run} ({'onnxruntime' if onnx else 'torch'}, {workers} worker{'s' if workers > 1 else ''}) on "
                   f"http://{host}:{port}/api/v1/predict  (Ctrl-C stops)")
        if tok and not is_loopback(host):
            typer.echo(f"token: {tok}  (send Authorization: Bearer <token>)")

    serve_run(settings, host, port, workers, on_ready=ready)


class _Interrupted(BaseException):
    """Ctrl-C outside training (typer would turn a KeyboardInterrupt into a silent exit 130)."""


# Set by every Ctrl-C this process gets. One that lands inside an import (torch, numpy) can come
# out as an ImportError or a half-imported module later, or be swallowed by library code: whatever
# follows it ends as "interrupted" and 130, and a training that was not yet armed does not start.
SIGINT_SEEN = threading.Event()


def _interrupt(signum, frame):
    SIGINT_SEEN.set()
    if _importing():  # raised inside torch's start-up, a pybind11 call back into Python aborts the process
        threading.Thread(target=_interrupt_after_imports, daemon=True).start()
        return
    raise _Interrupted


def _importing() -> bool:
    """Whether a module is being imported right now (its spec says so until its code has run)."""
    return any(getattr(getattr(m, "__spec__", None), "_initializing", False) for m in list(sys.modules.values()))


def _interrupt_after_imports() -> None:
    """The Ctrl-C that landed inside an import, delivered again once the import is done: measured, one
    landing in `import torch` ended in SIGABRT ("terminate called after throwing an instance of
    'pybind11::error_already_set'") instead of "interrupted" and 130."""
    import os
    import time
    while _importing():
        time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGINT)


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit status 2; Ctrl-C one line and 130."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _interrupt)
    try:
        code = app(standalone_mode=False)  # click's own errors come back here, to be said in one line
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
    except typer.Abort:
        _interrupted_exit()
    except TrainlabError as exc:
        if SIGINT_SEEN.is_set():
            _interrupted_exit()
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except (KeyboardInterrupt, _Interrupted):
        _interrupted_exit()
    except SystemExit:
        raise
    except BaseException:
        if SIGINT_SEEN.is_set():
            _interrupted_exit()
        raise
    sys.exit(code if isinstance(code, int) else 0)


def _interrupted_exit():
    typer.echo("interrupted", err=True)
    sys.exit(130)


if __name__ == "__main__":
    main()
