"""Tuning: search spaces, Optuna studies whose trials are runs, worker processes
sharing a study through SQLite and PostgreSQL, and a worker killed mid-trial."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from conftest import TREE_RECIPE, tiny_recipe, write_tree
from helpers import trainlab_here

import trainlab
from trainlab.errors import Interrupted, RecipeError, TrainlabError
from trainlab.recipes import load_recipe
from trainlab.runs.store import Store
from trainlab.tuning.space import load_space, reshape_stack, space_names
from trainlab.tuning.study import TrialReporter, split_trials, study_report, tune

# --- search spaces ---------------------------------------------------------------------------------

PRESET_USES = {"walk": ["walk-1-baseline"], "mlp": ["mnist-mlp", "fashion-mlp"],
               "cnn": ["mnist-tfjs-cnn", "cifar10-cnn", "cifar10-cnn-deeper"],
               "fast": ["mnist-fast", "fashion-fast", "cifar10-fast"]}


def test_preset_spaces_fit_the_seed_recipes():
    assert sorted(PRESET_USES) == space_names()
    for space, recipes in PRESET_USES.items():
        for r in recipes:
            load_space(space).check(load_recipe(r))


@pytest.mark.parametrize("space, message", [
    ({"optimizer.lrr": {"loguniform": [1e-3, 1e-1]}}, "unknown key (did you mean 'lr'?)"),
    ({"dropout": {"uniform": [0, 0.5]}}, "dropout: not a recipe path (did you mean 'model.dropout'?)"),
    ({"optimizer.lr": {"loguniform": [0, 1]}}, "loguniform needs low > 0"),
    ({"optimizer.lr": {"uniform": [-1, 1]}}, "optimizer.lr: Input should be greater than 0"),
    ({"epochs": {"int": [5, 2]}}, "int needs low < high"),
    ({"batch_size": {"normal": [1, 2]}}, "unknown distribution; use one of loguniform, uniform, int, logint, choice"),
    ({"batch_size": {"choice": [16, 32], "int": [1, 4]}}, "give exactly one of"),
    ({"model.activation": {"choice": ["relu", "sigmoidd"]}}, "'sigmoidd' is not allowed (did you mean 'sigmoid'?)"),
    ({"objective": "test_acc", "params": {"epochs": {"int": [1, 2]}}}, "objective: 'test_acc' is not allowed"),
    ({"fixed": {"data.validation": "none"}, "params": {"epochs": {"int": [1, 2]}}}, "needs a validation split"),
    ({"params": {"epochs": {"int": [1, 2]}}, "extra": 1}, "extra: unknown section"),
])
def test_bad_spaces_are_refused_with_the_path(space, message):
    with pytest.raises(RecipeError) as err:
        load_space(space).check(tiny_recipe())
    assert message in str(err.value) and "\n" not in str(err.value)


def test_stack_parameters_reshape_the_hidden_layers():
    layers = load_recipe("walk-5-relu").to_dict()["model"]["layers"]
    out = reshape_stack(layers, "walk-5-relu", hidden_layers=2, units=50, activation="gelu", dropout=0.25)
    assert [(x["type"], x.get("units"), x.get("activation")) for x in out] == [
        ("dense", 50, "gelu"), ("dropout", None, None), ("dense", 50, "gelu"), ("dropout", None, None), ("dense", "classes", "softmax")]
    assert reshape_stack(out, "x", dropout=0.0) == [{**x, "units": x["units"]} for x in out if x["type"] != "dropout"]
    cnn = load_recipe("mnist-fast").to_dict()["model"]["layers"]  # activation layers after batch norm change too
    acts = [x["activation"] for x in reshape_stack(cnn, "mnist-fast", activation="elu") if x["type"] == "activation"]
    assert acts == ["elu"] * 3
    with pytest.raises(RecipeError, match="need hidden dense layers; recipe mnist-fast has none"):
        reshape_stack(cnn, "mnist-fast", hidden_layers=2)


def test_grid_needs_discrete_parameters():
    sp = load_space({"batch_size": {"choice": [16, 32]}, "epochs": {"int": [1, 3]}})
    assert sp.grid() == {"batch_size": [16, 32], "epochs": [1, 2, 3]}
    with pytest.raises(RecipeError, match="optimizer.lr: a grid needs choice or int"):
        load_space({"optimizer.lr": {"loguniform": [1e-3, 1e-1]}}).grid()


def test_split_trials():
    assert split_trials(7, 3) == [3, 2, 2] and sum(split_trials(20, 6)) == 20
    assert split_trials(None, 2) == [None, None]


# --- LR finder ---------------------------------------------------------------------------------------

# --- studies (in-process, on the synthetic dataset) ----------------------------------------------------

SPACE = {"optimizer.lr": {"loguniform": [1e-3, 0.1]}, "model.units": {"int": [4, 24]}, "epochs": {"int": [2, 5]}}


def test_a_study_trains_runs_prunes_and_continues(tiny_ds, tmp_path):
    seen = []
    rep = tune(tiny_recipe(), SPACE, trials=6, startup=3, runs_dir=tmp_path / "runs", dataset=tiny_ds,
               report=seen.append, study="s1")
    assert [t.number for t in seen] == list(range(6)) and len(rep.trials) == 6
    assert {t.state for t in rep.trials} <= {"complete", "pruned"} and rep.best is not None
    runs = Store(f"sqlite:///{tmp_path / 'runs' / 'trainlab.db'}").list(study="s1")
    assert sorted(r.trial for r in runs) == list(range(6))
    by_run = {r.run_id: r for r in runs}
    for t in rep.trials:  # each trial is a run with the sampled recipe; pruned trials are pruned runs
        rec = by_run[t.run_id]
        assert rec.status == ("completed" if t.state == "complete" else "pruned")
        recipe = trainlab.load_run(t.run_id, runs_dir=tmp_path / "runs").recipe
        assert recipe.model.layers[0].units == t.params["model.units"] and recipe.epochs == t.params["epochs"]
    best = rep.best_recipe
    assert best.optimizer.lr == pytest.approx(rep.best.params["optimizer.lr"]) and best.name == "tiny-tuned"
    assert trainlab.load_recipe(best).digest() == best.digest()
    # the same study name continues; another space under that name is refused
    rep2 = tune(tiny_recipe(), SPACE, trials=2, startup=3, runs_dir=tmp_path / "runs", dataset=tiny_ds, study="s1")
    assert len(rep2.trials) == 8
    with pytest.raises(TrainlabError, match="was started with another search space"):
        tune(tiny_recipe(), {**SPACE, "batch_size": {"choice": [8, 16]}}, trials=1, runs_dir=tmp_path / "runs",
             dataset=tiny_ds, study="s1")


def test_failed_trials_are_recorded_and_the_study_goes_on(tiny_ds, tmp_path):
    space = {"optimizer.lr": {"choice": [1e30, 0.01]}, "optimizer.name": {"choice": ["sgd"]}}
    rep = tune(tiny_recipe(), space, trials=4, sampler="grid", runs_dir=tmp_path / "runs", dataset=tiny_ds, pruner="none")
    states = {t.params["optimizer.lr"]: t for t in rep.trials}
    assert states[1e30].state == "fail" and "diverged" in states[1e30].error
    assert states[0.01].state == "complete"


def test_a_stop_leaves_the_study_consistent(tiny_ds, tmp_path, monkeypatch):
    stop = threading.Event()

    class StopInEpoch2(trainlab.Callback):
        def on_epoch_end(self, state, epoch, logs):
            if epoch == 1:
                stop.set()

    class Reporter(TrialReporter):  # the trial's callback, which also asks for a stop (as Ctrl-C does) in epoch 2
        def on_epoch_end(self, state, epoch, logs):
            super().on_epoch_end(state, epoch, logs)
            StopInEpoch2().on_epoch_end(state, epoch, logs)

    monkeypatch.setattr("trainlab.tuning.study.TrialReporter", Reporter)
    with pytest.raises(Interrupted):
        tune(tiny_recipe(epochs=6), {"optimizer.lr": {"loguniform": [1e-3, 0.1]}}, trials=5, runs_dir=tmp_path / "runs",
             dataset=tiny_ds, stop=stop, study="s")
    rep = study_report("s", f"sqlite:///{(tmp_path / 'runs' / 'studies.db').resolve()}")
    assert [t.state for t in rep.trials] == ["interrupted"]  # recorded, not left running; no new trial started
    run = Store(f"sqlite:///{tmp_path / 'runs' / 'trainlab.db'}").get(rep.trials[0].run_id)
    assert run.status == "interrupted" and run.study == "s" and run.trial == 0


def test_trial_reporter_prunes_through_the_trial():
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=0.5))
    trial = study.ask()
    rep = TrialReporter(trial, "val_acc")
    rep.on_epoch_end(None, 0, {"val_acc": 0.9})
    with pytest.raises(trainlab.errors.Pruned, match="pruned after epoch 2"):
        rep.on_epoch_end(None, 1, {"val_acc": 0.1})


# --- worker processes through the CLI: SQLite, PostgreSQL, SIGKILL ----------------------------------------

TREE_SPACE = "optimizer.lr: {loguniform: [1.0e-3, 1.0e-1]}\nmodel.units: {int: [4, 16]}\n"


@pytest.fixture
def tree_study(tmp_path, data_dir):
    tree = write_tree(tmp_path / "tree", classes=("dark", "light"), per_class=16, splits=(), size=(6, 6))
    (tmp_path / "space.yaml").write_text(TREE_SPACE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINLAB_")}
    env.update(TRAINLAB_DATA=str(data_dir), TRAINLAB_OFFLINE="1", TRAINLAB_RUNS=str(tmp_path / "runs"),
               XDG_CACHE_HOME=str(tmp_path / "cache"), PYTHONWARNINGS="ignore")

    def recipe(epochs: int) -> Path:
        path = tmp_path / f"tree-{epochs}.yaml"
        path.write_text(TREE_RECIPE.format(tree=tree, epochs=epochs))
        return path

    return {"root": tmp_path, "env": env, "recipe": recipe, "space": tmp_path / "space.yaml"}


def _tune(w, *args, **kw):
    return subprocess.Popen([sys.executable, "-m", "trainlab", "tune", *map(str, args)], env=w["env"], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=w["root"], **kw)


def _show(w, study: str, *extra) -> dict:
    p = trainlab_here("tune", "show", study, "--json", *extra, env=w["env"], cwd=w["root"])
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def _check_trials(rep: dict, expected: int) -> None:
    numbers = [t["number"] for t in rep["trials"]]
    assert sorted(numbers) == list(range(expected)), numbers  # none lost, none duplicated
    run_ids = [t["run_id"] for t in rep["trials"]]
    assert None not in run_ids and len(set(run_ids)) == expected


def test_three_worker_processes_share_an_sqlite_study(tree_study):
    w = tree_study
    p = _tune(w, w["recipe"](3), "--space", w["space"], "--trials", 7, "--jobs", 3, "--study", "shared", "--startup", 2)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert out.count("trial ") >= 7 and "best: trial" in out and "Traceback" not in out + err
    rep = _show(w, "shared")
    _check_trials(rep, 7)
    assert {t["state"] for t in rep["trials"]} <= {"complete", "pruned"}
    runs = json.loads(trainlab_here("runs", "--study", "shared", "--json", env=w["env"], cwd=w["root"]).stdout)
    assert sorted(r["trial"] for r in runs) == list(range(7))
    best = trainlab_here("tune", "best", "shared", env=w["env"], cwd=w["root"])
    (w["root"] / "best.yaml").write_text(best.stdout)
    assert load_recipe(w["root"] / "best.yaml").optimizer.lr == pytest.approx(rep["best"]["params"]["optimizer.lr"])
    assert sorted(p.name for p in (w["root"] / "runs" / "studies").iterdir()) == [
        f"shared-{k}.png" for k in ("history", "importance", "intermediate", "parallel")]


def test_two_processes_share_a_postgresql_study(tree_study, postgres_url):
    w = tree_study
    procs = [_tune(w, w["recipe"](3), "--space", w["space"], "--trials", 2, "--study", "pg", "--storage", postgres_url,
                   "--seed", i, "--no-plots") for i in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    rep = _show(w, "pg", "--storage", postgres_url)
    _check_trials(rep, 4)
    assert rep["storage"] == postgres_url


def test_a_worker_killed_mid_trial_leaves_a_usable_study(tree_study):
    w = tree_study
    # long enough trials to be caught training (150 epochs of the 32-image tree: seconds each)
    p = _tune(w, w["recipe"](150), "--space", w["space"], "--trials", 4, "--jobs", 2, "--study", "killed",
              "--heartbeat", 1, "--pruner", "none", "--no-plots")
    runs, victim, deadline = w["root"] / "runs", None, time.monotonic() + 120
    while victim is None and time.monotonic() < deadline:  # the first trial's run, while it trains
        for rec in runs.glob("*/run.json"):
            data = json.loads(rec.read_text())
            if data["status"] == "running" and data.get("process"):
                victim = data
                break
        time.sleep(0.05)
    assert victim is not None, p.communicate(timeout=5)
    os.kill(victim["process"]["pid"], signal.SIGKILL)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert "was killed by signal 9" in out and "Traceback" not in out + err
    # `tune show` fails a trial silent for its study's own grace period (6 s for a 1-second heartbeat)
    deadline = time.monotonic() + 60
    while True:
        rep = _show(w, "killed")
        killed = next(t for t in rep["trials"] if t["run_id"] == victim["run_id"])
        if killed["state"] != "running" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    states = {t["number"]: t["state"] for t in rep["trials"]}
    assert killed["state"] == "fail", states  # not "running" forever
    assert "running" not in states.values() and list(states.values()).count("complete") >= 2
    status = json.loads(trainlab_here("runs", "show", victim["run_id"], "--json", env=w["env"], cwd=w["root"]).stdout)
    assert status["status"] == "running"  # its record says running; the listing shows it stale
    assert "stale" in trainlab_here("runs", "--study", "killed", env=w["env"], cwd=w["root"]).stdout


def _live_trials(runs: Path, n: int, deadline: float) -> list[dict]:
    while time.monotonic() < deadline:
        live = [json.loads(r.read_text()) for r in runs.glob("*/run.json")]
        live = [d for d in live if d["status"] == "running" and d.get("process")]
        if len(live) >= n:
            return live
        time.sleep(0.05)
    raise AssertionError("no live trials appeared")


def _gone(pid: int, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:  # a zombie whose parent is gone is reaped by init; one of ours shows as Z
            if open(f"/proc/{pid}/stat").read().split(")")[1].split()[0] == "Z":
                return True
        except OSError:
            return True
        time.sleep(0.1)
    return False


def test_kill_9_of_tune_ends_its_workers_too(tree_study):
    w = tree_study
    p = _tune(w, w["recipe"](800), "--space", w["space"], "--trials", 4, "--jobs", 2, "--study", "orphans",
              "--pruner", "none", "--no-plots")
    live = _live_trials(w["root"] / "runs", 2, time.monotonic() + 120)
    p.kill()
    p.wait()
    for d in live:  # each worker noticed its parent's death and stopped its trial, checkpointed
        assert _gone(d["process"]["pid"]), f"worker {d['process']['pid']} still training after its parent was killed"
    for d in live:
        rec = json.loads((w["root"] / "runs" / d["run_id"] / "run.json").read_text())
        assert rec["status"] == "interrupted", rec["status"]


def test_sigint_to_the_tune_process_alone_stops_the_study(tree_study):
    w = tree_study
    p = _tune(w, w["recipe"](800), "--space", w["space"], "--trials", 20, "--jobs", 2, "--study", "polite",
              "--pruner", "none", "--no-plots")
    live = _live_trials(w["root"] / "runs", 2, time.monotonic() + 120)
    p.send_signal(signal.SIGINT)  # kill -INT PID: not the group
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130 and "Traceback" not in out + err, (p.returncode, err)
    assert "interrupted; the study keeps its finished trials" in err
    assert all(_gone(d["process"]["pid"], 5) for d in live)
    rep = _show(w, "polite")
    assert len(rep["trials"]) < 20 and "running" not in {t["state"] for t in rep["trials"]}


def test_ctrl_c_of_the_group_is_quiet_and_130(tree_study):
    w = tree_study
    p = _tune(w, w["recipe"](800), "--space", w["space"], "--trials", 20, "--jobs", 2, "--study", "group",
              "--pruner", "none", "--no-plots", start_new_session=True)
    _live_trials(w["root"] / "runs", 2, time.monotonic() + 120)
    os.killpg(p.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130 and "Traceback" not in out + err and "optuna" not in err.lower(), (p.returncode, err)


def test_tune_cli_refuses_bad_input(tree_study):
    w = tree_study
    cases = [
        (["tune", w["recipe"](2), "--space", "wallk"], "unknown space 'wallk' (did you mean 'walk'?)"),
        (["tune", w["recipe"](2), "--space", w["space"], "--trials", "0"], "--trials 0: give at least 1"),
        (["tune", w["recipe"](2), "--space", w["space"], "--sampler", "grid"], "a grid needs choice or int"),
        (["tune", w["recipe"](2), "--space", w["space"], "--pruner", "foo"], "--pruner 'foo'"),
        (["tune", w["recipe"](2), "--space", w["space"], "--storage", "nosuch://x"], "--storage nosuch://x: cannot open it"),
        (["tune", "show", "nosuch"], "no study 'nosuch'"),
        (["tune", "best", "nosuch"], "no study 'nosuch'"),
        (["lr-find", w["recipe"](2), "--steps", "3"], "at least 20 steps"),
    ]
    for args, message in cases:
        p = trainlab_here(*args, env=w["env"], cwd=w["root"])
        assert p.returncode == 2 and "Traceback" not in p.stderr, (args, p.stderr)
        assert p.stderr.startswith("error:") and message in p.stderr and p.stderr.count("\n") == 1, (args, p.stderr)
