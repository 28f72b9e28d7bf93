"""Runs, one run, its live events (Server-Sent Events), stop/resume, files, compare."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, StreamingResponse

from trainlab.errors import NotResumable
from trainlab.fileio import open_inside
from trainlab.history import hidden_curves
from trainlab.runs.admin import compare_runs, stop_run
from trainlab.runs.curves import curves_png
from trainlab.runs.events import EVENTS, last_events, offset_after, read_events
from trainlab.runs.files import read_history, read_recipe
from trainlab.runs.record import ENDED, LIVE_STATUSES, Metrics, read_record
from trainlab.runs.store import RunQuery
from trainlab.runs.writer import check_resumable
from trainlab.training.build import summarize
from trainlab.web.deps import IndexDep, JobsDep, ReportsDep, RunDirDep, SettingsDep, checked_run_dir
from trainlab.web.finite_json import finite
from trainlab.web.schemas import Comparison, JobAnswer, RunDetail, RunsPage, Stopping

router = APIRouter(prefix="/api/v1", tags=["runs"])
FILES = {"model.safetensors", "best.safetensors", "recipe.yaml", "run.json", "history.csv", "metrics.json", "curves.png",
         "events.jsonl"}
BATCH_INTERVAL = 0.05  # at most ~20 batch points a second per run reach a client
POLL = 0.2  # seconds between looks at a live run's event log


def _row(record, runs_dir: Path) -> dict:
    d = record.model_dump(mode="json", include={"run_id", "recipe", "status", "tags", "started_at", "ended_at", "epochs",
                                                "seed", "study", "trial", "error"})
    m, t = record.metrics or Metrics(), record.timings or {}
    system = record.system or {}
    d.update(live_status=record.live_status(), val_acc_at_best=m.val_acc_at_best, test_acc=m.test_acc,
             seconds=t.get("total_seconds"), dataset=record.dataset.name if record.dataset else None,
             peak_rss_mb=system.get("peak_rss_mb"), cpu_mean=system.get("cpu_mean"))
    if record.status == "running":
        last = last_events(runs_dir / record.run_id / EVENTS)
        d["progress"] = (last.get("batch") or {}).get("progress", 0.0)
        d["epochs_total"] = (last.get("status") or {}).get("epochs")
    return d


@router.get("/runs", response_model=RunsPage)
def list_runs(s: SettingsDep, index: IndexDep, recipe: str | None = Query(None, max_length=200),
              status: str | None = None, tag: str | None = Query(None, max_length=100),
              dataset: str | None = Query(None, max_length=500), study: str | None = Query(None, max_length=200),
              q: str | None = Query(None, max_length=200, description="a part of the id, recipe, note, dataset, study or a tag"),
              min_test_acc: float | None = Query(None, ge=0, le=1), max_test_acc: float | None = Query(None, ge=0, le=1),
              min_val_acc: float | None = Query(None, ge=0, le=1), max_val_acc: float | None = Query(None, ge=0, le=1),
              sort: str = "started_at", desc: bool = True, offset: int = Query(0, ge=0, le=10**7),
              limit: int = Query(100, ge=1, le=1000)):
    """One page of the runs table, filtered and sorted in the run index (runs.store.Store.query)."""
    if status is not None and status not in LIVE_STATUSES:
        raise HTTPException(422, f"status {status[:40]!r}: use one of {', '.join(LIVE_STATUSES)}")
    query = RunQuery(recipe=recipe, status=status, tag=tag, dataset=dataset, study=study, text=q or None,
                     min_test_acc=min_test_acc, max_test_acc=max_test_acc, min_val_acc=min_val_acc, max_val_acc=max_val_acc,
                     sort=sort, descending=desc, offset=offset, limit=limit)
    rows, total = index.query(query)
    return {"runs": [_row(r, s.runs_dir) for r in rows], "total": total, "offset": offset, "limit": limit}


@router.get("/runs/{run_id}", response_model=RunDetail)
def get_run(run_id: str, folder: RunDirDep, s: SettingsDep, jobs: JobsDep):
    record, recipe = read_record(folder), read_recipe(folder)
    try:
        summary = summarize(recipe, s)
    except Exception as exc:  # a custom model or missing data: the page shows why
        summary = f"(no layer summary: {str(exc).splitlines()[0]})"
    files = sorted(f for f in FILES if _regular(folder, f) or f == "curves.png" and _regular(folder, "history.csv"))
    job = jobs.for_run(run_id)
    return {"record": record.model_dump(mode="json"), "live_status": record.live_status(), "recipe": recipe.to_dict(),
            "recipe_yaml": recipe.to_yaml(), "history": read_history(folder / "history.csv"), "summary": summary,
            "files": files, "job": job.to_dict() if job else None}


async def _follow(path: Path, request: Request, last_id: int):
    """SSE lines for the log's events after `last_id`, following the file as it grows: each poll
    reads only the bytes appended since the last one. Ends after a final status event, and when
    the run has ended (or its folder was deleted) with nothing more to send: a client that
    reconnects after the end, or to a deleted run, gets `end` instead of keep-alives forever."""
    offset = offset_after(path, last_id)
    next_batch, idle_since, looked = 0.0, time.monotonic(), 0.0  # batch points thinned by their own timestamps (replays too)
    yield "retry: 1000\n\n"
    while not await request.is_disconnected():
        events, offset = read_events(path, offset)
        done = False
        for e in events:
            if e["type"] == "batch":
                if e["t"] < next_batch:
                    continue
                next_batch = e["t"] + BATCH_INTERVAL
            done = e["type"] == "status" and e.get("status") in ENDED
            yield f"id: {e['id']}\nevent: {e['type']}\ndata: {json.dumps(finite(e), separators=(',', ':'))}\n\n"
        if done:
            yield "event: end\ndata: {}\n\n"
            return
        if events:
            idle_since = time.monotonic()
        else:
            if time.monotonic() - looked > ENDED_CHECK:
                looked = time.monotonic()
                status = _ended(path.parent)
                if status is not None:
                    yield f"event: end\ndata: {json.dumps({'status': status})}\n\n"
                    return
            if time.monotonic() - idle_since > 15:
                idle_since = time.monotonic()
                yield ": keep-alive\n\n"
        await asyncio.sleep(POLL)


ENDED_CHECK = 2.0  # seconds between looks at a quiet run's record


def _ended(folder: Path) -> str | None:
    """'missing' for a deleted run folder, its status once the run has ended (or its process
    died: stale), else None."""
    if not (folder / "run.json").is_file():
        return "missing"
    try:
        status = read_record(folder).live_status()
    except Exception:  # a damaged record: the stream has nothing more to say either
        return "failed"
    return status if status in ENDED | {"stale", "missing"} else None


@router.get("/runs/{run_id}/events")
def run_events(folder: RunDirDep, request: Request, last_id: int = Query(0, ge=0, le=10**15)):
    """Server-Sent Events of a run, from the start or after the client's Last-Event-ID."""
    header = request.headers.get("last-event-id", "").strip()
    if header and not (header.isascii() and header.isdigit() and len(header) <= 15):
        raise HTTPException(422, "Last-Event-ID: an event id (a whole number below 10^15)")
    resume_from = int(header) if header else last_id
    return StreamingResponse(_follow(folder / EVENTS, request, resume_from), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.post("/runs/{run_id}/stop", response_model=Stopping)
def stop(run_id: str, folder: RunDirDep, s: SettingsDep, jobs: JobsDep):
    """Stop a live run as Ctrl-C does: one started from the page, or one training in a terminal here."""
    job = jobs.for_run(run_id)
    if job is not None:
        jobs.stop(job)
    else:
        stop_run(run_id, s)
    return {"run_id": run_id, "stopping": True}


@router.post("/runs/{run_id}/resume", response_model=JobAnswer)
def resume(run_id: str, folder: RunDirDep, jobs: JobsDep):
    """Continue an interrupted or failed run from its last checkpoint, as a job."""
    try:
        check_resumable(folder)
    except NotResumable as exc:
        raise HTTPException(409, str(exc)) from None
    job = jobs.submit_resume(run_id)
    if job is None:
        raise HTTPException(409, f"run {run_id} is being resumed already; follow its job on the Train page")
    return {"job": job.to_dict()}


def _chunks(fh, size: int = 1 << 16):
    with fh:
        while chunk := fh.read(size):
            yield chunk


@router.get("/runs/{run_id}/files/{name}")
def download(run_id: str, name: str, folder: RunDirDep):
    """One of the run's own files: a regular file right inside its folder, never through a link."""
    if name == "curves.png" and _regular(folder, "history.csv"):
        curves_png(folder)  # drawn on first view
    try:
        if name not in FILES:
            raise FileNotFoundError(name)
        fh = open_inside(folder, name)
    except FileNotFoundError:
        raise HTTPException(404, f"run {run_id} has no file {name[:80]!r}; it has: "
                                 f"{', '.join(sorted(f for f in FILES if _regular(folder, f)))}") from None
    kind = {"png": "image/png", "json": "application/json", "csv": "text/csv", "yaml": "text/yaml",
            "jsonl": "application/x-ndjson"}.get(name.rsplit(".", 1)[-1], "application/octet-stream")
    return StreamingResponse(_chunks(fh), media_type=kind, headers={
        "Content-Length": str(os.fstat(fh.fileno()).st_size), "X-Content-Type-Options": "nosniff",
        "Content-Disposition": f'attachment; filename="{run_id}-{name}"'})


def _regular(folder: Path, name: str) -> bool:
    try:
        open_inside(folder, name).close()
        return True
    except FileNotFoundError:
        return False


MAX_REPORT_RUNS = 20
MAX_COMPARED = 50


@router.get("/report", response_class=HTMLResponse)
def report(s: SettingsDep, reports: ReportsDep, runs: str = Query(..., max_length=4000, description="run ids, comma-separated")):
    """The self-contained HTML report of one run or several (`trainlab report`), as a download;
    at most MAX_REPORT_RUNS runs, built one at a time and kept (ReportCache)."""
    from trainlab.analysis.report import build_report
    ids = list(dict.fromkeys(r for r in runs.split(",") if r))
    if not ids or len(ids) > MAX_REPORT_RUNS:
        raise HTTPException(422, f"runs: give 1 to {MAX_REPORT_RUNS} run ids, comma-separated ({len(ids)} given)")
    for r in ids:
        checked_run_dir(r, s)
    name = f"report-{ids[0]}.html" if len(ids) == 1 else f"report-{len(ids)}-runs.html"
    html = reports.get(ids, lambda: build_report(ids, s))
    return HTMLResponse(html, headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.get("/compare", response_model=Comparison)
def compare(s: SettingsDep, runs: str = Query(..., max_length=12000, description="run ids, comma-separated")):
    """Up to MAX_COMPARED runs: their curves, metrics, what they used of the machine, and only the recipe
    keys whose values differ."""
    ids = list(dict.fromkeys(r for r in runs.split(",") if r))
    if not 2 <= len(ids) <= MAX_COMPARED:
        raise HTTPException(422, f"runs: give 2 to {MAX_COMPARED} run ids, comma-separated ({len(ids)} distinct given)")
    for r in ids:
        checked_run_dir(r, s)
    records, curves, diff = compare_runs(ids, s)
    return {"runs": [{"run_id": rec.run_id, "recipe": rec.recipe, "status": rec.status,
                      "test_acc": (rec.metrics or Metrics()).test_acc, "val_acc_at_best": (rec.metrics or Metrics()).val_acc_at_best,
                      "history": c.history, "system": rec.system} for rec, c in zip(records, curves)],
            "differences": diff,
            "hidden": [{"run": records[i].run_id, "under": records[j].run_id, "epochs": len(curves[i].history)}
                       for i, j in hidden_curves([c.history for c in curves])]}
