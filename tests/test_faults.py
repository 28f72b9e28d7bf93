"""Faults leave a truthful, resumable run: SIGTERM (interrupted, exit 143), SIGKILL (stale until
resumed), a second process on a live run (refused), a full disk (failed, one line) and a read-only
runs folder (reading commands still work). The disk tests mount a small tmpfs and need root."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import trainlab_cli
from helpers import trainlab_here as cli  # in this process: the command's main(), no interpreter start

ARGS = ["mnist-mlp", "--epochs", "3", "--set", "data.limit_train=9000", "--set", "data.limit_test=500",
        "--checkpoint-every", "0.1", "--quiet"]


SLOW = ["mnist-tfjs-cnn", "--epochs", "4", "--set", "data.limit_train=15000", "--set", "data.limit_test=500",
        "--checkpoint-every", "0.1", "--quiet"]  # about a second an epoch: time to act on a live run


def start(runs: Path, data_dir: Path, args=ARGS) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "trainlab", "train", *args, "--runs-dir", str(runs),
                             "--data-dir", str(data_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(runs: Path, proc: subprocess.Popen, timeout: float = 120) -> Path:
    t0 = time.time()
    while time.time() - t0 < timeout:
        found = list(runs.glob("*/checkpoint.pt")) if runs.is_dir() else []
        if found:
            return found[0].parent
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise TimeoutError


def status(runs: Path, run_dir: Path) -> str:
    rows = json.loads(cli("runs", "--json", "--runs-dir", runs).stdout)
    return {r["run_id"]: r["live_status"] for r in rows}[run_dir.name]


def test_sigterm_checkpoints_and_marks_interrupted(tmp_path, data_dir):
    runs = tmp_path / "runs"
    proc = start(runs, data_dir)
    run_dir = wait_for_checkpoint(runs, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "Traceback" not in err, err
    assert f"trainlab train --resume {run_dir.name}" in out
    assert status(runs, run_dir) == "interrupted"  # resuming it is test_resume.py's Ctrl-C test


def test_sigkill_leaves_a_stale_run_that_resumes_and_a_live_run_is_not_resumed_twice(tmp_path, data_dir):
    runs = tmp_path / "runs"
    proc = start(runs, data_dir, SLOW)
    run_dir = wait_for_checkpoint(runs, proc)
    while status(runs, run_dir) != "running":  # the record is written just after the first checkpoint
        time.sleep(0.05)
    twin = cli("train", "--resume", run_dir.name, "--runs-dir", runs, "--data-dir", data_dir)
    assert twin.returncode == 2 and "is being trained right now by pid" in twin.stderr, twin.stderr
    rm = cli("runs", "rm", run_dir.name, "--yes", "--runs-dir", runs)
    assert rm.returncode == 2 and run_dir.is_dir()  # nor deleted under it
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"  # what the file says ...
    assert status(runs, run_dir) == "stale"  # ... and the truth
    p = cli("train", "--resume", run_dir.name, "--runs-dir", runs, "--data-dir", data_dir, "--quiet")
    assert p.returncode == 0, p.stderr
    assert status(runs, run_dir) == "completed"


@pytest.fixture
def tmpfs(tmp_path):
    """A 400 KiB tmpfs: room for a run's small files, not for its weights and checkpoint."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (this process is not root)")
    mnt = tmp_path / "small"
    mnt.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_is_one_line_and_the_run_is_marked_failed(tmpfs, tmp_path, data_dir):
    p = cli("train", "mnist-mlp", "--set", "model.layers.0.units=256", "--epochs", "1", "--set", "data.limit_train=2000",
            "--set", "data.limit_test=200", "--runs-dir", tmpfs, "--db", f"sqlite:///{tmp_path / 'index.db'}",
            "--data-dir", data_dir, "--quiet")
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    (line,) = [x for x in p.stderr.splitlines() if x.strip()]
    assert line.startswith("error: ") and "no space left on the device" in line and "needed" in line
    (run_dir,) = [d for d in tmpfs.iterdir() if d.is_dir()]
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    assert not [f for f in run_dir.iterdir() if f.name.endswith(".tmp")]  # no half-written file


def test_reading_commands_work_on_a_read_only_runs_folder_and_missing_folders_show(tmp_path, data_dir):
    if os.geteuid() != 0:
        pytest.skip("mounting needs root (this process is not root)")
    runs = tmp_path / "runs"
    # trained in its own process, which closes the index when it ends (this one would keep its WAL open)
    p = trainlab_cli("train", "mnist-mlp", "--epochs", "1", "--set", "data.limit_train=500", "--set", "data.limit_test=100",
                     "--quiet", "--json", "--runs-dir", runs, "--data-dir", data_dir)
    run_id = json.loads(p.stdout.splitlines()[-1])["run_id"]
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "--bind", "-o", "ro", str(runs), str(ro)], capture_output=True).returncode != 0:
        pytest.skip("cannot bind-mount read-only here")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=False)
        assert cli("runs", "--runs-dir", ro).returncode == 0
        assert run_id in cli("runs", "show", run_id, "--runs-dir", ro).stdout
        ev = cli("evaluate", run_id, "--runs-dir", ro, "--data-dir", data_dir)
        assert ev.returncode == 0 and "precision" in ev.stdout  # the report, though its pictures cannot be written
        assert "warning: pictures not written" in ev.stderr
        assert cli("evaluate", run_id, "--no-pictures", "--runs-dir", ro, "--data-dir", data_dir).returncode == 0
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False)
    # an index row whose folder was deleted by hand: shown as missing, removable with runs rm
    import shutil
    shutil.rmtree(runs / run_id)
    assert status(runs, runs / run_id) == "missing"
    p = cli("runs", "rm", run_id, "--yes", "--runs-dir", runs)
    assert p.returncode == 0 and "index entry" in p.stdout
    assert json.loads(cli("runs", "--json", "--runs-dir", runs).stdout) == []


def _handles_sigterm(pid: int) -> bool:
    """Whether the process has a handler of its own for SIGTERM (/proc's SigCgt mask): trainlab's stop
    handler, installed first of all by `python -m trainlab` (Python itself installs one for SIGINT only)."""
    try:
        caught = next(line for line in open(f"/proc/{pid}/status") if line.startswith("SigCgt:"))
    except (OSError, StopIteration):
        return False
    return bool(int(caught.split()[1], 16) & (1 << (signal.SIGTERM - 1)))


def _has_loaded(pid: int, library: str) -> bool:
    try:
        return library in open(f"/proc/{pid}/maps").read()
    except OSError:
        return False


STAGES = {  # where the Ctrl-C lands: each a condition the test waits for, not a delay
    "handler installed": lambda pid, runs: _handles_sigterm(pid),
    "torch loaded": lambda pid, runs: _has_loaded(pid, "libtorch_cpu"),
    "run folder made": lambda pid, runs: runs.is_dir() and any(d.is_dir() for d in runs.iterdir()),
}


@pytest.mark.parametrize("stage", list(STAGES))
def test_ctrl_c_during_start_up_is_one_line_and_130(tmp_path, data_dir, stage):
    # A signal that lands while the interpreter itself starts, before any trainlab code, is Python's
    # to handle (its traceback, or death by SIGINT): trainlab cannot control it, so the test sends
    # the signal only once trainlab's handler is in place, at each stage of start-up after that.
    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "trainlab", "train", "mnist-mlp", "--runs-dir", str(runs),
                             "--data-dir", str(data_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not STAGES[stage](proc.pid, runs) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in out + err, (proc.returncode, err)
    # before training: one line; once training runs (a fast machine): checkpointed, with the resume command
    assert [x for x in err.splitlines() if x.strip()] == ["interrupted"] or "Resume with" in out, (out, err)
    # never swallowed (a run trained to its end), never a folder holding only its lock
    assert "test_acc" not in out, out
    for folder in (runs.iterdir() if runs.is_dir() else []):
        if folder.is_dir():
            assert (folder / "run.json").is_file(), sorted(p.name for p in folder.iterdir())


def test_a_full_disk_at_an_epoch_end_marks_failed_and_never_says_saved(tmpfs, tmp_path, data_dir):
    # 400 KiB: the record and history fit, the first checkpoint (Adam state of 200k weights) does not
    p = cli("train", "mnist-mlp", "--set", "model.layers.0.units=256", "--epochs", "2", "--set", "data.limit_train=2000",
            "--set", "data.limit_test=200", "--runs-dir", tmpfs, "--db", f"sqlite:///{tmp_path / 'index.db'}",
            "--data-dir", data_dir)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "saved" not in p.stdout, (p.stdout, p.stderr)
    (run_dir,) = [d for d in tmpfs.iterdir() if d.is_dir()]
    rec = json.loads((run_dir / "run.json").read_text())
    assert rec["status"] == "failed" and "no space left" in rec["error"]
    rows = json.loads(cli("runs", "--json", "--runs-dir", tmpfs, "--db", f"sqlite:///{tmp_path / 'index.db'}").stdout)
    assert [r["status"] for r in rows] == ["failed"]


def test_a_full_disk_where_not_even_the_record_fits_is_still_failed(tmp_path, data_dir, monkeypatch):
    """In process: every new file fails (ENOSPC), so the final record is written over the old one."""
    import errno

    from conftest import MNIST_TINY

    import trainlab
    import trainlab.fileio as fileio
    from trainlab.recipes import validate
    from trainlab.settings import load_settings
    settings = load_settings(runs_dir=tmp_path / "runs", data_dir=data_dir, offline=True)
    real = fileio.tempfile.mkstemp
    state = {"full": False}

    def mkstemp(*a, **kw):
        if state["full"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*a, **kw)

    class Fill(trainlab.Callback):
        def on_train_end(self, st):
            state["full"] = True

    monkeypatch.setattr(fileio.tempfile, "mkstemp", mkstemp)
    with pytest.raises(trainlab.TrainlabError, match="no space left"):
        trainlab.train(validate(MNIST_TINY), settings=settings, progress="none", callbacks=[Fill()])
    (run_dir,) = [d for d in (tmp_path / "runs").iterdir() if d.is_dir()]
    rec = json.loads((run_dir / "run.json").read_text())
    assert rec["status"] == "failed" and "no space left" in rec["error"]


def test_runs_json_says_what_the_table_says(tmp_path, data_dir):
    runs = tmp_path / "runs"
    proc = start(runs, data_dir, SLOW)
    run_dir = wait_for_checkpoint(runs, proc)
    while status(runs, run_dir) != "running":
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (row,) = json.loads(cli("runs", "--json", "--runs-dir", runs).stdout)
    assert row["status"] == "stale" == row["live_status"] and row["recorded_status"] == "running"
    assert "stale" in cli("runs", "--runs-dir", runs).stdout


def test_summary_of_a_huge_layer_and_bad_exports_are_one_line(tmp_path, data_dir):
    p = cli("summary", "mnist-mlp", "--set", "model.layers.0.units=1000000000", "--data-dir", data_dir)
    assert p.returncode == 0 and "784,000,000,000" in p.stdout.replace("785,000,000,000", "784,000,000,000") or \
        "Total params" in p.stdout, p.stderr
    assert "Traceback" not in p.stderr
    runs = tmp_path / "runs"
    proc = start(runs, data_dir, SLOW)
    run_dir = wait_for_checkpoint(runs, proc)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    p = cli("export", run_dir.name, "--runs-dir", runs, "--data-dir", data_dir)
    assert p.returncode == 2 and "is interrupted, not completed" in p.stderr and "--resume" in p.stderr, p.stderr
    done = cli("train", "mnist-mlp", "--epochs", "1", "--set", "data.limit_train=500", "--set", "data.limit_test=100",
               "--quiet", "--json", "--runs-dir", runs, "--data-dir", data_dir)
    run_id = json.loads(done.stdout.splitlines()[-1])["run_id"]
    if os.geteuid() != 0:  # root writes anywhere: a read-only folder only stops others
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        p = cli("export", run_id, "--out", ro / "m.onnx", "--runs-dir", runs, "--data-dir", data_dir)
        assert p.returncode == 2 and "cannot write here" in p.stderr and "Traceback" not in p.stderr, p.stderr
    p = cli("export", run_id, "--out", "/proc/m.onnx", "--runs-dir", runs, "--data-dir", data_dir)
    assert p.returncode == 2 and "Traceback" not in p.stderr and p.stderr.startswith("error: "), p.stderr
    ok = cli("export", run_id, "--runs-dir", runs, "--data-dir", data_dir)
    assert ok.returncode == 0 and oct((runs / run_id / "model.onnx").stat().st_mode & 0o777) != "0o600"


def test_a_ctrl_c_inside_an_import_is_delivered_once_the_import_is_done():
    # raised inside `import torch` (a pybind11 call back into Python) it aborted the process with
    # SIGABRT; the stop handler now holds it until no module is initialising, then delivers it
    code = """
import importlib.machinery, os, signal, sys, time, types
from trainlab.system.signals import Interrupt, StopSignals
handler = StopSignals()
handler.install()
m = types.ModuleType("half_imported")
m.__spec__ = importlib.machinery.ModuleSpec("half_imported", None)
m.__spec__._initializing = True
sys.modules["half_imported"] = m
os.kill(os.getpid(), signal.SIGINT)
time.sleep(0.3)
print("held", handler.interrupted.is_set(), flush=True)
m.__spec__._initializing = False
try:
    time.sleep(5)
    print("lost")
except Interrupt:
    print("delivered")
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.stdout.split() == ["held", "True", "delivered"], (p.stdout, p.stderr)


def test_a_held_ctrl_c_is_not_delivered_again_once_the_command_stopped_on_it():
    """A Ctrl-C held for another thread's import, then honoured by training's start (arm_callback),
    used to be delivered a second time later: "interrupted" twice, or a traceback at exit."""
    code = """
import os, signal, sys, threading, time
import trainlab.system.signals as sg
from trainlab.system.signals import Interrupt, StopSignals
busy = threading.Event()
sg.importing = lambda: not busy.is_set()  # another thread imports until released
handler = StopSignals()
handler.install()
os.kill(os.getpid(), signal.SIGINT)
time.sleep(0)  # the handler runs here: held, not raised
print("held", handler.interrupted.is_set(), flush=True)
try:
    handler.interrupt()  # what training's start does with a held Ctrl-C
except Interrupt:
    print("stopped", flush=True)
busy.set()  # the import ends: the held signal must stay dropped
for _ in range(50):
    time.sleep(0.01)
print("once", flush=True)
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.stdout.split() == ["held", "True", "stopped", "once"] and p.stderr == "", (p.stdout, p.stderr)
