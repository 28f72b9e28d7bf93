"""The Data health page: a data check run as a job (progress while it runs), its findings with
their images, and the user's decisions (keep, relabel, exclude) saved to a corrections file under
<runs>/corrections/ that never touches the dataset's own files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from trainlab.data.corrections import Correction, dataset_fingerprint, read_corrections, update_corrections
from trainlab.data.images import png_data_url
from trainlab.data.registry import DATASETS
from trainlab.errors import TrainlabError
from trainlab.fileio import open_inside, safe_name
from trainlab.web.api_train import check_paths
from trainlab.web.deps import DataRootsDep, DatasetsDep, JobsDep, SettingsDep
from trainlab.web.schemas import CheckStatus, Decided, DecisionList, JobAnswer

router = APIRouter(prefix="/api/v1/health", tags=["data health"])
SHOWN = 60  # findings of each kind sent with their images


class CheckRequest(BaseModel):
    dataset: str = Field(..., max_length=500, description="a built-in dataset or an image tree inside the data folders")
    split: Literal["train", "test", "all"] = "all"
    folds: int = Field(5, ge=2, le=20)
    limit: int | None = Field(None, ge=20, le=1_000_000, description="the first N images of each split")


class Decision(BaseModel):
    dataset: str = Field(..., max_length=500)
    split: Literal["train", "test"]
    index: int | None = Field(None, ge=0)
    file: str | None = Field(None, max_length=1000)
    action: Literal["keep", "relabel", "exclude"]
    label: str | None = Field(None, max_length=200)


def _checked_dataset(name: str, s, roots) -> None:
    check_paths({"data.name": name}, s, roots)


def corrections_path(settings, dataset: str, ds=None) -> Path:
    """Where the page keeps a dataset's decisions: <runs>/corrections/<name>.yaml for a built-in
    dataset, <name>-<fingerprint>.yaml for an image tree (two trees may share a folder name)."""
    mark = dataset_fingerprint(ds) if ds is not None else None
    return settings.runs_dir / "corrections" / f"{safe_name(Path(dataset).name)}{f'-{mark}' if mark else ''}.yaml"


@router.post("/checks", status_code=202, response_model=JobAnswer)
def start_check(body: CheckRequest, s: SettingsDep, roots: DataRootsDep, queue: JobsDep):
    _checked_dataset(body.dataset, s, roots)
    job = queue.submit(f"check {Path(body.dataset).name}", check=body.model_dump())
    return {"job": job.to_dict()}


def _image(ds, split: str, index: int | None, file: str | None) -> str | None:
    x = ds.x_train if split == "train" else ds.x_test
    i = index if index is not None else (ds.files.get(split) or []).index(file) if file in (ds.files.get(split) or []) else None
    if i is None or i >= len(x):
        return None
    return png_data_url(x[i], 84)


@router.get("/checks/{job_id}", response_model=CheckStatus)
def check_status(job_id: int, queue: JobsDep, datasets: DatasetsDep, s: SettingsDep):
    job = queue.get(job_id)
    if job is None or job.kind != "check":
        raise HTTPException(404, f"no data check {job_id}")
    out = {"job": job.to_dict(), "report": None}
    if job.state == "completed" and job.report:
        report = json.loads(Path(job.report).read_text())
        ds = datasets.get(report["dataset"] if report["dataset"] in DATASETS else job.check["dataset"])
        shown = {}
        for item in report["issues"]:
            if shown.get(item["kind"], 0) >= SHOWN:
                continue
            shown[item["kind"]] = shown.get(item["kind"], 0) + 1
            targets = item.get("members") or [item]
            for t in targets:
                if t.get("split") in ("train", "test"):
                    t["image"] = _image(ds, t["split"], t.get("index"), t.get("file"))
        report["issues"] = [i for i in report["issues"] if "image" in i or i.get("members") or i["kind"] in ("balance", "unreadable")]
        report["corrections"] = str(corrections_path(s, job.check["dataset"], ds))
        report["requested"] = job.check["dataset"]  # what decisions name: a built-in name or the tree's path
        out["report"] = report
    return out


@router.get("/corrections", response_model=DecisionList)
def list_corrections(s: SettingsDep, roots: DataRootsDep, datasets: DatasetsDep, dataset: str = Query(..., max_length=500)):
    _checked_dataset(dataset, s, roots)
    path = corrections_path(s, dataset, datasets.get(dataset))
    try:
        with open_inside(path.parent, path.name):  # the page's own file, never through a link
            pass
    except FileNotFoundError:
        return {"path": str(path), "decisions": []}
    return {"path": str(path), "decisions": [c.to_dict() for c in read_corrections(path).decisions().values()]}


@router.post("/corrections", response_model=Decided)
def decide(body: Decision, s: SettingsDep, roots: DataRootsDep, datasets: DatasetsDep):
    """One decision about one image, appended to the dataset's corrections file (checked first:
    an unknown index, a label not in the classes, a file for another dataset are one line, 422)."""
    _checked_dataset(body.dataset, s, roots)
    if (body.index is None) == (body.file is None):
        raise TrainlabError("give index (a built-in dataset's image) or file (an image tree's), one of them")
    if body.action == "relabel" and not body.label:
        raise TrainlabError("relabel needs label: the new class")
    ds = datasets.get(body.dataset)
    path = corrections_path(s, body.dataset, ds)
    if path.is_symlink():
        raise HTTPException(409, f"{path.name}: a symbolic link; the page writes only its own files")
    decision = Correction(body.split, body.action, body.index, body.file, body.label if body.action == "relabel" else None)
    corr = update_corrections(path, ds, [decision])  # under the file's lock: parallel clicks each keep theirs
    return {"path": str(path), "decisions": len(corr.decisions())}
