"""Shared fixtures: the real data directory, an isolated cache, and builders for tiny datasets."""

from __future__ import annotations

import glob
import gzip
import io
import os
import pickle
import shutil
import socket
import struct
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import create_engine, text

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    for cand in (os.environ.get("TRAINLAB_DATA"), REPO.parent / "shared" / "datasets"):
        if cand and (Path(cand) / "mnist").is_dir():
            return Path(cand).resolve()
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = shared_data_dir()
    if d is None:
        pytest.fail("the shared datasets are missing: set TRAINLAB_DATA to the folder holding mnist/ and fashion-mnist/")
    return d


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """Every test gets its own cache and runs folder, and never downloads."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("TRAINLAB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("TRAINLAB_OFFLINE", "1")
    monkeypatch.setenv("TRAINLAB_SYSTEM_DATA", str(tmp_path / "system-datasets"))  # subprocesses too


def idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def write_idx_dataset(folder: Path, n_train=60, n_test=20, seed=0, compress=True) -> dict[str, bytes]:
    """Four IDX files of random 28x28 images; returns the decompressed bytes by file name."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    contents = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        contents[f"{prefix}-images-idx3-ubyte"] = idx_bytes(rng.integers(0, 256, (n, 28, 28)))
        contents[f"{prefix}-labels-idx1-ubyte"] = idx_bytes(rng.integers(0, 10, (n,)))
    for name, data in contents.items():
        if compress:
            (folder / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return contents


def write_cifar_archive(path: Path, per_batch=4, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """A tiny cifar-10-python.tar.gz in the canonical format; returns the training images and labels."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    with tarfile.open(path, "w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
            labels = [int(v) for v in rng.integers(0, 10, per_batch)]
            blob = pickle.dumps({b"batch_label": name.encode(), b"labels": labels, b"data": data,
                                 b"filenames": [b"x.png"] * per_batch}, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
            if name != "test_batch":
                xs.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
                ys += labels
    return np.concatenate(xs), np.asarray(ys)


def write_tree(root: Path, classes=("cat", "dog"), per_class=5, splits=("train", "test"), size=(8, 8), mode="RGB",
               fmt="png", seed=0) -> Path:
    """An image tree on disk: <split>/<class>/<i>.<fmt> (no split level when splits is empty)."""
    rng = np.random.default_rng(seed)
    for split in (splits or ("",)):
        for ci, cls in enumerate(classes):
            d = root / split / cls if split else root / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
                level = 20 + 200 * ci / max(1, len(classes) - 1)  # each class has its own brightness
                arr = np.clip(rng.normal(level, 4, shape), 0, 255).astype(np.uint8)
                Image.fromarray(arr, mode).save(d / f"{i}.{fmt}")
    return root


# --- a tiny synthetic dataset for unit tests of the loop, callbacks, checkpoints and runs ---------

def synthetic_dataset(n_train: int = 240, n_test: int = 60, classes: int = 3, size: int = 8, seed: int = 0):
    """Images whose class is a brighter row at a class-specific height, under heavy noise: a tiny MLP
    reaches ~0.85 in a few epochs, and over-fits after that (validation loss rises)."""
    from trainlab.data.readers import Dataset
    rng = np.random.default_rng(seed)

    def make(n):
        y = rng.integers(0, classes, n)
        x = rng.normal(60, 50, (n, size, size, 1))
        rows = (y * (size // classes) + 1).clip(0, size - 1)
        x[np.arange(n), rows, :, 0] += 40  # weak enough that a 16-unit MLP over-fits 180 images
        return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64)

    x_tr, y_tr = make(n_train)
    x_te, y_te = make(n_test)
    return Dataset("synthetic", [f"c{i}" for i in range(classes)], x_tr, y_tr, x_te, y_te, source="synthetic")


# a tiny recipe over an image tree (format with tree= and epochs=), for subprocess tests of the CLI
TREE_RECIPE = """name: tiny-tree
data: {{name: {tree}, flatten: true, validation: 0.25}}
model:
  layers:
    - {{type: dense, units: 8, activation: relu}}
    - {{type: dense, units: 2, activation: softmax}}
optimizer: {{name: adam, lr: 0.01}}
batch_size: 8
epochs: {epochs}
"""


# a small real-MNIST MLP (a few seconds): the dashboard's API and browser tests
MNIST_TINY = {"name": "mnist-tiny", "data": {"name": "mnist", "flatten": True, "validation": 0.2, "limit_train": 1500,
                                             "limit_test": 300},
              "model": {"layers": [{"type": "dense", "units": 24, "activation": "relu"},
                                   {"type": "dense", "units": 10, "activation": "softmax"}]},
              "optimizer": {"name": "adam", "lr": 0.003}, "batch_size": 32, "epochs": 2}


TINY_RECIPE = {
    "name": "tiny", "description": "unit-test MLP on the synthetic dataset",
    "data": {"name": "synthetic", "normalize": "scale", "flatten": True, "validation": 0.25},
    "model": {"layers": [{"type": "dense", "units": 16, "activation": "relu"},
                         {"type": "dense", "units": 3, "activation": "softmax"}]},
    "optimizer": {"name": "adam", "lr": 0.01}, "batch_size": 16, "epochs": 3,
}


def tiny_recipe(**changes):
    from trainlab.recipes import apply_overrides, validate
    return validate(apply_overrides(TINY_RECIPE, changes))


@pytest.fixture(scope="session")
def tiny_ds():
    return synthetic_dataset()


@pytest.fixture
def tiny_train(tiny_ds, tmp_path):
    """trainlab.train on the synthetic dataset: tiny_train(overrides..., save=..., callbacks=...)."""
    import trainlab

    def run(_changes: dict | None = None, **kw):
        kw.setdefault("progress", "none")
        kw.setdefault("runs_dir", tmp_path / "runs")
        if "resume" in kw:
            return trainlab.resume(kw.pop("resume"), dataset=tiny_ds, **kw)
        return trainlab.train(tiny_recipe(**(_changes or {})), dataset=tiny_ds, **kw)

    return run


# --- a throwaway PostgreSQL server (store and tuning tests) ---------------------------------------

def _find_pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@pytest.fixture(scope="session")
def postgres_url():
    """A throwaway PostgreSQL server on a Unix socket; installs Debian's package when missing."""
    pg_bin = _find_pg_bin()
    if pg_bin is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", "postgresql"], capture_output=True, timeout=600,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        pg_bin = _find_pg_bin()
    if pg_bin is None:
        pytest.skip("no PostgreSQL server here and none could be installed (apt-get install postgresql)")
    # not under pytest's temp root: that is private to root, and the server runs as 'postgres'
    base = Path(tempfile.mkdtemp(prefix="trainlab-pg-"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    as_user = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        shutil.chown(base, "postgres")
        shutil.chown(sock, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    r = subprocess.run(as_user + [str(pg_bin / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"initdb failed: {r.stderr.strip()[:200]}")
    r = subprocess.run(as_user + [str(pg_bin / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w", "-o",
                                  f"-p {port} -k {sock} -c listen_addresses=''", "start"], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"PostgreSQL did not start: {r.stderr.strip()[:200]}")
    try:
        admin = create_engine(f"postgresql+psycopg://postgres@/postgres?host={sock}&port={port}",
                              isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("CREATE DATABASE trainlab"))
        admin.dispose()
        yield f"postgresql+psycopg://postgres@/trainlab?host={sock}&port={port}"
    finally:
        subprocess.run(as_user + [str(pg_bin / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
