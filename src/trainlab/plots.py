"""Pictures with matplotlib's object API (`Figure`, no pyplot and no backend switch, so they are
safe in a notebook and from a server's threads): learning curves and their overlays, the confusion
matrix, a gallery of images and "what the model sees". Each function returns the Figure, or writes
a PNG (temp file, then rename) when given a path."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Protocol

import numpy as np

from trainlab.fileio import atomic_write
from trainlab.recipes import Recipe, differing_keys, flatten_recipe


class Curves(Protocol):
    """What a learning-curve plot needs of a run (a `Run`, or a record from the run index)."""

    recipe: Recipe
    history: list[dict]
    run_id: str | None


def _figure(**kw):
    from matplotlib.figure import Figure  # matplotlib is imported only when a picture is drawn
    return Figure(**kw)


def save_figure(fig, path: str | os.PathLike) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return atomic_write(path, buf.getvalue())


def _out(fig, path):
    return save_figure(fig, path) if path else fig


def run_labels(runs: list[Curves]) -> list[str]:
    """Label each run by the recipe settings that differ between them (the walk: 'lr=0.01, epochs=10')."""
    if len(runs) == 1:
        return [runs[0].recipe.name]
    flat = [flatten_recipe(r.recipe.to_dict()) for r in runs]
    keys = differing_keys(flat)
    labels = []
    for r, f in zip(runs, flat):
        parts = [f"{k.split('.')[-1] if k.split('.')[-1] != 'name' else k}={f.get(k)}" for k in keys]
        labels.append(f"{r.recipe.name}: " + ", ".join(parts) if parts else r.recipe.name)
    if len(set(labels)) < len(labels):  # same settings (seeds aside): tell them apart by id
        labels = [f"{lab} [{r.run_id or i}]" for i, (lab, r) in enumerate(zip(labels, runs))]
    return labels


def plot_history(runs: Curves | list[Curves], path: str | os.PathLike | None = None, title: str | None = None):
    """Accuracy and loss by epoch, training (solid) against validation (dashed), for one or many runs."""
    from matplotlib import rcParams
    runs = runs if isinstance(runs, (list, tuple)) else [runs]
    fig = _figure(figsize=(12, 4.5))
    axes = fig.subplots(1, 2)
    colors = rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (run, label) in enumerate(zip(runs, run_labels(runs))):
        c = colors[i % len(colors)]
        epochs = [h["epoch"] for h in run.history]
        for ax, key in zip(axes, ("acc", "loss")):
            ax.plot(epochs, [h[key] for h in run.history], "-o", color=c, ms=3, label=f"{label} (train)" if len(runs) > 1 else "train")
            val = [h.get(f"val_{key}") for h in run.history]
            if any(v is not None for v in val):
                ax.plot(epochs, val, "--s", color=c, ms=3, label=f"{label} (val)" if len(runs) > 1 else "validation")
    for ax, name in zip(axes, ("accuracy", "loss")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.set_title(name)
    axes[1].legend(fontsize=7, loc="upper right") if len(runs) > 1 else axes[0].legend()
    if len(runs) > 1:
        handles, labels = axes[1].get_legend_handles_labels()
        axes[1].get_legend().remove()
        fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=7, bbox_to_anchor=(0.5, -0.02 - 0.035 * len(runs)))
    fig.suptitle(title or (runs[0].recipe.name if len(runs) == 1 else "comparison"))
    fig.tight_layout()
    return _out(fig, path)


def plot_confusion(report, path: str | os.PathLike | None = None):
    """A heatmap of an EvalReport's confusion matrix with class names; each row normalised to recall."""
    cm = np.asarray(report.confusion, dtype=float)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    k = len(report.classes)
    fig = _figure(figsize=(1.0 + 0.62 * k, 0.8 + 0.55 * k))
    ax = fig.subplots()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), report.classes, rotation=45, ha="right")
    ax.set_yticks(range(k), report.classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(f"{report.split}: accuracy {report.accuracy:.4f}")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return _out(fig, path)


def plot_gallery(images: np.ndarray, titles: list[str], path: str | os.PathLike | None = None, title: str = "",
                 cols: int = 8):
    """A grid of uint8 images (N, H, W, C) with a caption each."""
    n = max(len(images), 1)
    rows = (n + cols - 1) // cols
    fig = _figure(figsize=(cols * 1.6, rows * 1.9))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, t in zip(axes.flat, images, titles):
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None,
                  interpolation="nearest")
        ax.set_title(t, fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _out(fig, path)


def plot_model_view(original: np.ndarray, seen: np.ndarray, caption: str, path: str | os.PathLike | None = None):
    """Side by side: the file as given, and the exact tensor the model received (rescaled for display)."""
    fig = _figure(figsize=(6.4, 3.4))
    a, b = fig.subplots(1, 2)
    a.imshow(original, cmap="gray" if original.ndim == 2 else None)
    a.set_title(f"input {original.shape[1]}x{original.shape[0]}", fontsize=9)
    show = seen[0] if seen.shape[0] == 1 else np.transpose(seen, (1, 2, 0))
    lo, hi = float(show.min()), float(show.max())
    b.imshow((show - lo) / (hi - lo + 1e-12), cmap="gray" if seen.shape[0] == 1 else None, interpolation="nearest")
    b.set_title(f"what the model sees {seen.shape[2]}x{seen.shape[1]}", fontsize=9)
    for ax in (a, b):
        ax.axis("off")
    fig.suptitle(caption, fontsize=10)
    fig.tight_layout()
    return _out(fig, path)
