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
  when exported, and the HTML report. A run already exported (tag `trainlab.run_id`) is skipped.
  `pip install 'trainlab[mlflow]'`.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

from trainlab.errors import TrainlabError
from trainlab.recipes import flatten_recipe
from trainlab.runs.files import read_history, read_recipe
from trainlab.runs.record import read_record, resolve_run_dir
from trainlab.settings import Settings, load_settings

EPOCH_KEYS = ("loss", "acc", "val_loss", "val_acc", "lr")
ARTIFACTS = ("model.safetensors", "best.safetensors", "recipe.yaml", "run.json", "history.csv", "model.onnx",
             "model-full.onnx", "README.md")


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _batches(run_dir: Path) -> list[dict]:
    """The batch events of events.jsonl, in order, each with its global step."""
    out = []
    path = run_dir / "events.jsonl"
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if e.get("type") == "batch":
            out.append({**e, "global": (e["epoch"] - 1) * e["steps"] + e["step"]})
    return out


def _hparams(recipe) -> dict:
    flat = flatten_recipe(recipe.to_dict())
    return {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in flat.items() if v is not None}


def _needs(module: str, extra: str, flag: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise TrainlabError(f"{flag} needs {extra}: pip install 'trainlab[{extra}]'") from None


def to_tensorboard(runs: list[str | os.PathLike], folder: str | os.PathLike, settings: Settings | None = None) -> list[Path]:
    """Event files for each run under `folder/<run id>`; returns those folders."""
    _needs("tensorboard", "tensorboard", "--tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    from trainlab.plots import plot_history
    from trainlab.runs.curves import Curve
    settings = settings or load_settings()
    out = []
    for run in runs:
        run_dir = resolve_run_dir(run, settings)
        record, recipe = read_record(run_dir), read_recipe(run_dir)
        history = read_history(run_dir / "history.csv") if (run_dir / "history.csv").is_file() else []
        target = Path(folder) / record.run_id
        writer = SummaryWriter(str(target))
        for h in history:
            for k in EPOCH_KEYS:
                if _finite(h.get(k)):
                    writer.add_scalar(f"epoch/{k}", h[k], int(h["epoch"]))
        for b in _batches(run_dir):
            for k in ("loss", "acc"):
                if _finite(b.get(k)):
                    writer.add_scalar(f"batch/{k}", b[k], int(b["global"]))
        m = record.metrics
        metrics = {f"hparam/{k}": getattr(m, k) for k in ("test_acc", "test_loss", "val_acc_at_best") if m and _finite(getattr(m, k))}
        writer.add_hparams(_hparams(recipe), metrics or {"hparam/test_acc": float("nan")}, run_name=".")
        if history:
            writer.add_figure("curves", plot_history(Curve(recipe, history, record.run_id)), int(history[-1]["epoch"]))
        _confusion_figure(writer, run_dir, settings, int(history[-1]["epoch"]) if history else 0)
        writer.close()
        out.append(target)
    return out


def _confusion_figure(writer, run_dir: Path, settings: Settings, step: int) -> None:
    from trainlab.plots import plot_confusion
    from trainlab.runs.run import load_run
    try:
        report = load_run(run_dir, settings).evaluate("test", settings)
    except TrainlabError:  # no weights (a failed run): curves and scalars only
        return
    writer.add_figure("confusion_matrix", plot_confusion(report), step)


def to_mlflow(runs: list[str | os.PathLike], uri: str, settings: Settings | None = None,
              experiment: str = "trainlab") -> list[tuple[str, str | None]]:
    """Log each run to the MLflow tracking store at `uri`; (trainlab run id, MLflow run id or None
    when it was there already)."""
    _needs("mlflow", "mlflow", "--mlflow")
    from mlflow.entities import Metric, Param, RunStatus
    from mlflow.tracking import MlflowClient
    settings = settings or load_settings()
    import logging
    for name in ("mlflow", "alembic"):  # "Updating database tables" and the like: not the user's business
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        client = MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(experiment)
        exp_id = found.experiment_id if found else client.create_experiment(experiment)
    except Exception as exc:  # the store's own errors: one line
        raise TrainlabError(f"--mlflow {uri}: {str(exc).splitlines()[0].split('. ')[0][:200]}") from None
    done = []
    for run in runs:
        run_dir = resolve_run_dir(run, settings)
        record, recipe = read_record(run_dir), read_recipe(run_dir)
        if client.search_runs([exp_id], f"tags.`trainlab.run_id` = '{record.run_id}'", max_results=1):
            done.append((record.run_id, None))
            continue
        mrun = client.create_run(exp_id, run_name=record.run_id, tags={"trainlab.run_id": record.run_id,
                                                                        "trainlab.recipe": record.recipe, "mlflow.source.name": "trainlab"})
        rid = mrun.info.run_id
        params = [Param(k[:250], str(v)[:6000]) for k, v in _hparams(recipe).items()]
        history = read_history(run_dir / "history.csv") if (run_dir / "history.csv").is_file() else []
        stamp = int(os.path.getmtime(run_dir / "run.json") * 1000)
        metrics = [Metric(k, float(h[k]), stamp, int(h["epoch"])) for h in history for k in EPOCH_KEYS if _finite(h.get(k))]
        m = record.metrics
        metrics += [Metric(k, float(getattr(m, k)), stamp, 0) for k in ("test_acc", "test_loss", "val_acc_at_best")
                    if m and _finite(getattr(m, k))]
        for i in range(0, len(params), 100):
            client.log_batch(rid, params=params[i:i + 100])
        for i in range(0, len(metrics), 1000):
            client.log_batch(rid, metrics=metrics[i:i + 1000])
        for name in ARTIFACTS:
            if (run_dir / name).is_file():
                client.log_artifact(rid, str(run_dir / name), "model" if name.endswith((".safetensors", ".onnx")) else None)
        _log_report(client, rid, run_dir, settings)
        status = {"completed": RunStatus.FINISHED, "failed": RunStatus.FAILED}.get(record.status, RunStatus.KILLED)
        client.set_terminated(rid, RunStatus.to_string(status))
        done.append((record.run_id, rid))
    return done


def _log_report(client, rid: str, run_dir: Path, settings: Settings) -> None:
    from trainlab.analysis.report import write_report
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = write_report([run_dir], Path(tmp) / "report.html", settings)
        except TrainlabError:
            return
        client.log_artifact(rid, str(path))
