"""Metrics against small cases computed by hand, evaluation reports and plots."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import trainlab_here
from PIL import Image

import trainlab
from trainlab.metrics import classification_report, confusion_matrix, precision_recall_f1, top_k_accuracy

# 3 classes, 8 examples. true: 0 0 0 1 1 1 2 2   pred: 0 0 1 1 1 2 2 0
Y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
P = torch.tensor([0, 0, 1, 1, 1, 2, 2, 0])


def test_confusion_matrix_by_hand():
    assert confusion_matrix(Y, P, 3).tolist() == [[2, 1, 0], [0, 2, 1], [1, 0, 1]]


def test_precision_recall_f1_by_hand():
    p, r, f1, support = precision_recall_f1(confusion_matrix(Y, P, 3))
    # class 0: tp 2, fp 1 (a 2 predicted 0), fn 1 -> p 2/3, r 2/3
    # class 1: tp 2, fp 1, fn 1 -> p 2/3, r 2/3; class 2: tp 1, fp 1, fn 1 -> p 1/2, r 1/2
    assert p.tolist() == pytest.approx([2 / 3, 2 / 3, 1 / 2])
    assert r.tolist() == pytest.approx([2 / 3, 2 / 3, 1 / 2])
    assert f1.tolist() == pytest.approx([2 / 3, 2 / 3, 1 / 2])
    assert support.tolist() == [3, 3, 2]


def test_undefined_precision_is_zero_not_nan():
    p, r, f1, _ = precision_recall_f1(confusion_matrix(torch.tensor([0, 0, 1]), torch.tensor([0, 0, 0]), 3))
    assert p.tolist() == pytest.approx([2 / 3, 0, 0]) and r.tolist() == pytest.approx([1, 0, 0])
    assert not torch.isnan(f1).any()


def test_top_k_by_hand():
    logits = torch.tensor([[3.0, 2.0, 1.0], [1.0, 3.0, 2.0], [1.0, 2.0, 3.0], [3.0, 1.0, 2.0]])
    y = torch.tensor([1, 2, 0, 0])
    assert top_k_accuracy(logits, y, 1) == 0.25  # only the last
    assert top_k_accuracy(logits, y, 2) == 0.75  # all but the third
    assert top_k_accuracy(logits, y, 3) == 1.0


def test_report_averages_and_most_confused():
    logits = torch.nn.functional.one_hot(P, 3).float() * 5
    rep = classification_report(logits, Y, ["a", "b", "c"], ks=(1, 2))
    assert rep.accuracy == pytest.approx(5 / 8)
    assert rep.macro["precision"] == pytest.approx((2 / 3 + 2 / 3 + 1 / 2) / 3)
    assert rep.weighted["recall"] == pytest.approx((2 / 3 * 3 + 2 / 3 * 3 + 1 / 2 * 2) / 8)  # equals accuracy
    assert rep.weighted["recall"] == pytest.approx(rep.accuracy)
    assert {(m["true"], m["predicted"]) for m in rep.most_confused} == {("a", "b"), ("b", "c"), ("c", "a")}
    text = rep.text()
    assert "macro avg" in text and "weighted avg" in text and "confusion matrix" in text
    assert json.loads(json.dumps(rep.to_dict()))["top_k"]["2"] == rep.top_k[2]


@pytest.fixture(scope="module")
def walk_runs(tmp_path_factory, data_dir):
    runs = tmp_path_factory.mktemp("runs")
    out = []
    for name in ("walk-1-baseline", "walk-2-lower-lr", "walk-5-relu"):
        out.append(trainlab.train(name, epochs=2, progress="none", runs_dir=runs, data_dir=data_dir,
                                  overrides={"data.limit_train": 2000, "data.limit_test": 500}))
    return runs, out


def test_training_writes_curves_and_evaluate_matches_test_acc(walk_runs, data_dir):
    runs, (first, _, relu) = walk_runs
    assert not (first.run_dir / "curves.png").exists()  # training does not wait for matplotlib
    png = trainlab.curves_png(first.run_id, trainlab.load_settings().with_(runs_dir=runs))
    assert Image.open(png).size[0] > 600  # a real PNG, two panels wide
    mtime = png.stat().st_mtime_ns
    assert trainlab.curves_png(first.run_dir).stat().st_mtime_ns == mtime  # drawn once, until history.csv changes
    p = trainlab_here("evaluate", relu.run_id, "--json", "--runs-dir", str(runs),
                        "--data-dir", str(data_dir))
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    assert rep["accuracy"] == pytest.approx(relu.metrics["test_acc"])
    assert len(rep["per_class"]) == 10 and rep["per_class"][0]["name"] == "0" and rep["n"] == 500
    assert {f.split("/")[-1] for f in rep["files"]} == {"confusion-test.png", "misclassified-test.png", "predictions-test.png"}
    p = trainlab_here("evaluate", relu.run_id, "--runs-dir", str(runs),
                        "--data-dir", str(data_dir))
    assert "precision" in p.stdout and "most confused" in p.stdout


def test_walk_comparison_is_labelled_by_what_differs(walk_runs):
    runs, walk = walk_runs
    from trainlab.plots import run_labels
    labels = run_labels(walk)
    assert "lr=0.1" in labels[0] and "lr=0.01" in labels[1]
    assert "relu" in labels[2] and "sigmoid" in labels[0]
    assert "description" not in " ".join(labels)
    fig = trainlab.plot_history(walk)
    assert [len(ax.lines) for ax in fig.axes[:2]] == [6, 6]  # train and validation for each of three runs
    assert list(fig.axes[0].lines[4].get_ydata()) == [h["acc"] for h in walk[2].history]
    p = trainlab_here("plot", *[r.run_id for r in walk], "--runs-dir", str(runs))
    assert p.returncode == 0 and (runs / "compare.png").is_file()
