"""`trainlab train`, `rerun`, `recipes`, `show`, `summary` and `lr-find`: recipes in, runs out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from trainlab.cli.app import app
from trainlab.cli.common import (
    DataDirOpt,
    DbOpt,
    JsonOpt,
    RunsDirOpt,
    SetOpt,
    check_output,
    fail,
    options,
    prepare_for_work,
    run_training,
    settings_for,
)


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
    if resume is None and recipe is None:
        fail("give a recipe (see `trainlab recipes`) or --resume RUN_ID")
    if resume is not None and (recipe is not None or set_ or epochs is not None or seed is not None or no_save):
        fail("--resume continues a run with its own recipe; drop the recipe, --set, --epochs, --seed and --no-save")
    if not 0 < checkpoint_every < float("inf"):
        fail(f"--checkpoint-every {checkpoint_every}: give a positive, finite number of seconds")
    if nproc > 1:
        from trainlab.recipes import load_recipe
        from trainlab.training.launcher import launch_ranks
        if recipe is not None:  # a bad recipe is one line here, not one line from every rank
            load_recipe(recipe, set_ or [], epochs=epochs, seed=seed)
        args = [*([recipe] if recipe else []), *[f"--set={s}" for s in set_ or []],
                *options(epochs=epochs, seed=seed, resume=resume, checkpoint_every=checkpoint_every, data_dir=data_dir,
                          runs_dir=runs_dir, db=db, device=device), *(["--quiet"] if quiet else []),
                *(["--json"] if json_out else []), *(["--no-save"] if no_save else [])]
        raise typer.Exit(launch_ranks(nproc, args))
    common = dict(settings=settings_for(data_dir, runs_dir, db), device=device, progress="none" if quiet else "auto",
                  checkpoint_every=checkpoint_every)
    if resume is not None:
        run_training(resume_fn, json_out, runs_dir, run=resume, **common)
    else:
        run_training(train_fn, json_out, runs_dir, recipe=recipe or "mnist-mlp", overrides=set_, epochs=epochs, seed=seed,
                      save=not no_save, **common)


@app.command()
def rerun(run: Annotated[str, typer.Argument(help="A run id or folder.")], data_dir: DataDirOpt = None,
          runs_dir: RunsDirOpt = None, db: DbOpt = None,
          quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False, json_out: JsonOpt = False) -> None:
    """Train a run's exact recipe and seed again, as a new run."""
    from trainlab.training.api import rerun as rerun_fn
    run_training(rerun_fn, json_out, runs_dir, run=run, settings=settings_for(data_dir, runs_dir, db),
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
    check_output(out, "--out")
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
