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

SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override a recipe field: key.path=value (repeatable).")]
DataDirOpt = Annotated[Optional[Path], typer.Option("--data-dir", envvar="TRAINLAB_DATA", help="Folder holding the dataset files (also TRAINLAB_DATA).")]
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
                       resume=resume, checkpoint_every=checkpoint_every)
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
        logits_y = r._data(data_dir)
        n = len(logits_y.x_test)
        bad = [i for i in test_index if not 0 <= i < n]
        if bad:
            fail(f"--test-index {bad[0]}: the test set has items 0..{n - 1}")
        x = logits_y.x_test[test_index].cpu().permute(0, 2, 3, 1).numpy()
        p = predict_fn(r, x)
        p.files = [f"test[{i}] (true: {r.classes[int(logits_y.y_test[i])]})" for i in test_index]
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


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit status 2."""
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
