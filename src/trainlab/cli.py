"""The `trainlab` command: a thin map from subcommands to library functions."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from trainlab.errors import TrainlabError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train, evaluate and use image classifiers on MNIST, Fashion-MNIST, CIFAR-10 and image trees.")
datasets_app = typer.Typer(no_args_is_help=True, help="List, fetch and verify datasets.")
app.add_typer(datasets_app, name="datasets")
runs_app = typer.Typer(help="List, inspect, compare, tag and remove runs (the run index).")
app.add_typer(runs_app, name="runs")

SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override a recipe field: key.path=value (repeatable).")]
DataDirOpt = Annotated[Optional[Path], typer.Option("--data-dir", envvar="TRAINLAB_DATA", help="Folder holding the dataset files (also TRAINLAB_DATA).")]
DbOpt = Annotated[Optional[str], typer.Option("--db", envvar="TRAINLAB_DB", help="Run index URL (default sqlite:///<runs>/trainlab.db; also TRAINLAB_DB).")]
RunsDirOpt = Annotated[Optional[Path], typer.Option("--runs-dir", envvar="TRAINLAB_RUNS", help="Where run folders go (default ./runs, also TRAINLAB_RUNS).")]


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@app.command()
def train(
    recipe: Annotated[Optional[str], typer.Argument(help="A preset name (see `trainlab recipes`) or a recipe YAML file.")] = None,
    set_: SetOpt = None,
    epochs: Annotated[Optional[int], typer.Option(help="Shorthand for --set epochs=N.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Shorthand for --set seed=N.")] = None,
    resume: Annotated[Optional[str], typer.Option(help="Continue an interrupted run (its id or folder) from its last checkpoint.")] = None,
    checkpoint_every: Annotated[float, typer.Option(help="Seconds between mid-epoch checkpoints (epoch ends are always saved).")] = 60.0,
    data_dir: DataDirOpt = None,
    runs_dir: RunsDirOpt = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="End stdout with one JSON object of the results.")] = False,
    no_save: Annotated[bool, typer.Option("--no-save", help="Do not write a run folder.")] = False,
    db: DbOpt = None,
) -> None:
    """Train a recipe and save the run (recipe, history, metrics, weights, checkpoints)."""
    from trainlab.train import train as train_fn
    if resume is None and recipe is None:
        fail("give a recipe (see `trainlab recipes`) or --resume RUN_ID")
    if resume is not None and (recipe is not None or set_ or epochs is not None or seed is not None or no_save):
        fail("--resume continues a run with its own recipe; drop the recipe, --set, --epochs, --seed and --no-save")
    if checkpoint_every <= 0:
        fail("--checkpoint-every must be a positive number of seconds")
    try:
        run = train_fn(recipe or "mnist-mlp", overrides=set_, epochs=epochs, seed=seed, data_dir=data_dir,
                       runs_dir=runs_dir, device=device, progress="none" if quiet else "auto", save=not no_save,
                       resume=resume, checkpoint_every=checkpoint_every, db=db)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None  # the run folder is marked interrupted and the resume command printed
    if json_out:
        m = run.metrics
        out = {"run_id": run.run_id, "run_dir": str(run.run_dir) if run.run_dir else None, "recipe": run.recipe.name,
               "test_loss": m["test_loss"], "test_acc": m["test_acc"], "train_seconds": m["train_seconds"],
               "total_seconds": m["total_seconds"], "epochs": m["epochs"], "seed": run.recipe.seed,
               "val_acc": m["val_acc"], "best_val_acc": m["best_val_acc"], "history": run.history}
        print(json.dumps(out))


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
def summary(recipe: Annotated[str, typer.Argument(help="A preset name or a recipe YAML file.")], set_: SetOpt = None) -> None:
    """Print the model's layers, output shapes and parameter counts, as Keras' model.summary()."""
    from trainlab.data import DATASETS
    from trainlab.models import build_model, summary_text
    from trainlab.recipes import load_recipe
    r = load_recipe(recipe, set_)
    if r.data.name in DATASETS:
        spec = DATASETS[r.data.name]
        h, w, c = spec.shape
        classes = len(spec.classes)
    else:
        from trainlab.data import load_dataset
        ds = load_dataset(r.data.name)
        h, w, c = ds.shape
        classes = ds.num_classes
    shape = (c * h * w,) if r.data.flatten else (c, h, w)
    _, infos = build_model(r.model, shape, classes)
    typer.echo(summary_text(r.name, infos, shape))


@datasets_app.command("list")
def datasets_list(data_dir: DataDirOpt = None, json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show each built-in dataset and where its files were found."""
    from trainlab.data import DATASETS, dataset_status
    rows = [dataset_status(n, data_dir) for n in DATASETS]
    if json_out:
        print(json.dumps(rows))
        return
    for r in rows:
        where = sorted({str(Path(p).parent) for p in r["files"].values() if p})
        state = f"found in {', '.join(where)}" if r["available"] else "missing (trainlab datasets fetch " + r["name"] + ")"
        typer.echo(f"{r['name']:<14} {r['title']:<30} {'x'.join(map(str, r['shape'])):<8} {len(r['classes'])} classes  {state}")
    typer.echo("Any folder or .zip of images laid out as <split>/<class>/* or <class>/* also works as data.name.")


@datasets_app.command("fetch")
def datasets_fetch(name: str, data_dir: DataDirOpt = None) -> None:
    """Download (if needed) and verify a dataset into the user cache."""
    from trainlab.data import DATASETS, load_dataset
    if name not in DATASETS:
        load_dataset(name)  # raises the did-you-mean error
    ds = load_dataset(name, data_dir=data_dir)
    typer.echo(f"{name}: {len(ds.x_train)} train, {len(ds.x_test)} test, verified, from {ds.source}")


@datasets_app.command("verify")
def datasets_verify(name: str, data_dir: DataDirOpt = None) -> None:
    """Check a dataset's files against their SHA-256 digests."""
    from trainlab.data import DATASETS, verify_dataset
    if name not in DATASETS:
        fail(f"unknown dataset '{name}'; built-in datasets: {', '.join(DATASETS)}")
    for line in verify_dataset(name, data_dir):
        typer.echo(line)


@app.command()
def evaluate(run: Annotated[str, typer.Argument(help="A run id or run folder.")],
             split: Annotated[str, typer.Option(help="test or val.")] = "test",
             out: Annotated[Optional[Path], typer.Option(help="Folder for confusion.png and misclassified.png (default: the run folder).")] = None,
             data_dir: DataDirOpt = None, runs_dir: RunsDirOpt = None,
             json_out: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")] = False) -> None:
    """Evaluate a saved run: loss, accuracy, top-k, per-class precision/recall/F1, confusion matrix, mistakes."""
    from trainlab.evaluate import evaluate_run
    if split not in ("test", "val"):
        fail(f"--split {split!r}: use test or val")
    report, files = evaluate_run(run, split=split, out_dir=out, runs_dir=runs_dir, data_dir=data_dir)
    if json_out:
        print(json.dumps(dict(report.to_dict(), files=[str(f) for f in files])))
    else:
        typer.echo(report.text())
        typer.echo("\nwrote " + ", ".join(str(f) for f in files))


@app.command()
def plot(runs: Annotated[list[str], typer.Argument(help="One or more run ids or folders.")],
         out: Annotated[Optional[Path], typer.Option(help="PNG path (default: the run's curves.png, or compare.png in the runs folder).")] = None,
         title: Annotated[Optional[str], typer.Option(help="Figure title.")] = None,
         runs_dir: RunsDirOpt = None) -> None:
    """Learning curves (accuracy and loss, train vs validation); several runs overlay in one figure."""
    from trainlab.plots import plot_history
    from trainlab.runs import load_run, runs_root
    loaded = [load_run(r, runs_dir) for r in runs]
    if out is None:
        out = loaded[0].run_dir / "curves.png" if len(loaded) == 1 else runs_root(runs_dir) / "compare.png"
    typer.echo(f"wrote {plot_history(loaded, out, title)}")


@app.command()
def predict(run: Annotated[str, typer.Argument(help="A run id or run folder.")],
            inputs: Annotated[Optional[list[str]], typer.Argument(help="Image files or folders.")] = None,
            test_index: Annotated[Optional[list[int]], typer.Option("--test-index", help="Predict item N of the run's test set (repeatable).")] = None,
            top_k: Annotated[int, typer.Option("--top-k", min=1, help="How many classes to list.")] = 3,
            style: Annotated[Optional[str], typer.Option(help="Override the run's preparation: digit, fashion or photo.")] = None,
            show: Annotated[Optional[Path], typer.Option("--show", help="Write 'what the model sees' PNGs here.")] = None,
            data_dir: DataDirOpt = None, runs_dir: RunsDirOpt = None,
            json_out: Annotated[bool, typer.Option("--json", help="One JSON object per input.")] = False) -> None:
    """Predict the class of image files (prepared as the run's training data was) or test-set items."""
    from trainlab.predict import predict as predict_fn, write_model_views
    from trainlab.preprocess import STYLES
    from trainlab.runs import load_run
    if style is not None and style not in STYLES:
        fail(f"--style {style!r}: use one of {', '.join(STYLES)}")
    if not inputs and not test_index:
        fail("give image files or folders, or --test-index N")
    r = load_run(run, runs_dir)
    results = []
    if inputs:
        results.append(predict_fn(r, inputs, style))
    if test_index:
        splits = r.tensors(data_dir)
        n = len(splits.x_test)
        bad = [i for i in test_index if not 0 <= i < n]
        if bad:
            fail(f"--test-index {bad[0]}: the test set has items 0..{n - 1}")
        x = splits.x_test[test_index].cpu().permute(0, 2, 3, 1).numpy()
        p = predict_fn(r, x)
        p.files = [f"test[{i}] (true: {r.classes[int(splits.y_test[i])]})" for i in test_index]
        results.append(p)
    failed = 0
    for preds in results:
        for rec in preds.records(top_k):
            if json_out:
                print(json.dumps(rec))
            else:
                tops = ", ".join(f"{t['class_name']} {t['probability']:.3f}" for t in rec["top_k"])
                typer.echo(f"{rec['file']}: {rec['class_name']} ({rec['probability']:.3f})   top-{top_k}: {tops}")
                for w in rec["warnings"]:
                    typer.echo(f"  warning: {w}")
        for f, err in preds.failures:
            failed += 1
            typer.echo(f"error: {f}: {err}", err=True)
        if show is not None and len(preds):
            files = write_model_views(r, preds, show, style)
            typer.echo(f"wrote {len(files)} images to {show}", err=json_out)
    if failed:
        raise typer.Exit(1)


def _age(iso: str | None) -> str:
    from datetime import datetime, timezone
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
              status: Annotated[Optional[str], typer.Option(help="running, completed, interrupted or failed.")] = None,
              tag: Annotated[Optional[str], typer.Option(help="Only runs with this tag.")] = None,
              sort: Annotated[str, typer.Option(help="started_at, best_val_acc, test_acc, train_seconds, recipe, epochs.")] = "started_at",
              limit: Annotated[Optional[int], typer.Option(help="At most N rows.")] = None,
              runs_dir: RunsDirOpt = None, db: DbOpt = None,
              json_out: Annotated[bool, typer.Option("--json", help="One JSON array.")] = False) -> None:
    """List runs: id, recipe, status, epochs, best val acc, test acc, duration and age."""
    if ctx.invoked_subcommand is not None:
        return
    from trainlab.runs import runs_root
    from trainlab.store import open_store
    rows = open_store(runs_root(runs_dir), db).list(recipe, status, sort, limit, tag)
    if json_out:
        print(json.dumps(rows))
        return
    from rich.console import Console
    from rich.table import Table
    table = Table("id", "recipe", "status", "epochs", "best val acc", "test acc", "train s", "age", "tags")
    for r in rows:
        table.add_row(r["id"], r["recipe"], r["status"], str(r["epochs"]), _fmt(r["best_val_acc"]), _fmt(r["test_acc"]),
                      _fmt(r["train_seconds"], 1), _age(r["started_at"]), ",".join(r["tags"]))
    Console(width=200).print(table)


@runs_app.command("show")
def runs_show(run: str, runs_dir: RunsDirOpt = None, db: DbOpt = None,
              json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Everything recorded about one run."""
    from trainlab.runs import resolve_run_dir, runs_root
    from trainlab.store import open_store
    root = runs_root(runs_dir)
    row = open_store(root, db).get(resolve_run_dir(run, root).name)
    if json_out:
        print(json.dumps(row))
        return
    for k in ("id", "recipe", "status", "error", "seed", "device", "started_at", "ended_at", "epochs", "best_val_acc",
              "best_epoch", "test_acc", "test_loss", "train_seconds", "trainlab_version", "torch_version",
              "python_version", "platform", "run_dir", "note"):
        if row.get(k) is not None:
            typer.echo(f"{k:>16}: {_fmt(row[k])}")
    if row["tags"]:
        typer.echo(f"{'tags':>16}: {', '.join(row['tags'])}")
    typer.echo("\nepoch      loss       acc  val_loss   val_acc        lr   seconds")
    for h in row["history"]:
        typer.echo(f"{h['epoch']:>5} " + " ".join(f"{_fmt(h[k]):>9}" if h[k] is not None else f"{'':>9}"
                                                  for k in ("loss", "acc", "val_loss", "val_acc", "lr", "seconds")))


@runs_app.command("compare")
def runs_compare(runs: Annotated[list[str], typer.Argument(help="Two or more run ids.")],
                 out: Annotated[Optional[Path], typer.Option(help="Curves PNG (default <runs>/compare.png).")] = None,
                 runs_dir: RunsDirOpt = None, db: DbOpt = None) -> None:
    """The hyperparameters that differ, side by side, then the metrics; overlays the curves."""
    from trainlab.plots import flatten_recipe, plot_history
    from trainlab.runs import resolve_run_dir, runs_root
    from trainlab.store import open_store
    if len(runs) < 2:
        fail("compare needs two or more runs")
    root = runs_root(runs_dir)
    store = open_store(root, db)
    rows = [store.get(resolve_run_dir(r, root).name) for r in runs]
    flat = [flatten_recipe(r["recipe_json"]) for r in rows]
    keys = sorted({k for f in flat for k in f if k != "description" and len({str(g.get(k)) for g in flat}) > 1})
    width = max([len(k) for k in keys] + [14])
    cols = [r["id"][-22:] for r in rows]
    typer.echo(f"{'':<{width}}  " + "  ".join(f"{c:>22}" for c in cols))
    for k in keys:
        typer.echo(f"{k:<{width}}  " + "  ".join(f"{str(f.get(k))[:22]:>22}" for f in flat))
    typer.echo("")
    for k in ("status", "epochs", "best_val_acc", "val_acc", "test_acc", "test_loss", "train_seconds"):
        typer.echo(f"{k:<{width}}  " + "  ".join(f"{_fmt(r[k]):>22}" for r in rows))
    # the curves come from the index: failed runs without weights can be compared too
    from types import SimpleNamespace

    from trainlab.recipes import validate
    curves = [SimpleNamespace(recipe=validate(r["recipe_json"]), history=r["history"], run_id=r["id"]) for r in rows]
    typer.echo(f"\nwrote {plot_history(curves, out or root / 'compare.png')}")


@runs_app.command("tag")
def runs_tag(run: str, tags: Annotated[Optional[list[str]], typer.Argument(help="Tags to add.")] = None,
             note: Annotated[Optional[str], typer.Option(help="Set the run's note.")] = None,
             runs_dir: RunsDirOpt = None, db: DbOpt = None) -> None:
    """Add tags (and a note) to a run."""
    from trainlab.runs import resolve_run_dir, runs_root
    from trainlab.store import open_store
    if not tags and note is None:
        fail("give tags to add, or --note TEXT")
    root = runs_root(runs_dir)
    run_id = resolve_run_dir(run, root).name
    open_store(root, db).tag(run_id, tags or [], note)
    typer.echo(f"tagged {run_id}")


@runs_app.command("rm")
def runs_rm(runs: Annotated[list[str], typer.Argument(help="Run ids to delete.")],
            yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
            runs_dir: RunsDirOpt = None, db: DbOpt = None) -> None:
    """Delete runs: their folders (only inside the runs folder) and their index entries."""
    from trainlab.runs import remove_run, resolve_run_dir, runs_root
    root = runs_root(runs_dir)
    dirs = [resolve_run_dir(r, root) for r in runs]
    if not yes:
        if not sys.stdin.isatty():
            fail("runs rm asks for confirmation; pass --yes when not at a terminal")
        if not typer.confirm(f"delete {len(dirs)} run(s): {', '.join(d.name for d in dirs)}?"):
            raise typer.Exit(1)
    for d in dirs:
        typer.echo(f"deleted {remove_run(str(d), root, db)}")


@runs_app.command("reindex")
def runs_reindex(runs_dir: RunsDirOpt = None, db: DbOpt = None) -> None:
    """Add run folders that the index lacks."""
    from trainlab.runs import reindex
    added = reindex(runs_dir, db)
    typer.echo(f"indexed {len(added)} run(s)" + (": " + ", ".join(added) if added else ""))


@app.command()
def rerun(run: Annotated[str, typer.Argument(help="A run id or folder.")], data_dir: DataDirOpt = None,
          runs_dir: RunsDirOpt = None, db: DbOpt = None,
          quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
          json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Train a run's exact recipe and seed again, as a new run."""
    from trainlab.runs import resolve_run_dir
    src = resolve_run_dir(run, runs_dir)
    custom = json.loads((src / "run.json").read_text()).get("custom_model")
    if custom:
        fail(f"run {src.name} trained a custom model ({custom}); rerun it from Python with "
             f"trainlab.train('{src / 'recipe.yaml'}', model={custom}())")
    train(recipe=str(src / "recipe.yaml"), set_=None, epochs=None, seed=None, resume=None, checkpoint_every=60.0,
          data_dir=data_dir, runs_dir=runs_dir, device="auto", quiet=quiet, json_out=json_out, no_save=False, db=db)


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit status 2."""
    from trainlab.runtime import tune_process
    tune_process()  # the CLI never compiles and exits when done
    try:
        app()
    except TrainlabError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
