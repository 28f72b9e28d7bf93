"""The files of a run folder: recipe.yaml read back, history.csv written and read, safetensors
weights with their recipe beside them, the run id, versions and clock, and the runs folder opened
with its index. Every file but the append-only event log is written to a temp file and renamed."""

from __future__ import annotations

import csv
import io
import json
import platform
import re
import secrets
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors.torch import save
from torch import nn

from trainlab.errors import TrainlabError, first_line
from trainlab.fileio import atomic_write, load_yaml, read_inside, read_text_inside
from trainlab.history import HISTORY_COLUMNS, best_epoch
from trainlab.recipes import Recipe, validate
from trainlab.runs.record import Metrics
from trainlab.settings import Settings
from trainlab.version import __version__


def read_recipe(run_dir: Path) -> Recipe:
    """recipe.yaml of a run folder, validated; a broken one is one line naming the file and the fix."""
    path, fix = run_dir / "recipe.yaml", f"the run folder is damaged: remove it with `trainlab runs rm {run_dir.name}`"
    try:
        data = load_yaml(read_text_inside(run_dir, "recipe.yaml", fix), str(path))
    except yaml.YAMLError as exc:
        raise TrainlabError(f"{path}: not valid YAML ({first_line(exc)}); {fix}") from None
    return validate(data if isinstance(data, dict) else {}, where=f"run {run_dir.name}")


def final_metrics(history: list[dict], monitor: str, test_loss: float, test_acc: float, **timings: float) -> Metrics:
    """The run's summary: the last epoch, the best one (by the recipe's monitor), test results, timings."""
    last = history[-1] if history else {}
    best = best_epoch(history, monitor)
    return Metrics(test_loss=test_loss, test_acc=test_acc, loss=last.get("loss"), acc=last.get("acc"),
                   val_loss=last.get("val_loss"), val_acc=last.get("val_acc"), monitor=monitor,
                   best_epoch=best["epoch"] if best else None, val_acc_at_best=best.get("val_acc") if best else None,
                   epochs=len(history), **timings)



def save_weights(model: nn.Module, path: Path, metadata: dict) -> None:
    """safetensors with the metadata packed into one sorted-JSON value under "trainlab": safetensors
    writes its metadata map in hash order, so several keys would make identical weights differ in bytes."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, save(state, metadata={"trainlab": json.dumps(metadata, sort_keys=True)}))


def history_csv(history: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, HISTORY_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in history:
        w.writerow({k: ("" if row.get(k) is None else row[k]) for k in HISTORY_COLUMNS})
    return buf.getvalue()


def read_history(path: Path) -> list[dict]:
    """history.csv of a run folder (read the safe way, bounded); [] when there is none yet."""
    fix = f"remove the run with `trainlab runs rm {path.parent.name}`"
    try:
        text = read_inside(path.parent, path.name, fix).decode("utf-8", errors="replace")
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
        return [{k: (None if v in ("", None) else (int(v) if k == "epoch" else float(v))) for k, v in r.items()
                 if k in HISTORY_COLUMNS} for r in rows]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, TypeError, csv.Error) as exc:
        raise TrainlabError(f"{path}: unreadable history ({first_line(exc, 200)}); {fix}") from None


def versions() -> dict:
    return {"trainlab": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": sys.version.split()[0], "platform": platform.platform()}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_run_id(recipe_name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9-]+", "-", recipe_name).strip("-")[:40] or "run"
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}-{secrets.token_hex(3)}"


def open_runs_folder(settings: Settings):
    """Check that runs can be written under the runs folder and open its index (before any data loads)."""
    root = settings.runs_dir
    if root.exists() and not root.is_dir():
        raise TrainlabError(f"--runs-dir {root}: is a file, not a folder; pass a folder for the run folders")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrainlabError(f"--runs-dir {root}: cannot create it ({exc.strerror}); pass a writable folder") from None
    return open_index(settings)


def open_index(settings: Settings):
    """The run index (store.py); SQLAlchemy is imported only when an index is opened."""
    from trainlab.runs.store import open_store
    return open_store(settings)
