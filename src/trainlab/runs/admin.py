"""The runs folder as a whole: re-index folders the index lacks, remove or stop a run, compare runs."""

from __future__ import annotations

import os
import shutil
import signal

from trainlab.errors import RunNotFound, TrainlabError
from trainlab.recipes import differing_keys, flatten_recipe, validate
from trainlab.runs.curves import Curve
from trainlab.runs.files import open_index, read_history, read_recipe
from trainlab.runs.record import RUN_ID_RE, Metrics, RunLock, RunRecord, read_record, resolve_run_dir
from trainlab.settings import Settings


def reindex(settings: Settings) -> tuple[list[str], list[str]]:
    """Index run folders that the index lacks; (added ids, warnings about folders skipped)."""
    store = open_index(settings)
    known = {r.run_id for r in store.list()}
    added, skipped = [], []
    for info_path in sorted(settings.runs_dir.glob("*/run.json")):
        run_dir = info_path.parent
        try:
            record, recipe = read_record(run_dir), read_recipe(run_dir)
            if record.run_id != run_dir.name:  # the index finds a run by its id: the folder must be named so
                raise TrainlabError(f"{run_dir}: its run.json names run {record.run_id!r}, not its folder's name; "
                                    f"rename the folder to {record.run_id} to index it")
            if record.run_id in known:
                continue
            history = read_history(run_dir / "history.csv")
        except TrainlabError as exc:
            skipped.append(str(exc))
            continue
        store.record_start(record, recipe.to_dict(), run_dir)
        store.record_epochs(record.run_id, history, recipe.monitor)
        store.record_end(record)
        added.append(record.run_id)
    return added, skipped


def remove_run(run: str, settings: Settings) -> str:
    """Delete a run's folder (only ever a direct child of the runs folder) and its index entry; an
    index entry whose folder was deleted by hand is removed too. Returns what was removed."""
    root = settings.runs_dir
    try:
        run_dir = resolve_run_dir(run, settings)
    except RunNotFound:
        index = open_index(settings)
        if RUN_ID_RE.match(str(run)) and any(r.run_id == str(run) for r in index.list()):
            index.remove(str(run))
            return f"{run} (index entry; its folder was already gone)"
        raise
    if run_dir.resolve().parent != root.resolve() or run_dir.is_symlink():
        raise TrainlabError(f"refusing to delete {run_dir}: it is not a run folder directly inside {root}")
    RunLock(run_dir).acquire(run_dir.name).release()  # never delete a run that is training
    open_index(settings).remove(run_dir.name)
    shutil.rmtree(run_dir)
    return str(run_dir)


def stop_run(run: str, settings: Settings) -> str:
    """Ask a run training in another process of this host to stop as Ctrl-C does (SIGINT: it stops
    after the current step, checkpointed, marked interrupted, resumable). Returns the run id."""
    run_dir = resolve_run_dir(run, settings)
    record = read_record(run_dir)
    if record.status != "running":
        raise TrainlabError(f"run {record.run_id} is {record.status}, not running")
    alive = record.process.alive() if record.process else False
    if alive is None:
        raise TrainlabError(f"run {record.run_id} trains on host {record.process.host}; stop it there (Ctrl-C)")
    if not alive:
        raise TrainlabError(f"run {record.run_id}: its process is gone; resume it with `trainlab train --resume {record.run_id}`")
    os.kill(record.process.pid, signal.SIGINT)
    return record.run_id


def compare_runs(runs: list[str], settings: Settings) -> tuple[list[RunRecord], list[Curve], dict[str, list]]:
    """Records and curves of several runs (from the index: failed runs without weights compare too),
    and the recipe settings that differ between them, side by side."""
    if len(runs) < 2:
        raise TrainlabError("compare needs two or more runs")
    store = open_index(settings)
    records = [store.get(resolve_run_dir(r, settings).name) for r in runs]
    recipes = [validate(store.recipe(r.run_id)) for r in records]
    flat = [flatten_recipe(rc.to_dict()) for rc in recipes]
    names = ["name"] if len({str(f.get("name")) for f in flat}) > 1 else []  # only when the recipes' names differ
    diff = {k: [f.get(k) for f in flat] for k in [*names, *differing_keys(flat)]}
    curves = [Curve(rc, store.history(r.run_id), r.run_id) for rc, r in zip(recipes, records)]
    return records, curves, diff


COMPARED_METRICS = ("val_acc_at_best", "val_acc", "test_acc", "test_loss", "train_seconds")


def metric_rows(records: list[RunRecord]) -> dict[str, list]:
    """What `runs compare` shows under the differing settings: status, epochs and the metrics, one
    list per row with a value per run (None where a run has none)."""
    rows: dict[str, list] = {"status": [r.status for r in records], "epochs": [r.epochs for r in records]}
    rows.update({k: [getattr(r.metrics or Metrics(), k) for r in records] for k in COMPARED_METRICS})
    for k in ("peak_rss_mb", "cpu_mean", "starved_fraction"):  # what it used of the machine (system/usage.py)
        rows[k] = [(r.system or {}).get(k) for r in records]
    return rows
