"""Prediction: uploaded or drawn images (multipart) or uint8 pixels (JSON) to the top-k classes,
what the model sees, and the out-of-distribution flag. `GET /models` lists the runs it can serve;
the default is the newest completed `mnist-draw` run (made for drawn digits), else the newest
completed run."""

from __future__ import annotations

import base64

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, Field

from trainlab.images import STYLES, png_bytes
from trainlab.predict import predict_bytes, predict_pixels
from trainlab.web.deps import MAX_FILES, MAX_UPLOAD_BYTES, index, run_dir

router = APIRouter(prefix="/api/v1")
DEFAULT_RECIPE = "mnist-draw"


class PixelRequest(BaseModel):
    pixels: list = Field(..., description="uint8 images in the run's format: (H, W), (N, H, W) or (N, H, W, C)")
    top_k: int = Field(3, ge=1, le=100)


def servable(request: Request) -> list[dict]:
    runs = [r for r in index(request).list(status="completed")
            if (request.app.state.settings.runs_dir / r.run_id / "model.safetensors").is_file() and not r.custom_model]
    runs.sort(key=lambda r: (r.recipe != DEFAULT_RECIPE, r.started_at), reverse=False)
    out = [{"run_id": r.run_id, "recipe": r.recipe, "dataset": r.dataset.name if r.dataset else None,
            "classes": r.dataset.classes if r.dataset else [], "test_acc": (r.metrics or {}).get("test_acc"),
            "started_at": r.started_at} for r in runs]
    draw = [o for o in out if o["recipe"] == DEFAULT_RECIPE]
    rest = [o for o in out if o["recipe"] != DEFAULT_RECIPE]
    draw.sort(key=lambda o: o["started_at"], reverse=True)
    rest.sort(key=lambda o: o["started_at"], reverse=True)
    return draw + rest


@router.get("/models")
def models(request: Request):
    found = servable(request)
    return {"models": found, "default": found[0]["run_id"] if found else None}


def _pick(request: Request, run: str | None) -> str:
    if run:
        return run_dir(run, request).name
    found = servable(request)
    if not found:
        raise HTTPException(404, "no completed run to predict with; train one first (trainlab train mnist-draw)")
    return found[0]["run_id"]


def _answer(run_id: str, run, preds, top_k: int) -> dict:
    shape = run.preprocess.shape
    results = []
    for rec, arr in zip(preds.records(top_k), preds.inputs):
        seen = "data:image/png;base64," + base64.b64encode(png_bytes(arr, size=8 * shape[2])).decode()
        results.append({**rec, "model_input": seen, "ood": bool(rec["warnings"])})
    return {"run_id": run_id, "classes": run.classes, "style": run.preprocess.style, "results": results,
            "failures": [{"file": f, "error": e} for f, e in preds.failures]}


@router.post("/predict")
async def predict(request: Request, run: str | None = Query(None), top_k: int = Query(3, ge=1, le=100),
                  style: str | None = Query(None, description=f"one of {', '.join(STYLES)}")):
    """Multipart image files (field `file`, repeatable), or JSON {"pixels": [...]}: top-k classes."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > MAX_UPLOAD_BYTES:
        raise HTTPException(413, f"the request is {int(length):,} bytes; the limit is {MAX_UPLOAD_BYTES:,}")
    run_id = _pick(request, run)
    model = request.app.state.runs.run(run_id)
    if request.headers.get("content-type", "").startswith("application/json"):
        body = PixelRequest.model_validate_json(await _read(request))
        return _answer(run_id, model, predict_pixels(model, body.pixels), body.top_k)
    form = await request.form(max_files=MAX_FILES, max_fields=16)
    files = [f for f in form.getlist("file") if hasattr(f, "read")]
    if not files:
        raise HTTPException(422, "send image files in the multipart field 'file', or JSON {\"pixels\": [...]}")
    data = [(f.filename or f"upload-{i}", await f.read()) for i, f in enumerate(files)]
    if sum(len(b) for _, b in data) > MAX_UPLOAD_BYTES:
        raise HTTPException(413, f"the files are over {MAX_UPLOAD_BYTES:,} bytes together")
    return _answer(run_id, model, predict_bytes(model, data, style), top_k)


async def _read(request: Request) -> bytes:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_UPLOAD_BYTES:
            raise HTTPException(413, f"the request is over the {MAX_UPLOAD_BYTES:,}-byte limit")
    return body
