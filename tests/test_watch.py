"""Watching runs and searches (#36, #37): the live curve without epoch spikes, what a run uses of the
machine, the runs table's server-side query at scale, and studies through the dashboard's API."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest
from conftest import MNIST_TINY
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

PAGE = {"X-Trainlab": "1"}


# --- the live curve --------------------------------------------------------------------------------

def test_the_live_curve_does_not_spike_at_epoch_boundaries():
    from trainlab.history import LiveCurve
    # the loop's epoch-to-date means: a new epoch's first report is one batch's mean (here a lucky 1.0)
    c = LiveCurve()
    out = []
    for epoch in range(3):
        correct = 0
        for b in range(10):
            batch_acc = 1.0 if b == 0 and epoch else 0.80 + 0.05 * epoch + 0.002 * b
            correct += batch_acc * 100
            out.append(c.update(epoch, (b + 1) * 100, 1000, 0.5, correct / ((b + 1) * 100))[1])
    jumps = [abs(b - a) for a, b in zip(out, out[1:])]
    assert max(jumps) < 0.15  # the running mean would jump by ~0.15-0.2 at each boundary
    assert out[-1] > out[9] > out[0]  # and it still follows the trend


def test_the_run_writer_sends_the_smoothed_curve_and_system_samples(tiny_train, tmp_path):
    run = tiny_train(epochs=2)
    events = [json.loads(line) for line in (run.run_dir / "events.jsonl").read_text().splitlines()]
    batches = [e for e in events if e["type"] == "batch"]
    assert batches and all("smooth_loss" in e and "smooth_acc" in e for e in batches)
    system = [e for e in events if e["type"] == "system"]
    assert system and all(k in system[0] for k in ("cpu", "rss_mb", "threads", "busy_elsewhere"))
    record = json.loads((run.run_dir / "run.json").read_text())
    assert record["system"]["peak_rss_mb"] > 50 and record["system"]["samples"] >= 1


def test_a_run_beside_a_busy_program_records_it(data_dir, tmp_path):
    # a busy program starts once the run has sent its first sample (a condition, not a delay): the
    # later samples see it, and the run's own CPU share is what is left
    import trainlab
    from trainlab.recipes import validate
    busy = []

    class StartBusy(trainlab.Callback):
        per_batch = True

        def on_batch_end(self, state, batch, logs):
            if not busy and any('"system"' in line for line in open(state.run_dir / "events.jsonl")):
                busy.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))

    recipe = validate({**MNIST_TINY, "epochs": 40, "data": {**MNIST_TINY["data"], "limit_train": 3000}})
    try:
        run = trainlab.train(recipe, data_dir=data_dir, runs_dir=tmp_path, progress="none", callbacks=[StartBusy()])
    finally:
        for p in busy:
            p.kill()
    samples = [json.loads(line) for line in (run.run_dir / "events.jsonl").read_text().splitlines() if '"system"' in line]
    assert busy and len(samples) >= 3, len(samples)
    assert max(s["busy_elsewhere"] for s in samples[1:]) >= 0.5  # the other program, seen
    rec = json.loads((run.run_dir / "run.json").read_text())
    assert rec["system"]["starved_fraction"] > 0
    from helpers import trainlab_here
    out = trainlab_here("runs", "compare", run.run_id, run.run_id, "--runs-dir", tmp_path).stdout
    assert "peak_rss_mb" in out and "starved_fraction" in out


# --- the runs table at scale -----------------------------------------------------------------------

def _fill(store, n: int):
    from trainlab.runs.record import Metrics, RunRecord
    for i in range(n):
        rec = RunRecord(run_id=f"20261201-{i:06d}-r{i % 7}-abc", recipe=f"recipe-{i % 7}", recipe_digest="d",
                        status="completed" if i % 5 else "failed", seed=i, started_at=f"2026-12-01T00:{i // 60 % 60:02d}:{i % 60:02d}+00:00",
                        dataset={"name": "mnist" if i % 2 else "cifar10", "classes": [], "n_train": 1, "n_val": 0, "n_test": 1}, study="s1" if i % 10 == 0 else None,
                        trial=i // 10 if i % 10 == 0 else None, system={"peak_rss_mb": 100 + i, "cpu_mean": 1.0})
        store.record_start(rec, {"name": rec.recipe}, f"/nowhere/{rec.run_id}")
        m = Metrics(test_acc=(i % 100) / 100, train_seconds=float(i))
        store.record_end(rec.model_copy(update={"metrics": m}))


def test_the_runs_query_filters_sorts_and_pages_in_the_database(tmp_path):
    from trainlab.runs.store import RunQuery, Store
    store = Store(f"sqlite:///{tmp_path / 'i.db'}")
    _fill(store, 300)
    rows, total = store.query(RunQuery(recipe="recipe-3", sort="test_acc", limit=10))
    assert total == len([i for i in range(300) if i % 7 == 3]) and len(rows) == 10
    assert [r.metrics.test_acc for r in rows] == sorted([r.metrics.test_acc for r in rows], reverse=True)
    rows, total = store.query(RunQuery(study="s1", sort="run_id", descending=False, offset=5, limit=5))
    assert total == 30 and [r.trial for r in rows] == [5, 6, 7, 8, 9]
    rows, total = store.query(RunQuery(dataset="cifar10", status="failed", min_test_acc=0.5))
    assert all(r.dataset.name == "cifar10" and r.status == "failed" and r.metrics.test_acc >= 0.5 for r in rows) and total == len(rows)
    _, total = store.query(RunQuery(text="r4-"))
    assert total == len([i for i in range(300) if i % 7 == 4])
    rows, _ = store.query(RunQuery(sort="peak_rss_mb", limit=1))
    assert rows[0].system["peak_rss_mb"] == 399
    with pytest.raises(Exception, match="sort 'bogus'"):
        RunQuery(sort="bogus")


def test_a_schema_3_index_is_upgraded_to_4_with_its_columns_filled(tmp_path):
    from trainlab.runs.store import SCHEMA_VERSION, RunQuery, Store
    url = f"sqlite:///{tmp_path / 'old.db'}"
    store = Store(url)
    _fill(store, 20)
    engine = create_engine(url)
    with engine.begin() as conn:  # back to the layout of schema 3: no query columns, no values in them
        for ix in ("ix_runs_study", "ix_runs_dataset", "ix_runs_started_at", "ix_runs_test_acc"):
            conn.execute(text(f"DROP INDEX IF EXISTS {ix}"))
        for col in ("study", "trial", "dataset", "peak_rss_mb", "cpu_mean"):
            conn.execute(text(f"ALTER TABLE runs DROP COLUMN {col}"))
        conn.execute(text("UPDATE schema_info SET version = 3"))
    again = Store(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version FROM schema_info")).scalar() == SCHEMA_VERSION == 4
    _, total = again.query(RunQuery(study="s1"))
    assert total == 2  # filled from each run's record


def test_the_runs_route_pages_and_refuses_bad_values(tmp_path):
    from trainlab.runs.store import Store
    from trainlab.settings import load_settings
    from trainlab.web.app import create_app
    settings = load_settings(runs_dir=tmp_path / "runs")
    (tmp_path / "runs").mkdir()
    _fill(Store(settings.db_url), 120)
    with TestClient(create_app(settings), base_url="http://127.0.0.1", headers=PAGE) as client:
        page = client.get("/api/v1/runs?limit=50&offset=100&sort=test_acc&desc=false").json()
        assert page["total"] == 120 and len(page["runs"]) == 20 and page["offset"] == 100
        assert client.get("/api/v1/runs?q=r2-&limit=1000").json()["total"] == len([i for i in range(120) if i % 7 == 2])
        assert client.get("/api/v1/runs?study=s1").json()["total"] == 12
        assert client.get("/api/v1/runs?sort=bogus").status_code == 422
        assert client.get("/api/v1/runs?limit=5000").status_code == 422
        assert client.get("/api/v1/runs?min_test_acc=2").status_code == 422


# --- studies in the dashboard ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def a_study(tmp_path_factory, data_dir):
    import trainlab
    from trainlab.recipes import validate
    from trainlab.settings import load_settings
    root = tmp_path_factory.mktemp("studies")
    settings = load_settings(runs_dir=root / "runs", data_dir=data_dir, offline=True)
    space = root / "space.yaml"
    space.write_text("objective: val_acc\nparams:\n  optimizer.lr: {loguniform: [0.0005, 0.02]}\n"
                     "  model.layers.0.units: {choice: [16, 32]}\n")
    rep = trainlab.tune(validate({**MNIST_TINY, "epochs": 3}), str(space), trials=5, study="tiny-search", settings=settings,
                        pruner="none", sampler="random")
    return settings, rep


def test_the_studies_api_lists_and_shows_a_study(a_study):
    from trainlab.web.app import create_app
    settings, rep = a_study
    with TestClient(create_app(settings), base_url="http://127.0.0.1", headers=PAGE) as client:
        listed = client.get("/api/v1/studies").json()
        assert [s["study"] for s in listed["studies"]] == ["tiny-search"] and listed["studies"][0]["trials"] == 5
        st = client.get("/api/v1/studies/tiny-search").json()
        assert st["direction"] == "maximize" and st["objective"] == "val_acc" and len(st["trials"]) == 5
        assert all(len(t["intermediate"]) == 3 for t in st["trials"] if t["state"] == "complete")
        assert st["best"]["number"] == rep.best.number and "optimizer" in st["best_recipe_yaml"]
        assert set(st["importances"]) <= {"optimizer.lr", "model.layers.0.units"}
        assert client.get("/api/v1/studies/nope").status_code == 404
        assert client.get("/api/v1/studies/..%2F..").status_code == 404
        # the best recipe trains as a normal job
        job = client.post("/api/v1/train", json={"recipe_yaml": st["best_recipe_yaml"]}).json()["job"]
        deadline = time.monotonic() + 180
        while client.get(f"/api/v1/jobs/{job['id']}").json()["state"] in ("queued", "starting", "running"):
            assert time.monotonic() < deadline
            time.sleep(0.3)
        assert client.get(f"/api/v1/jobs/{job['id']}").json()["state"] == "completed"
        bad = client.post("/api/v1/studies", json={"preset": "nope", "space": "walk"})
        assert bad.status_code == 422 and "preset" in bad.json()["error"]
        assert client.post("/api/v1/studies", json={"preset": "mnist-mlp", "space": "walk", "trials": None}).status_code == 422
        assert client.get("/api/v1/studies", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403


def test_a_search_started_from_the_page_runs_as_a_job(data_dir, tmp_path):
    from trainlab.settings import load_settings
    from trainlab.web.app import create_app
    settings = load_settings(runs_dir=tmp_path / "runs", data_dir=data_dir, offline=True)
    with TestClient(create_app(settings), base_url="http://127.0.0.1", headers=PAGE) as client:
        refused = client.post("/api/v1/studies", json={"preset": "walk-5-relu", "space": "walk", "trials": 1,
                                                       "overrides": {"data.name": "/etc"}})
        assert refused.status_code == 403 and "recipes from the page may use" in refused.json()["error"]
        bad = client.post("/api/v1/studies", json={"preset": "walk-5-relu", "space": "walk", "trials": 1,
                                                   "overrides": {"optimizer.lrr": 0.1}})
        assert bad.status_code == 422 and "did you mean 'lr'" in bad.json()["error"], bad.text
        job = client.post("/api/v1/studies", json={"preset": "walk-5-relu", "space": "walk", "trials": 1, "study": "from-the-page",
                                                   "overrides": {"data.limit_train": 3000, "epochs": 2}}).json()["job"]
        assert job["kind"] == "tune" and job["tune"]["study"] == "from-the-page"
        stop = threading.Event()
        deadline = time.monotonic() + 300
        while not stop.is_set():
            state = client.get(f"/api/v1/jobs/{job['id']}").json()
            if state["state"] not in ("queued", "starting", "running"):
                break
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert state["state"] == "completed", state
        st = client.get("/api/v1/studies/from-the-page").json()
        assert len(st["trials"]) == 1 and st["trials"][0]["run_id"]
