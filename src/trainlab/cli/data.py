"""`trainlab data ...` (also `trainlab datasets ...`): look at, list, fetch, verify, check and fix datasets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from trainlab.cli.app import datasets_app
from trainlab.cli.common import DataDirOpt, JsonOpt, check_output, prepare_for_work, settings_for


@datasets_app.command("show")
def data_show(dataset: Annotated[str, typer.Argument(help="mnist, fashion-mnist, cifar10, or the path of an image tree.")],
              split: Annotated[str, typer.Option(help="train or test.")] = "train",
              n: Annotated[int, typer.Option("--n", help="How many images in the grid.")] = 25,
              index: Annotated[Optional[int], typer.Option(help="Show this one image large, with a colour bar.")] = None,
              out: Annotated[Optional[Path], typer.Option(help="PNG path (default samples.png, or sample-<index>.png).")] = None,
              classes: Annotated[bool, typer.Option("--classes", help="Print the class table (index -> name); alone, no picture is written.")] = False,
              data_dir: DataDirOpt = None) -> None:
    """A grid of the first N images with their class names, or one image with a colour bar."""
    from trainlab.analysis.pictures import class_table, show_samples
    settings = settings_for(data_dir)
    check_output(out, "--out")
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
        if r.get("uses_copy"):
            state = f"its image-tree copy {r['image_tree_copy']} (the archive is not here; JPEG, a little lossy)"
        else:
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
    from trainlab.data.health import check_data, write_picture
    check_output(picture, "--picture")
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
    for line in report.lines(per_kind=10, more="--json lists them all"):
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
    from trainlab.data.health import fix_data
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
