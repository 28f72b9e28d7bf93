"""Run folders, the typed run record, the event log and the run index, on the synthetic dataset."""

from __future__ import annotations

import threading

import pytest

import trainlab
from trainlab.errors import TrainlabError
from trainlab.runs.admin import compare_runs, reindex
from trainlab.runs.events import EVENTS, EventLog, read_events
from trainlab.runs.files import open_index, read_history
from trainlab.runs.record import Metrics, RunRecord, read_record
from trainlab.settings import load_settings


def test_a_run_folder_describes_itself(tiny_train, tmp_path):
    run = tiny_train()
    record = read_record(run.run_dir)
    assert record.status == "completed" and record.recipe == "tiny" and record.seed == 0
    assert record.dataset.n_train == 180 and record.dataset.n_val == 60 and record.dataset.classes == ["c0", "c1", "c2"]
    assert record.metrics == Metrics.model_validate_json((run.run_dir / "metrics.json").read_text()) == run.metrics
    assert record.timings["train_seconds"] == run.metrics["train_seconds"] > 0
    assert read_history(run.run_dir / "history.csv") == [{k: h[k] for k in h} for h in run.history]
    index = open_index(load_settings(runs_dir=tmp_path / "runs"))
    stored = index.get(run.run_id)
    assert isinstance(stored, RunRecord) and stored.status == "completed" and stored.dataset == record.dataset
    assert [h["epoch"] for h in index.history(run.run_id)] == [1, 2, 3]


def test_the_event_log_follows_training(tiny_train):
    run = tiny_train()
    events, offset = read_events(run.run_dir / EVENTS)
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["type"] == "status" and events[0]["status"] == "running"
    assert events[-1]["type"] == "status" and events[-1]["status"] == "completed"
    epochs = [e for e in events if e["type"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3] and epochs[-1]["val_acc"] == run.history[-1]["val_acc"]
    batches = [e for e in events if e["type"] == "batch"]
    assert batches and batches[-1]["progress"] == pytest.approx(1.0)
    assert all(0 < b["progress"] <= 1 for b in batches)
    assert read_events(run.run_dir / EVENTS, offset) == ([], offset)  # nothing new after the end


def test_event_log_reader_keeps_a_half_written_line_for_later(tmp_path):
    log = EventLog(tmp_path / EVENTS)
    log.append("status", status="running")
    with open(tmp_path / EVENTS, "ab") as fh:
        fh.write(b'{"id": 2, "type": "ba')
    events, offset = read_events(tmp_path / EVENTS)
    assert [e["id"] for e in events] == [1]
    with open(tmp_path / EVENTS, "ab") as fh:
        fh.write(b'tch"}\n')
    more, _ = read_events(tmp_path / EVENTS, offset)
    assert [e["id"] for e in more] == [2]
    assert EventLog(tmp_path / EVENTS).next_id == 3  # a resumed run continues the numbering


def test_an_interrupted_run_is_marked_and_its_events_say_so(tiny_train, tmp_path):
    stop = threading.Event()
    stop.set()
    with pytest.raises(trainlab.errors.Interrupted):
        tiny_train(stop=stop)
    (run_dir,) = [d for d in (tmp_path / "runs").iterdir() if d.is_dir()]
    assert read_record(run_dir).status == "interrupted"
    events, _ = read_events(run_dir / EVENTS)
    assert events[-1]["status"] == "interrupted"


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "holds a JSON list, not an object"),
    ('{"run_id": "x"}', "recipe: Field required"),
])
def test_a_broken_run_json_is_one_line(tiny_train, content, message):
    run = tiny_train()
    (run.run_dir / "run.json").write_text(content)
    with pytest.raises(TrainlabError, match=message) as err:
        trainlab.load_run(run.run_dir)
    assert "\n" not in str(err.value) and "runs rm" in str(err.value)


def test_reindex_skips_broken_folders_and_indexes_the_rest(tiny_train, tmp_path):
    good, bad = tiny_train(), tiny_train()
    (bad.run_dir / "recipe.yaml").unlink()
    other = load_settings(runs_dir=tmp_path / "runs", db=f"sqlite:///{tmp_path / 'other.db'}")
    added, skipped = reindex(other)
    assert added == [good.run_id] and len(skipped) == 1 and "recipe.yaml: missing" in skipped[0]
    assert open_index(other).get(good.run_id).metrics["test_acc"] == good.metrics["test_acc"]


def test_compare_names_what_differs(tiny_train, tmp_path):
    a = tiny_train({"optimizer.lr": 0.01})
    b = tiny_train({"optimizer.lr": 0.03, "batch_size": 32})
    records, curves, diff = compare_runs([a.run_id, b.run_id], load_settings(runs_dir=tmp_path / "runs"))
    assert [r.run_id for r in records] == [a.run_id, b.run_id]
    assert diff == {"optimizer.lr": [0.01, 0.03], "batch_size": [16, 32]}  # the same name is not a difference
    assert [len(c.history) for c in curves] == [3, 3]
    with pytest.raises(TrainlabError, match="two or more"):
        compare_runs([a.run_id], load_settings(runs_dir=tmp_path / "runs"))


def test_a_curve_hidden_under_another_is_said_and_drawn_on_top(tiny_train, tmp_path):
    """The tuning walk's step 2 is step 3's first epochs (same seed, only the epoch count differs):
    its lines lie under step 3's; the comparison says so instead of showing one run's lines."""
    from helpers import trainlab_here

    from trainlab.history import hidden_curves
    short, long_, other = tiny_train({"epochs": 2}), tiny_train({"epochs": 3}), tiny_train({"optimizer.lr": 0.09})
    _, curves, _ = compare_runs([short.run_id, long_.run_id, other.run_id], load_settings(runs_dir=tmp_path / "runs"))
    assert hidden_curves([c.history for c in curves]) == [(0, 1)]
    r = trainlab_here("runs", "compare", short.run_id, long_.run_id, other.run_id, "--out", tmp_path / "c.png",
                      runs=tmp_path / "runs")
    assert r.returncode == 0, r.stderr
    assert f"note: {short.run_id} lies under {long_.run_id}: the same values for all its 2 epochs" in r.stdout
    assert (tmp_path / "c.png").stat().st_size > 0
    assert hidden_curves([[{"loss": 1.0, "acc": 0.5}], [{"loss": 1.0, "acc": 0.5}]]) == [(0, 1)]  # equal: under the later
    assert hidden_curves([[{"loss": 1.0, "acc": 0.5}], [{"loss": 1.0, "acc": 0.51}]]) == []


def test_a_garbage_index_file_is_one_line(tmp_path):
    db = tmp_path / "trainlab.db"
    db.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(TrainlabError, match="not a trainlab run index") as err:
        open_index(load_settings(runs_dir=tmp_path))
    assert "\n" not in str(err.value)
