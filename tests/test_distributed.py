"""Multi-process training (gloo on the CPU), started by torchrun and by `trainlab train --nproc`: the
same training as one process, one run record, only rank 0 writing, and resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import MNIST_TINY
from helpers import trainlab_cli as cli

from trainlab.engine.distributed import Group
from trainlab.runs.record import read_record

DDP_RECIPE = {**MNIST_TINY, "name": "ddp-mlp", "batch_size": 64, "epochs": 3,
              "data": {**MNIST_TINY["data"], "limit_train": 4000, "limit_test": 500}}


def test_each_rank_takes_a_disjoint_slice_of_every_global_batch():
    batch = torch.randperm(1000)[:64]
    parts = [Group(r, 3).shard(batch) for r in range(3)]
    assert sorted(torch.cat(parts).tolist()) == sorted(batch.tolist())
    assert [len(p) for p in parts] == [22, 21, 21]


def test_two_processes_train_as_one_and_write_one_run(tmp_path, data_dir):
    recipe = tmp_path / "ddp.yaml"
    recipe.write_text(json.dumps(DDP_RECIPE))
    one = cli("train", "--json", str(recipe), runs=tmp_path / "one", data_dir=data_dir)
    env = {**os.environ, "TRAINLAB_DATA": str(data_dir), "TRAINLAB_RUNS": str(tmp_path / "two"), "OMP_NUM_THREADS": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "trainlab",
                          "train", str(recipe), "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-2000:]
    a, b = json.loads(one.stdout.splitlines()[-1]), json.loads(two.stdout.splitlines()[-1])
    assert abs(a["val_acc"] - b["val_acc"]) <= 0.01 and abs(a["test_acc"] - b["test_acc"]) <= 0.01
    assert len(b["history"]) == 3
    folders = [p for p in (tmp_path / "two").iterdir() if p.is_dir()]
    assert len(folders) == 1 and read_record(folders[0]).status == "completed"  # rank 1 wrote nothing
    assert read_record(folders[0]).processes == 2 and ", 2 processes" in two.stdout  # recorded and said
    assert two.stdout.count('"run_id"') == 1  # one JSON line: only rank 0 prints


def test_a_killed_multi_process_run_resumes(tmp_path, data_dir):
    recipe = tmp_path / "long.yaml"
    recipe.write_text(json.dumps({**DDP_RECIPE, "name": "ddp-long", "batch_size": 16, "epochs": 8}))
    env = {**os.environ, "TRAINLAB_DATA": str(data_dir), "TRAINLAB_RUNS": str(tmp_path / "runs"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "trainlab", "train", str(recipe), "--nproc", "2", "-q", "--checkpoint-every",
                             "0.3"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            runs = [p for p in (tmp_path / "runs").glob("*ddp-long*") if (p / "checkpoint.pt").is_file()]
            if runs and (runs[0] / "history.csv").is_file():
                break
            time.sleep(0.1)
        else:
            pytest.fail("no checkpoint appeared")
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both ranks, at once
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    run_dir = runs[0]
    assert read_record(run_dir).live_status() == "stale" or read_record(run_dir).status == "running"
    done = cli("train", "--json", "--resume", run_dir.name, "--nproc", "2", runs=tmp_path / "runs", data_dir=data_dir)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["run_id"] == run_dir.name and len(result["history"]) == 8 and result["test_acc"] > 0.8
    assert read_record(run_dir).status == "completed" and len(read_record(run_dir).resumed_at) == 1
