"""Plots with matplotlib (Agg, PNG): learning curves and their overlays, the confusion matrix,
a gallery of mistakes and "what the model sees". Each is written to a temp file, then renamed."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from trainlab.metrics import EvalReport
    from trainlab.runs import Run


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path: str | os.PathLike) -> Path:
    from trainlab.runs import atomic_write
    path = Path(path)
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    finally:
        _plt().close(fig)
    atomic_write(path, buf.getvalue())
    return path


def flatten_recipe(d, prefix="") -> dict:
    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten_recipe(v, f"{prefix}{k}."))
    elif isinstance(d, list):
        # a layer list differs as a whole: describe it compactly
        out[prefix[:-1]] = _describe_layers(d) if all(isinstance(x, dict) and "type" in x for x in d) else str(d)
    else:
        out[prefix[:-1]] = d
    return out


def _describe_layers(layers: list[dict]) -> str:
    dense = [x for x in layers if x["type"] == "dense"]
    acts = sorted({x.get("activation", "linear") for x in dense[:-1]}) if len(dense) > 1 else []
    return f"{len(layers)} layers" + (f" ({'/'.join(acts)})" if acts else "")


def run_labels(runs: list["Run"]) -> list[str]:
    """Label each run by the recipe settings that differ between them (the walk: 'lr=0.01, epochs=10')."""
    if len(runs) == 1:
        return [runs[0].recipe.name]
    flat = [flatten_recipe(r.recipe.to_dict()) for r in runs]
    keys = [k for k in flat[0] if k not in ("name", "description") and len({str(f.get(k)) for f in flat}) > 1]
    keys += [k for f in flat for k in f if k not in flat[0] and k not in keys]
    labels = []
    for r, f in zip(runs, flat):
        parts = [f"{k.split('.')[-1] if k.split('.')[-1] not in ('name',) else k}={f.get(k)}" for k in keys]
        labels.append(f"{r.recipe.name}: " + ", ".join(parts) if parts else r.recipe.name)
    if len(set(labels)) < len(labels):  # same settings (seeds aside): tell them apart by id
        labels = [f"{lab} [{r.run_id or i}]" for i, (lab, r) in enumerate(zip(labels, runs))]
    return labels


def plot_history(runs: "Run | list[Run]", path: str | os.PathLike | None = None, title: str | None = None):
    """Accuracy and loss by epoch, training (solid) against validation (dashed), for one or many runs."""
    runs = runs if isinstance(runs, (list, tuple)) else [runs]
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
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
    return save_figure(fig, path) if path else fig


def plot_confusion(report: "EvalReport", path: str | os.PathLike):
    """A heatmap of the confusion matrix with class names; each row normalised to recall."""
    plt = _plt()
    cm = np.asarray(report.confusion, dtype=float)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    k = len(report.classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.62 * k, 0.8 + 0.55 * k))
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
    return save_figure(fig, path)


def plot_gallery(images: np.ndarray, titles: list[str], path: str | os.PathLike, title: str = "", cols: int = 8):
    """A grid of uint8 images (N, H, W, C) with a caption each."""
    plt = _plt()
    n = max(len(images), 1)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.6, rows * 1.9), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, t in zip(axes.flat, images, titles):
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None,
                  interpolation="nearest")
        ax.set_title(t, fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_model_view(original: np.ndarray, seen: np.ndarray, caption: str, path: str | os.PathLike):
    """Side by side: the file as given, and the exact tensor the model received (rescaled for display)."""
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(6.4, 3.4))
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
    return save_figure(fig, path)
