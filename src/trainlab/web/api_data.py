"""The Data page (sample images with class names) and the Errors page (confusion matrix, a cell's
images by loss, per-class precision, recall and F1)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query

from trainlab.analysis.evaluate import confusion_cell
from trainlab.data.images import png_data_url
from trainlab.data.registry import DATASETS
from trainlab.metrics import classification_report
from trainlab.runs.run import check_usable
from trainlab.web.deps import DatasetsDep, RunDirDep, RunsDep
from trainlab.web.schemas import Cell, DatasetNames, ErrorsReport, Samples

router = APIRouter(prefix="/api/v1", tags=["data"])


@router.get("/datasets", response_model=DatasetNames)
def datasets():
    return {"datasets": sorted(DATASETS)}


@router.get("/datasets/{name}/samples", response_model=Samples)
def samples(name: str, datasets: DatasetsDep, split: str = Query("train", pattern="^(train|test)$"),
            n: int = Query(40, ge=1, le=200), start: int = Query(0, ge=0)):
    if name not in DATASETS:
        raise HTTPException(404, f"no dataset {name[:40]!r}; use one of {', '.join(sorted(DATASETS))}")
    ds = datasets.get(name)
    x, y = (ds.x_train, ds.y_train) if split == "train" else (ds.x_test, ds.y_test)
    items = [{"index": i, "label": int(y[i]), "class_name": ds.classes[int(y[i])], "image": png_data_url(x[i])}
             for i in range(start, min(start + n, len(x)))]
    return {"dataset": name, "split": split, "size": len(x), "classes": ds.classes, "items": items}


@router.get("/runs/{run_id}/errors", response_model=ErrorsReport)
def errors(run_id: str, folder: RunDirDep, cache: RunsDep):
    """The test-set report: confusion matrix, per-class precision/recall/F1, most confused pairs."""
    run = cache.run(run_id)
    check_usable(run)
    logits, y, _ = cache.test_logits(run_id)
    report = classification_report(logits, y, run.classes, "test")
    return {"run_id": run_id, "classes": run.classes, **report.to_dict()}


@router.get("/runs/{run_id}/errors/cell", response_model=Cell)
def cell(run_id: str, folder: RunDirDep, cache: RunsDep, true: int = Query(..., ge=0), pred: int = Query(..., ge=0),
         limit: int = Query(48, ge=1, le=200)):
    """The test images of one confusion-matrix cell, highest loss first."""
    run = cache.run(run_id)
    if true >= len(run.classes) or pred >= len(run.classes):
        raise HTTPException(422, f"true and pred are class numbers 0..{len(run.classes) - 1}")
    logits, y, x = cache.test_logits(run_id)
    items = confusion_cell(logits, y, true, pred, limit)
    for it in items:
        it["image"] = png_data_url(x[it["index"]].permute(1, 2, 0).numpy())
    return {"true": true, "pred": pred, "true_name": run.classes[true], "pred_name": run.classes[pred], "items": items}
