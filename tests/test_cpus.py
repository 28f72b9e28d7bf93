"""The CPU policy (cpus.py): how many CPUs a process may use, the thread count a run starts with
beside other programs and beside trainlab's own processes, CpuWatch moving it with the load, the
servers' wait policy, and that every kind of process (CLI, dashboard job, tuning trial, rank)
applies and records it. No test times anything: loads are simulated or measured as CPU time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from conftest import MNIST_TINY

from trainlab.engine.callbacks import CpuWatch
from trainlab.system import cpus, process_wide

WIDE = {**MNIST_TINY, "name": "wide", "model": {"layers": [{"type": "dense", "units": 128, "activation": "relu"},
                                                           {"type": "dense", "units": 10, "activation": "softmax"}]},
        "data": {**MNIST_TINY["data"], "limit_train": 600, "limit_test": 100}, "epochs": 1}  # 32x784x128: not a small stack
CONV = {**WIDE, "name": "conv", "data": {**WIDE["data"], "flatten": False},
        "model": {"layers": [{"type": "conv2d", "filters": 4, "kernel_size": 3, "activation": "relu"}, {"type": "maxpool"},
                             {"type": "flatten"}, {"type": "dense", "units": 10, "activation": "softmax"}]}}


def test_cgroup_quota_v2_v1_and_unlimited(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cpus.cgroup_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpus.cgroup_quota(tmp_path) is None
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("200000")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert cpus.cgroup_quota(tmp_path) == 2.0
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1")
    assert cpus.cgroup_quota(tmp_path) is None
    assert cpus.cgroup_quota(tmp_path / "none") is None


def test_allowed_cpus_is_the_affinity_within_the_quota(monkeypatch):
    monkeypatch.setattr(cpus, "affinity", lambda: {0, 1, 2, 3})
    monkeypatch.setattr(cpus, "cgroup_quota", lambda: None)
    assert cpus.allowed_cpus() == 4
    monkeypatch.setattr(cpus, "cgroup_quota", lambda: 1.5)
    assert cpus.allowed_cpus() == 1  # 1.5 CPUs of time: two threads would be throttled
    monkeypatch.setattr(cpus, "cgroup_quota", lambda: 1.8)
    assert cpus.allowed_cpus() == 2
    monkeypatch.setattr(cpus, "cgroup_quota", lambda: 16.0)
    assert cpus.allowed_cpus() == 4


@pytest.mark.parametrize("busy,share,threads", [(0.0, 1, 4), (1.0, 1, 3), (2.6, 1, 1), (9.0, 1, 1), (0.0, 2, 2),
                                                (2.0, 2, 2), (3.0, 2, 1), (0.3, 1, 4)])
def test_plan_threads_takes_the_free_cpus_and_shares_them(monkeypatch, busy, share, threads):
    monkeypatch.setattr(cpus, "allowed_cpus", lambda: 4)
    plan = cpus.plan_threads(share, busy)
    assert plan.threads == threads and plan.allowed == 4 and plan.share == share
    assert ("busy with other programs" in plan.reason) == (threads < 4 // share)


def test_the_share_comes_from_the_launcher(monkeypatch):
    monkeypatch.setattr(cpus, "allowed_cpus", lambda: 4)
    monkeypatch.setenv(process_wide.SHARE_VARIABLE, "4")
    assert cpus.plan_threads(None, 0.0).threads == 1
    monkeypatch.setenv(process_wide.SHARE_VARIABLE, "junk")
    assert cpus.plan_threads(None, 0.0).threads == 4


def test_busy_elsewhere_sees_another_program_and_not_this_one():
    if cpus.cpu_sample() is None:
        pytest.skip("no /proc/stat here")
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        first = cpus.cpu_sample()
        x = 0
        for i in range(3_000_000):  # this process's own work must not count
            x += i
        assert cpus.busy_elsewhere(first, min_window=0.5) > 0.5
    finally:
        spinner.kill()
        spinner.wait()


def test_cpu_watch_moves_the_count_with_the_load_and_checkpoints_it(monkeypatch):
    was = torch.get_num_threads()
    loads = iter([1.2, 0.0, 0.0, 0.0])
    monkeypatch.setattr("trainlab.engine.callbacks.busy_elsewhere", lambda since: next(loads))
    state = SimpleNamespace(epoch=0, step=5, notes=[], cpu={})
    watch = CpuWatch(True, most=2, every=0.0)
    try:
        torch.set_num_threads(2)
        watch.on_train_begin(state)
        watch.on_batch_end(state, 5, {})
        assert torch.get_num_threads() == 1 and state.cpu["changes"][0]["threads"] == 1
        assert "now 1 thread" in state.notes[-1]
        watch.on_batch_end(state, 6, {})  # one quiet look is not enough to go back up
        assert torch.get_num_threads() == 1
        watch.on_batch_end(state, 7, {})
        assert torch.get_num_threads() == 2 and len(state.cpu["changes"]) == 2
        saved = watch.state_dict()
        torch.set_num_threads(1)
        again = CpuWatch(True, most=2)
        again.load_state_dict(saved)  # a resume continues on the count the run had
        assert torch.get_num_threads() == 2 and again.changes == watch.changes
        assert CpuWatch(False, most=2).state_dict() == {}  # nothing checkpointed when it never moved
        off = CpuWatch(False, most=2, every=0.0)
        off.on_train_begin(state)
        off.on_batch_end(state, 1, {})  # pinned counts are never moved
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(was)


def test_dashboard_jobs_start_as_one_of_the_servers_workers(monkeypatch, tmp_path):
    from trainlab.settings import load_settings
    from trainlab.web import jobs
    seen = {}

    class Fake:
        def __init__(self, args, env=None, **kw):
            seen["env"] = env
            self.stdin, self.stdout, self.stderr, self.returncode = SimpleNamespace(write=lambda s: None, close=lambda: None), [], \
                [], 0

        def wait(self):
            return 0

        def poll(self):
            return 0

    monkeypatch.setattr(jobs.subprocess, "Popen", Fake)
    queue = jobs.JobQueue(load_settings(runs_dir=tmp_path / "runs"), workers=3)
    try:
        job = queue.submit("x", recipe={})
        for _ in range(100):
            if "env" in seen:
                break
            import time
            time.sleep(0.02)
        assert seen["env"][process_wide.SHARE_VARIABLE] == "3" and job.id == 1
    finally:
        queue.close()


def _child(code: str, argv: list[str]) -> str:
    env = {k: v for k, v in os.environ.items() if k not in process_wide.WAIT_VARIABLES}
    return subprocess.run([sys.executable, "-c", f"import sys; sys.argv = {argv!r}\n{code}"], env=env,
                          capture_output=True, text=True, check=True).stdout.strip()


def test_servers_sleep_at_barriers_and_their_training_jobs_do_not():
    code = ("from trainlab.system.process_wide import prepare_process, role_of, training_child_environment\n"
            "import os; prepare_process(role_of(sys.argv))\n"
            "child = training_child_environment(2)\n"
            "print(os.environ.get('OMP_WAIT_POLICY'), child.get('OMP_WAIT_POLICY'), child['TRAINLAB_CPU_SHARE'])")
    assert _child(code, ["trainlab", "dashboard"]) == "PASSIVE None 2"
    assert _child(code, ["trainlab", "serve", "RUN"]) == "PASSIVE None 2"
    assert _child(code, ["trainlab", "train", "mnist-mlp"]) == "None None 2"
    mine = "import os; os.environ['OMP_WAIT_POLICY'] = 'ACTIVE'\n" + code  # the user's own choice wins
    assert _child(mine, ["trainlab", "dashboard"]) == "ACTIVE ACTIVE 2"


def _train(tmp_path, data_dir, *extra, env_extra=None, recipe=WIDE):
    path = tmp_path / "wide.yaml"
    path.write_text(json.dumps(recipe))
    env = {k: v for k, v in os.environ.items() if k not in (*process_wide.WAIT_VARIABLES, "OMP_NUM_THREADS", "TRAINLAB_THREADS",
                                                             process_wide.SHARE_VARIABLE)}
    env.update(TRAINLAB_DATA=str(data_dir), TRAINLAB_RUNS=str(tmp_path / "runs"), **(env_extra or {}))
    p = subprocess.run([sys.executable, "-m", "trainlab", "train", str(path), "--json", "--quiet", *extra], env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    run_id = json.loads(p.stdout.splitlines()[-1])["run_id"]
    return json.loads((tmp_path / "runs" / run_id / "run.json").read_text())


def test_the_cli_plans_and_records_its_threads(tmp_path, data_dir):
    rec = _train(tmp_path, data_dir)
    allowed = cpus.allowed_cpus()
    assert rec["cpu"]["allowed"] == allowed and rec["cpu"]["wait_policy"] == "spin (default)"
    assert rec["cpu"]["adaptive"] is True and 1 <= rec["threads"] <= allowed and "busy_elsewhere" in rec["cpu"]
    pinned = _train(tmp_path, data_dir, env_extra={"TRAINLAB_THREADS": "1"})
    assert pinned["threads"] == 1 and pinned["cpu"]["reason"] == "TRAINLAB_THREADS" and "adaptive" not in pinned["cpu"]
    shared = _train(tmp_path, data_dir, env_extra={process_wide.SHARE_VARIABLE: "64"})  # as a dashboard job among 64
    assert shared["threads"] == 1 and shared["cpu"]["share"] == 64
    # the precision is chosen and recorded in the same place: a dense stack trains fused, in fp32; a
    # conv net in bf16-mixed where this CPU multiplies bf16 in hardware (engine/precision.py)
    assert (rec["precision"], rec["precision_reason"]) == ("fp32", "auto: the fused dense step is fp32")
    conv = _train(tmp_path, data_dir, recipe=CONV)
    assert conv["precision"] == ("bf16-mixed" if cpus.native_bf16() else "fp32") and conv["precision_reason"].startswith("auto")


def test_ranks_share_the_cpus(tmp_path, data_dir):
    rec = _train(tmp_path, data_dir, "--nproc", "2")
    assert rec["cpu"]["share"] == 2 and rec["threads"] == max(1, cpus.allowed_cpus() // 2)
    assert (rec["precision"], rec["precision_reason"]) == ("fp32", "auto: not a conv net")  # ranks train with autograd


def test_tuning_trials_share_the_cpus(tmp_path, data_dir):
    (tmp_path / "wide.yaml").write_text(json.dumps(WIDE))
    (tmp_path / "space.yaml").write_text("optimizer.lr: {loguniform: [1.0e-3, 1.0e-2]}\n")
    env = {k: v for k, v in os.environ.items() if k not in (*process_wide.WAIT_VARIABLES, "OMP_NUM_THREADS", "TRAINLAB_THREADS")}
    env.update(TRAINLAB_DATA=str(data_dir), TRAINLAB_RUNS=str(tmp_path / "runs"), PYTHONWARNINGS="ignore")
    p = subprocess.run([sys.executable, "-m", "trainlab", "tune", "run", str(tmp_path / "wide.yaml"), "--space",
                        str(tmp_path / "space.yaml"), "--trials", "2", "--jobs", "2", "--no-plots", "--study", "cpu"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    records = [json.loads(f.read_text()) for f in (tmp_path / "runs").glob("*/run.json")]
    assert len(records) == 2 and all(r["cpu"]["share"] == 2 and r["study"] == "cpu" for r in records)
    assert all(r["threads"] == max(1, cpus.allowed_cpus() // 2) for r in records)
    assert all(r["precision"] == "fp32" and r["precision_reason"] for r in records)
