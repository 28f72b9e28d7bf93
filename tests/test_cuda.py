"""The CUDA path, run for real where a GPU exists (bench/gpu_check.sh runs these on a lent one):
the loop with data on the device and bf16 autocast, a checkpoint saved on the GPU resumed on the CPU
and back, export of a GPU-trained run, predict on the GPU, and the 2-GPU code path. Each test
skips with its reason where CUDA (or a second GPU) is missing, as on CI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import MNIST_TINY

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="fewer than 2 CUDA devices here")
CNN_TINY = {**MNIST_TINY, "name": "cnn-tiny", "data": {**MNIST_TINY["data"], "flatten": False},
            "model": {"layers": [{"type": "conv2d", "filters": 8, "kernel_size": 3, "activation": "relu"},
                                 {"type": "maxpool", "pool_size": 2}, {"type": "flatten"},
                                 {"type": "dense", "units": 10, "activation": "softmax"}]}}


def _settings(tmp_path, data_dir):
    from trainlab.settings import load_settings
    return load_settings(runs_dir=tmp_path / "runs", data_dir=data_dir, offline=True)


@cuda
@pytest.mark.parametrize("recipe", [MNIST_TINY, CNN_TINY], ids=["dense", "cnn"])
def test_the_loop_trains_on_the_gpu_with_data_on_the_device(tmp_path, data_dir, recipe):
    import trainlab
    from trainlab.recipes import validate
    run = trainlab.train(validate(recipe), settings=_settings(tmp_path, data_dir), device="cuda", progress="none")
    assert run.device.type == "cuda" and next(run.model.parameters()).is_cuda
    assert run.metrics["test_acc"] > 0.5 and run.data.x_train.is_cuda and run.data.x_train.dtype == torch.uint8
    rec = json.loads((run.run_dir / "run.json").read_text())
    assert rec["device"].startswith("cuda") and rec["status"] == "completed"


@cuda
def test_a_gpu_checkpoint_resumes_on_the_cpu_and_back(tmp_path, data_dir):
    import trainlab
    from trainlab.errors import StopRun
    from trainlab.recipes import validate
    settings = _settings(tmp_path, data_dir)

    class StopAfterOne(trainlab.Callback):
        def on_epoch_end(self, state, epoch, logs):
            if epoch == 0:
                state.stop.set()

    import threading
    stop = threading.Event()
    recipe = validate({**CNN_TINY, "epochs": 3})
    with pytest.raises(StopRun) as info:
        trainlab.train(recipe, settings=settings, device="cuda", progress="none", stop=stop, callbacks=[StopAfterOne()])
    run_id = info.value.run_id
    p = subprocess.run([sys.executable, "-m", "trainlab", "train", "--resume", run_id, "--device", "cpu", "--quiet", "--json",
                        "--runs-dir", str(settings.runs_dir), "--data-dir", str(data_dir)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-1500:]
    assert len(json.loads(p.stdout.splitlines()[-1])["history"]) == 3
    run = trainlab.load_run(run_id, settings, device="cuda")  # the CPU-finished run back on the GPU
    assert next(run.model.parameters()).is_cuda and len(run.predict(np.zeros((2, 28, 28), np.uint8)).probs) == 2


@cuda
def test_export_and_predict_of_a_gpu_trained_run(tmp_path, data_dir):
    import trainlab
    from trainlab.recipes import validate
    settings = _settings(tmp_path, data_dir)
    run = trainlab.train(validate(CNN_TINY), settings=settings, device="cuda", progress="none")
    report = trainlab.export_onnx(run.run_id, settings=settings)
    assert report.ok and report.top1_agree == report.images
    gpu = trainlab.load_run(run.run_id, settings, device="cuda")
    x = run.split("test", settings)[0][:64].permute(0, 2, 3, 1).cpu().numpy()
    a = gpu.predict(x).probs
    b = trainlab.OnnxRun(report.path).predict(x).probs
    assert (a.argmax(1) == b.argmax(1)).mean() >= 0.98  # bf16 on the GPU against fp32 onnxruntime


class _Graphs(object):
    """A callback that notes which step trained and the batch sizes it captured."""

    def __init__(self):
        import trainlab
        outer = self

        class Seen(trainlab.Callback):
            def on_train_end(self, state):
                outer.kind = state.train_step.kind
                outer.captured = sorted(getattr(state.train_step, "graphs", {}))
        self.callback = Seen()


@cuda
@pytest.mark.parametrize("recipe", [MNIST_TINY, CNN_TINY], ids=["dense", "cnn"])
def test_the_captured_step_trains_every_batch_and_learns_as_autograd(tmp_path, data_dir, recipe, monkeypatch):
    import trainlab
    from trainlab.recipes import validate
    r = validate({**recipe, "epochs": 5, "batch_size": 128})  # 1,000-odd images: a shorter last batch every epoch
    seen = _Graphs()
    graphed = trainlab.train(r, settings=_settings(tmp_path / "g", data_dir), device="cuda", progress="none",
                             callbacks=[seen.callback])
    n, bs = len(graphed.data.x_train), r.batch_size
    assert seen.kind == "cuda-graph" and n % bs and seen.captured == sorted({bs, n % bs})  # both sizes replayed
    assert json.loads((graphed.run_dir / "run.json").read_text())["train_step"] == "cuda-graph"
    monkeypatch.setenv("TRAINLAB_STEP", "autograd")
    eager = trainlab.train(r, settings=_settings(tmp_path / "e", data_dir), device="cuda", progress="none")
    assert abs(graphed.metrics["test_acc"] - eager.metrics["test_acc"]) < 0.05
    assert abs(graphed.history[-1]["loss"] - eager.history[-1]["loss"]) < 0.1 * eager.history[0]["loss"]


@cuda
def test_a_captured_run_stopped_mid_epoch_resumes_bit_identically(tmp_path, data_dir):
    import threading

    from helpers import StopAt

    import trainlab
    from trainlab.errors import StopRun
    from trainlab.recipes import validate
    r = validate({**CNN_TINY, "epochs": 4, "batch_size": 64, "schedule": {"name": "onecycle"},
                  "augment": {"flip": True, "translate": 2}})
    ref = trainlab.train(r, settings=_settings(tmp_path / "a", data_dir), device="cuda", progress="none")
    stop = threading.Event()
    with pytest.raises(StopRun) as info:
        trainlab.train(r, settings=_settings(tmp_path / "b", data_dir), device="cuda", progress="none", stop=stop,
                       callbacks=[StopAt(2, 5, stop)])
    p = subprocess.run([sys.executable, "-m", "trainlab", "train", "--resume", info.value.run_id, "--device", "cuda",
                        "--quiet", "--json", "--runs-dir", str(tmp_path / "b" / "runs"), "--data-dir", str(data_dir)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-1500:]
    done = tmp_path / "b" / "runs" / info.value.run_id
    assert (ref.run_dir / "model.safetensors").read_bytes() == (done / "model.safetensors").read_bytes()


@cuda
def test_a_plateau_callback_lowers_the_rate_of_a_captured_step(tmp_path, data_dir):
    import trainlab
    from trainlab.recipes import validate
    r = validate({**MNIST_TINY, "epochs": 6, "optimizer": {"name": "sgd", "lr": 0.05},
                  "callbacks": {"reduce_lr": {"monitor": "val_loss", "patience": 0, "factor": 0.5}}})
    run = trainlab.train(r, settings=_settings(tmp_path, data_dir), device="cuda", progress="none")
    lrs = [h["lr"] for h in run.history]
    assert lrs[0] == pytest.approx(0.05) and lrs == sorted(lrs, reverse=True)


@two_gpus
def test_two_gpus_train_as_one_with_nccl(tmp_path, data_dir):
    path = tmp_path / "ddp.yaml"
    path.write_text(json.dumps({**CNN_TINY, "name": "ddp-gpu", "batch_size": 64}))
    env = {**os.environ, "TRAINLAB_DATA": str(data_dir), "TRAINLAB_RUNS": str(tmp_path / "runs")}
    p = subprocess.run([sys.executable, "-m", "trainlab", "train", str(path), "--nproc", "2", "--device", "cuda", "--json",
                        "--quiet"], env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads(p.stdout.splitlines()[-1])["test_acc"] > 0.5


def test_without_cuda_the_device_flag_is_one_line(tmp_path, data_dir):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    p = subprocess.run([sys.executable, "-m", "trainlab", "train", "mnist-mlp", "--device", "cuda"], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2 and "no CUDA device is available" in p.stderr and "Traceback" not in p.stderr
