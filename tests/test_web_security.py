"""The dashboard and `trainlab serve` as an attack surface: the exact cross-site, DNS-rebinding,
symlink, path, YAML-bomb and upload requests of the bad-input corpus, and the states that must be
truthful (resume twice, deleted and finished runs' event streams, NaN, bad query values)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time

import pytest
from conftest import MNIST_TINY  # noqa: E402
from fastapi.testclient import TestClient

BASE = "http://127.0.0.1"


@pytest.fixture(scope="module")
def site(tmp_path_factory, data_dir):
    """A completed tiny MNIST run, an interrupted copy of it, and the dashboard over them."""
    import trainlab
    from trainlab.recipes import validate
    from trainlab.settings import load_settings
    from trainlab.web.app import create_app
    root = tmp_path_factory.mktemp("sec")
    settings = load_settings(runs_dir=root / "runs", data_dir=data_dir, offline=True)
    run = trainlab.train(validate(MNIST_TINY), settings=settings, progress="none")
    roots = root / "images"
    roots.mkdir()
    app = create_app(settings, data_roots=[str(roots)])
    with TestClient(app, raise_server_exceptions=False, base_url=BASE) as client:
        yield client, run, settings, roots


def refused(r, status=403) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error", "status"} and "\n" not in body["error"] and "Traceback" not in body["error"]
    return body["error"]


PAGE = {"X-Trainlab": "1"}


# --- cross-site requests -------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/api/v1/jobs/1/stop", "/api/v1/runs/{run}/stop", "/api/v1/runs/{run}/resume",
                                  "/api/v1/train", "/api/v1/validate", "/api/v1/predict",
                                  "/api/v1/health/checks", "/api/v1/health/corrections"])
def test_a_cross_site_form_post_is_refused(site, path):
    client, run, _, _ = site
    url = path.format(run=run.run_id)
    evil = {"Content-Type": "text/plain", "Origin": "http://evil.example"}
    assert "another origin" in refused(client.post(url, content=b"x", headers=evil))
    fetch = {"Content-Type": "text/plain", "Sec-Fetch-Site": "cross-site"}
    assert "cross-site" in refused(client.post(url, content=b"x", headers=fetch))
    assert "another origin" in refused(client.post(url, content=b"x", headers={"Origin": "null"}))
    # no Origin at all (an old browser, a form): without JSON or the page's header it is refused too
    assert "X-Trainlab" in refused(client.post(url, content=b"x", headers={"Content-Type": "text/plain"}))


def test_the_page_itself_and_scripts_still_change_things(site):
    client, run, _, _ = site
    same = {"Origin": BASE, "Sec-Fetch-Site": "same-origin", **PAGE}
    r = client.post("/api/v1/validate", json={"preset": "mnist-mlp"}, headers=same)
    assert r.status_code == 200, r.text
    r = client.post(f"/api/v1/runs/{run.run_id}/stop", headers=PAGE)  # curl -H 'X-Trainlab: 1'
    assert r.status_code == 422 and "refused" not in r.text  # past the guard: the route says the run is not live
    assert client.post("/api/v1/validate", json={"preset": "mnist-mlp"}).status_code == 200  # JSON needs a preflight
    assert client.get("/api/v1/runs", headers={"Origin": "http://evil.example"}).status_code == 200  # reads are not changes


def test_a_valid_token_passes_and_lower_case_bearer_is_fine(site):
    from trainlab.web.app import create_app
    _, _, settings, _ = site
    with TestClient(create_app(settings, token="s3cret"), raise_server_exceptions=False, base_url=BASE) as client:
        for scheme in ("Bearer", "bearer", "BEARER"):
            r = client.post("/api/v1/jobs/99/stop", headers={"Authorization": f"{scheme} s3cret"})
            assert r.status_code == 404, r.text  # past the guard and the token: no such job
        refused(client.post("/api/v1/jobs/99/stop", headers={"Authorization": "bearer nope", **PAGE}), 401)
        refused(client.post("/api/v1/jobs/99/stop", headers={"Authorization": "bearer nope"}), 403)  # nor is it the page


# --- DNS rebinding -------------------------------------------------------------------------------

@pytest.mark.parametrize("method,path", [("GET", "/"), ("GET", "/api/v1/runs"), ("GET", "/api/v1/runs/{run}/files/model.safetensors"),
                                         ("POST", "/api/v1/train"), ("GET", "/healthz")])
def test_a_foreign_host_header_is_refused(site, method, path):
    client, run, _, _ = site
    r = client.request(method, path.format(run=run.run_id), headers={"Host": "evil.example", **PAGE},
                       json={"preset": "mnist-mlp"} if method == "POST" else None)
    assert "evil.example" in refused(r) and "--allow-host" in refused(r)


def test_every_api_route_of_both_servers_is_guarded(site, tmp_path):
    """Not a list kept by hand: every route the dashboard and the predict server have under /api/ and
    /v2 (the Studies routes included) refuses a foreign Host and a request the browser marks as
    cross-site, whatever its method, before the route runs."""
    import re

    from trainlab.serving.server import create_serve_app
    from trainlab.web.app import create_app
    client, run, settings, _ = site
    checked = []
    for app in (create_app(settings), create_serve_app(settings.with_(serve_run=run.run_id))):
        with TestClient(app, raise_server_exceptions=False, base_url=BASE) as c:
            for route, methods in app.openapi()["paths"].items():  # every route the app declares
                if not route.startswith(("/api/", "/v2")):
                    continue
                path = re.sub(r"\{[^}]+\}", "x", route)
                for method in sorted(m.upper() for m in methods):
                    assert "evil.example" in refused(c.request(method, path, headers={"Host": "evil.example", **PAGE}))
                    assert "cross-site" in refused(c.request(method, path, headers={"Sec-Fetch-Site": "cross-site", **PAGE}))
                    checked.append((method, route))
    assert ("POST", "/api/v1/studies") in checked and ("GET", "/api/v1/studies/{name}") in checked
    assert any(p.startswith("/v2") for _, p in checked) and len(checked) > 30


def test_loopback_names_and_allowed_hosts_are_served(site):
    from trainlab.web.app import create_app
    client, _, settings, _ = site
    for host in ("localhost:8000", "127.0.0.1:8000", "[::1]:8000", "LOCALHOST"):
        assert client.get("/healthz", headers={"Host": host}).status_code == 200, host
    app = create_app(settings, allow_hosts=["box.lan"])
    with TestClient(app, raise_server_exceptions=False, base_url="http://box.lan") as other:
        assert other.get("/healthz").status_code == 200
        refused(other.get("/healthz", headers={"Host": "evil.example"}))


def test_trainlab_serve_checks_the_host_too(site):
    from trainlab.serving.server import create_serve_app
    _, run, settings, _ = site
    s = settings.with_(serve_run=run.run_id)
    with TestClient(create_serve_app(s), raise_server_exceptions=False, base_url=BASE) as client:
        refused(client.post("/api/v1/predict", json={"pixels": [[0] * 28] * 28}, headers={"Host": "evil.example"}))
        refused(client.post("/api/v1/predict", json={"pixels": [[0] * 28] * 28}, headers={"Origin": "http://evil.example"}))
        assert client.post("/api/v1/predict", json={"pixels": [[0] * 28] * 28}).status_code == 200
    with TestClient(create_serve_app(s, token="t0k"), raise_server_exceptions=False, base_url=BASE) as client:
        err = refused(client.get("/api/v1/models"), 401)
        assert "link" not in err and "Bearer" in err  # serve prints no link to open


# --- files never leave the run folder ------------------------------------------------------------

def test_downloads_do_not_follow_links(site, tmp_path):
    client, run, _, _ = site
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0\n")
    folder = run.run_dir
    saved = folder / "metrics.json"
    kept = saved.read_bytes()
    try:
        (folder / "events.jsonl").rename(folder / "events.keep")
        os.symlink(secret, folder / "events.jsonl")
        saved.unlink()
        os.symlink(secret, saved)
        for name in ("events.jsonl", "metrics.json"):
            r = client.get(f"/api/v1/runs/{run.run_id}/files/{name}")
            assert r.status_code == 404 and "root:x" not in r.text, r.text
        assert "metrics.json" not in client.get(f"/api/v1/runs/{run.run_id}").json()["files"]
        ok = client.get(f"/api/v1/runs/{run.run_id}/files/recipe.yaml")
        assert ok.status_code == 200 and "mnist-tiny" in ok.text
        refused(client.get(f"/api/v1/runs/{run.run_id}/files/..%2F..%2Fetc%2Fpasswd"), 404)
    finally:
        (folder / "events.jsonl").unlink()
        (folder / "events.keep").rename(folder / "events.jsonl")
        saved.unlink()
        saved.write_bytes(kept)


# --- page recipes name only allowed data ---------------------------------------------------------

@pytest.mark.parametrize("overrides", [{"data.name": "/etc"}, {"data.name": "../../etc"}, {"data.source": "/etc/x.zip"},
                                       {"data.name": "relative/tree"}])
def test_page_recipes_cannot_name_any_local_path(site, overrides):
    client = site[0]
    for route in ("/api/v1/validate", "/api/v1/train"):
        err = refused(client.post(route, json={"preset": "mnist-mlp", "overrides": overrides}))
        assert "mnist" in err and "data folders" in err and list(overrides)[0] in err


def test_page_recipes_may_use_builtin_data_and_the_given_roots(site):
    client, _, _, roots = site
    assert client.post("/api/v1/validate", json={"preset": "mnist-mlp", "overrides": {"data.name": "fashion-mnist"}}).status_code == 200
    inside = str(roots / "pets")
    assert client.post("/api/v1/validate", json={"preset": "mnist-mlp", "overrides": {"data.name": inside}}).status_code == 200


# --- YAML and upload limits ----------------------------------------------------------------------

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi"))


def test_a_yaml_alias_bomb_is_refused_at_once(site):
    client = site[0]
    assert len(BOMB) < 600
    err = refused(client.post("/api/v1/validate", json={"recipe_yaml": BOMB}), 422)
    assert "aliases" in err
    assert client.get("/healthz").status_code == 200


def test_yaml_limits_everywhere_recipes_and_spaces_are_read(tmp_path):
    from trainlab.errors import TrainlabError
    from trainlab.fileio import load_yaml
    from trainlab.recipes import load_recipe
    from trainlab.tuning.space import load_space
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    for load in (load_recipe, load_space):
        with pytest.raises(TrainlabError, match="aliases"):
            load(str(path))
    with pytest.raises(TrainlabError, match="deeper"):
        load_yaml("a: " + "[" * 80 + "]" * 80)
    with pytest.raises(TrainlabError, match="itself"):
        load_yaml("a: &x [*x]")
    assert load_yaml("a: &x [1, 2]\nb: *x") == {"a": [1, 2], "b": [1, 2]}  # ordinary aliases still work


@contextlib.contextmanager
def live_server(app):
    """The app under a real uvicorn on a free loopback port (the test client reads whole bodies and
    whole responses, so streaming cannot be tested through it)."""
    import socket
    import threading

    import uvicorn
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.05)
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


def test_a_chunked_upload_is_cut_off_at_the_limit_while_it_streams(site):
    """Over a real socket (the test client reads a body whole before the app sees it): a chunked
    upload with no Content-Length gets its 413 once 8 MB have come, not after 300 MB."""
    import select
    import socket
    client, run, _, _ = site
    with live_server(client.app) as port:
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(f"POST /api/v1/predict?run={run.run_id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Trainlab: 1\r\n"
                     "Content-Type: multipart/form-data; boundary=xx\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        head = b'--xx\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
        sock.sendall(b"%x\r\n%s\r\n" % (len(head), head))
        chunk = b"\0" * (1 << 20)
        sent, answer = 0, b""
        while sent < 300:
            if select.select([sock], [], [], 0)[0]:
                answer = sock.recv(65536)
                break
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:  # the server closed the connection after answering
                break
            sent += 1
        answer = answer or sock.recv(65536)
        sock.close()
        assert b" 413 " in answer.split(b"\r\n")[0], answer[:200]
        assert b"limit" in answer and sent < 40, sent  # cut off near the 8 MB limit


# --- truthful state ------------------------------------------------------------------------------

def test_two_quick_resumes_start_one_job(site, tmp_path):
    client, run, settings, _ = site
    from trainlab.runs.record import read_record
    rec = read_record(run.run_dir)
    clone = settings.runs_dir / (run.run_id[:-6] + "abc123")
    shutil.copytree(run.run_dir, clone)
    data = json.loads((clone / "run.json").read_text())
    data.update(run_id=clone.name, status="interrupted")
    (clone / "run.json").write_text(json.dumps(data))
    (clone / "checkpoint.pt").write_bytes(b"placeholder")  # the route checks it exists; the job is never run here
    app = client.app
    app.state.jobs.closed = True  # no worker picks the job up: only the queue's bookkeeping is under test
    try:
        first = client.post(f"/api/v1/runs/{clone.name}/resume", headers=PAGE)
        assert first.status_code == 200, first.text
        assert "being resumed" in refused(client.post(f"/api/v1/runs/{clone.name}/resume", headers=PAGE), 409)
    finally:
        app.state.jobs.closed = False
        for j in app.state.jobs.list():
            j.state = "cancelled"
    assert rec.status == "completed"


def test_event_streams_end_for_finished_and_deleted_runs(site):
    client, run, settings, _ = site
    text = client.get(f"/api/v1/runs/{run.run_id}/events").text
    last = max(int(line[4:]) for line in text.splitlines() if line.startswith("id: "))
    for after in (last, last + 100):  # a reconnect at or past the end of a completed run ends at once
        tail = client.get(f"/api/v1/runs/{run.run_id}/events", headers={"Last-Event-ID": str(after)}).text
        assert "event: end" in tail and "event: batch" not in tail
    for bad in ("9" * 5000, "١٢".encode(), "²".encode(), "-1", "abc"):
        refused(client.get(f"/api/v1/runs/{run.run_id}/events", headers={"Last-Event-ID": bad}), 422)
    gone = settings.runs_dir / (run.run_id[:-6] + "del000")
    shutil.copytree(run.run_dir, gone)
    data = json.loads((gone / "run.json").read_text())
    data.update(run_id=gone.name, status="running")
    (gone / "run.json").write_text(json.dumps(data))
    lines = (gone / "events.jsonl").read_text().splitlines()
    (gone / "events.jsonl").write_text("\n".join(lines[:3]) + "\n")  # no final status event
    import httpx
    seen = []
    with live_server(client.app) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as live:
        with live.stream("GET", f"/api/v1/runs/{gone.name}/events") as r:
            for line in r.iter_lines():
                seen.append(line)
                if line.startswith("id: 2"):
                    shutil.rmtree(gone)  # deleted while it is followed (its process, this one, lives on)
    assert "event: end" in seen and 'data: {"status": "missing"}' in seen


def test_a_diverged_run_is_json_with_nulls_not_a_500(site):
    client, run, settings, _ = site
    hist = run.run_dir / "history.csv"
    kept = hist.read_text()
    rows = kept.splitlines()
    head = rows[0].split(",")
    bad = rows[1].split(",")
    bad[head.index("loss")] = "nan"
    bad[head.index("val_loss")] = "inf"
    try:
        hist.write_text("\n".join([rows[0], ",".join(bad), *rows[2:]]) + "\n")
        r = client.get(f"/api/v1/runs/{run.run_id}")
        assert r.status_code == 200 and "NaN" not in r.text and "Infinity" not in r.text
        assert r.json()["history"][0]["loss"] is None
        assert client.get("/api/v1/runs").status_code == 200
    finally:
        hist.write_text(kept)
    raw = b'{"preset": "mnist-mlp", "overrides": {"optimizer.lr": Infinity}}'
    err = refused(client.post("/api/v1/validate", content=raw, headers={"Content-Type": "application/json"}), 422)
    assert "optimizer.lr" in err
    from trainlab.errors import TrainlabError
    from trainlab.recipes import load_recipe, parse_set
    with pytest.raises(TrainlabError, match="optimizer.lr"):
        load_recipe("mnist-mlp", parse_set(["optimizer.lr=.inf"]))  # --set optimizer.lr=.inf


def test_bad_query_values_and_pixel_shapes_are_one_line(site):
    client, run, _, _ = site
    assert "bogus" in refused(client.get("/api/v1/runs?status=bogus"), 422)
    assert client.get("/api/v1/runs?status=completed").status_code == 200
    err = refused(client.post(f"/api/v1/predict?run={run.run_id}", json={"pixels": [[0] * 1000] * 1000}), 422)
    assert "(1000, 1000)" in err and "28" in err  # one image of the wrong size, not "1000 images"
