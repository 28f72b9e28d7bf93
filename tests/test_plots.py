"""Pictures: their content (lines, labels, colours), not just that a file exists; no pyplot, so
they are safe in a notebook and from several threads."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import tiny_recipe
from helpers import trainlab_here
from PIL import Image

from trainlab.metrics import classification_report
from trainlab.plots import plot_confusion, plot_gallery, plot_history
from trainlab.runs.curves import Curve

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


# --- the lessons' pictures ---------------------------------------------------------------------------

def _titles(fig) -> list[str]:
    return [ax.get_title() for ax in fig.axes if ax.images]


def test_sample_grid_titles_each_image_with_its_class(data_dir):
    import trainlab
    fig = trainlab.show_samples("fashion-mnist", n=25, settings=trainlab.load_settings(data_dir=data_dir))
    ds = trainlab.load_dataset("fashion-mnist", data_dir=data_dir)
    assert _titles(fig) == [ds.classes[int(y)] for y in ds.y_train[:25]]
    assert _titles(fig)[0] == "Ankle boot"
    mnist = trainlab.show_samples("mnist", split="test", n=10, settings=trainlab.load_settings(data_dir=data_dir))
    assert _titles(mnist) == ["7", "2", "1", "0", "4", "1", "4", "9", "5", "9"]  # MNIST's first test labels


def test_one_image_with_a_colour_bar(data_dir):
    import trainlab
    fig = trainlab.show_samples("fashion-mnist", index=0, settings=trainlab.load_settings(data_dir=data_dir))
    image_ax = [ax for ax in fig.axes if ax.images][0]
    assert "Ankle boot" in image_ax.get_title() and len(fig.axes) == 2  # the image and its colour bar
    assert image_ax.images[0].get_array().max() == 255


def test_samples_of_cifar_and_an_image_tree(tmp_path):
    from conftest import write_cifar_archive, write_tree

    import trainlab
    from trainlab.data.readers import Dataset, read_cifar10_archive
    from trainlab.data.registry import DATASETS
    write_cifar_archive(tmp_path / "c.tar.gz")  # the canonical format, tiny
    x_tr, y_tr, x_te, y_te = read_cifar10_archive(tmp_path / "c.tar.gz")
    cifar = Dataset("cifar10", list(DATASETS["cifar10"].classes), x_tr, y_tr, x_te, y_te)
    fig = trainlab.show_samples(cifar, n=6)
    assert _titles(fig) == [cifar.classes[int(y)] for y in y_tr[:6]]
    assert fig.axes[0].images[0].get_array().shape == (32, 32, 3)  # colour, not grey
    tree = write_tree(tmp_path / "tree", classes=("cat", "dog"), per_class=3, splits=())
    fig = trainlab.show_samples(str(tree), n=4)
    ds = trainlab.load_dataset(str(tree))
    assert _titles(fig) == [ds.classes[int(y)] for y in ds.y_train[:4]]


def test_prediction_figure_colours_right_blue_and_wrong_red():
    from matplotlib.colors import to_hex

    from trainlab.plots import RIGHT, WRONG, plot_predictions
    images = np.zeros((2, 8, 8, 1), np.uint8)
    probs = np.array([[0.1, 0.8, 0.1], [0.7, 0.2, 0.1]])
    fig = plot_predictions(images, probs, ["a", "b", "c"], true=np.array([1, 2]), cols=2)
    img_axes = [ax for ax in fig.axes if ax.images]
    bar_axes = [ax for ax in fig.axes if ax.patches]
    assert img_axes[0].get_xlabel() == "b 80% (b)" and to_hex(img_axes[0].xaxis.label.get_color()) == to_hex(RIGHT)
    assert img_axes[1].get_xlabel() == "a 70% (c)" and to_hex(img_axes[1].xaxis.label.get_color()) == to_hex(WRONG)
    colours = [to_hex(p.get_facecolor()) for p in bar_axes[1].patches]
    assert colours[0] == to_hex(WRONG) and colours[2] == to_hex(RIGHT) and colours[1] == "#888888"
    assert [p.get_height() for p in bar_axes[1].patches] == pytest.approx([0.7, 0.2, 0.1])


def test_a_runs_prediction_figure_marks_its_own_mistakes(tiny_train):
    run = tiny_train(save=False, epochs=1)
    fig = run.plot_predictions(range(12))
    preds = run.predict(run.split("test")[0][:12].permute(0, 2, 3, 1).numpy())
    y = run.split("test")[1][:12].numpy()
    from matplotlib.colors import to_hex

    from trainlab.plots import RIGHT, WRONG
    colours = [to_hex(ax.xaxis.label.get_color()) for ax in fig.axes if ax.images]
    assert colours == [to_hex(RIGHT) if p == t else to_hex(WRONG) for p, t in zip(preds.labels, y)]
    assert to_hex(WRONG) in colours and to_hex(RIGHT) in colours  # one epoch: some of each


def test_data_show_cli(tmp_path, data_dir):
    out = tmp_path / "grid.png"
    p = trainlab_here("data", "show", "fashion-mnist", "--n", "9", "--out", str(out),
                        "--classes", "--data-dir", str(data_dir))
    assert p.returncode == 0, p.stderr
    assert "   9  Ankle boot" in p.stdout and Image.open(out).size[0] > 300


def test_data_show_classes_alone_writes_no_picture(tmp_path, data_dir):
    p = trainlab_here("data", "show", "fashion-mnist", "--classes", "--data-dir", str(data_dir), cwd=tmp_path)
    assert p.returncode == 0 and "   9  Ankle boot" in p.stdout and "wrote" not in p.stdout
    assert list(tmp_path.iterdir()) == []


def test_learning_curves_tick_at_whole_epochs():
    from trainlab.plots import plot_history
    from trainlab.recipes import load_recipe
    from trainlab.runs.curves import Curve
    hist = [{"epoch": e, "loss": 1 / e, "acc": 0.5 + e / 10, "val_loss": 1.1 / e, "val_acc": 0.45 + e / 10} for e in (1, 2, 3)]
    fig = plot_history([Curve(load_recipe("mnist-mlp"), hist, "a"), Curve(load_recipe("mnist-mlp", {"seed": 1}), hist, "b")])
    for ax in fig.axes[:2]:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
