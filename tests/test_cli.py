"""End-to-end: the real `trainlab` entry point in a subprocess, tiny recipes, output parsed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import trainlab_here as cli  # in this process: the command's main(), no interpreter start


def test_train_json_last_line_and_run_folder(data_dir, tmp_path):
    p = cli("train", "mnist-mlp", "--epochs", "2", "--seed", "1", "--set", "data.limit_train=3000",
            "--set", "data.limit_test=500", "--set", "optimizer.lr=0.002", "--json",
            "--data-dir", data_dir, "--runs-dir", tmp_path / "runs")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    out = json.loads(lines[-1])
    assert {"run_id", "run_dir", "recipe", "test_loss", "test_acc", "train_seconds", "epochs", "seed"} <= set(out)
    assert out["recipe"] == "mnist-mlp" and out["epochs"] == 2 and out["seed"] == 1 and out["test_acc"] > 0.85
    # not a TTY: one plain Keras-style line per epoch
    epoch_lines = [line for line in lines if line.startswith("Epoch ")]
    assert len(epoch_lines) == 2 and "val_acc:" in epoch_lines[0] and "30/30" in epoch_lines[0]
    run_dir = Path(out["run_dir"])
    assert (run_dir / "model.safetensors").is_file() and "lr: 0.002" in (run_dir / "recipe.yaml").read_text()
    ev = cli("evaluate", out["run_id"], "--json", "--runs-dir", tmp_path / "runs", "--data-dir", data_dir)
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout)["accuracy"] == pytest.approx(out["test_acc"])


def test_quiet_prints_nothing_but_json(data_dir, tmp_path):
    p = cli("train", "walk-5-relu", "--quiet", "--json", "--epochs", "1", "--set", "data.limit_train=1000",
            "--set", "data.limit_test=200", "--data-dir", data_dir, "--runs-dir", tmp_path)
    assert p.returncode == 0, p.stderr
    assert len(p.stdout.strip().splitlines()) == 1 and json.loads(p.stdout)["recipe"] == "walk-5-relu"


def test_env_var_data_dir_and_python_m(data_dir, tmp_path):
    p = cli("train", "fashion-mlp", "--quiet", "--json", "--no-save", "--set", "data.limit_train=500",
            "--set", "data.limit_test=100", extra_env={"TRAINLAB_DATA": str(data_dir)}, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["run_id"] is None and not (tmp_path / "runs").exists()


# Bad input of every kind is in test_bad_inputs.py.


def test_recipes_show_summary_datasets(data_dir):
    p = cli("recipes")
    assert p.returncode == 0 and "walk-4-deeper" in p.stdout and "cifar10-cnn-deeper" in p.stdout
    p = cli("show", "mnist-mlp", "--set", "optimizer.lr=0.01")
    assert p.returncode == 0 and "lr: 0.01" in p.stdout and "rho: 0.9" in p.stdout
    p = cli("summary", "cifar10-cnn")
    assert p.returncode == 0 and "Total params: 2,122,186" in p.stdout
    p = cli("datasets", "list", "--json", "--data-dir", data_dir)
    rows = {r["name"]: r for r in json.loads(p.stdout)}
    assert rows["mnist"]["available"] and rows["fashion-mnist"]["classes"][0] == "T-shirt/top"
    p = cli("datasets", "verify", "fashion-mnist", "--data-dir", data_dir)
    assert p.returncode == 0 and p.stdout.count("ok ") == 4
