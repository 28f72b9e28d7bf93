"""Checkpoints: what they hold, safe loading, the format check, callback states by key, exact resume."""

from __future__ import annotations

import io
import os
import threading

import pytest
import torch
from helpers import StopAt

from trainlab.engine.callbacks import Callback, EarlyStopping
from trainlab.engine.checkpoint import CHECKPOINT, FORMAT, callback_keys, load_checkpoint, restore, save_checkpoint, snapshot
from trainlab.errors import Interrupted, TrainlabError
from trainlab.recipes import EarlyStoppingConfig
from trainlab.runs.record import read_record
from trainlab.settings import load_settings
from trainlab.training.build import build


def test_stop_then_resume_gives_bit_identical_weights(tiny_train, tmp_path):
    ref = tiny_train(runs_dir=tmp_path / "a")
    stop = threading.Event()
    with pytest.raises(Interrupted) as err:
        tiny_train(runs_dir=tmp_path / "b", stop=stop, callbacks=[StopAt(1, 4, stop)])
    run_id = err.value.run_id
    record = read_record(tmp_path / "b" / run_id)
    assert record.status == "interrupted" and (tmp_path / "b" / run_id / CHECKPOINT).is_file()
    ckpt = load_checkpoint(tmp_path / "b" / run_id / CHECKPOINT)
    assert (ckpt["epoch"], ckpt["step"]) == (1, 5) and len(ckpt["history"]) == 1
    resumed = tiny_train(runs_dir=tmp_path / "b", resume=run_id)
    assert resumed.run_id == run_id and [h["epoch"] for h in resumed.history] == [1, 2, 3]
    a = (ref.run_dir / "model.safetensors").read_bytes()
    b = (resumed.run_dir / "model.safetensors").read_bytes()
    assert a == b
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(ref.history) == strip(resumed.history)


def _state(tiny_ds, **changes):
    from conftest import tiny_recipe
    return build(tiny_recipe(**changes), load_settings(), torch.device("cpu"), dataset=tiny_ds)


def test_round_trip_restores_everything(tiny_ds, tmp_path):
    state = _state(tiny_ds)
    state.epoch, state.step, state.history, state.notes = 2, 3, [{"epoch": 1, "loss": 0.5}], ["a note"]
    state.perm = torch.randperm(180)
    cbs = [EarlyStopping(EarlyStoppingConfig(patience=5))]
    cbs[0].best, cbs[0].wait = 0.25, 2
    save_checkpoint(tmp_path / CHECKPOINT, state, cbs)
    before = torch.rand(3), torch.randint(0, 10**6, (1,)).item()
    fresh, fresh_cbs = _state(tiny_ds), [EarlyStopping(EarlyStoppingConfig(patience=5))]
    restore(load_checkpoint(tmp_path / CHECKPOINT), fresh, fresh_cbs)
    assert (fresh.epoch, fresh.step, fresh.history, fresh.notes) == (2, 3, state.history, ["a note"])
    assert torch.equal(fresh.perm, state.perm) and (fresh_cbs[0].best, fresh_cbs[0].wait) == (0.25, 2)
    for k, v in state.model.state_dict().items():
        assert torch.equal(v, fresh.model.state_dict()[k])
    # the RNG states came back too: the same draws as right after the save
    assert torch.equal(torch.rand(3), before[0])


def test_a_crafted_checkpoint_runs_no_code(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / CHECKPOINT
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "payload": Evil()}, buf)
    path.write_bytes(buf.getvalue())
    with pytest.raises(TrainlabError, match="refused") as err:
        load_checkpoint(path)
    assert not marker.exists() and "\n" not in str(err.value)


@pytest.mark.parametrize("content, message", [
    (b"", "corrupt or truncated"),
    (b"PK\x03\x04garbage", "corrupt or truncated"),
])
def test_broken_checkpoints_are_one_line(tmp_path, content, message):
    path = tmp_path / CHECKPOINT
    path.write_bytes(content)
    with pytest.raises(TrainlabError, match=message) as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value)


def test_truncated_checkpoint_is_one_line(tiny_ds, tmp_path):
    state = _state(tiny_ds)
    save_checkpoint(tmp_path / CHECKPOINT, state, [])
    data = (tmp_path / CHECKPOINT).read_bytes()
    (tmp_path / CHECKPOINT).write_bytes(data[: len(data) // 2])
    with pytest.raises(TrainlabError, match="corrupt or truncated"):
        load_checkpoint(tmp_path / CHECKPOINT)


def test_an_old_format_is_refused(tmp_path):
    torch.save({"version": 1, "epoch": 0}, tmp_path / CHECKPOINT)
    with pytest.raises(TrainlabError, match="checkpoint format 1, this trainlab reads formats 2, 3"):
        load_checkpoint(tmp_path / CHECKPOINT)


class Counter(Callback):
    def __init__(self):
        self.n = 0

    def on_epoch_end(self, state, epoch, logs):
        self.n += 1

    def state_dict(self):
        return {"n": self.n}

    def load_state_dict(self, state):
        self.n = state["n"]


def test_callback_states_are_keyed_by_name_not_position(tiny_ds, tmp_path):
    state = _state(tiny_ds)
    a, b, es = Counter(), Counter(), EarlyStopping(EarlyStoppingConfig())
    a.n, b.n = 3, 7
    assert callback_keys([a, es, b]) == ["Counter", "EarlyStopping", "Counter#2"]
    save_checkpoint(tmp_path / CHECKPOINT, state, [a, es, b])
    ckpt = load_checkpoint(tmp_path / CHECKPOINT)
    assert ckpt["callbacks"]["Counter"] == {"n": 3} and ckpt["callbacks"]["Counter#2"] == {"n": 7}
    c, d = Counter(), Counter()
    restore(ckpt, _state(tiny_ds), [c, EarlyStopping(EarlyStoppingConfig()), d])  # same keys, new order of creation
    assert (c.n, d.n) == (3, 7)
    with pytest.raises(TrainlabError, match="holds state for callback"):
        restore(load_checkpoint(tmp_path / CHECKPOINT), _state(tiny_ds), [Counter(), EarlyStopping(EarlyStoppingConfig())])
    save_checkpoint(tmp_path / CHECKPOINT, state, [])
    with pytest.raises(TrainlabError, match="no state for callback Counter"):
        restore(load_checkpoint(tmp_path / CHECKPOINT), _state(tiny_ds), [Counter()])


def test_snapshot_holds_only_tensors_and_plain_values(tiny_ds):
    state = _state(tiny_ds, **{"schedule.name": "onecycle"})
    payload = snapshot(state, [EarlyStopping(EarlyStoppingConfig())])
    buf = io.BytesIO()
    torch.save(payload, buf)
    buf.seek(0)
    torch.load(buf, weights_only=True)  # raises if anything else were inside


def test_resume_uses_the_thread_count_the_run_was_trained_with(tiny_train, tmp_path):
    from trainlab.engine.callbacks import Callback

    class Threads(Callback):
        seen: list[int] = []

        def on_train_begin(self, state):
            self.seen.append(torch.get_num_threads())

    stop = threading.Event()
    stop.set()
    before = torch.get_num_threads()
    with pytest.raises(Interrupted) as err:
        tiny_train(stop=stop, callbacks=[Threads()])
    run_dir = tmp_path / "runs" / err.value.run_id
    record = read_record(run_dir)
    assert record.threads == Threads.seen[-1]  # the count it trained with (one: a tiny dense stack)
    assert torch.get_num_threads() == before  # the process keeps its own
    other = 2 if record.threads == 1 else 1
    (run_dir / "run.json").write_text(record.model_copy(update={"threads": other}).model_dump_json())
    try:
        run = tiny_train(resume=err.value.run_id, callbacks=[Threads()])
        assert Threads.seen[-1] == other and torch.get_num_threads() == before
        assert any(f"resumed with {other} threads" in n for n in read_record(run.run_dir).notes)
    finally:
        torch.set_num_threads(before)


def test_a_format_2_checkpoint_of_a_fused_run_resumes_bit_identically(tiny_train, tmp_path):
    # written by the trainlab before checkpoints held per-parameter optimizer state: a fused dense run
    # stopped at epoch 2, batch 5, its Adam state over one flat buffer ("blocks" layout)
    import shutil
    from pathlib import Path
    src = Path(__file__).parent / "data" / "format2-fused-run"
    ckpt = torch.load(src / CHECKPOINT, weights_only=True)
    assert (ckpt["format"], ckpt["flat_layout"], len(ckpt["optimizer"]["param_groups"][0]["params"])) == (2, "blocks", 1)
    runs = tmp_path / "b"
    run_id = "20261204-133151-tiny-b7d021"
    shutil.copytree(src, runs / run_id)
    resumed = tiny_train(runs_dir=runs, resume=run_id)
    ref = tiny_train(runs_dir=tmp_path / "a")
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert (ref.run_dir / "model.safetensors").read_bytes() == (resumed.run_dir / "model.safetensors").read_bytes()
    # and what it writes now is format 3: the optimizer state per parameter, whichever step wrote it
    assert read_record(resumed.run_dir).train_step == "fused-dense"
