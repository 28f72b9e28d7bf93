"""A run's learning curves: `Curve` (recipe and history without the model) and `curves.png`, drawn
on first view rather than while training."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from trainlab.errors import TrainlabError
from trainlab.plots import plot_history
from trainlab.recipes import Recipe
from trainlab.runs.files import read_history, read_recipe
from trainlab.runs.record import resolve_run_dir
from trainlab.settings import Settings, load_settings


@dataclass
class Curve:
    """A run's learning curves without its model (what plots.plot_history needs)."""

    recipe: Recipe
    history: list[dict]
    run_id: str | None = None


def curves_png(run: str | os.PathLike, settings: Settings | None = None) -> Path:
    """The run's learning curves as `curves.png` in its folder, drawn on first view and again
    whenever history.csv is newer (training itself does not wait for matplotlib)."""
    run_dir = resolve_run_dir(run, settings or load_settings())
    out, history = run_dir / "curves.png", run_dir / "history.csv"
    if not history.is_file():
        raise TrainlabError(f"run {run_dir.name} has no history yet (it stopped before its first epoch ended)")
    if not out.is_file() or out.stat().st_mtime_ns < history.stat().st_mtime_ns:
        plot_history(Curve(read_recipe(run_dir), read_history(history), run_dir.name), out)
    return out


def plot_runs(runs: list[str | os.PathLike], settings: Settings, out: str | os.PathLike | None = None,
              title: str | None = None) -> Path:
    """Learning curves of one run or several overlaid (labelled by what differs), from their folders
    (no model is loaded). One run without `out` or `title` is its own `curves.png`; several go to
    `compare.png` in the runs folder unless `out` says where."""
    if len(runs) == 1 and out is None and title is None:
        return curves_png(runs[0], settings)
    dirs = [resolve_run_dir(r, settings) for r in runs]
    curves = [Curve(read_recipe(d), read_history(d / "history.csv"), d.name) for d in dirs]
    if out is None:
        out = dirs[0] / "curves.png" if len(dirs) == 1 else settings.runs_dir / "compare.png"
    return plot_history(curves, out, title)
