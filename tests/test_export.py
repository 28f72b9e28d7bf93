"""ONNX export (preparation inside the graph, verified before writing) and `trainlab serve`
(the predict API alone, through torch or onnxruntime)."""

from __future__ import annotations

import io
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from helpers import free_port, trainlab_here
from helpers import trainlab_cli as cli
from PIL import Image

from conftest import MNIST_TINY, write_tree  # noqa: E402

import trainlab  # noqa: E402
from trainlab.errors import TrainlabError  # noqa: E402
from trainlab.export import OnnxRun, export_onnx, to_graph_input  # noqa: E402
from trainlab.recipes import apply_overrides, validate  # noqa: E402
from trainlab.settings import load_settings  # noqa: E402

COLOUR_CNN = {"name": "colour-bn", "data": {"name": "TREE", "normalize": "standardize", "validation": "test"},
              "model": {"layers": [{"type": "conv2d", "filters": 4, "kernel_size": 3, "padding": "same", "use_bias": False},
                                   {"type": "batchnorm"}, {"type": "activation", "activation": "relu"},
                                   {"type": "maxpool", "pool_size": 2}, {"type": "flatten"},
                                   {"type": "dense", "units": 3, "activation": "softmax"}]},
              "tta": "flip", "optimizer": {"name": "adam", "lr": 0.01}, "batch_size": 8, "epochs": 2}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("export")
    settings = load_settings(runs_dir=root / "runs", data_dir=data_dir, offline=True)
    mlp = trainlab.train(validate(MNIST_TINY), settings=settings, progress="none")
    tree = write_tree(root / "tree", classes=("a", "b", "c"), per_class=12, size=(12, 10))
    cnn = trainlab.train(validate(apply_overrides(COLOUR_CNN, {"data.name": str(tree)})), settings=settings, progress="none")
    return settings, mlp, cnn


def test_an_mlp_exports_with_its_preparation_and_metadata(runs, tmp_path):
    import onnx
    settings, mlp, _ = runs
    report = export_onnx(mlp.run_id, tmp_path / "mlp.onnx", settings=settings)
    assert report.ok and report.images == 300 and report.max_abs_diff <= 1e-5 and report.top1_agree == 300
    assert "top-1 identical 300/300" in report.text()
    model = onnx.load(str(report.path))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["classes"] == '["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]' and meta["style"] == "digit"
    assert "mnist-tiny" in meta["recipe"] and meta["input"] == "uint8 (N, 28, 28)"
    inp = model.graph.input[0]
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [28, 28]  # dynamic batch
    served = OnnxRun(report.path)
    x, _ = mlp.split("test")
    for n in (1, 7):  # any batch size
        got = served.predict(x[:n].permute(0, 2, 3, 1).numpy())
        want = mlp.predict(x[:n].permute(0, 2, 3, 1).numpy())
        assert np.abs(got.probs - want.probs).max() < 1e-5 and list(got.labels) == list(want.labels)


def test_a_colour_batch_norm_cnn_with_flip_tta_exports(runs, tmp_path):
    settings, _, cnn = runs
    report = export_onnx(cnn.run_id, tmp_path, settings=settings)
    assert report.path == tmp_path / "model.onnx" and report.ok
    x, _ = cnn.split("test")
    assert to_graph_input(x).shape == (len(x), 10, 12, 3)  # (N, H, W, C) for colour runs


def test_mnist_tfjs_cnn_exports(data_dir, tmp_path):
    settings = load_settings(runs_dir=tmp_path / "runs", data_dir=data_dir, offline=True)
    run = trainlab.train("mnist-tfjs-cnn", overrides={"data.limit_train": 2000, "data.limit_test": 1000}, settings=settings,
                         progress="none")
    report = export_onnx(run, settings=settings)
    assert report.path == run.run_dir / "model.onnx" and report.ok and report.images == 1000


def test_a_disagreeing_graph_is_refused_and_nothing_is_written(runs, tmp_path, monkeypatch):
    settings, mlp, _ = runs
    monkeypatch.setattr("trainlab.export.verify", lambda *a: (3e-3, 299))
    with pytest.raises(TrainlabError, match=r"refused: .*top-1 identical 299/300\); nothing written"):
        export_onnx(mlp.run_id, tmp_path / "bad.onnx", settings=settings)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, message", [
    (["--format", "tflite"], "--format 'tflite': use onnx"),
    (["--opset", "9"], "--opset 9: use 14-23"),
    (["--out", "/no/such/dir/m.onnx"], "the folder /no/such/dir does not exist"),
])
def test_export_cli_refuses_bad_input(runs, args, message):
    settings, mlp, _ = runs
    r = trainlab_here("export", mlp.run_id, *args, "--runs-dir", settings.runs_dir)
    assert r.returncode == 2 and r.stderr.strip() == f"error: {r.stderr.strip()[7:]}" and message in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def png(arr) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.asarray(arr, np.uint8)).save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize("onnx", [False, True])
def test_serve_app_torch_and_onnx(runs, onnx, monkeypatch):
    from fastapi.testclient import TestClient

    from trainlab.web.serve import create_serve_app
    settings, mlp, _ = runs
    s = settings.with_(serve_run=mlp.run_id, serve_onnx=onnx or None, serve_timeout=5)
    with TestClient(create_serve_app(s), raise_server_exceptions=False, base_url="http://127.0.0.1") as client:
        health = client.get("/healthz").json()
        assert health["backend"] == ("onnxruntime" if onnx else "torch") and health["run_id"] == mlp.run_id
        assert [m["run_id"] for m in client.get("/api/v1/models").json()["models"]] == [mlp.run_id]
        x, _ = mlp.split("test")
        r = client.post("/api/v1/predict?top_k=2", files=[("file", (f"{i}.png", png(255 - x[i, 0].numpy()))) for i in range(3)])
        assert r.status_code == 200 and len(r.json()["results"]) == 3
        px = client.post("/api/v1/predict", json={"pixels": x[:5, 0].tolist()}).json()
        assert [res["label"] for res in px["results"]] == list(mlp.predict(x[:5].permute(0, 2, 3, 1).numpy()).labels)
        assert client.post("/api/v1/predict?run=other", json={"pixels": x[:1, 0].tolist()}).status_code == 404
        assert client.post("/api/v1/predict", json={"pixels": np.zeros((300, 28, 28), int).tolist()}).status_code == 413
        assert client.get("/api/v1/runs").status_code == 404  # only the predict API here
        monkeypatch.setattr("trainlab.web.api_predict.predict_pixels", lambda *a: time.sleep(6))
        r = client.post("/api/v1/predict", json={"pixels": x[:1, 0].tolist()})
        assert r.status_code == 504 and "took over 5 s" in r.json()["error"]


def test_serve_command_with_two_workers_and_its_errors(runs):
    settings, mlp, _ = runs
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "trainlab", "serve", mlp.run_id, "--onnx", "--workers", "2", "--port", str(port),
                             "--runs-dir", str(settings.runs_dir), "--data-dir", str(settings.data_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(150):
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
                break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail(proc.stderr.read() if proc.poll() is not None else "no answer")
        assert b"onnxruntime" in body
        busy = cli("serve", mlp.run_id, "--port", str(port), "--runs-dir", settings.runs_dir)
        assert busy.returncode == 2 and "cannot listen on 127.0.0.1" in busy.stderr and "Traceback" not in busy.stderr
    finally:
        proc.terminate()
        proc.wait(30)
    bad = cli("serve", "no-such-run", "--runs-dir", settings.runs_dir)
    assert bad.returncode == 2 and bad.stderr.startswith("error: no run 'no-such-run'")
