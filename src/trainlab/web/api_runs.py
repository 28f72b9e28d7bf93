"""Runs, one run, its live events (Server-Sent Events), stop/resume, files, compare."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse, StreamingResponse

from trainlab.events import EVENTS, last_events, offset_after, read_events
from trainlab.record import read_record
from trainlab.runs import compare_runs, curves_png, read_history, read_recipe, stop_run
from trainlab.training import summarize
from trainlab.web.deps import index, run_dir, settings

router = APIRouter(prefix="/api/v1")
FILES = {"model.safetensors", "best.safetensors", "recipe.yaml", "run.json", "history.csv", "metrics.json", "curves.png",
         "events.jsonl"}
TERMINAL = {"completed", "failed", "interrupted", "pruned"}
BATCH_INTERVAL = 0.05  # at most ~20 batch points a second per run reach a client
POLL = 0.2  # seconds between looks at a live run's event log


def _row(record, runs_dir: Path) -> dict:
    d = record.model_dump(mode="json", include={"run_id", "recipe", "status", "tags", "started_at", "ended_at", "epochs",
                                                "seed", "study", "trial", "error"})
    m, t = record.metrics or {}, record.timings or {}
    d.update(live_status=record.live_status(), best_val_acc=m.get("best_val_acc"), test_acc=m.get("test_acc"),
             seconds=t.get("total_seconds"), dataset=record.dataset.name if record.dataset else None)
    if record.status == "running":
        last = last_events(runs_dir / record.run_id / EVENTS)
        d["progress"] = (last.get("batch") or {}).get("progress", 0.0)
        d["epochs_total"] = (last.get("status") or {}).get("epochs")
    return d


@router.get("/runs")
def list_runs(request: Request, recipe: str | None = None, status: str | None = None, tag: str | None = None,
              sort: str = "started_at", limit: int = Query(500, ge=1, le=5000)):
    s = settings(request)
    return {"runs": [_row(r, s.runs_dir) for r in index(request).list(recipe, status, sort, limit, tag)]}


@router.get("/runs/{run_id}")
def get_run(run_id: str, request: Request):
    folder = run_dir(run_id, request)
    record, recipe = read_record(folder), read_recipe(folder)
    try:
        summary = summarize(recipe, settings(request))
    except Exception as exc:  # a custom model or missing data: the page shows why
        summary = f"(no layer summary: {str(exc).splitlines()[0]})"
    files = sorted(f for f in FILES if (folder / f).is_file() or f == "curves.png" and (folder / "history.csv").is_file())
    job = request.app.state.jobs.for_run(run_id)
    return {"record": record.model_dump(mode="json"), "live_status": record.live_status(), "recipe": recipe.to_dict(),
            "recipe_yaml": recipe.to_yaml(), "history": read_history(folder / "history.csv"), "summary": summary,
            "files": files, "job": job.to_dict() if job else None}


async def _follow(path: Path, request: Request, last_id: int):
    """SSE lines for the log's events after `last_id`, following the file as it grows: each poll
    reads only the bytes appended since the last one. Ends after a final status event."""
    offset = offset_after(path, last_id)
    next_batch, idle_since = 0.0, time.monotonic()  # batch points thinned by their own timestamps (replays too)
    yield "retry: 1000\n\n"
    while not await request.is_disconnected():
        events, offset = read_events(path, offset)
        done = False
        for e in events:
            if e["type"] == "batch":
                if e["t"] < next_batch:
                    continue
                next_batch = e["t"] + BATCH_INTERVAL
            done = e["type"] == "status" and e.get("status") in TERMINAL
            yield f"id: {e['id']}\nevent: {e['type']}\ndata: {json.dumps(e, separators=(',', ':'))}\n\n"
        if done:
            yield "event: end\ndata: {}\n\n"
            return
        if events:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since > 15:
            idle_since = time.monotonic()
            yield ": keep-alive\n\n"
        await asyncio.sleep(POLL)


@router.get("/runs/{run_id}/events")
def run_events(run_id: str, request: Request, last_id: int = Query(0, ge=0)):
    """Server-Sent Events of a run, from the start or after the client's Last-Event-ID."""
    folder = run_dir(run_id, request)
    header = request.headers.get("last-event-id", "")
    resume_from = int(header) if header.isdigit() else last_id
    return StreamingResponse(_follow(folder / EVENTS, request, resume_from), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.post("/runs/{run_id}/stop")
def stop(run_id: str, request: Request):
    """Stop a live run as Ctrl-C does: one started from the page, or one training in a terminal here."""
    run_dir(run_id, request)
    job = request.app.state.jobs.for_run(run_id)
    if job is not None:
        request.app.state.jobs.stop(job)
    else:
        stop_run(run_id, settings(request))
    return {"run_id": run_id, "stopping": True}


@router.post("/runs/{run_id}/resume")
def resume(run_id: str, request: Request):
    """Continue an interrupted or failed run from its last checkpoint, as a job."""
    folder = run_dir(run_id, request)
    record = read_record(folder)
    if record.status == "completed":
        raise HTTPException(409, f"run {run_id} already completed")
    if record.live_status() == "running":
        raise HTTPException(409, f"run {run_id} is still training")
    if not (folder / "checkpoint.pt").is_file():
        raise HTTPException(409, f"run {run_id} has no checkpoint (it stopped before its first one); start it again")
    job = request.app.state.jobs.submit(f"resume {run_id}", resume=run_id)
    return {"job": job.to_dict()}


@router.get("/runs/{run_id}/files/{name}")
def download(run_id: str, name: str, request: Request):
    folder = run_dir(run_id, request)
    if name == "curves.png" and (folder / "history.csv").is_file():
        curves_png(folder)  # drawn on first view
    if name not in FILES or not (folder / name).is_file():
        raise HTTPException(404, f"run {run_id} has no file {name[:80]!r}; it has: "
                                 f"{', '.join(sorted(f for f in FILES if (folder / f).is_file()))}")
    return FileResponse(folder / name, filename=f"{run_id}-{name}")


@router.get("/compare")
def compare(request: Request, runs: str = Query(..., description="run ids, comma-separated")):
    ids = [r for r in runs.split(",") if r]
    for r in ids:
        run_dir(r, request)
    records, curves, diff = compare_runs(ids, settings(request))
    return {"runs": [{"run_id": rec.run_id, "recipe": rec.recipe, "status": rec.status,
                      "test_acc": (rec.metrics or {}).get("test_acc"), "best_val_acc": (rec.metrics or {}).get("best_val_acc"),
                      "history": c.history} for rec, c in zip(records, curves)],
            "differences": diff}
