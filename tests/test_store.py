"""The run index (SQLite and PostgreSQL) and the `runs` commands."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import trainlab_here as cli  # in this process: the command's main(), no interpreter start
from sqlalchemy import create_engine, text

import trainlab
from trainlab.errors import TrainlabError
from trainlab.runs.store import SCHEMA_VERSION, Store

TINY = ["--epochs", "2", "--set", "data.limit_train=1500", "--set", "data.limit_test=300", "--quiet", "--json"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, data_dir):
    runs = tmp_path_factory.mktemp("runs")
    ids = []
    for lr in ("0.001", "0.003"):
        p = cli("train", "mnist-mlp", *TINY, "--set", f"optimizer.lr={lr}", runs=runs, data_dir=data_dir)
        assert p.returncode == 0, p.stderr
        ids.append(json.loads(p.stdout.splitlines()[-1])["run_id"])
    return runs, ids


def test_runs_lists_filters_and_sorts(two_runs):
    runs, ids = two_runs
    assert (runs / "trainlab.db").is_file()
    rows = json.loads(cli("runs", "--json", runs=runs).stdout)
    assert {r["run_id"] for r in rows} == set(ids)
    r = rows[0]
    assert r["status"] == "completed" and r["epochs"] == 2 and r["seed"] == 0 and r["versions"]["torch"]
    m = r["metrics"]
    assert m["val_acc_at_best"] is not None and m["test_acc"] is not None and m["train_seconds"] > 0
    assert m["best_epoch"] in (1, 2) and r["dataset"]["n_train"] == 1500 and r["preprocess"]["normalize"] == "scale"
    by_acc = json.loads(cli("runs", "--sort", "val_acc_at_best", "--json", runs=runs).stdout)
    assert by_acc[0]["metrics"]["val_acc_at_best"] >= by_acc[1]["metrics"]["val_acc_at_best"]
    assert json.loads(cli("runs", "--status", "failed", "--json", runs=runs).stdout) == []
    table = cli("runs", runs=runs).stdout
    assert ids[0] in table and "completed" in table
    bad = cli("runs", "--sort", "colour", runs=runs)
    assert bad.returncode == 2 and "--sort 'colour'" in bad.stderr


def test_show_compare_and_tag(two_runs):
    runs, ids = two_runs
    show = cli("runs", "show", ids[0], runs=runs)
    assert show.returncode == 0 and "val_acc_at_best" in show.stdout and "val_acc" in show.stdout
    cmp_ = cli("runs", "compare", *ids, runs=runs)
    assert cmp_.returncode == 0, cmp_.stderr
    lines = cmp_.stdout.splitlines()
    assert any(line.startswith("optimizer.lr") and "0.001" in line and "0.003" in line for line in lines)
    assert not any(line.startswith("batch_size") for line in lines)  # only what differs
    assert (runs / "compare.png").is_file()
    assert cli("runs", "tag", ids[1], "baseline", "keep", "--note", "lr sweep", runs=runs).returncode == 0
    tagged = json.loads(cli("runs", "--tag", "keep", "--json", runs=runs).stdout)
    assert [r["run_id"] for r in tagged] == [ids[1]] and tagged[0]["note"] == "lr sweep"
    assert tagged[0]["tags"] == ["baseline", "keep"]


def test_rerun_reproduces_the_weights(two_runs, data_dir):
    runs, ids = two_runs
    p = cli("rerun", ids[0], "--quiet", "--json", runs=runs, data_dir=data_dir)
    assert p.returncode == 0, p.stderr
    new = json.loads(p.stdout.splitlines()[-1])
    assert new["run_id"] not in ids and new["recipe"] == "mnist-mlp"
    sha = lambda d: hashlib.sha256((Path(d) / "model.safetensors").read_bytes()).hexdigest()  # noqa: E731
    assert sha(new["run_dir"]) == sha(runs / ids[0])


def test_rm_confirms_and_stays_inside_the_runs_folder(two_runs, tmp_path, data_dir):
    runs, _ = two_runs
    victim = trainlab.train("mnist-mlp", epochs=1, overrides={"data.limit_train": 500, "data.limit_test": 100},
                            runs_dir=runs, data_dir=data_dir, progress="none").run_id
    p = cli("runs", "rm", victim, runs=runs, stdin=subprocess.DEVNULL)
    assert p.returncode == 2 and "--yes" in p.stderr and (runs / victim).is_dir()
    for bad in ("/etc", "..%2f"):  # more in test_bad_inputs.py
        p = cli("runs", "rm", bad, "--yes", runs=runs)
        assert p.returncode == 2 and "Traceback" not in p.stderr
    outside = tmp_path / "outside-run"
    shutil.copytree(runs / victim, outside)
    p = cli("runs", "rm", str(outside), "--yes", runs=runs)
    assert p.returncode == 2 and "refusing to delete" in p.stderr and outside.is_dir()
    p = cli("runs", "rm", victim, "--yes", runs=runs)
    assert p.returncode == 0 and not (runs / victim).exists()
    assert victim not in {r["run_id"] for r in json.loads(cli("runs", "--json", runs=runs).stdout)}
    assert cli("runs", "show", "nosuch", runs=runs).returncode == 2


def test_reindex_adds_folders_the_index_lacks(two_runs, tmp_path):
    runs, ids = two_runs
    other = f"sqlite:///{tmp_path / 'other.db'}"
    p = cli("runs", "reindex", runs=runs, db=other)
    assert p.returncode == 0 and all(i in p.stdout for i in ids)
    rows = {r["run_id"]: r for r in json.loads(cli("runs", "--json", runs=runs, db=other).stdout)}
    assert rows[ids[0]]["epochs"] == 2 and rows[ids[0]]["metrics"]["test_acc"] is not None


def test_schema_version_is_checked(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    Store(url)
    with create_engine(url).begin() as conn:
        conn.execute(text("UPDATE schema_info SET version = 99"))
    with pytest.raises(TrainlabError, match="schema v99, newer than this trainlab"):
        Store(url)
    with create_engine(url).begin() as conn:
        conn.execute(text("UPDATE schema_info SET version = 0"))
    with pytest.raises(TrainlabError, match="cannot upgrade"):
        Store(url)


def test_bad_database_url_is_one_line(tmp_path, data_dir):
    p = cli("train", "mnist-mlp", *TINY, runs=tmp_path, data_dir=data_dir, db="nosuchdialect://x")
    assert p.returncode == 2 and p.stderr.startswith("error: --db nosuchdialect://x: cannot use this database URL")


def _concurrent(runs: Path, data_dir: Path, db: str | None) -> list[str]:
    env = dict(os.environ, TRAINLAB_RUNS=str(runs), TRAINLAB_DATA=str(data_dir), OMP_NUM_THREADS="1")
    if db:
        env["TRAINLAB_DB"] = db
    procs = [subprocess.Popen([sys.executable, "-m", "trainlab", "train", "mnist-mlp", "--seed", str(seed),
                               "--epochs", "4", "--set", "data.limit_train=3000", "--set", "data.limit_test=300",
                               "--set", "batch_size=20", "--quiet", "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for seed in (1, 2)]
    ids = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        ids.append(json.loads(out.splitlines()[-1])["run_id"])
    return ids


def test_two_processes_train_into_one_sqlite_store(tmp_path, data_dir):
    ids = _concurrent(tmp_path, data_dir, None)
    rows = {r["run_id"]: r for r in json.loads(cli("runs", "--json", runs=tmp_path).stdout)}
    assert set(rows) == set(ids)
    for i in ids:
        assert rows[i]["status"] == "completed" and rows[i]["epochs"] == 4
        assert len(Store(f"sqlite:///{tmp_path / 'trainlab.db'}").history(i)) == 4


# --- PostgreSQL --------------------------------------------------------------------------------

def test_postgresql_store_with_concurrent_writers(postgres_url, tmp_path, data_dir):
    ids = _concurrent(tmp_path, data_dir, postgres_url)
    rows = {r["run_id"]: r for r in json.loads(cli("runs", "--json", runs=tmp_path, db=postgres_url).stdout)}
    assert set(rows) == set(ids)
    assert all(rows[i]["status"] == "completed" and rows[i]["epochs"] == 4 for i in ids)
    assert not (tmp_path / "trainlab.db").exists()  # the URL was used, not the default SQLite file


def test_rerun_refuses_a_custom_model_run(tmp_path, data_dir):
    from torch import nn
    run = trainlab.train("mnist-mlp", epochs=1, progress="none", runs_dir=tmp_path, data_dir=data_dir,
                         model=nn.Sequential(nn.Linear(784, 10)), overrides={"data.limit_train": 500})
    p = cli("rerun", run.run_id, runs=tmp_path, data_dir=data_dir)
    assert p.returncode == 2 and "trained a custom model (Sequential)" in p.stderr


def test_a_schema_v2_index_is_upgraded_and_old_metrics_files_read(tmp_path):
    """v3 names the column for what it holds (val_acc at the monitor's best epoch); a v2 index is
    renamed in place, its values kept, and run.json/metrics.json written before read as well."""
    from trainlab.runs.record import Metrics, RunRecord
    url = f"sqlite:///{tmp_path / 'old.db'}"
    Store(url)
    engine = create_engine(url)
    with engine.begin() as conn:  # make it the v2 layout, as a previous trainlab left it
        conn.execute(text("ALTER TABLE runs RENAME COLUMN val_acc_at_best TO best_val_acc"))
        conn.execute(text("UPDATE schema_info SET version = 2"))
        conn.execute(text("INSERT INTO runs (id, recipe, recipe_digest, recipe_json, seed, status, epochs, best_val_acc, "
                          "best_epoch, run_dir) VALUES ('r1', 'mnist-mlp', 'd', '{}', 0, 'completed', 3, 0.97, 2, '/x')"))
    store = Store(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version FROM schema_info")).scalar() == SCHEMA_VERSION
        assert conn.execute(text("SELECT val_acc_at_best FROM runs WHERE id = 'r1'")).scalar() == 0.97
    (row,) = store.list(sort="val_acc_at_best")
    assert row.metrics.val_acc_at_best == 0.97 and row.metrics["best_epoch"] == 2
    assert store.list(sort="best_val_acc")[0].run_id == "r1"  # the old --sort name still works
    old = Metrics.model_validate_json('{"test_acc": 0.9, "best_val_acc": 0.95, "best_epoch": 4, "monitor": "val_loss"}')
    assert old.val_acc_at_best == 0.95 and old.get("nonsense") is None
    with pytest.raises(KeyError):
        old["nonsense"]
    rec = RunRecord.model_validate({"run_id": "r", "recipe": "x", "recipe_digest": "d", "status": "completed", "seed": 0,
                                    "metrics": {"best_val_acc": 0.5}, "ood": {"confidence_p02": 0.3, "mean_range": [0, 1],
                                                                             "std_range": [0, 1], "n": 10}})
    assert rec.metrics.val_acc_at_best == 0.5 and rec.ood.mean_range == (0, 1)


def test_reindex_of_many_runs_prints_a_count_and_a_few_ids(two_runs, tmp_path):
    runs, ids = two_runs
    copies = tmp_path / "copies"
    for k in range(6):
        new_id = f"{ids[0][:-6]}{k:06d}"
        shutil.copytree(runs / ids[0], copies / new_id)
        rec = json.loads((copies / new_id / "run.json").read_text())
        (copies / new_id / "run.json").write_text(json.dumps(dict(rec, run_id=new_id, run_dir=str(copies / new_id))))
    p = cli("runs", "reindex", runs=copies, db=f"sqlite:///{tmp_path / 'third.db'}")
    assert p.returncode == 0 and p.stdout.startswith("indexed 6 run(s): ") and p.stdout.rstrip().endswith("and 1 more")
