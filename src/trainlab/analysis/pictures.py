"""Looking at data the way the lessons do: a grid of sample images with their class names, one
image with a colour bar, and the class table. The same functions serve the CLI (`trainlab data
show`), notebooks (they return a matplotlib Figure, shown inline) and the dashboard."""

from __future__ import annotations

import os

from trainlab.data.readers import Dataset
from trainlab.data.registry import load_dataset
from trainlab.errors import TrainlabError
from trainlab.plots import plot_image, plot_samples
from trainlab.settings import Settings


def _dataset(data: str | Dataset, settings: Settings | None) -> Dataset:
    return data if isinstance(data, Dataset) else load_dataset(data, settings=settings)


def _split(ds: Dataset, split: str):
    if split not in ("train", "test"):
        raise TrainlabError(f"--split {split!r}: use train or test")
    return (ds.x_train, ds.y_train) if split == "train" else (ds.x_test, ds.y_test)


def show_samples(data: str | Dataset = "fashion-mnist", split: str = "train", n: int = 25, index: int | None = None,
                 out: str | os.PathLike | None = None, cols: int = 5, settings: Settings | None = None):
    """The first `n` images of a dataset (a name, an image tree's path, or a Dataset) titled with their
    class names; or, with `index`, that one image with a colour bar. A Figure, or a PNG at `out`."""
    ds = _dataset(data, settings)
    x, y = _split(ds, split)
    if index is not None:
        if not 0 <= index < len(x):
            raise TrainlabError(f"--index {index}: the {split} split has images 0..{len(x) - 1}")
        return plot_image(x[index], f"{ds.name} {split}[{index}]: {ds.classes[int(y[index])]} (label {int(y[index])})", out)
    if n < 1:
        raise TrainlabError(f"--n {n}: give at least 1")
    return plot_samples(x[:n], y[:n], ds.classes, cols=min(cols, n), title=f"{ds.name}: the first {min(n, len(x))} {split} images",
                        path=out)


def class_table(data: str | Dataset, settings: Settings | None = None) -> list[tuple[int, str]]:
    """(index, name) of each class: what a label number means."""
    return list(enumerate(_dataset(data, settings).classes))
