"""Callbacks on the tiny synthetic dataset: hooks and their order, early stopping, reduce-LR,
schedules, divergence, pruning, and the best epoch shared by metrics, best.safetensors and the index."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from trainlab.engine.callbacks import Callback
from trainlab.errors import Pruned, TrainingDiverged
from trainlab.history import best_epoch, metric_mode
from trainlab.runs.record import read_record


class Recorder(Callback):
    per_batch = True

    def __init__(self):
        self.calls, self.batches = [], []

    def on_train_begin(self, state):
        self.calls.append("train_begin")

    def on_epoch_begin(self, state, epoch):
        self.calls.append(f"epoch_begin {epoch}")

    def on_batch_end(self, state, batch, logs):
        self.batches.append((state.epoch, batch, logs["loss"], logs["acc"]))

    def on_epoch_end(self, state, epoch, logs):
        self.calls.append(f"epoch_end {epoch} {sorted(logs)}")

    def on_train_end(self, state):
        self.calls.append("train_end")

    def on_test_end(self, state, metrics):
        self.calls.append(f"test_end {metrics['test_acc'] > 0.5}")

    def on_exception(self, state, exc):
        self.calls.append(f"exception {type(exc).__name__}")


def test_hooks_come_in_order_and_every_batch_when_asked(tiny_train):
    rec = Recorder()
    run = tiny_train(callbacks=[rec], save=False, epochs=2)
    keys = "['acc', 'epoch', 'loss', 'lr', 'seconds', 'val_acc', 'val_loss']"
    assert rec.calls == ["train_begin", "epoch_begin 0", f"epoch_end 0 {keys}", "epoch_begin 1", f"epoch_end 1 {keys}",
                         "train_end", "test_end True"]
    assert [(e, b) for e, b, _, _ in rec.batches] == [(e, b) for e in range(2) for b in range(12)]  # 180 train / 16
    assert all(np.isfinite(loss) and 0 <= acc <= 1 for _, _, loss, acc in rec.batches)
    assert run.metrics["test_acc"] > 0.6  # chance is 1/3


def test_early_stopping_stops_and_restores_the_best_weights(tiny_train):
    run = tiny_train({"optimizer.lr": 0.05, "callbacks.early_stopping": {"monitor": "val_loss", "patience": 1}},
                     save=False, epochs=40)
    assert len(run.history) < 40
    best = min(h["val_loss"] for h in run.history)
    x, y = run.split("val")
    from trainlab.engine.inference import evaluate
    loss, _ = evaluate(run.model, x, y, run.preprocess, 256, run.device)
    assert loss == pytest.approx(best, rel=1e-5)


def test_reduce_lr_on_plateau_lowers_the_rate(tiny_train):
    run = tiny_train({"optimizer.lr": 0.05, "callbacks.reduce_lr": {"patience": 0, "factor": 0.5}}, save=False, epochs=10)
    lrs = [h["lr"] for h in run.history]
    assert lrs[0] == 0.05 and min(lrs) < 0.05 and lrs == sorted(lrs, reverse=True)


@pytest.mark.parametrize("schedule", ["onecycle", "cosine"])
def test_schedules_change_the_lr_per_step(tiny_train, schedule):
    run = tiny_train({"schedule.name": schedule, "schedule.warmup_epochs": 1}, save=False, epochs=3)
    lrs = [h["lr"] for h in run.history]
    assert len(set(lrs)) == 3
    if schedule == "onecycle":
        assert lrs[0] == pytest.approx(0.01 / 25)
    else:
        assert lrs[0] == pytest.approx(0.01 * 1e-3)


def test_divergence_is_one_line_and_marks_the_run_failed(tiny_train, tmp_path):
    rec = Recorder()
    with pytest.raises(TrainingDiverged, match="lower the learning rate") as err:
        tiny_train({"data.normalize": "none", "optimizer.name": "sgd", "optimizer.lr": 1e30}, callbacks=[rec])
    assert "\n" not in str(err.value) and rec.calls[-1] == "exception TrainingDiverged"
    (run_dir,) = [d for d in (tmp_path / "runs").iterdir() if d.is_dir()]
    record = read_record(run_dir)
    assert record.status == "failed" and "diverged" in record.error


class PruneAfter(Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, state, epoch, logs):
        if epoch == self.epoch:
            raise Pruned(f"pruned at epoch {epoch + 1}")


def test_a_pruned_trial_stops_at_once_and_is_recorded_as_pruned(tiny_train, tmp_path):
    with pytest.raises(Pruned):
        tiny_train(callbacks=[PruneAfter(0)], epochs=5)
    (run_dir,) = [d for d in (tmp_path / "runs").iterdir() if d.is_dir()]
    record = read_record(run_dir)
    assert record.status == "pruned" and record.epochs == 1


def test_one_best_epoch_for_metrics_best_weights_and_the_index(tiny_train, tmp_path):
    run = tiny_train({"optimizer.lr": 0.05, "callbacks.early_stopping": {"monitor": "val_loss", "patience": 10,
                                                                          "restore_best": False}}, epochs=8)
    best = best_epoch(run.history, "val_loss")
    assert best == min(run.history, key=lambda h: h["val_loss"])
    with safe_open(run.run_dir / "best.safetensors", "pt") as f:
        meta = json.loads(f.metadata()["trainlab"])
    assert meta["epoch"] == best["epoch"] == run.metrics["best_epoch"]
    assert run.metrics["val_acc_at_best"] == best["val_acc"] and run.metrics["monitor"] == "val_loss"
    from trainlab.runs.files import open_index
    from trainlab.settings import load_settings
    row = open_index(load_settings(runs_dir=tmp_path / "runs")).get(run.run_id)
    assert row.metrics["best_epoch"] == best["epoch"]


def test_metric_mode_and_best_epoch_rules():
    assert metric_mode("val_acc") == "max" and metric_mode("acc") == "max" and metric_mode("val_loss") == "min"
    hist = [{"epoch": 1, "val_acc": 0.5}, {"epoch": 2, "val_acc": 0.7}, {"epoch": 3, "val_acc": 0.7},
            {"epoch": 4, "val_acc": None}]
    assert best_epoch(hist, "val_acc")["epoch"] == 2  # the first of a tie
    assert best_epoch([{"epoch": 1, "val_acc": None}], "val_acc") is None


class FailingSave(Callback):
    def on_test_end(self, state, metrics):
        raise OSError(28, "No space left on device")


class FailingHandler(Callback):
    def on_exception(self, state, exc):
        raise RuntimeError("the handler broke too")


def test_a_failure_in_the_final_save_marks_the_run_failed_and_keeps_the_checkpoint(tiny_train, tmp_path):
    with pytest.raises(OSError, match="No space left") as err:
        tiny_train(callbacks=[FailingSave(), FailingHandler()])
    assert any("FailingHandler failed too: the handler broke too" in n for n in err.value.__notes__)
    (run_dir,) = [d for d in (tmp_path / "runs").iterdir() if d.is_dir()]
    record = read_record(run_dir)
    assert record.status == "failed" and "No space left" in record.error and record.epochs == 3
    assert (run_dir / "checkpoint.pt").is_file()


def test_one_epoch_numbering_in_every_log(tiny_train):
    """Arguments are 0-based positions (as Keras passes them); every logs dict counts from 1."""
    seen = []

    class Numbers(Callback):
        per_batch = True

        def on_batch_end(self, state, batch, logs):
            seen.append(("batch", state.epoch, batch, logs["epoch"], logs["step"]))

        def on_epoch_end(self, state, epoch, logs):
            seen.append(("epoch", epoch, logs["epoch"]))

    run = tiny_train(callbacks=[Numbers()], epochs=2)
    batches = [s for s in seen if s[0] == "batch"]
    assert all(logs_epoch == epoch + 1 and step == batch + 1 for _, epoch, batch, logs_epoch, step in batches)
    assert batches[0][3:] == (1, 1) and batches[-1][3] == 2
    assert [s[1:] for s in seen if s[0] == "epoch"] == [(0, 1), (1, 2)]
    assert [h["epoch"] for h in run.history] == [1, 2] and run.metrics.best_epoch in (1, 2)
    events = [json.loads(line) for line in (run.run_dir / "events.jsonl").read_text().splitlines()]
    assert {e["epoch"] for e in events if e["type"] == "batch"} == {1, 2}


def _epochs_run(callback, values, state=None):
    """Feed `values` as the monitored metric epoch by epoch, as the loop does; the epochs run before the stop."""
    from types import SimpleNamespace
    state = state or SimpleNamespace(stop_training=False, notes=[], model=torch.nn.Linear(1, 1), epoch=0)
    for epoch, v in enumerate(values):
        callback.on_epoch_end(state, epoch, {"loss": v, "val_loss": v})
        if state.stop_training:
            return epoch + 1
    return len(values)


def test_early_stopping_stops_at_the_epoch_keras_documents():
    from trainlab.engine.callbacks import EarlyStopping
    from trainlab.recipes import EarlyStoppingConfig
    # keras.callbacks.EarlyStopping's own example: patience 3, a loss that only grows -> "Only 4 epochs are run."
    rising = [float(i) for i in range(1, 11)]
    assert _epochs_run(EarlyStopping(EarlyStoppingConfig(monitor="loss", patience=3)), rising) == 4
    # best at epoch 3 (1-based), patience 2: epochs 4 and 5 do not improve, training ends after epoch 5
    values = [5.0, 4.0, 3.0, 3.5, 3.6, 3.7, 3.8]
    assert _epochs_run(EarlyStopping(EarlyStoppingConfig(monitor="loss", patience=2)), values) == 5
    # an improvement smaller than min_delta is none
    assert _epochs_run(EarlyStopping(EarlyStoppingConfig(monitor="loss", patience=2, min_delta=0.5)),
                       [5.0, 4.8, 4.6, 4.4, 4.2]) == 3
    # patience 0: stops after the first epoch that does not improve, never after the first epoch
    assert _epochs_run(EarlyStopping(EarlyStoppingConfig(monitor="loss", patience=0)), [1.0, 2.0, 3.0]) == 2


def test_reduce_lr_on_plateau_reduces_at_the_epoch_keras_does():
    from types import SimpleNamespace

    from trainlab.engine.callbacks import ReduceLROnPlateau
    from trainlab.recipes import ReduceLRConfig
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    cb = ReduceLROnPlateau(ReduceLRConfig(monitor="loss", patience=2, factor=0.5), opt)
    state = SimpleNamespace(notes=[])
    lrs = []
    for epoch, v in enumerate([1.0] * 7):  # a flat loss: epoch 1 is the best, then a plateau
        cb.on_epoch_end(state, epoch, {"loss": v})
        lrs.append(opt.param_groups[0]["lr"])
    # Keras: wait counts 1, 2 -> reduce at the end of the third epoch, again two epochs later
    assert lrs == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.125]
    cooled = ReduceLROnPlateau(ReduceLRConfig(monitor="loss", patience=1, factor=0.5, cooldown=2), opt)
    opt.param_groups[0]["lr"] = 1.0
    lrs = []
    for epoch, v in enumerate([1.0] * 6):
        cooled.on_epoch_end(state, epoch, {"loss": v})
        lrs.append(opt.param_groups[0]["lr"])
    # Keras' order: the cooldown counts down before the epoch is judged, so cooldown 2 skips one epoch's count
    assert lrs == [1.0, 0.5, 0.5, 0.25, 0.25, 0.125]
    floor = ReduceLROnPlateau(ReduceLRConfig(monitor="loss", patience=0, factor=0.1, min_lr=0.05), opt)
    opt.param_groups[0]["lr"] = 1.0
    for epoch in range(4):
        floor.on_epoch_end(state, epoch, {"loss": 1.0})
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)  # never below min_lr
