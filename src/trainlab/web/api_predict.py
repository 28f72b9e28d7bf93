"""Prediction: uploaded or drawn images (multipart) or uint8 pixels (JSON) to the top-k classes,
what the model sees, and the out-of-distribution flag. `GET /models` lists the runs it can serve;
the default is the newest completed `mnist-draw` run (made for drawn digits), else the newest
completed run."""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, Field

from trainlab.analysis.predict import predict_bytes, predict_pixels
from trainlab.data.images import STYLES, png_data_url
from trainlab.web.deps import MAX_FILES, MAX_PIXEL_IMAGES, LimiterDep, ModelsDep, SettingsDep, run_model
from trainlab.web.schemas import ModelList, Predictions

router = APIRouter(prefix="/api/v1", tags=["predict"])


class PixelRequest(BaseModel):
    pixels: list = Field(..., description="uint8 images in the run's format: (H, W), (N, H, W) or (N, H, W, C)")
    top_k: int = Field(3, ge=1, le=100)


@router.get("/models", response_model=ModelList)
def models(served: ModelsDep):
    found = served.servable()
    return {"models": found, "default": found[0]["run_id"] if found else None}


def _answer(run_id: str, run, preds, top_k: int) -> dict:
    shape = run.preprocess.shape
    results = []
    for rec, arr in zip(preds.records(top_k), preds.inputs):
        seen = png_data_url(arr, size=8 * shape[2])
        results.append({**rec, "model_input": seen, "ood": bool(rec["warnings"])})
    return {"run_id": run_id, "classes": run.classes, "style": run.preprocess.style, "results": results,
            "failures": [{"file": f, "error": e} for f, e in preds.failures]}


@router.post("/predict", response_model=Predictions)
async def predict(request: Request, served: ModelsDep, s: SettingsDep, limiter: LimiterDep, run: str | None = Query(None), top_k: int = Query(3, ge=1, le=100),
                  style: str | None = Query(None, description=f"one of {', '.join(STYLES)}")):
    """Multipart image files (field `file`, repeatable), or JSON {"pixels": [...]}: top-k classes.
    (The request guard has bounded the body: MAX_UPLOAD_BYTES.)"""
    model = served.get(run)
    timed = partial(run_model, limiter, s.serve_timeout)
    if request.headers.get("content-type", "").startswith("application/json"):
        body = PixelRequest.model_validate_json(await request.body())
        n = image_count(body.pixels, model.preprocess.shape)
        if n > MAX_PIXEL_IMAGES:
            raise HTTPException(413, f"{n} images in one request; the limit is {MAX_PIXEL_IMAGES}")
        return await timed(lambda: _answer(model.run_id, model, predict_pixels(model, body.pixels), body.top_k))
    form = await request.form(max_files=MAX_FILES, max_fields=16)
    files = [f for f in form.getlist("file") if hasattr(f, "read")]
    if not files:
        raise HTTPException(422, "send image files in the multipart field 'file', or JSON {\"pixels\": [...]}")
    data = [(f.filename or f"upload-{i}", await f.read()) for i, f in enumerate(files)]
    answer = await timed(lambda: _answer(model.run_id, model, predict_bytes(model, data, style), top_k))
    if not answer["results"]:  # nothing could be read: an error, as the CLI's exit 2
        first = answer["failures"][0] if answer["failures"] else {"file": "?", "error": "no image"}
        raise HTTPException(422, f"no image could be read ({len(answer['failures'])} failed); "
                                 f"{first['file'][:80]}: {first['error'][:200]}")
    return answer


def image_count(pixels: list, shape: tuple[int, int, int]) -> int:
    """How many images a JSON pixel array holds: one for (H, W) or a single (H, W, C) / (C, H, W),
    else its first dimension (counted from the nesting, without building the array)."""
    dims, level = [], pixels
    while isinstance(level, list) and level and len(dims) < 5:
        dims.append(len(level))
        level = level[0]
    c, h, w = shape
    if len(dims) <= 2 or len(dims) == 3 and tuple(dims) in ((h, w, c), (c, h, w)):
        return 1
    return dims[0]
