"""Prediction on a saved run: image files (prepared as the run's dataset was, in its recorded
style), items of its test set, and "what the model sees" pictures. The arithmetic is in
inference.py and `Run.predict`; this module adds what the `predict` command and API need."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from trainlab.data.images import STYLES, load_file, open_image, prepare_image
from trainlab.engine.inference import Predictions, as_batch
from trainlab.errors import TrainlabError
from trainlab.plots import plot_model_view, plot_predictions
from trainlab.runs.run import Run
from trainlab.settings import Settings


def check_style(style: str | None) -> None:
    if style is not None and style not in STYLES:
        raise TrainlabError(f"--style {style!r}: use one of {', '.join(STYLES)}")


def predict_test_items(run: Run, indices: list[int], settings: Settings | None = None) -> Predictions:
    """Predictions for items of the run's test set, labelled 'test[i] (true: name)'."""
    x, y = run.split("test", settings)
    bad = [i for i in indices if not 0 <= i < len(x)]
    if bad:
        raise TrainlabError(f"--test-index {bad[0]}: the test set has items 0..{len(x) - 1}")
    preds = run.predict(x[indices].cpu().permute(0, 2, 3, 1).numpy())
    preds.files = [f"test[{i}] (true: {run.classes[int(y[i])]})" for i in indices]
    return preds


def predict_bytes(run: Run, files: list[tuple[str, bytes]], style: str | None = None) -> Predictions:
    """Predictions for uploaded image files (name, bytes), decoded by the same guarded loader as
    `trainlab predict` and prepared in the run's style; files that fail are in `.failures`."""
    check_style(style)
    shape = run.preprocess.shape
    names, images, failures = [], [], []
    for name, data in files:
        try:
            images.append(prepare_image(open_image(data, name), style or run.preprocess.style, shape))
            names.append(name)
        except ValueError as exc:
            failures.append((name, str(exc)))
    preds = run.predict(np.stack(images)) if images else run.predict(np.zeros((0, *shape[1:], shape[0]), np.uint8))
    preds.files, preds.failures = names, failures
    return preds


def predict_pixels(run: Run, pixels) -> Predictions:
    """Predictions for uint8 pixel arrays already in the run's dataset format (a JSON array)."""
    try:
        arr = np.asarray(pixels)
    except (ValueError, TypeError):
        raise TrainlabError("pixels: give a (nested) array of numbers 0-255") from None
    if arr.dtype.kind not in "iuf" or arr.size == 0 or arr.min() < 0 or arr.max() > 255:
        raise TrainlabError("pixels: give a (nested) array of numbers 0-255")
    x = as_batch(arr.astype(np.uint8), run.preprocess.shape)
    return run.predict(x.permute(0, 2, 3, 1).numpy())


def parse_indices(items: list[str]) -> list[int]:
    """'3', '0:15' (15 items from 0) and '5:8' as a list of test-set indices."""
    out = []
    for item in items:
        a, sep, b = str(item).partition(":")
        try:
            out += list(range(int(a or 0), int(b))) if sep else [int(a)]
        except ValueError:
            raise TrainlabError(f"--test-index {item!r}: give a number N or a range A:B") from None
    return out


def predict_inputs(run: Run, inputs: list[str] | None, test_index: list[str] | None, style: str | None = None,
                   settings: Settings | None = None) -> tuple[list[Predictions], list[int]]:
    """What `trainlab predict` classifies: image files and folders (prepared in `style`, or as the
    run's data was), then test-set items ('3', '0:15'); the Predictions of each group given, and
    the test indices."""
    indices = parse_indices(test_index or [])
    results = [run.predict(inputs, style)] if inputs else []
    if indices:
        results.append(predict_test_items(run, indices, settings))
    return results, indices


def plot_results(run: Run, results: list[Predictions], test_indices: list[int], out: str | os.PathLike,
                 settings: Settings | None = None) -> Path:
    """One predictions figure for files and test items together; test items carry their true class."""
    images = np.concatenate([p.inputs for p in results if len(p)])
    probs = np.concatenate([p.probs for p in results if len(p)])
    true = None
    if test_indices and len(results[-1]) == len(test_indices) and len(results) == 1:
        _, y = run.split("test", settings)
        true = y.cpu()[torch.as_tensor(test_indices)].numpy()
    return plot_predictions(images, probs, run.classes, true, path=out)


def write_model_views(run: Run, preds: Predictions, show_dir: str | os.PathLike, style: str | None = None) -> list[Path]:
    """For each input, a PNG of the original beside the exact tensor the model received."""
    out = []
    show_dir = Path(show_dir)
    style = style or run.preprocess.style
    for i, (rec, arr) in enumerate(zip(preds.records(1), preds.inputs)):
        f = rec["file"]
        original = arr[..., 0] if arr.shape[-1] == 1 else arr
        if Path(f).is_file():  # arrays and test-set items have no file: show what was given
            original = load_file(f, style, run.preprocess.shape)[0]
        seen = run.preprocess(torch.from_numpy(arr).permute(2, 0, 1)[None].contiguous())[0]
        seen = seen.view(run.preprocess.shape).numpy()
        stem = Path(f).stem if Path(f).is_file() else "item"
        caption = f"{Path(f).name}: {rec['class_name']} ({rec['probability']:.2f})"
        out.append(plot_model_view(original, seen, caption, show_dir / f"{i:03d}-{stem}.png"))
    return out
