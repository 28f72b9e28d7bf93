"""Every notebook in examples/ runs top to bottom (nbclient, this environment's Python kernel) in
QUICK mode, and shows what its lesson shows: pictures, and no error. The five run two at a time
(each kernel with one OpenMP thread), once per session; a test per notebook checks its result."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))


@pytest.fixture(scope="module")
def executed(data_dir, tmp_path_factory):
    """{notebook stem: executed notebook, or the exception its execution raised}."""
    work = tmp_path_factory.mktemp("notebooks")
    env = {"QUICK": "1", "TRAINLAB_DATA": str(data_dir), "TRAINLAB_RUNS": str(work / "runs"), "OMP_NUM_THREADS": "1",
           "XDG_CACHE_HOME": os.environ.get("XDG_CACHE_HOME", str(work / "cache"))}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernels inherit this process's environment

    def run(path: Path):
        book = nbformat.read(path, as_version=4)
        try:
            NotebookClient(book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()
        except Exception as exc:  # reported by that notebook's test
            return path.stem, exc
        return path.stem, book

    try:
        with ThreadPoolExecutor(2) as pool:
            return dict(pool.map(run, NOTEBOOKS))
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def test_there_is_a_notebook_per_lesson():
    assert [p.stem for p in NOTEBOOKS] == ["browser-cnn", "cifar10-cnn", "fashion-mnist", "mnist-mlp", "tuning-walk"]


@pytest.mark.parametrize("name", [p.stem for p in NOTEBOOKS])
def test_notebook_runs(executed, name):
    book = executed[name]
    if isinstance(book, Exception):
        raise book
    outputs = [o for c in book.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2  # the data, the curves or the predictions
    text = "".join(o.get("text", "") for o in outputs)
    assert "quick run" in text and "Traceback" not in text
    if name == "fashion-mnist":
        html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
        assert "Training... (100.0%) done" in html  # the notebook progress bar reached its end
        assert "checked 1,000 fashion-mnist images (test) with 3-fold" in text and "without the 20 suspects" in text  # data health
