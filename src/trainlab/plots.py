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
from trainlab.history import hidden_curves
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
    labels = run_labels(runs)
    hidden = dict(hidden_curves([r.history for r in runs]))  # drawn last, hollow, and said in the legend
    order = [i for i in range(len(runs)) if i not in hidden] + list(hidden)
    for i in order:
        run, label, c = runs[i], labels[i], colors[i % len(colors)]
        if i in hidden:
            label = f"{label} = {labels[hidden[i]]}'s first {len(run.history)} epochs"
        style = {"mfc": "none", "ms": 7, "lw": 2.5, "alpha": 0.9, "zorder": 3} if i in hidden else {"ms": 3}
        epochs = [h["epoch"] for h in run.history]
        for ax, key in zip(axes, ("acc", "loss")):
            ax.plot(epochs, [h[key] for h in run.history], "-o", color=c, label=f"{label} (train)" if len(runs) > 1 else "train",
                    **style)
            val = [h.get(f"val_{key}") for h in run.history]
            if any(v is not None for v in val):
                ax.plot(epochs, val, "--s", color=c, label=f"{label} (val)" if len(runs) > 1 else "validation", **style)
    from matplotlib.ticker import MaxNLocator
    for ax, name in zip(axes, ("accuracy", "loss")):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole: no tick at 1.5
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


def _show(ax, img: np.ndarray, **kw):
    """A uint8 (H, W, C) image on an axis, grey for one channel, without ticks."""
    im = ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None,
                   interpolation="nearest", **kw)
    ax.set_xticks([])
    ax.set_yticks([])
    return im


def plot_samples(images: np.ndarray, labels: np.ndarray, classes: list[str], cols: int = 5, title: str = "",
                 path: str | os.PathLike | None = None):
    """A grid of uint8 images (N, H, W, C), each titled with its class name (the lessons' first picture)."""
    n = len(images)
    rows = max(1, (n + cols - 1) // cols)
    fig = _figure(figsize=(cols * 2.0, rows * 2.2))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, y in zip(axes.flat, images, labels):
        ax.axis("on")
        _show(ax, img)
        ax.set_title(classes[int(y)], fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _out(fig, path)


def plot_image(image: np.ndarray, caption: str, path: str | os.PathLike | None = None):
    """One image large, with a colour bar of its pixel values (the Fashion-MNIST lesson's second picture)."""
    fig = _figure(figsize=(4.6, 4))
    ax = fig.subplots()
    im = ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="viridis" if image.shape[-1] == 1 else None)
    fig.colorbar(im, ax=ax)
    ax.grid(False)
    ax.set_title(caption)
    fig.tight_layout()
    return _out(fig, path)


RIGHT, WRONG = "tab:blue", "tab:red"


def plot_predictions(images: np.ndarray, probs: np.ndarray, classes: list[str], true: np.ndarray | None = None,
                     cols: int = 3, path: str | os.PathLike | None = None):
    """For each image: the image captioned 'predicted (confidence) / true', blue when right and red
    when wrong, beside a bar chart of all class probabilities with the predicted bar red and the
    true bar blue, as the Fashion-MNIST lesson draws them. Without true labels, captions are black."""
    n = len(images)
    rows = max(1, (n + cols - 1) // cols)
    fig = _figure(figsize=(cols * 4.6, rows * 2.3))
    axes = fig.subplots(rows, 2 * cols, squeeze=False, gridspec_kw={"width_ratios": [1, 1.4] * cols})
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        img_ax, bar_ax = axes[i // cols, 2 * (i % cols)], axes[i // cols, 2 * (i % cols) + 1]
        pred = int(probs[i].argmax())
        y = None if true is None else int(true[i])
        colour = "black" if y is None else RIGHT if pred == y else WRONG
        img_ax.axis("on")
        _show(img_ax, images[i])
        img_ax.set_xlabel(f"{classes[pred]} {100 * probs[i, pred]:.0f}%" + ("" if y is None else f" ({classes[y]})"),
                          color=colour, fontsize=8)
        bar_ax.axis("on")
        bars = bar_ax.bar(range(len(classes)), probs[i], color="#888888")
        bar_ax.set_ylim(0, 1)
        bar_ax.set_xticks(range(len(classes)))
        bar_ax.set_xticklabels([str(k) for k in range(len(classes))], fontsize=6)
        bar_ax.tick_params(axis="y", labelsize=6)
        bars[pred].set_color(WRONG)
        if y is not None:
            bars[y].set_color(RIGHT)  # a right prediction's bar ends up blue
    fig.tight_layout()
    return _out(fig, path)


def plot_live(points: list[tuple[float, float, float]], history: list[dict], title: str = "") -> bytes:
    """PNG bytes of a live training chart: the training loss and accuracy smoothed across epochs
    (history.LiveCurve: one continuous curve, no restart at epoch boundaries), x in epochs, and
    validation loss and accuracy per epoch as markers."""
    fig = _figure(figsize=(10, 3.2))
    loss_ax, acc_ax = fig.subplots(1, 2)
    if points:
        x, loss, acc = zip(*points)
        loss_ax.plot(x, loss, lw=1, label="train (smoothed)")
        acc_ax.plot(x, acc, lw=1, label="train (smoothed)")
    vals = [h for h in history if h.get("val_loss") is not None]
    if vals:
        loss_ax.plot([h["epoch"] for h in vals], [h["val_loss"] for h in vals], "o", label="validation")
        acc_ax.plot([h["epoch"] for h in vals], [h["val_acc"] for h in vals], "o", label="validation")
    for ax, name in ((loss_ax, "loss"), (acc_ax, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()


def plot_lr_find(lrs: list[float], losses: list[float], smoothed: list[float], marks: dict[str, float],
                 suggested: str, title: str = "", path: str | os.PathLike | None = None):
    """The LR range test: loss against learning rate (log axis), raw and smoothed, with the
    suggestions marked; the one suggested is drawn solid."""
    fig = _figure(figsize=(7, 4.2))
    ax = fig.subplots()
    ax.plot(lrs, losses, color="0.75", lw=1, label="loss (per batch)")
    ax.plot(lrs, smoothed, color="C0", lw=2, label="loss (smoothed)")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    finite = [s for s in smoothed if np.isfinite(s)]
    if finite:  # keep the divergence at the end from flattening the curve
        lo, first = min(finite), finite[0]
        ax.set_ylim(lo - 0.1 * (first - lo + 1e-8), max(first, lo) + 0.6 * (first - lo + 1e-8))
    for i, (name, lr) in enumerate(marks.items()):
        at = int(np.argmin(np.abs(np.log(np.asarray(lrs)) - np.log(lr))))
        style = "-" if name == suggested else ":"
        ax.axvline(lr, color=f"C{i + 1}", ls=style, lw=1.5, label=f"{name}: {lr:.2e}" + (" (suggested)" if name == suggested else ""))
        ax.plot([lr], [smoothed[at]], "o", color=f"C{i + 1}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title(title or "learning-rate range test")
    return _out(fig, path)
