"""Runs into the trackers teams already use (`trainlab runs export RUN... --tensorboard DIR --mlflow URI`).

- **TensorBoard** event files, one folder per run under DIR: scalars per epoch (`epoch/loss`,
  `epoch/acc`, `epoch/val_loss`, `epoch/val_acc`, `epoch/lr`) and per logged batch (`batch/loss`,
  `batch/acc`, from events.jsonl, stepped by batches seen), the recipe as hyperparameters for the
  HParams plugin with the test metrics, and the learning curves and confusion matrix as images.
  Written with torch's own `SummaryWriter`; `pip install 'trainlab[tensorboard]'`.
- **MLflow**: one MLflow run per trainlab run in an experiment (default `trainlab`) of the tracking
  store at URI (`file:./mlruns`, `sqlite:///mlflow.db`, or a team's `http://server:5000`): the
  flattened recipe as params, per-epoch metrics (step = epoch) and the test metrics, tags naming the
  trainlab run, and as artifacts the weights and recipe, run.json, the ONNX files and model card
  when exported, and the HTML report. A run already exported (tag `trainlab.run_id`) is skipped;
  one whose export was cut short (left RUNNING) is made again. `pip install 'trainlab[mlflow]'`.

Both carry the run's real times (its start, each epoch's end from events.jsonl, its end), not the
export's, and exporting twice changes nothing. A run folder is read the safe way (its own regular
files only), whatever machine it came from.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path

from trainlab.errors import TrainlabError
from trainlab.fileio import open_inside, write_error
from trainlab.recipes import flatten_recipe
from trainlab.runs.files import read_history, read_recipe
from trainlab.runs.record import read_record, resolve_run_dir
from trainlab.settings import Settings, load_settings
from trainlab.system.process_wide import environment, quiet_loggers

EPOCH_KEYS = ("loss", "acc", "val_loss", "val_acc", "lr")
ARTIFACTS = ("model.safetensors", "best.safetensors", "recipe.yaml", "run.json", "history.csv", "model.onnx",
             "model-full.onnx", "README.md")


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


MAX_EVENTS = 2_000_000  # lines of events.jsonl exported (a day of training reports ~1.7 million)


def _events(run_dir: Path) -> list[dict]:
    """events.jsonl's events, in order, read the safe way (a regular file inside the run folder, line
    by line, each at most 1 MB): an empty list when there is none."""
    try:
        fh = open_inside(run_dir, "events.jsonl")
    except FileNotFoundError:
        return []
    out = []
    with fh:
        while len(out) < MAX_EVENTS and (line := fh.readline(1 << 20)):
            try:
                e = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if isinstance(e, dict) and isinstance(e.get("type"), str):
                out.append(e)
    return out


def _batches(events: list[dict]) -> list[dict]:
    """The batch events, each with its global step."""
    out = []
    for e in events:
        if e["type"] == "batch" and all(_finite(e.get(k)) for k in ("epoch", "steps", "step")):
            out.append({**e, "global": (int(e["epoch"]) - 1) * int(e["steps"]) + int(e["step"])})
    return out


def _epoch_times(record, history: list[dict], events: list[dict]) -> dict[int, float]:
    """When each epoch ended, in Unix seconds: its event's time (events.jsonl), else the run's start
    plus the epochs' own seconds. The trackers show the run's real times, not the export's."""
    times = {int(e["epoch"]): float(e["t"]) for e in events if e["type"] == "epoch" and _finite(e.get("epoch"))
             and _finite(e.get("t"))}
    start = _unix(record.started_at)
    clock = start if start is not None else 0.0
    for h in history:
        clock += h.get("seconds") or 0.0
        times.setdefault(int(h["epoch"]), clock)
    return times


def _unix(iso: str | None) -> float | None:
    from datetime import datetime
    try:
        return datetime.fromisoformat(iso).timestamp() if iso else None
    except ValueError:
        return None


def _hparams(recipe) -> dict:
    flat = flatten_recipe(recipe.to_dict())
    return {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in flat.items() if v is not None}


def _needs(module: str, extra: str, flag: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise TrainlabError(f"{flag} needs {extra}: pip install 'trainlab[{extra}]'") from None


def _export_folder(folder: str | os.PathLike) -> Path:
    """The TensorBoard folder, made if needed; a file, a device or an unwritable place is one line."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise TrainlabError(f"--tensorboard {folder}: is a file, not a folder; give a folder for the event files")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".trainlab-probe-")
        probe.close()
    except OSError as exc:
        raise write_error(folder, exc, 0) from None
    return folder


def to_tensorboard(runs: list[str | os.PathLike], folder: str | os.PathLike, settings: Settings | None = None) -> list[Path]:
    """Event files for each run under `folder/<run id>`, with the run's own times; returns those
    folders. Exporting again replaces a run's folder whole (written beside it, then swapped in), so
    a second export changes nothing."""
    _needs("tensorboard", "tensorboard", "--tensorboard")
    settings = settings or load_settings()
    root = _export_folder(folder)
    out = []
    for run in runs:
        run_dir = resolve_run_dir(run, settings)
        record = read_record(run_dir)  # its run_id is checked to be a plain name: the folder is made from it
        target = root / record.run_id
        staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{record.run_id}."))
        try:
            _write_tensorboard(run_dir, record, staging, settings)
            if target.exists():
                old = Path(tempfile.mkdtemp(dir=root, prefix=f".{record.run_id}.old."))
                os.replace(target, old / "run")
                os.replace(staging, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(staging, target)
        except OSError as exc:
            raise write_error(target, exc, 0) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        out.append(target)
    return out


def _write_tensorboard(run_dir: Path, record, target: Path, settings: Settings) -> None:
    from torch.utils.tensorboard import SummaryWriter

    from trainlab.plots import plot_history
    from trainlab.runs.curves import Curve
    recipe, history, events = read_recipe(run_dir), read_history(run_dir / "history.csv"), _events(run_dir)
    when = _epoch_times(record, history, events)
    writer = SummaryWriter(str(target))
    try:
        for h in history:
            for k in EPOCH_KEYS:
                if _finite(h.get(k)):
                    writer.add_scalar(f"epoch/{k}", h[k], int(h["epoch"]), walltime=when.get(int(h["epoch"])))
        for b in _batches(events):
            for k in ("loss", "acc"):
                if _finite(b.get(k)):
                    writer.add_scalar(f"batch/{k}", b[k], int(b["global"]), walltime=b.get("t"))
        m = record.metrics
        metrics = {f"hparam/{k}": getattr(m, k) for k in ("test_acc", "test_loss", "val_acc_at_best") if m and _finite(getattr(m, k))}
        writer.add_hparams(_hparams(recipe), metrics or {"hparam/test_acc": float("nan")}, run_name=".")
        last = int(history[-1]["epoch"]) if history else 0
        if history:
            writer.add_figure("curves", plot_history(Curve(recipe, history, record.run_id)), last, walltime=when.get(last))
        _confusion_figure(writer, run_dir, settings, last, when.get(last))
    finally:
        writer.close()


def _confusion_figure(writer, run_dir: Path, settings: Settings, step: int, walltime: float | None) -> None:
    from trainlab.plots import plot_confusion
    from trainlab.runs.run import load_run
    try:
        report = load_run(run_dir, settings).evaluate("test", settings)
    except TrainlabError:  # no weights (a failed run), no data here: curves and scalars only
        return
    writer.add_figure("confusion_matrix", plot_confusion(report), step, walltime=walltime)


def _reachable(uri: str, timeout: float = 5.0) -> None:
    """An http(s) tracking server that answers a TCP connection within `timeout`; else one line (MLflow
    itself retries for minutes)."""
    from urllib.parse import urlsplit
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return
    import socket
    try:
        with socket.create_connection((parts.hostname or "localhost", parts.port or (443 if parts.scheme == "https" else 80)),
                                      timeout=timeout):
            pass
    except OSError as exc:
        raise TrainlabError(f"--mlflow {uri}: no tracking server answers there ({exc.strerror or exc}); "
                            f"start it (mlflow server) or give another URI") from None


def to_mlflow(runs: list[str | os.PathLike], uri: str, settings: Settings | None = None,
              experiment: str = "trainlab") -> list[tuple[str, str | None]]:
    """Log each run to the MLflow tracking store at `uri`, with the run's own start and end times;
    (trainlab run id, MLflow run id or None when it was there already). An export that was cut
    short (its MLflow run left RUNNING) is deleted and made again. Artifacts go to the experiment's
    artifact location (`artifact_location`: for a sqlite:/// store, `mlruns/` beside the database
    file, not the current folder)."""
    _needs("mlflow", "mlflow", "--mlflow")
    settings = settings or load_settings()
    _reachable(uri)
    # "Updating database tables" and the like are not the user's business; MLflow's HTTP retries
    # (minutes against a dead server) are cut to one quick attempt; both put back after
    with quiet_loggers("mlflow", "alembic", level=logging.WARNING), \
            environment(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="30"):
        client, exp_id = _mlflow_experiment(uri, experiment)
        return [_to_mlflow_run(client, exp_id, resolve_run_dir(run, settings), settings) for run in runs]


def mlflow_artifact_root(uri: str) -> str | None:
    """Where a new experiment's artifacts go for a tracking URI: beside a SQLite database, inside a
    file store; None lets the server decide."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlruns").as_uri()
    return None


def _mlflow_experiment(uri: str, experiment: str):
    from mlflow.tracking import MlflowClient
    try:
        client = MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(experiment)
        exp_id = found.experiment_id if found else client.create_experiment(experiment,
                                                                            artifact_location=mlflow_artifact_root(uri))
    except Exception as exc:  # the store's own errors: one line
        raise TrainlabError(f"--mlflow {uri}: {str(exc).splitlines()[0].split('. ')[0][:200]}") from None
    return client, exp_id


def _to_mlflow_run(client, exp_id: str, run_dir: Path, settings: Settings) -> tuple[str, str | None]:
    from mlflow.entities import Metric, Param, RunStatus
    record, recipe = read_record(run_dir), read_recipe(run_dir)
    for old in client.search_runs([exp_id], f"tags.`trainlab.run_id` = '{record.run_id}'", max_results=10):
        if old.info.status != "RUNNING":
            return record.run_id, None
        client.delete_run(old.info.run_id)  # an export killed half-way: made again below
    history, events = read_history(run_dir / "history.csv"), _events(run_dir)
    when = _epoch_times(record, history, events)
    start = _unix(record.started_at)
    end = _unix(record.ended_at) or (max(when.values()) if when else None)
    mrun = client.create_run(exp_id, start_time=int(start * 1000) if start else None, run_name=record.run_id,
                             tags={"trainlab.run_id": record.run_id, "trainlab.recipe": record.recipe,
                                   "mlflow.source.name": "trainlab"})
    rid = mrun.info.run_id
    params = [Param(k[:250], str(v)[:6000]) for k, v in _hparams(recipe).items()]
    stamp = int((end or start or 0) * 1000)
    metrics = [Metric(k, float(h[k]), int(when.get(int(h["epoch"]), 0) * 1000) or stamp, int(h["epoch"]))
               for h in history for k in EPOCH_KEYS if _finite(h.get(k))]
    m = record.metrics
    metrics += [Metric(k, float(getattr(m, k)), stamp, 0) for k in ("test_acc", "test_loss", "val_acc_at_best")
                if m and _finite(getattr(m, k))]
    for i in range(0, len(params), 100):
        client.log_batch(rid, params=params[i:i + 100])
    for i in range(0, len(metrics), 1000):
        client.log_batch(rid, metrics=metrics[i:i + 1000])
    for name in ARTIFACTS:
        try:
            with open_inside(run_dir, name):  # only the run's own regular files, never through a link
                pass
        except FileNotFoundError:
            continue
        client.log_artifact(rid, str(run_dir / name), "model" if name.endswith((".safetensors", ".onnx")) else None)
    _log_report(client, rid, run_dir, settings)
    status = {"completed": RunStatus.FINISHED, "failed": RunStatus.FAILED}.get(record.status, RunStatus.KILLED)
    client.set_terminated(rid, RunStatus.to_string(status), end_time=int(end * 1000) if end else None)
    return record.run_id, rid


def mlflow_artifact_location(uri: str, experiment: str = "trainlab") -> str | None:
    """Where the experiment keeps its artifacts (what `trainlab runs export --mlflow` tells you)."""
    from mlflow.tracking import MlflowClient
    try:
        found = MlflowClient(tracking_uri=uri).get_experiment_by_name(experiment)
    except Exception:  # already reported by the export itself
        return None
    return found.artifact_location if found else None


def _log_report(client, rid: str, run_dir: Path, settings: Settings) -> None:
    from trainlab.analysis.report import write_report
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = write_report([run_dir], Path(tmp) / "report.html", settings)
        except TrainlabError:
            return
        client.log_artifact(rid, str(path))
