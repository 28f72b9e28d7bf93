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
    recipe: Annotated[str, typer.Argument(help="A preset name (see `trainlab recipes`) or a recipe YAML file.")],
    set_: SetOpt = None,
    epochs: Annotated[Optional[int], typer.Option(help="Shorthand for --set epochs=N.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Shorthand for --set seed=N.")] = None,
    data_dir: DataDirOpt = None,
    runs_dir: RunsDirOpt = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="End stdout with one JSON object of the results.")] = False,
    no_save: Annotated[bool, typer.Option("--no-save", help="Do not write a run folder.")] = False,
) -> None:
    """Train a recipe and save the run (recipe, history, metrics, weights)."""
    from trainlab.train import train as train_fn
    run = train_fn(recipe, overrides=set_, epochs=epochs, seed=seed, data_dir=data_dir, runs_dir=runs_dir,
                   device=device, progress="none" if quiet else "auto", save=not no_save)
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
             data_dir: DataDirOpt = None, runs_dir: RunsDirOpt = None,
             json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Evaluate a saved run: loss and accuracy on a split."""
    from trainlab.runs import load_run
    if split not in ("test", "val"):
        fail(f"--split {split!r}: use test or val")
    result = load_run(run, runs_dir).evaluate(split, data_dir=data_dir)
    if json_out:
        print(json.dumps(result))
    else:
        typer.echo(f"{split}: loss {result['loss']:.4f} - acc {result['acc']:.4f} ({result['n']} examples)")


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
