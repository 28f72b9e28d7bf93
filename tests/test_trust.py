"""Trust, fourth round: the exact inputs of the bad-input and fault corpus (issue #38). Run folders
are untrusted input wherever they are read; settings come only from trainlab's own variables; run
ids are never paths; expensive reads refuse other sites; writers of corrections never lose a
decision; exports and answers never mislead."""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import MNIST_TINY, write_tree
from fastapi.testclient import TestClient
from helpers import trainlab_cli
from helpers import trainlab_here as cli

BASE = "http://127.0.0.1"
PAGE = {"X-Trainlab": "1"}
RUN_FILES = ["run.json", "recipe.yaml", "history.csv", "events.jsonl", "checkpoint.pt", "model.safetensors"]
TARGETS = ["/etc/passwd", "/dev/zero"]


@pytest.fixture(scope="module")
def world(tmp_path_factory, data_dir):
    import trainlab
    from trainlab.recipes import validate
    from trainlab.settings import load_settings
    root = tmp_path_factory.mktemp("trust")
    settings = load_settings(runs_dir=root / "runs", data_dir=data_dir, offline=True)
    run = trainlab.train(validate(MNIST_TINY), settings=settings, progress="none")
    return root, settings, run


def clone(world, run_id: str, **record) -> Path:
    """A copy of the world's run folder under another id (and `record` changes in its run.json)."""
    root, settings, run = world
    dest = settings.runs_dir / run_id
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(run.run_dir, dest, ignore=shutil.ignore_patterns(".lock"))
    data = json.loads((dest / "run.json").read_text())
    data.update(run_id=run_id, run_dir=str(dest), **record)
    (dest / "run.json").write_text(json.dumps(data))
    return dest


def one_line(r, *statuses) -> str:
    assert r.status_code in statuses, (r.status_code, r.text[:500])
    body = r.json()
    assert set(body) == {"error", "status"} and "\n" not in body["error"] and "Traceback" not in body["error"]
    return body["error"]


@pytest.fixture(scope="module")
def client(world):
    from trainlab.web.app import create_app
    _, settings, _ = world
    with TestClient(create_app(settings), raise_server_exceptions=False, base_url=BASE, headers=PAGE) as c:
        yield c


# --- 1. a run folder's files are never followed out, never read without bound -----------------------

@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", RUN_FILES)
def test_a_linked_run_file_is_refused_everywhere_it_is_read(world, client, name, target):
    run_id = f"linked-{name.replace('.', '-')}-{Path(target).name}"
    folder = clone(world, run_id)
    (folder / name).unlink()
    (folder / name).symlink_to(target)
    _, settings, _ = world
    env = {"TRAINLAB_RUNS": str(settings.runs_dir), "TRAINLAB_DATA": str(settings.data_dir)}
    answers = [client.get(f"/api/v1/runs/{run_id}"), client.get(f"/api/v1/report?runs={run_id}"),
               client.get(f"/api/v1/compare?runs={run_id}"), client.get(f"/api/v1/runs/{run_id}/errors"),
               client.get(f"/api/v1/runs/{run_id}/files/{name}"), client.get(f"/api/v1/runs/{run_id}/events")]
    for r in answers:
        assert r.status_code < 500 and "root:x:0:0" not in r.text and "daemon:" not in r.text, (r.url, r.text[:300])
        if r.status_code >= 400:
            one_line(r, r.status_code)
    commands = [["runs", "show", run_id], ["runs", "reindex"],
                ["report", run_id, "--out", str(folder.parent.parent / f"{run_id}.html")],
                ["runs", "export", run_id, "--tensorboard", str(folder.parent.parent / "tb")]]
    if target == "/dev/zero":  # the commands that load the model and data (seconds each): once per file
        commands.append(["evaluate", run_id, "--no-pictures"])
    for args in commands:
        p = cli(*args, extra_env=env)
        assert p.returncode in (0, 2) and "Traceback" not in p.stderr and "root:x:0:0" not in p.stdout + p.stderr, (args, p.stderr)
        if p.returncode == 2:
            assert len([x for x in p.stderr.splitlines() if x.startswith("error: ")]) == 1, p.stderr
    if name in ("recipe.yaml", "history.csv") or name == "run.json" and target == "/etc/passwd":
        assert answers[0].status_code == 422 and "symbolic link; refused" in answers[0].json()["error"]
    if name == "run.json" and target == "/dev/zero":  # not a run at all: no regular run.json to find it by
        assert answers[0].status_code == 404
    shutil.rmtree(folder)


def test_an_oversized_or_damaged_history_is_one_line(world, client):
    folder = clone(world, "huge-field")
    (folder / "history.csv").write_text("epoch,loss\n1," + "9" * 200_000 + "\n")
    err = one_line(client.get("/api/v1/runs/huge-field"), 422)
    assert "unreadable history" in err and "runs rm" in err
    big = clone(world, "huge-file")
    with open(big / "history.csv", "wb") as fh:  # a sparse 40 MB file: over the bound, never read whole
        fh.truncate(40 << 20)
    assert "refused" in one_line(client.get("/api/v1/runs/huge-file"), 422)
    p = cli("runs", "show", "huge-field", extra_env={"TRAINLAB_RUNS": str(world[1].runs_dir)})
    assert p.returncode in (0, 2) and "Traceback" not in p.stderr


def test_writes_never_go_through_a_link_in_a_resumed_run(world, tmp_path):
    # an interrupted run from elsewhere whose events.jsonl points at a file of yours: resuming it
    # must not append to that file
    victim = tmp_path / "victim.txt"
    victim.write_text("mine\n")
    folder = clone(world, "resume-link", status="interrupted")
    shutil.copy(world[2].run_dir / "model.safetensors", folder / "checkpoint-not.pt")
    (folder / "events.jsonl").unlink()
    (folder / "events.jsonl").symlink_to(victim)
    p = cli("train", "--resume", "resume-link", extra_env={"TRAINLAB_RUNS": str(world[1].runs_dir),
                                                           "TRAINLAB_DATA": str(world[1].data_dir)})
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert victim.read_text() == "mine\n"


def test_a_dashboard_over_a_dev_zero_run_stays_small_and_answers(world, tmp_path):
    # the dashboard as a user runs it, its runs folder holding a run whose every file links to /dev/zero
    runs = tmp_path / "runs"
    shutil.copytree(world[1].runs_dir / world[2].run_id, runs / "zeroes", ignore=shutil.ignore_patterns(".lock"))
    for name in RUN_FILES:
        (runs / "zeroes" / name).unlink()
        (runs / "zeroes" / name).symlink_to("/dev/zero")
    from helpers import free_port
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "trainlab", "dashboard", "--port", str(port), "--no-browser",
                             "--runs-dir", str(runs)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        import httpx
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/healthz", timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and proc.poll() is None, proc.communicate(timeout=5)
                time.sleep(0.1)
        for path in ("/api/v1/runs", "/api/v1/runs/zeroes", "/api/v1/runs/zeroes/events", "/api/v1/report?runs=zeroes",
                     "/api/v1/compare?runs=zeroes", "/api/v1/runs/zeroes/files/history.csv"):
            r = httpx.get(url + path, timeout=30)
            assert r.status_code < 500, (path, r.text[:300])
        rss_mb = int(next(line for line in open(f"/proc/{proc.pid}/status") if line.startswith("VmRSS")).split()[1]) / 1024
        assert rss_mb < 500, rss_mb
        assert httpx.get(f"{url}/healthz", timeout=5).json()["ok"]
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


# --- 2. settings only from trainlab's own variables; a token you gave is never printed ----------------

def test_unprefixed_variables_are_not_settings(tmp_path):
    from trainlab.settings import load_settings
    env = {"TOKEN": "ghp_SECRET", "DB": "postgresql://evil/db", "RUNS_DIR": "/tmp/evil", "THREADS": "abc",
           "runs_dir": "/tmp/evil2", "Token": "x", "STEP": "cuda-graph", "PRECISION": "fp16"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        s = load_settings()
        assert s.token is None and s.db is None and s.threads is None and s.step == "auto" and s.precision is None
        assert "evil" not in str(s.runs_dir)
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    p = cli("runs", "--runs-dir", tmp_path / "r", extra_env=env)
    assert p.returncode == 0, p.stderr


def test_a_token_you_gave_is_never_printed(world):
    from helpers import free_port
    _, settings, run = world
    for command in (["serve", run.run_id], ["dashboard", "--no-browser"]):
        port = free_port()
        env = {**os.environ, "TRAINLAB_TOKEN": "ghp_SECRETSECRET123", "TOKEN": "ghp_OTHER", "TRAINLAB_RUNS": str(settings.runs_dir)}
        proc = subprocess.Popen([sys.executable, "-m", "trainlab", *command, "--host", "0.0.0.0", "--port", str(port)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        lines = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not any(line.startswith("token") for line in lines):
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
        proc.terminate()
        out, err = proc.communicate(timeout=30)
        text = "".join(lines) + out + err
        assert "ghp_SECRETSECRET123" not in text and "ghp_OTHER" not in text, text
        assert "token: the one you gave" in text, text


# --- 3. a run id from run.json is never a path -----------------------------------------------------

@pytest.mark.parametrize("bad", ["../../x", "/tmp/abs", "a/b", ".hidden", ""])
def test_a_run_id_that_is_a_path_is_refused(world, tmp_path, bad):
    folder = clone(world, "traversal")
    data = json.loads((folder / "run.json").read_text())
    data["run_id"] = bad
    (folder / "run.json").write_text(json.dumps(data))
    out = tmp_path / "tb" / "inner"
    out.mkdir(parents=True)
    p = cli("runs", "export", "traversal", "--tensorboard", out, extra_env={"TRAINLAB_RUNS": str(world[1].runs_dir)})
    assert p.returncode == 2 and "run_id" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert sorted(p.name for p in (tmp_path / "tb").iterdir()) == ["inner"] and not list(out.iterdir())
    assert not Path("/tmp/abs").exists() or bad != "/tmp/abs"
    shutil.rmtree(folder)


# --- 4. expensive reads refuse other sites, are bounded and cached ------------------------------------

def test_the_report_refuses_other_sites_and_is_bounded_and_cached(world, client):
    run_id = world[2].run_id
    for site in ("cross-site", "same-site"):
        err = one_line(client.get(f"/api/v1/report?runs={run_id}", headers={"Sec-Fetch-Site": site}), 403)
        assert "another web page" in err
        one_line(client.get("/api/v1/runs", headers={"Sec-Fetch-Site": site}), 403)
    assert client.get("/", headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}).status_code == 200  # a link
    assert "1 to 20 run ids" in one_line(client.get("/api/v1/report?runs=" + ",".join([run_id] * 1 + [f"x{i}" for i in range(21)])), 422)
    t0 = time.perf_counter()
    first = client.get(f"/api/v1/report?runs={run_id}", headers={"Sec-Fetch-Site": "same-origin"})
    t1 = time.perf_counter()
    again = client.get(f"/api/v1/report?runs={run_id}")
    t2 = time.perf_counter()
    assert first.status_code == again.status_code == 200 and first.text == again.text
    assert client.app.state.reports.built  # kept: the second answer came from the cache
    del t0, t1, t2


# --- tracebacks and 500s ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def served(world):
    from trainlab.serving.server import create_serve_app
    _, settings, run = world
    app = create_serve_app(settings.with_(serve_run=run.run_id))
    with TestClient(app, raise_server_exceptions=False, base_url=BASE) as c:
        yield c, run


@pytest.mark.parametrize("value", ["²".encode("latin-1"), "٣".encode(), b"9" * 5000, b"-1", b" 12", b"1e3"])
def test_odd_inference_header_lengths_are_400(served, value):
    c, run = served  # '²' as its one latin-1 byte: a server decodes it to a character str.isdigit() calls a digit
    body = json.dumps({"inputs": [{"name": "images", "shape": [1, 28, 28], "datatype": "UINT8", "data": [0] * 784}]})
    r = c.post(f"/v2/models/{run.run_id}/infer", content=body.encode(), headers={"Inference-Header-Content-Length": value})
    assert "Inference-Header-Content-Length" in one_line(r, 400)


def test_floats_are_not_uint8_data(served):
    c, run = served
    for data in ([0.5] * 784, [True] * 784, ["7"] * 784):
        body = {"inputs": [{"name": "images", "shape": [1, 28, 28], "datatype": "UINT8", "data": data}]}
        assert "whole numbers" in one_line(c.post(f"/v2/models/{run.run_id}/infer", json=body), 400)


def test_a_deep_yaml_is_one_line_in_the_cli_and_the_api(client, tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text("- " * 20000 + "x\n")  # a 20,000-deep list, 40 kB
    p = cli("show", deep)
    assert p.returncode == 2 and "nested deeper than" in p.stderr and len(p.stderr.splitlines()) == 1, p.stderr[:500]
    r = client.post("/api/v1/validate", json={"recipe_yaml": deep.read_text()})
    assert "nested deeper than" in one_line(r, 422)
    nested = '{"a":' * 5000 + "{}" + "}" * 5000  # a JSON body nested 5,000 deep
    r = client.post("/api/v1/validate", content='{"preset": "mnist-mlp", "overrides": ' + nested + "}",
                    headers={"Content-Type": "application/json"})
    assert r.status_code in (400, 422) and "Traceback" not in r.text and set(r.json()) == {"error", "status"}


@pytest.fixture
def tiny_fs(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (this process is not root)")
    mnt = tmp_path / "small"
    mnt.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_tensorboard_export_onto_bad_places_is_one_line(world, tmp_path):
    run_id, env = world[2].run_id, {"TRAINLAB_RUNS": str(world[1].runs_dir)}
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for target, why in ((a_file, "is a file"), ("/dev/null", "is a file"), ("/proc/tb", "cannot write")):
        p = cli("runs", "export", run_id, "--tensorboard", target, extra_env=env)
        assert p.returncode == 2 and "Traceback" not in p.stderr and why in p.stderr, (target, p.stderr)


def test_tensorboard_export_on_a_full_disk_is_one_line(world, tiny_fs):
    p = cli("runs", "export", world[2].run_id, "--tensorboard", tiny_fs, extra_env={"TRAINLAB_RUNS": str(world[1].runs_dir)})
    assert p.returncode in (0, 2) and "Traceback" not in p.stderr, p.stderr
    if p.returncode == 2:
        assert "no space left" in p.stderr and not [x for x in tiny_fs.iterdir() if not x.name.startswith(".")]


def test_an_mlflow_server_that_does_not_answer_is_one_line_at_once(world):
    t0 = time.monotonic()
    p = cli("runs", "export", world[2].run_id, "--mlflow", "http://127.0.0.1:1", extra_env={"TRAINLAB_RUNS": str(world[1].runs_dir)})
    assert p.returncode == 2 and "no tracking server answers" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert time.monotonic() - t0 < 60  # not MLflow's minutes of retries (a bound, not a timing claim)


# --- lost or mixed decisions ------------------------------------------------------------------------

def test_thirty_parallel_decisions_from_the_page_are_all_kept(client, world):
    def decide(i):
        return client.post("/api/v1/health/corrections", json={"dataset": "mnist", "split": "test", "index": i,
                                                                "action": "exclude"}).status_code
    with concurrent.futures.ThreadPoolExecutor(30) as pool:
        assert set(pool.map(decide, range(30))) == {200}
    listed = client.get("/api/v1/health/corrections?dataset=mnist").json()
    assert sorted(d["index"] for d in listed["decisions"]) == list(range(30))


def test_six_parallel_data_fix_commands_keep_every_decision(tmp_path, data_dir):
    fixes = tmp_path / "fixes.yaml"
    first = trainlab_cli("data", "fix", fixes, "--dataset", "mnist", "--exclude", "test:100", "--data-dir", data_dir)
    assert first.returncode == 0, first.stderr
    procs = [subprocess.Popen([sys.executable, "-m", "trainlab", "data", "fix", str(fixes), "--exclude", f"test:{i}",
                               "--data-dir", str(data_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(6)]
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0 and "1 decision added" in out, err
    from trainlab.data.corrections import read_corrections
    assert sorted(c.index for c in read_corrections(fixes).items) == [0, 1, 2, 3, 4, 5, 100]


def test_two_trees_of_one_name_keep_their_own_decisions(tmp_path, data_dir):
    from trainlab.data.corrections import Correction, read_corrections, update_corrections
    from trainlab.data.registry import load_dataset
    from trainlab.errors import DataError
    a = write_tree(tmp_path / "a" / "photos", classes=("cat", "dog"), per_class=4)
    b = write_tree(tmp_path / "b" / "photos", classes=("cat", "dog", "owl"), per_class=4)
    ds_a, ds_b = load_dataset(str(a)), load_dataset(str(b))
    assert ds_a.name == ds_b.name == "photos"
    fixes = tmp_path / "a-fixes.yaml"
    update_corrections(fixes, ds_a, [Correction("train", "exclude", file=ds_a.files["train"][0])])
    assert read_corrections(fixes).fingerprint
    with pytest.raises(DataError, match="another image tree named 'photos'"):
        update_corrections(fixes, ds_b, [Correction("train", "exclude", file=ds_b.files["train"][0])])
    from trainlab.settings import load_settings
    from trainlab.web.api_health import corrections_path
    s = load_settings(runs_dir=tmp_path / "runs")
    assert corrections_path(s, str(a), ds_a) != corrections_path(s, str(b), ds_b)


def test_evaluate_says_when_the_corrections_file_changed_since_training(tmp_path, data_dir):
    fixes = tmp_path / "fixes.yaml"
    assert trainlab_cli("data", "fix", fixes, "--dataset", "mnist", "--exclude", "test:0", "--data-dir", data_dir).returncode == 0
    runs = tmp_path / "runs"
    p = cli("train", "mnist-mlp", "--epochs", "1", "--set", "data.limit_train=1000", "--set", "data.limit_test=200",
            "--set", f"data.corrections={fixes}", "--quiet", "--json", "--runs-dir", runs, "--data-dir", data_dir)
    run_id = json.loads(p.stdout.splitlines()[-1])["run_id"]
    same = cli("evaluate", run_id, "--no-pictures", "--runs-dir", runs, "--data-dir", data_dir)
    assert same.returncode == 0 and "changed since" not in same.stderr
    assert trainlab_cli("data", "fix", fixes, "--exclude", "test:1", "--data-dir", data_dir).returncode == 0
    changed = cli("evaluate", run_id, "--no-pictures", "--runs-dir", runs, "--data-dir", data_dir)
    assert changed.returncode == 0 and "warning: the corrections file" in changed.stderr and "changed since" in changed.stderr


# --- states and results that mislead ----------------------------------------------------------------

def test_an_mlflow_export_cut_short_is_made_again(world, tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id, env = world[2].run_id, {"TRAINLAB_RUNS": str(world[1].runs_dir)}
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("trainlab", artifact_location=(tmp_path / "mlruns").as_uri())
    client.create_run(exp, tags={"trainlab.run_id": run_id})  # what a kill -9 mid-export leaves: RUNNING
    p = cli("runs", "export", run_id, "--mlflow", uri, extra_env=env, cwd=tmp_path)
    assert p.returncode == 0 and "MLflow run" in p.stdout and "artifacts" in p.stdout, p.stderr
    runs = client.search_runs([exp], f"tags.`trainlab.run_id` = '{run_id}'")
    assert [r.info.status for r in runs] == ["FINISHED"]
    started = world[2].run_dir / "run.json"
    rec = json.loads(started.read_text())
    from datetime import datetime
    assert abs(runs[0].info.start_time / 1000 - datetime.fromisoformat(rec["started_at"]).timestamp()) < 2
    again = cli("runs", "export", run_id, "--mlflow", uri, extra_env=env, cwd=tmp_path)
    assert "skipped" in again.stdout and len(client.search_runs([exp])) == 1
    assert not (tmp_path / "mlruns" / "x").exists()


def test_a_recipe_name_cannot_break_the_reports_script(world, tmp_path):
    from trainlab.analysis.report import inline_json
    text = inline_json({"name": "<!--<script>", "x": "</script><b>&"})
    assert "<" not in text and ">" not in text and "&" not in text and json.loads(text)["name"] == "<!--<script>"
    folder = clone(world, "scripty")
    (folder / "recipe.yaml").write_text((folder / "recipe.yaml").read_text().replace("name: mnist-tiny", "name: <!--<script>"))
    out = tmp_path / "r.html"
    p = cli("report", "scripty", "--out", out, extra_env={"TRAINLAB_RUNS": str(world[1].runs_dir)})
    assert p.returncode == 0, p.stderr
    html = out.read_text()
    data = html.split('<script id="report-data" type="application/json">', 1)[1].split("</script>", 1)[0]
    assert "<" not in data and json.loads(data)


# A photo graph's refusals of what no photo is: tests/test_export.py, on the graph it exports anyway.


def test_a_diverged_run_answers_nothing_anywhere(world, client, tmp_path):
    import trainlab
    from trainlab.recipes import validate
    _, settings, _ = world
    with pytest.raises(trainlab.TrainlabError):
        trainlab.train(validate({**MNIST_TINY, "name": "diverges", "optimizer": {"name": "sgd", "lr": 1e30},
                                 "data": {**MNIST_TINY["data"], "normalize": "none"}}), settings=settings, progress="none")
    failed = next(r for r in json.loads(cli("runs", "--json", extra_env={"TRAINLAB_RUNS": str(settings.runs_dir)}).stdout)
                  if r["recipe"] == "diverges")
    if (settings.runs_dir / failed["run_id"] / "model.safetensors").is_file():
        r = client.post(f"/api/v1/predict?run={failed['run_id']}", json={"pixels": [[0] * 28] * 28})
        assert "failed" in one_line(r, 422) or "NaN" in one_line(r, 422)
        p = cli("predict", failed["run_id"], "--test-index", "0", extra_env={"TRAINLAB_RUNS": str(settings.runs_dir),
                                                                             "TRAINLAB_DATA": str(settings.data_dir)})
        assert p.returncode == 2 and "nan" not in p.stdout.lower(), p.stdout
    nan_run = clone(world, "nan-weights")
    from safetensors.torch import load_file, save_file
    w = load_file(nan_run / "model.safetensors")
    first = next(iter(w))
    w[first][0] = float("nan")
    save_file(w, nan_run / "model.safetensors")
    r = client.post("/api/v1/predict?run=nan-weights", json={"pixels": [[0] * 28] * 28})
    assert "NaN or infinity" in one_line(r, 422)
    p = cli("evaluate", "nan-weights", "--no-pictures", extra_env={"TRAINLAB_RUNS": str(settings.runs_dir),
                                                                   "TRAINLAB_DATA": str(settings.data_dir)})
    assert p.returncode == 2 and "diverged" in p.stderr


def test_the_minor_cases(world, client, served, tmp_path, data_dir):
    env = {"TRAINLAB_RUNS": str(world[1].runs_dir), "TRAINLAB_DATA": str(data_dir)}
    for limit in ("0", "-5", "3"):
        p = cli("data", "check", "mnist", "--limit", limit, extra_env=env)
        assert p.returncode == 2 and "--limit" in p.stderr and "Traceback" not in p.stderr, p.stderr
    missing = tmp_path / "no" / "such" / "folder"
    for args in (["data", "check", "mnist", "--limit", "50", "--picture", missing / "x.png"],
                 ["evaluate", world[2].run_id, "--out", missing / "deeper"], ["report", world[2].run_id, "--out", missing / "r.html"],
                 ["plot", world[2].run_id, "--out", missing / "c.png"]):
        p = cli(*args, extra_env=env)
        assert p.returncode == 2 and "does not exist" in p.stderr, (args, p.stderr)
    assert not (tmp_path / "no").exists()  # no folder made for a path that was refused
    from trainlab.serving.card import cell
    assert cell("cat|dog") == "cat\\|dog"
    stale = clone(world, "stale-run", status="running", process={"pid": 999999, "host": os.uname().nodename,
                                                                 "boot_id": "x", "started": 0.0})
    cli("runs", "reindex", extra_env=env)
    listed = client.get("/api/v1/runs?status=running").json()["runs"]
    assert "stale-run" not in [r["run_id"] for r in listed]
    shutil.rmtree(stale)


def test_a_killed_exports_temp_file_is_cleaned_by_the_next(world, tmp_path):
    import trainlab
    from trainlab.fileio import remove_stale_temps
    _, settings, run = world
    leftover = run.run_dir / ".model.onnx.pid999999.abcd.tmp"  # what kill -9 of an export left (pid gone)
    leftover.write_bytes(b"")
    trainlab.export_onnx(run.run_id, settings=settings, check_images=50)
    assert not leftover.exists() and (run.run_dir / "model.onnx").is_file()
    assert remove_stale_temps(run.run_dir, "model.onnx") == []
