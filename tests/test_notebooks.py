"""Every notebook in examples/ runs top to bottom (nbclient, this environment's Python kernel) in
QUICK mode, and shows what its lesson shows: pictures, and no error."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))


def test_there_is_a_notebook_per_lesson():
    assert [p.stem for p in NOTEBOOKS] == ["browser-cnn", "cifar10-cnn", "fashion-mnist", "mnist-mlp", "tuning-walk"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("QUICK", "1")
    monkeypatch.setenv("TRAINLAB_DATA", str(data_dir))
    monkeypatch.setenv("TRAINLAB_RUNS", str(tmp_path / "runs"))
    book = nbformat.read(path, as_version=4)
    NotebookClient(book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in book.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2  # the data, the curves or the predictions
    text = "".join(o.get("text", "") for o in outputs)
    assert "quick run" in text and "Traceback" not in text
    if path.stem == "fashion-mnist":
        html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
        assert "Training... (100.0%) done" in html  # the notebook progress bar reached its end
