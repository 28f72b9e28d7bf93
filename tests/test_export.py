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
from conftest import MNIST_TINY, write_tree  # noqa: E402
from helpers import free_port, trainlab_here
from helpers import trainlab_cli as cli
from PIL import Image

import trainlab  # noqa: E402
from trainlab.errors import TrainlabError  # noqa: E402
from trainlab.recipes import apply_overrides, validate  # noqa: E402
from trainlab.serving.export import OnnxRun, export_onnx, photo_array, to_graph_input  # noqa: E402
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
    monkeypatch.setattr("trainlab.serving.export.verify", lambda *a: (3e-3, 299))
    with pytest.raises(TrainlabError, match=r"refused: .*top-1 identical 299/300\); nothing written"):
        export_onnx(mlp.run_id, tmp_path / "bad.onnx", settings=settings)
    assert list(tmp_path.iterdir()) == []


def photo_bytes(im: Image.Image, fmt: str = "JPEG") -> bytes:
    out = io.BytesIO()
    im.save(out, fmt)
    return out.getvalue()


def test_the_photo_preparation_as_tensors_is_pils_pixel_for_pixel():
    """graph_prep.py (what a --prepare full graph holds) against images.prepare_image (what
    `trainlab predict` does to a file) for each style, on photos of every size and layout."""
    import torch

    from trainlab.data import handwriting, images
    from trainlab.serving import graph_prep
    rng = np.random.default_rng(0)
    drawn, _ = handwriting.drawn_digits(1, seed=3)
    ink = np.asarray(images.open_image(drawn[7]))
    photo = Image.open(io.BytesIO(handwriting.photograph(ink, rng, size=300))).convert("RGB")
    rgba = np.asarray(photo.convert("RGBA")).copy()
    rgba[..., 3] = rng.integers(0, 256, rgba.shape[:2])
    cases = [drawn[7], photo_bytes(photo), photo_bytes(photo.resize((901, 677))), photo_bytes(photo.resize((120, 400))),
             photo_bytes(photo.resize((9, 13))), photo_bytes(Image.fromarray(rgba, "RGBA"), "PNG"),
             photo_bytes(Image.new("RGB", (50, 40), (200, 190, 180))), photo_bytes(photo.convert("L"), "PNG")]
    for style, shape in [("digit", (1, 28, 28)), ("fashion", (1, 28, 28)), ("photo", (1, 28, 28)), ("photo", (3, 32, 24)),
                         ("digit", (1, 20, 20))]:
        prepare = graph_prep.PreparePhoto(style, shape)
        for data in cases:
            want = images.prepare_image(images.open_image(data), style, shape)
            got = prepare(torch.from_numpy(photo_array(data).copy()))[0].permute(1, 2, 0).numpy()
            assert got.shape == want.shape and np.array_equal(got, want.astype(np.float32)), (style, shape)


def test_images_resample_is_pils_resize_in_a_fixed_order():
    from trainlab.data.images import resample
    rng = np.random.default_rng(1)
    for (h, w), (nh, nw) in [((180, 60), (20, 7)), ((100, 80), (28, 20)), ((280, 280), (28, 28)), ((30, 40), (60, 80))]:
        im = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8))
        for kind, pil in (("lanczos", Image.LANCZOS), ("bilinear", Image.BILINEAR)):
            across = im.resize((nw, h), pil).resize((nw, nh), pil)  # horizontal, then vertical: one way PIL may go
            assert np.array_equal(np.asarray(resample(im, (nw, nh), kind)), np.asarray(across))
        reduced = im.resize((nw, nh), Image.BILINEAR, reducing_gap=3.0)
        assert np.abs(np.asarray(resample(im, (nw, nh), "bilinear", 3.0), float) - np.asarray(reduced, float)).max() <= 1


def test_export_prepare_full_takes_any_photo_and_agrees_with_predict(runs, tmp_path):
    """`trainlab export --prepare full`: the graph takes a decoded photo of any size and gives what
    `trainlab predict` gives for the file."""
    import json

    import onnx
    settings, mlp, _ = runs
    r = trainlab_here("export", mlp.run_id, "--prepare", "full", "--runs-dir", settings.runs_dir, "--data-dir",
                      settings.data_dir)
    assert r.returncode == 0, r.stderr
    path = mlp.run_dir / "model-full.onnx"
    assert f"exported {path}" in r.stdout and "any photo in" in r.stdout and "drawn digits and photographed test images" in r.stdout
    agree = r.stdout.split("top-1 identical ")[1].split(",")[0]
    got, total = map(int, agree.split("/"))
    assert total >= 200 and got >= 0.995 * total
    model = onnx.load(str(path))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["prepare"] == "full" and meta["style"] == "digit" and "any size" in meta["input"]
    assert len(model.graph.input[0].type.tensor_type.shape.dim) == 3
    from trainlab.data import handwriting, images
    ink = np.asarray(images.open_image(handwriting.drawn_digits(1, seed=9)[0][3]))
    photos = []
    for i, (w, h) in enumerate([(160, 160), (1200, 900), (300, 700)]):
        photos.append(tmp_path / f"photo{i}.jpg")
        Image.open(io.BytesIO(handwriting.photograph(ink, np.random.default_rng(i), size=200))).resize((w, h)).save(photos[-1])
    served = OnnxRun(path)
    onnx_preds = served.predict_photos([str(p) for p in photos])
    cli_preds = trainlab_here("predict", mlp.run_id, *map(str, photos), "--json", "--runs-dir", settings.runs_dir,
                              "--data-dir", settings.data_dir)
    assert cli_preds.returncode == 0, cli_preds.stderr
    want = [json.loads(line) for line in cli_preds.stdout.splitlines() if line.startswith("{")]
    assert [w["class_name"] for w in want] == onnx_preds.class_names
    assert np.allclose([w["probability"] for w in want], onnx_preds.probs.max(1), atol=1e-3)
    with pytest.raises(TrainlabError, match="takes photos"):
        served.predict(np.zeros((1, 28, 28, 1), np.uint8))
    # what no photo is: one line each, never onnxruntime's error (trust round 4, #38)
    for bad, why in ((np.zeros((20, 20, 2), np.uint8), "1, 3 or 4 channels"), (np.zeros((20, 20, 5), np.uint8), "channels"),
                     (np.zeros((0, 0, 3), np.uint8), "empty image"), (np.full((20, 20), 300, np.uint16), "0-255"),
                     (np.full((20, 20), 0.5), "uint8")):
        with pytest.raises(TrainlabError, match=why):
            served.predict_photos([bad])
    assert len(served.predict_photos([np.zeros((20, 20, 3), np.uint8)]).probs) == 1


@pytest.mark.parametrize("args, message", [
    (["--prepare", "all"], "--prepare 'all': use dataset (dataset-format arrays in) or full (any photo in)"),
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

    from trainlab.serving.server import create_serve_app
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


def wait_for_server(port: int, proc, token: str | None = None) -> None:
    for _ in range(150):
        try:
            req = urllib.request.Request(f"http://127.0.0.1:{port}/healthz", headers={"Authorization": f"Bearer {token}"} if token else {})
            urllib.request.urlopen(req, timeout=1)
            return
        except OSError:
            if proc.poll() is not None:
                pytest.fail(proc.stderr.read())
            time.sleep(0.2)
    pytest.fail("the server did not answer")


def test_the_open_inference_protocol_with_tritonclient(runs):
    """KServe V2 on `trainlab serve`, spoken by Triton's own HTTP client: health, metadata, and
    inference on 100 test images (binary tensors, tritonclient's default, and JSON) with the same
    top-1 as `trainlab predict`; its errors are one line, and the token is needed."""
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException
    settings, mlp, _ = runs
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "trainlab", "serve", mlp.run_id, "--port", str(port), "--token", "t0ken",
                             "--runs-dir", str(settings.runs_dir), "--data-dir", str(settings.data_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_server(port, proc, "t0ken")
        auth = {"Authorization": "Bearer t0ken"}  # passed as a copy: tritonclient adds its own headers to the dict
        client = triton.InferenceServerClient(f"127.0.0.1:{port}")
        assert client.is_server_live(headers=dict(auth)) and client.is_server_ready(headers=dict(auth))
        assert client.is_model_ready(mlp.run_id, headers=dict(auth)) and client.is_model_ready(mlp.recipe.name, headers=dict(auth))
        meta = client.get_model_metadata(mlp.run_id, headers=dict(auth))
        assert meta["inputs"] == [{"name": "images", "datatype": "UINT8", "shape": [-1, 28, 28]}]
        assert meta["outputs"][0] == {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}
        x, _ = mlp.split("test")
        images = x[:100, 0].cpu().numpy()
        want = mlp.predict(x[:100].permute(0, 2, 3, 1).numpy())
        for binary in (True, False):
            tensor = triton.InferInput("images", list(images.shape), "UINT8")
            tensor.set_data_from_numpy(images, binary_data=binary)
            outputs = [triton.InferRequestedOutput(n, binary_data=binary) for n in ("probabilities", "class_name")]
            got = client.infer(mlp.run_id, [tensor], outputs=outputs, headers=dict(auth))
            probs = got.as_numpy("probabilities")
            assert probs.shape == (100, 10) and list(probs.argmax(1)) == list(want.labels)
            assert np.abs(probs - want.probs).max() < 1e-5
            assert [n.decode() if isinstance(n, bytes) else n for n in got.as_numpy("class_name")] == want.class_names
        wrong = triton.InferInput("images", [1, 5, 5], "UINT8")
        wrong.set_data_from_numpy(np.zeros((1, 5, 5), np.uint8))
        with pytest.raises(InferenceServerException, match=r"shape \[1, 5, 5\]; this model takes \[-1, 28, 28\]"):
            client.infer(mlp.run_id, [wrong], headers=dict(auth))
        floats = triton.InferInput("images", [1, 28, 28], "FP32")
        floats.set_data_from_numpy(np.zeros((1, 28, 28), np.float32))
        with pytest.raises(InferenceServerException, match="send UINT8 raw pixels"):
            client.infer(mlp.run_id, [floats], headers=dict(auth))
        import urllib.error
        bad = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/{mlp.run_id}/infer", data=b'{"inputs": 3}',
                                     headers={**auth, "Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(bad)
        assert refused.value.code == 400 and "not an inference request: inputs: Input should be a valid array" in refused.value.read().decode()
        with pytest.raises(InferenceServerException, match="no model 'other' here"):
            client.get_model_metadata("other", headers=dict(auth))
        with pytest.raises(InferenceServerException, match="needs its token"):
            client.is_server_live() or client.get_model_metadata(mlp.run_id)
    finally:
        proc.terminate()
        proc.wait(30)
