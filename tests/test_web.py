"""The dashboard's API through FastAPI's TestClient: every route, the token, bad uploads, recipes
with errors, unknown ids, live events with resume, and training jobs in worker processes."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import MNIST_TINY  # noqa: E402
from fastapi.testclient import TestClient
from PIL import Image


@pytest.fixture(scope="module")
def served(tmp_path_factory, data_dir):
    """Two completed tiny MNIST runs in a fresh runs folder, and an app over it."""
    import trainlab
    from trainlab.recipes import apply_overrides, validate
    from trainlab.settings import load_settings
    from trainlab.web.app import create_app
    runs = tmp_path_factory.mktemp("web") / "runs"
    settings = load_settings(runs_dir=runs, data_dir=data_dir, offline=True)
    a = trainlab.train(validate(MNIST_TINY), settings=settings, progress="none")
    b = trainlab.train(validate(apply_overrides(MNIST_TINY, {"optimizer.lr": 0.01, "seed": 1})), settings=settings, progress="none")
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False, base_url="http://127.0.0.1", headers={"X-Trainlab": "1"}) as client:
        yield client, a, b, settings


def one_line_error(r, status):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "status"} and "\n" not in body["error"] and "Traceback" not in body["error"]
    return body["error"]


def png(arr) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.asarray(arr, np.uint8)).save(out, "PNG")
    return out.getvalue()


def test_health_runs_and_one_run(served):
    client, a, b, _ = served
    assert client.get("/healthz").json()["ok"] is True
    rows = client.get("/api/v1/runs").json()["runs"]
    assert {r["run_id"] for r in rows} == {a.run_id, b.run_id}
    assert all(r["live_status"] == "completed" and 0 < r["test_acc"] <= 1 for r in rows)
    info = client.get(f"/api/v1/runs/{a.run_id}").json()
    assert info["record"]["run_id"] == a.run_id and len(info["history"]) == 2
    assert "dense" in info["summary"].lower() and "model.safetensors" in info["files"]
    assert info["recipe"]["optimizer"]["lr"] == 0.003
    weights = client.get(f"/api/v1/runs/{a.run_id}/files/model.safetensors")
    assert weights.status_code == 200 and weights.content == (a.run_dir / "model.safetensors").read_bytes()
    assert "has no file" in one_line_error(client.get(f"/api/v1/runs/{a.run_id}/files/secrets.txt"), 404)
    one_line_error(client.get(f"/api/v1/runs/{a.run_id}/files/..%2F..%2Ftrainlab.db"), 404)


@pytest.mark.parametrize("path", ["/api/v1/runs/nope", "/api/v1/runs/..", "/api/v1/runs/%2Fetc%2Fpasswd",
                                  "/api/v1/runs/nope/events", "/api/v1/runs/nope/errors", "/api/v1/compare?runs=nope,nada",
                                  "/api/v1/predict?run=nope", "/api/v1/jobs/999", "/api/v1/presets/nope",
                                  "/api/v1/datasets/nope/samples", "/no/such/page"])
def test_unknown_ids_are_404_with_one_line(served, path):
    client = served[0]
    r = client.post(path, files={"file": ("a.png", png(np.zeros((28, 28))))}) if "predict" in path else client.get(path)
    one_line_error(r, 404)


def test_events_stream_replays_and_resumes_after_last_event_id(served):
    client, a, _, _ = served
    text = client.get(f"/api/v1/runs/{a.run_id}/events").text
    ids = [int(line[4:]) for line in text.splitlines() if line.startswith("id: ")]
    kinds = [line[7:] for line in text.splitlines() if line.startswith("event: ")]
    assert kinds[0] == "status" and kinds[-1] == "end" and kinds.count("epoch") == 2 and "batch" in kinds
    assert ids == sorted(ids)
    later = client.get(f"/api/v1/runs/{a.run_id}/events", headers={"Last-Event-ID": str(ids[2])}).text
    later_ids = [int(line[4:]) for line in later.splitlines() if line.startswith("id: ")]
    assert later_ids and min(later_ids) > ids[2] and later_ids[-1] == ids[-1]


def test_compare_shows_the_differences(served):
    client, a, b, _ = served
    c = client.get(f"/api/v1/compare?runs={a.run_id},{b.run_id}").json()
    assert c["differences"]["optimizer.lr"] == [0.003, 0.01] and c["differences"]["seed"] == [0, 1]
    assert [len(r["history"]) for r in c["runs"]] == [2, 2] and c["hidden"] == []
    from trainlab.runs.admin import reindex
    from trainlab.runs.store import open_store
    twin = a.run_dir.parent / f"{a.run_id}-twin"  # a run with the same curves: drawn under the other's
    shutil.copytree(a.run_dir, twin)
    record = json.loads((twin / "run.json").read_text())
    (twin / "run.json").write_text(json.dumps({**record, "run_id": twin.name}))
    try:
        assert reindex(served[3])[0] == [twin.name]
        same = client.get(f"/api/v1/compare?runs={a.run_id},{twin.name}").json()
    finally:
        open_store(served[3]).remove(twin.name)
        shutil.rmtree(twin)
    assert same["hidden"] == [{"run": a.run_id, "under": twin.name, "epochs": 2}]
    assert "2 to 50 run ids" in one_line_error(client.get(f"/api/v1/compare?runs={a.run_id}"), 422)
    assert "1 distinct" in one_line_error(client.get(f"/api/v1/compare?runs={a.run_id},{a.run_id}"), 422)


def test_data_samples(served):
    client = served[0]
    r = client.get("/api/v1/datasets/mnist/samples?n=12&split=test").json()
    assert len(r["items"]) == 12 and r["items"][0]["class_name"] == "7" and r["items"][0]["image"].startswith("data:image/png")
    one_line_error(client.get("/api/v1/datasets/mnist/samples?split=dev"), 422)
    one_line_error(client.get("/api/v1/datasets/mnist/samples?n=100000"), 422)


def test_errors_confusion_matrix_and_a_cell(served):
    client, a, _, _ = served
    rep = client.get(f"/api/v1/runs/{a.run_id}/errors").json()
    cm = np.array(rep["confusion"])
    assert cm.shape == (10, 10) and cm.sum() == 300 and len(rep["per_class"]) == 10
    t, p = np.unravel_index(np.argmax(cm - np.diag(np.diag(cm))), cm.shape)  # the most frequent mistake
    cell = client.get(f"/api/v1/runs/{a.run_id}/errors/cell?true={t}&pred={p}").json()
    assert len(cell["items"]) == cm[t, p]
    losses = [it["loss"] for it in cell["items"]]
    assert losses == sorted(losses, reverse=True) and cell["items"][0]["image"].startswith("data:image/png")
    assert "class numbers" in one_line_error(client.get(f"/api/v1/runs/{a.run_id}/errors/cell?true=10&pred=0"), 422)


def test_predict_files_pixels_and_models(served, data_dir):
    client, a, b, settings = served
    models = client.get("/api/v1/models").json()
    # the newest completed run (no mnist-draw run here; a and b may start in the same second)
    assert models["default"] in (a.run_id, b.run_id) and len(models["models"]) == 2
    x, y = a.split("test")
    digit = x[0, 0].numpy()  # a test 7, light on dark
    r = client.post(f"/api/v1/predict?run={a.run_id}&top_k=3",
                    files=[("file", ("seven.png", png(255 - digit))), ("file", ("bad.png", b"not an image"))]).json()
    assert r["run_id"] == a.run_id and len(r["results"]) == 1 and len(r["results"][0]["top_k"]) == 3
    assert r["results"][0]["model_input"].startswith("data:image/png") and isinstance(r["results"][0]["ood"], bool)
    assert r["failures"] == [{"file": "bad.png", "error": "not an image PIL can read (PNG, JPEG, BMP, GIF, WebP, TIFF)"}]
    px = client.post(f"/api/v1/predict?run={a.run_id}", json={"pixels": x[:4, 0].tolist(), "top_k": 2}).json()
    expected = a.predict(x[:4].permute(0, 2, 3, 1).numpy()).labels
    assert [res["label"] for res in px["results"]] == list(expected)


def test_predict_refuses_bad_input(served):
    client, a, _, _ = served
    url = f"/api/v1/predict?run={a.run_id}"
    one_line_error(client.post(url, data={"other": "x"}), 422)
    one_line_error(client.post(url, json={"pixels": [[300, 2], [1, 2]]}), 422)
    one_line_error(client.post(url, json={"pixels": [[1, 2, 3]]}), 422)  # not the run's shape
    one_line_error(client.post(url, json={"pixels": "abc"}), 422)
    one_line_error(client.post(url, content=b"{", headers={"content-type": "application/json"}), 422)
    big = b"\0" * (9 << 20)
    one_line_error(client.post(url, files={"file": ("big.png", big)}), 413)
    # a decompression bomb: a tiny PNG that claims 50,000 x 50,000 pixels
    bomb = io.BytesIO()
    Image.new("1", (50_000, 50_000)).save(bomb, "PNG")
    # nothing readable: a one-line 422 that names the file and why (as the CLI's exit 2), not 200 with []
    err = one_line_error(client.post(url, files={"file": ("bomb.png", bomb.getvalue())}), 422)
    assert "bomb.png" in err and "limit" in err
    one_line_error(client.post(url + "&style=weird", files={"file": ("a.png", png(np.zeros((28, 28))))}), 422)


def test_train_page_api_validates_like_the_cli(served):
    client = served[0]
    names = [p["name"] for p in client.get("/api/v1/presets").json()["presets"]]
    assert "mnist-draw" in names and "mnist-mlp" in names
    schema = client.get("/api/v1/schema").json()
    assert "optimizer" in schema["properties"] and "$defs" in schema
    ok = client.post("/api/v1/validate", json={"preset": "mnist-mlp", "overrides": {"optimizer.lr": 0.5}}).json()
    assert ok["recipe"]["optimizer"]["lr"] == 0.5
    err = one_line_error(client.post("/api/v1/validate", json={"preset": "mnist-mlp", "overrides": {"optimizer.name": "adamw2"}}), 422)
    assert "optimizer.name" in err and "adam" in err
    err = one_line_error(client.post("/api/v1/train", json={"recipe_yaml": "data: {name: mnist}\nmodel: {layers: []}\nepochz: 3"}), 422)
    assert "epochz" in err
    assert "YAML" in one_line_error(client.post("/api/v1/train", json={"recipe_yaml": "a: [1"}), 422)
    one_line_error(client.post("/api/v1/train", json={}), 422)
    one_line_error(client.post("/api/v1/train", json={"preset": "nope"}), 422)
    one_line_error(client.post("/api/v1/train", content=b"[]", headers={"content-type": "application/json"}), 422)


def test_an_internal_error_is_one_line_json(served, monkeypatch):
    client, a, _, _ = served

    def boom(*_a, **_k):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr("trainlab.web.api_runs.read_history", boom)
    err = one_line_error(client.get(f"/api/v1/runs/{a.run_id}"), 500)
    assert err == "internal error: RuntimeError: disk on fire"


def test_a_token_guards_every_request(served):
    from trainlab.web.app import create_app
    settings = served[3]
    with TestClient(create_app(settings, token="s3cret"), raise_server_exceptions=False, base_url="http://127.0.0.1", headers={"X-Trainlab": "1"}) as client:
        assert "token" in one_line_error(client.get("/api/v1/runs"), 401)
        one_line_error(client.get("/api/v1/runs", headers={"Authorization": "Bearer wrong"}), 401)
        assert client.get("/api/v1/runs", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        first = client.get("/?token=s3cret")
        assert first.status_code == 200 and "trainlab_token" in first.headers.get("set-cookie", "")
        assert client.get("/api/v1/runs").status_code == 200  # the cookie now carries it
        one_line_error(client.get("/static/app.js", cookies={"trainlab_token": "nope"}), 401)


def wait_for(fn, timeout=90.0, every=0.2):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = fn()
        if got:
            return got
        time.sleep(every)
    raise AssertionError("timed out")


def test_jobs_train_stop_and_resume_in_worker_processes(served):
    client, _, _, settings = served
    recipe = dict(MNIST_TINY, name="job-run", epochs=40)
    job = client.post("/api/v1/train", json={"recipe_yaml": json.dumps(recipe)}).json()["job"]
    run_id = wait_for(lambda: client.get(f"/api/v1/jobs/{job['id']}").json()["run_id"])
    wait_for(lambda: (settings.runs_dir / run_id / "checkpoint.pt").is_file())
    assert client.post(f"/api/v1/runs/{run_id}/stop").json()["stopping"] is True
    wait_for(lambda: client.get(f"/api/v1/jobs/{job['id']}").json()["state"] == "interrupted")
    info = client.get(f"/api/v1/runs/{run_id}").json()
    assert info["record"]["status"] == "interrupted" and 0 < len(info["history"]) < 40
    assert info["record"]["precision"] == "fp32" and info["record"]["precision_reason"]  # chosen and recorded in the worker
    assert "still training" not in client.post(f"/api/v1/runs/{run_id}/resume").text
    wait_for(lambda: client.get(f"/api/v1/runs/{run_id}").json()["record"]["status"] == "completed", timeout=120)
    assert len(client.get(f"/api/v1/runs/{run_id}").json()["history"]) == 40
    assert "already completed" in one_line_error(client.post(f"/api/v1/runs/{run_id}/resume"), 409)
    # a queued job is cancelled by its stop
    jobs = [client.post("/api/v1/train", json={"recipe_yaml": json.dumps(recipe)}).json()["job"] for _ in range(2)]
    assert client.post(f"/api/v1/jobs/{jobs[1]['id']}/stop").json()["state"] == "cancelled"
    client.post(f"/api/v1/jobs/{jobs[0]['id']}/stop")
    wait_for(lambda: client.get(f"/api/v1/jobs/{jobs[0]['id']}").json()["state"] in ("interrupted", "cancelled", "completed"))


@pytest.mark.parametrize("after", ["submitted", "starting", "training"])
def test_a_job_stopped_while_it_starts_is_cancelled_or_interrupted_never_failed(served, after):
    client = served[0]
    recipe = dict(MNIST_TINY, name="quick-stop", epochs=40)
    job = client.post("/api/v1/train", json={"recipe_yaml": json.dumps(recipe)}).json()["job"]
    state = lambda: client.get(f"/api/v1/jobs/{job['id']}").json()  # noqa: E731
    if after == "starting":  # its worker process exists (it may be importing torch)
        wait_for(lambda: state()["state"] != "queued", every=0.01)
    elif after == "training":  # its run is recorded
        wait_for(lambda: state()["run_id"], every=0.05)
    client.post(f"/api/v1/jobs/{job['id']}/stop")
    end = wait_for(lambda: (j := client.get(f"/api/v1/jobs/{job['id']}").json())["state"] not in
                   ("queued", "starting", "running") and j)
    assert end["state"] in ("cancelled", "interrupted") and end["error"] is None, end


def test_stop_reaches_a_run_training_in_a_terminal(served, tmp_path):
    client, _, _, settings = served
    path = tmp_path / "long.yaml"
    path.write_text(json.dumps(dict(MNIST_TINY, name="terminal-run", epochs=200)))
    proc = subprocess.Popen([sys.executable, "-m", "trainlab", "train", str(path), "--runs-dir", str(settings.runs_dir),
                             "--data-dir", str(settings.data_dir), "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        row = wait_for(lambda: next((r for r in client.get("/api/v1/runs").json()["runs"]
                                     if r["recipe"] == "terminal-run" and r.get("progress")), None))
        assert row["live_status"] == "running" and 0 < row["progress"] < 1
        client.post(f"/api/v1/runs/{row['run_id']}/stop")
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130 and "trainlab train --resume" in out + err
    finally:
        proc.kill()
    assert client.get(f"/api/v1/runs/{row['run_id']}").json()["record"]["status"] == "interrupted"
    assert "not running" in one_line_error(client.post(f"/api/v1/runs/{row['run_id']}/stop"), 422)


def test_a_missing_dataset_error_keeps_its_fix(served, tmp_path):
    """The Data page shows the whole line (it used to end mid-sentence at 160 characters)."""
    from trainlab.web.app import create_app
    bare = served[3].with_(data_dir=tmp_path, cache_dir=tmp_path / "cache", system_data_dir=tmp_path / "none")
    with TestClient(create_app(bare), raise_server_exceptions=False, base_url="http://127.0.0.1") as client:
        msg = one_line_error(client.get("/api/v1/datasets/cifar10/samples"), 422)
    assert len(msg) > 160 and "Fix:" in msg and "or install it under" in msg, msg


def test_models_list_drawing_models_first_and_trials_after_your_runs(tmp_path):
    """Try it's default: mnist-draw, then other MNIST models, newest first, tuning trials after the
    runs you trained; a Fashion model never answers a drawn digit by default."""
    from trainlab.runs.record import DatasetInfo, Metrics, RunRecord
    from trainlab.runs.store import open_store
    from trainlab.settings import load_settings
    from trainlab.web.deps import DashboardModels, RunCache
    settings = load_settings(runs_dir=tmp_path)
    store = open_store(settings)

    def add(run_id, recipe, dataset, second, study=None):
        d = tmp_path / run_id
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"weights")
        rec = RunRecord(run_id=run_id, recipe=recipe, recipe_digest="d", status="completed", seed=0, study=study,
                        started_at=f"2026-12-01T10:00:0{second}+00:00", metrics=Metrics(test_acc=0.5),
                        dataset=DatasetInfo(name=dataset, classes=["a", "b"], n_train=1, n_val=0, n_test=1))
        store.record_start(rec, {}, d)
        store.record_end(rec)

    add("r-fashion", "fashion-mlp", "fashion-mnist", 5)
    add("r-trial", "mnist-mlp", "mnist", 4, study="walk")
    add("r-mnist", "mnist-mlp", "mnist", 1)
    add("r-draw", "mnist-draw", "mnist", 0)
    found = DashboardModels(settings, RunCache(settings)).servable()
    assert [m["run_id"] for m in found] == ["r-draw", "r-mnist", "r-trial", "r-fashion"]
    assert found[2]["study"] == "walk" and found[0]["dataset"] == "mnist"


def test_a_worker_that_floods_stderr_does_not_deadlock_its_job(tmp_path):
    # the worker writes 1 MB to stderr before its first stdout line: read one after the other, the
    # server waited on stdout while the worker waited for stderr's full 64 kB pipe to drain
    from trainlab.settings import load_settings
    from trainlab.web.jobs import JobQueue
    script = tmp_path / "noisy_worker.py"
    script.write_text("import json, sys\nsys.stdin.read()\nsys.stderr.write('x' * (1 << 20) + '\\nlast words\\n')\n"
                      "sys.stderr.flush()\nprint(json.dumps({'ready': True}), flush=True)\n"
                      "print(json.dumps({'end': 'failed', 'error': 'as planned'}), flush=True)\nsys.exit(3)\n")
    queue = JobQueue(load_settings(runs_dir=tmp_path / "runs"))
    queue.worker_command = [sys.executable, str(script)]
    try:
        job = queue.submit("noisy", recipe={"name": "x"})
        wait_for(lambda: job.state not in ("queued", "starting", "running"), timeout=60)
        assert job.state == "failed" and job.error == "as planned"
        queue.worker_command = [sys.executable, "-c", "import sys; sys.stderr.write('e' * 200000 + '\\nboom\\n'); sys.exit(1)"]
        crashed = queue.submit("crash", recipe={"name": "y"})
        wait_for(lambda: crashed.state not in ("queued", "starting", "running"), timeout=60)
        assert crashed.state == "failed" and crashed.error.endswith("boom")
    finally:
        queue.close()
