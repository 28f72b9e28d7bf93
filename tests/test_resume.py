"""Exact resume: kill -9 at random points, resume each time, and get bit-identical weights."""

from __future__ import annotations

import hashlib
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import trainlab_here
from safetensors.torch import load_file

import trainlab

ARGS = ["walk-5-relu", "--seed", "7", "--epochs", "8", "--set", "data.limit_train=9000", "--set", "data.limit_test=500",
        "--set", "schedule.name=onecycle", "--set", "augment.translate=1", "--checkpoint-every", "0.05", "--quiet"]


def _cmd(*args, runs: Path, data_dir: Path):
    return [sys.executable, "-m", "trainlab", "train", *args, "--runs-dir", str(runs), "--data-dir", str(data_dir)]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _wait_for(pred, timeout=120.0):
    t0 = time.time()
    while not pred():
        if time.time() - t0 > timeout:
            raise TimeoutError
        time.sleep(0.01)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
    """The uninterrupted run's weights hash."""
    runs = tmp_path_factory.mktemp("ref")
    p = subprocess.run(_cmd(*ARGS, "--json", runs=runs, data_dir=data_dir), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    return _sha(Path(out["run_dir"]) / "model.safetensors"), out


def _only_run(runs: Path) -> Path:
    dirs = [d for d in runs.iterdir() if d.is_dir()]
    assert len(dirs) == 1
    return dirs[0]


def test_sigkill_at_random_points_then_resume_is_bit_identical(reference, tmp_path, data_dir):
    rng = random.Random(1234)
    runs = tmp_path / "runs"
    proc = subprocess.Popen(_cmd(*ARGS, runs=runs, data_dir=data_dir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    positions, kills, last_mtime = [], 0, 0
    for attempt in range(4):
        # wait until this process has written a checkpoint of its own (not one left by the last)
        _wait_for(lambda: runs.is_dir() and any((d / "checkpoint.pt").is_file()
                                                and (d / "checkpoint.pt").stat().st_mtime_ns != last_mtime
                                                for d in runs.iterdir()) or proc.poll() is not None)
        run_dir = _only_run(runs)
        if attempt % 2 == 0:  # somewhere mid-epoch
            time.sleep(rng.uniform(0.0, 0.3))
        else:  # right as an epoch ends
            rows = len((run_dir / "history.csv").read_text().splitlines()) if (run_dir / "history.csv").is_file() else 0
            try:
                _wait_for(lambda: (run_dir / "history.csv").is_file()
                          and len((run_dir / "history.csv").read_text().splitlines()) > rows, timeout=20)
            except TimeoutError:
                pass
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        info = json.loads((run_dir / "run.json").read_text())
        if info["status"] == "completed":
            break
        assert info["status"] == "running"  # SIGKILL leaves no chance to write anything else
        ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=False)
        positions.append((ckpt["epoch"], ckpt["step"]))
        last_mtime = (run_dir / "checkpoint.pt").stat().st_mtime_ns
        proc = subprocess.Popen(_cmd("--resume", run_dir.name, "--checkpoint-every", "0.05", "--quiet", runs=runs,
                                     data_dir=data_dir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()
    run_dir = _only_run(runs)
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "completed" and len(info["resumed_at"]) == len(positions)
    assert kills >= 3 and any(step > 0 for _, step in positions), positions
    ref_weights = load_file(Path(reference[1]["run_dir"]) / "model.safetensors")
    weights = load_file(run_dir / "model.safetensors")
    same = {k: torch.equal(v, ref_weights[k]) for k, v in weights.items()}
    assert all(same.values()), f"resumed from {positions}: tensors equal {same}"
    assert _sha(run_dir / "model.safetensors") == reference[0]
    history = [json.loads(json.dumps(h)) for h in trainlab.load_run(run_dir).history]
    ref_hist = reference[1]["history"]
    assert [h["val_acc"] for h in history] == pytest.approx([h["val_acc"] for h in ref_hist], abs=1e-6)
    assert (run_dir / "best.safetensors").is_file()


def test_ctrl_c_saves_marks_interrupted_and_prints_the_resume_command(reference, tmp_path, data_dir):
    runs = tmp_path / "runs"
    proc = subprocess.Popen(_cmd(*[a for a in ARGS if a != "--quiet"], runs=runs, data_dir=data_dir),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: runs.is_dir() and any((d / "checkpoint.pt").is_file() for d in runs.iterdir()))
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    run_dir = _only_run(runs)
    assert f"trainlab train --resume {run_dir.name}" in out
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "interrupted"
    p = subprocess.run(_cmd("--resume", run_dir.name, "--quiet", runs=runs, data_dir=data_dir), capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert _sha(run_dir / "model.safetensors") == reference[0]


def test_divergence_marks_failed_and_keeps_a_finite_checkpoint(tmp_path, data_dir):
    with pytest.raises(trainlab.TrainlabError, match="diverged"):
        trainlab.train("mnist-mlp", runs_dir=tmp_path, data_dir=data_dir, progress="none", checkpoint_every=0.0001,
                       overrides={"data.limit_train": 3000, "data.normalize": "none", "optimizer.name": "sgd",
                                  "optimizer.lr": 1e30, "batch_size": 10})
    run_dir = _only_run(tmp_path)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_resume_refuses_what_it_cannot_resume(tmp_path, data_dir):
    run = trainlab.train("mnist-mlp", epochs=1, runs_dir=tmp_path, data_dir=data_dir, progress="none",
                         overrides={"data.limit_train": 500})
    with pytest.raises(trainlab.TrainlabError, match="already completed"):
        trainlab.resume(run.run_id, runs_dir=tmp_path, data_dir=data_dir)
    p = trainlab_here(*_cmd("--resume", "no-such-run", runs=tmp_path, data_dir=data_dir)[3:])
    assert p.returncode == 2 and p.stderr.startswith("error: no run 'no-such-run'")
    p = trainlab_here(*_cmd("mnist-mlp", "--resume", run.run_id, runs=tmp_path, data_dir=data_dir)[3:])
    assert p.returncode == 2 and "--resume continues a run with its own recipe" in p.stderr
