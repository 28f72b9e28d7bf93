"""Pictures: their content (lines, labels, colours), not just that a file exists; no pyplot, so
they are safe in a notebook and from several threads."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from conftest import tiny_recipe
from trainlab.metrics import classification_report
from trainlab.plots import plot_confusion, plot_gallery, plot_history
from trainlab.runs import Curve

HIST_A = [{"epoch": e, "loss": 1 / e, "acc": 0.5 + 0.1 * e, "val_loss": 1.2 / e, "val_acc": 0.45 + 0.1 * e} for e in (1, 2, 3)]
HIST_B = [{"epoch": e, "loss": 2 / e, "acc": 0.4 + 0.1 * e, "val_loss": None, "val_acc": None} for e in (1, 2)]


def test_learning_curves_draw_each_runs_history():
    a = Curve(tiny_recipe(**{"optimizer.lr": 0.01}), HIST_A, "a")
    b = Curve(tiny_recipe(**{"optimizer.lr": 0.1}), HIST_B, "b")
    fig = plot_history([a, b])
    acc_ax, loss_ax = fig.axes[:2]
    # run a: train and validation lines; run b: train only (it has no validation)
    assert len(acc_ax.lines) == 3 and len(loss_ax.lines) == 3
    assert list(acc_ax.lines[0].get_ydata()) == [h["acc"] for h in HIST_A]
    assert list(loss_ax.lines[1].get_ydata()) == [h["val_loss"] for h in HIST_A]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["tiny: lr=0.01 (train)", "tiny: lr=0.01 (val)", "tiny: lr=0.1 (train)"]
    assert acc_ax.lines[0].get_color() == acc_ax.lines[1].get_color() != acc_ax.lines[2].get_color()


def test_confusion_heatmap_counts_and_titles(tmp_path):
    logits = np.array([[3, 0, 0], [0, 3, 0], [0, 3, 0], [0, 0, 3]], dtype=np.float32)
    import torch
    report = classification_report(torch.from_numpy(logits), torch.tensor([0, 1, 0, 2]), ["a", "b", "c"])
    fig = plot_confusion(report)
    ax = fig.axes[0]
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert texts == {(0, 0): "1", (0, 1): "1", (1, 1): "1", (2, 2): "1"}
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c"]
    assert ax.get_title() == "test: accuracy 0.7500"
    path = plot_confusion(report, tmp_path / "cm.png")
    assert Image.open(path).size[0] > 200


def test_gallery_shows_each_image_with_its_caption(tmp_path):
    images = np.stack([np.full((8, 8, 1), v, np.uint8) for v in (0, 128, 255)])
    fig = plot_gallery(images, ["zero", "mid", "full"], cols=2)
    shown = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in shown] == ["zero", "mid", "full"]
    assert [int(ax.images[0].get_array().mean()) for ax in shown] == [0, 128, 255]


def test_plots_never_touch_pyplot_and_draw_from_threads(tmp_path):
    # (matplotlib.get_backend() itself imports pyplot, so the check is that nothing imported it)
    code = ("import sys; from trainlab.plots import plot_gallery; import numpy as np;"
            "plot_gallery(np.zeros((2, 4, 4, 1), np.uint8), ['a', 'b'], sys.argv[1]);"
            "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot'; print('ok')")
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path / "g.png")], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr
    curves = [Curve(tiny_recipe(), HIST_A, str(i)) for i in range(8)]
    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda c: plot_history(c, tmp_path / f"{c.run_id}.png"), curves))
    sizes = {Image.open(p).size for p in paths}
    assert len(sizes) == 1  # eight identical figures, drawn concurrently
