"""Run records: `runs/<run_id>/` with recipe.yaml, history.csv, metrics.json, model.safetensors and
run.json. Every file is written to a temp file and renamed, so no file is ever half-written."""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import re
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors.torch import load_file, save
from torch import nn

from trainlab import __version__
from trainlab.callbacks import Callback
from trainlab.errors import RunNotFound, TrainlabError
from trainlab.preprocess import Preprocess
from trainlab.predict import Predictions  # noqa: F401  (re-exported)
from trainlab.recipes import Recipe, validate

if TYPE_CHECKING:
    from trainlab.metrics import EvalReport

HISTORY_FIELDS = ["epoch", "loss", "acc", "val_loss", "val_acc", "lr", "seconds"]
RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def runs_root(runs_dir: str | os.PathLike | None = None) -> Path:
    return Path(runs_dir or os.environ.get("TRAINLAB_RUNS") or "runs").expanduser().resolve()


_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write to a temp file in the same folder, fsync, then rename over `path`. The file gets the
    usual mode (0666 less the umask), not mkstemp's private 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_weights(model: nn.Module, path: Path, metadata: dict[str, str]) -> None:
    """safetensors with the metadata packed into one sorted-JSON value under "trainlab": safetensors
    writes its metadata map in hash order, so several keys would make identical weights differ in bytes."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, save(state, metadata={"trainlab": json.dumps(metadata, sort_keys=True)}))


def history_csv(history: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, HISTORY_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in history:
        w.writerow({k: ("" if row.get(k) is None else row[k]) for k in HISTORY_FIELDS})
    return buf.getvalue()


def read_history(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [{k: (None if v == "" else (int(v) if k == "epoch" else float(v))) for k, v in r.items()} for r in rows]


def versions() -> dict:
    return {"trainlab": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": sys.version.split()[0], "platform": platform.platform()}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_run_id(recipe_name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9-]+", "-", recipe_name).strip("-")[:40] or "run"
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}-{secrets.token_hex(3)}"


class RunWriter:
    """Writes one run's folder as training goes: run.json at start, history each epoch, all at the end."""

    def __init__(self, run_dir: Path, run_id: str, recipe: Recipe, custom_model: str | None, store=None):
        self.run_dir, self.run_id, self.recipe, self.custom_model = run_dir, run_id, recipe, custom_model
        self.store = store  # the run index (trainlab.store.Store), or None
        self.info: dict = {}

    @classmethod
    def create(cls, recipe: Recipe, runs_dir=None, custom_model: str | None = None, db: str | None = None) -> "RunWriter":
        from trainlab.store import open_store
        root = runs_root(runs_dir)
        store = open_store(root, db)  # fails here, before any training, if the database is unusable
        run_id = new_run_id(recipe.name)
        run_dir = root / run_id
        run_dir.mkdir(parents=True, exist_ok=False)
        return cls(run_dir, run_id, recipe, custom_model, store)

    @classmethod
    def reopen(cls, run: str | os.PathLike, runs_dir=None, db: str | None = None) -> tuple["RunWriter", Recipe, dict]:
        """An interrupted or failed run's writer, recipe and last checkpoint, for `--resume`."""
        import yaml

        from trainlab.checkpoint import CHECKPOINT, load_checkpoint
        run_dir = resolve_run_dir(run, runs_dir)
        info = json.loads((run_dir / "run.json").read_text())
        recipe = validate(yaml.safe_load((run_dir / "recipe.yaml").read_text()), where=f"run {run_dir.name}")
        if info.get("status") == "completed":
            raise TrainlabError(f"run {run_dir.name} already completed; train again with `trainlab train {recipe.name} "
                                f"--seed {recipe.seed}`")
        if not (run_dir / CHECKPOINT).is_file():
            raise TrainlabError(f"run {run_dir.name} has no checkpoint (it stopped before its first one); "
                                f"start it again with `trainlab train {recipe.name} --seed {recipe.seed}`")
        from trainlab.store import open_store
        writer = cls(run_dir, info["run_id"], recipe, info.get("custom_model"), open_store(run_dir.parent, db))
        writer.info = info
        return writer, recipe, load_checkpoint(run_dir / CHECKPOINT)

    def start(self, data, device, seed: int, resumed: bool = False) -> None:
        if resumed:
            self.info.update(status="running", ended_at=None, error=None)
            self.info.setdefault("resumed_at", []).append(_now())
            self._write_info()
            if self.store:
                self.store.record_start(self.info, self.recipe.to_dict(), self.run_dir)
            return
        self.info = {
            "run_id": self.run_id, "recipe": self.recipe.name, "recipe_digest": self.recipe.digest(),
            "status": "running", "seed": seed, "device": str(device), "versions": versions(),
            "started_at": _now(), "ended_at": None, "error": None, "custom_model": self.custom_model,
            "dataset": {"name": data.name, "source": data.source, "classes": data.classes,
                        "n_train": len(data.x_train), "n_val": 0 if data.x_val is None else len(data.x_val),
                        "n_test": len(data.x_test)},
            "preprocess": data.preprocess.to_dict(),
        }
        atomic_write(self.run_dir / "recipe.yaml", self.recipe.to_yaml())
        self._write_info()
        if self.store:
            self.store.record_start(self.info, self.recipe.to_dict(), self.run_dir)

    def _write_info(self) -> None:
        atomic_write(self.run_dir / "run.json", json.dumps(self.info, indent=2) + "\n")

    def callback(self) -> Callback:
        writer = self

        es = self.recipe.callbacks.early_stopping
        monitor = es.monitor if es else "val_acc"  # the best checkpoint follows early stopping's metric
        better = max if monitor.endswith("acc") else min

        class _SaveHistory(Callback):
            """history.csv after every epoch; best.safetensors whenever the monitored metric improves."""

            def on_epoch_end(self, state, epoch, logs):
                atomic_write(writer.run_dir / "history.csv", history_csv(state.history))
                if writer.store:
                    writer.store.record_epochs(writer.run_id, state.history)
                seen = [h[monitor] for h in state.history if h.get(monitor) is not None]
                if seen and logs.get(monitor) is not None and logs[monitor] == better(seen):
                    save_weights(state.model, writer.run_dir / "best.safetensors",
                                 {"recipe": writer.recipe.to_yaml(), "epoch": epoch + 1, monitor: logs[monitor]})

        return _SaveHistory()

    def finish(self, state, status: str, metrics: dict | None = None, error: str | None = None,
               ood: dict | None = None) -> None:
        atomic_write(self.run_dir / "history.csv", history_csv(state.history))
        if metrics is not None:
            atomic_write(self.run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        # metadata describes the model (recipe, version), not the run: the same training gives the same bytes
        save_weights(state.model, self.run_dir / "model.safetensors",
                     {"recipe": self.recipe.to_yaml(), "trainlab": __version__})
        if state.history:
            from trainlab.plots import plot_history
            from types import SimpleNamespace
            plot_history(SimpleNamespace(recipe=self.recipe, history=state.history, run_id=self.run_id),
                         self.run_dir / "curves.png")
        if self.store:
            try:
                self.store.record_epochs(self.run_id, state.history)
                self.store.record_end(self.run_id, status, error, _now(), metrics)
            except TrainlabError as exc:  # the folder is the record; the index can be rebuilt (runs reindex)
                print(f"warning: {exc}", file=sys.stderr)
        self.info.update(status=status, ended_at=_now(), error=error, notes=state.notes, ood=ood,
                         timings={k: metrics[k] for k in ("data_seconds", "train_seconds", "total_seconds")}
                         if metrics else None)
        self._write_info()


@dataclass
class Run:
    """A trained model with its recipe, history and metrics; what `trainlab.train` returns."""

    recipe: Recipe
    model: nn.Module
    history: list[dict]
    metrics: dict
    classes: list[str]
    preprocess: Preprocess
    run_id: str | None = None
    run_dir: Path | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    data: object = None  # TensorData, kept after training; loaded on demand for a saved run
    ood: dict | None = None  # out-of-distribution thresholds calibrated on the validation split

    def tensors(self, data_dir=None):
        """The run's data splits on its device (kept from training, or loaded again for a saved run)."""
        if self.data is None:
            from trainlab.data import load_dataset
            from trainlab.train import prepare_data
            r = self.recipe
            ds = load_dataset(r.data.name, source=r.data.source, data_dir=data_dir, test_fraction=r.data.test_fraction,
                              split_seed=r.data.split_seed, progress=False)
            self.data = prepare_data(ds, r, self.device)
            self.data.preprocess = self.preprocess  # the run's own normalisation, not a refit
        return self.data

    def logits(self, split: str = "test", data_dir=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits, labels, uint8 images) of the test or val split."""
        from trainlab.train import predict_logits
        d = self.tensors(data_dir)
        x, y = (d.x_test, d.y_test) if split == "test" else (d.x_val, d.y_val)
        if x is None:
            raise TrainlabError(f"run {self.run_id}: it has no {split} split (data.validation is none); use --split test")
        logits = predict_logits(self.model, x, self.preprocess, self.recipe.eval_batch_size, self.device, self.recipe.tta)
        return logits.float().cpu(), y.cpu(), x.cpu()

    def evaluate(self, split: str = "test", data_dir=None, top_k: tuple[int, ...] = (1, 3, 5)) -> "EvalReport":
        """Loss, accuracy, top-k, per-class precision/recall/F1, confusion matrix, most-confused pairs."""
        from trainlab.metrics import classification_report
        logits, y, _ = self.logits(split, data_dir)
        return classification_report(logits, y, self.classes, split, ks=top_k)

    def predict(self, inputs, style: str | None = None) -> "Predictions":
        """Class probabilities for image files, folders, or dataset-format uint8 arrays."""
        from trainlab.predict import predict
        return predict(self, inputs, style)


def resolve_run_dir(run: str | os.PathLike, runs_dir=None) -> Path:
    """A run folder from an id (under the runs root) or a path; ids are checked against traversal."""
    text = str(run)
    path = Path(text).expanduser()
    if (path / "run.json").is_file():
        return path.resolve()
    if not RUN_ID_RE.match(text) or ".." in text:
        raise RunNotFound(f"'{text}' is not a valid run id (letters, digits, '.', '_' and '-') nor a run folder")
    root = runs_root(runs_dir)
    candidate = root / text
    if (candidate / "run.json").is_file():
        return candidate
    matches = sorted(p for p in root.glob(f"*{text}*") if (p / "run.json").is_file()) if root.is_dir() else []
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise RunNotFound(f"'{text}' matches {len(matches)} runs in {root}; give more of the id")
    raise RunNotFound(f"no run '{text}' in {root}; list runs with `ls {root}` or pass --runs-dir")


def load_run(run: str | os.PathLike, runs_dir=None, device: str = "cpu", model: nn.Module | None = None) -> Run:
    """Rebuild a saved run: recipe, model with its weights, history and metrics."""
    from trainlab.models import build_model, prefers_channels_last
    run_dir = resolve_run_dir(run, runs_dir)
    info = json.loads((run_dir / "run.json").read_text())
    import yaml
    recipe = validate(yaml.safe_load((run_dir / "recipe.yaml").read_text()), where=f"run {run_dir.name}")
    prep = Preprocess.from_dict(info["preprocess"])
    classes = info["dataset"]["classes"]
    weights = run_dir / "model.safetensors"
    if not weights.is_file():
        raise RunNotFound(f"run {run_dir.name} has no model.safetensors (status {info.get('status')}); it did not finish")
    if model is None:
        if info.get("custom_model"):
            raise TrainlabError(f"run {run_dir.name} trained a custom model ({info['custom_model']}); pass model= to load it")
        model, _ = build_model(recipe.model, prep.input_shape, len(classes))
    model.load_state_dict(load_file(weights))
    dev = torch.device(device)
    model.to(dev).eval()
    if prefers_channels_last(model, dev):
        model.to(memory_format=torch.channels_last)
    history = read_history(run_dir / "history.csv") if (run_dir / "history.csv").is_file() else []
    metrics = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").is_file() else {}
    return Run(recipe, model, history, metrics, classes, prep, info["run_id"], run_dir, dev, ood=info.get("ood"))


def reindex(runs_dir=None, db: str | None = None) -> list[str]:
    """Add run folders that the index lacks (made before it existed, or with another --db)."""
    from trainlab.store import open_store
    root = runs_root(runs_dir)
    store = open_store(root, db)
    known = {r["id"] for r in store.list()}
    added = []
    for info_path in sorted(root.glob("*/run.json")):
        info = json.loads(info_path.read_text())
        if info.get("run_id") in known:
            continue
        import yaml
        recipe = yaml.safe_load((info_path.parent / "recipe.yaml").read_text())
        store.record_start(info, recipe, info_path.parent)
        hist = info_path.parent / "history.csv"
        store.record_epochs(info["run_id"], read_history(hist) if hist.is_file() else [])
        metrics_path = info_path.parent / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else None
        store.record_end(info["run_id"], info.get("status", "unknown"), info.get("error"), info.get("ended_at"), metrics)
        added.append(info["run_id"])
    return added


def remove_run(run: str, runs_dir=None, db: str | None = None) -> Path:
    """Delete a run's folder (only ever a direct child of the runs folder) and its index entry."""
    import shutil

    from trainlab.store import open_store
    root = runs_root(runs_dir)
    run_dir = resolve_run_dir(run, root)
    if run_dir.resolve().parent != root.resolve() or run_dir.is_symlink():
        raise TrainlabError(f"refusing to delete {run_dir}: it is not a run folder directly inside {root}")
    open_store(root, db).remove(run_dir.name)
    shutil.rmtree(run_dir)
    return run_dir
