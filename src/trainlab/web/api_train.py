"""The Train page: presets, the recipe schema the form is generated from, validation with the CLI's
one-line errors, and jobs (start, list, stop)."""

from __future__ import annotations

from pathlib import Path

import yaml
from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from trainlab.data.registry import DATASETS
from trainlab.errors import TrainlabError
from trainlab.fileio import load_yaml
from trainlab.recipes import Recipe, apply_overrides, load_recipe, preset_names, recipe_dict, validate
from trainlab.web.deps import DataRootsDep, JobsDep, SettingsDep
from trainlab.web.schemas import JSON, JobAnswer, JobInfo, JobList, PresetDetail, PresetList, Validated

router = APIRouter(prefix="/api/v1", tags=["train"])
MAX_RECIPE_CHARS = 100_000


class TrainRequest(BaseModel):
    preset: str | None = Field(None, description="a preset name")
    recipe_yaml: str | None = Field(None, max_length=MAX_RECIPE_CHARS, description="a whole recipe, as YAML")
    overrides: dict = Field(default_factory=dict, description="{'optimizer.lr': 0.01, ...}")


@router.get("/presets", response_model=PresetList)
def presets():
    out = []
    for name in preset_names():
        r = load_recipe(name)
        out.append({"name": name, "description": r.description, "dataset": r.data.name, "epochs": r.epochs})
    return {"presets": out}


@router.get("/presets/{name}", response_model=PresetDetail)
def preset(name: str):
    if name not in preset_names():
        raise HTTPException(404, f"no preset {name[:60]!r}; use one of {', '.join(preset_names())}")
    return {"name": name, "recipe": load_recipe(name).to_dict(), "yaml": load_recipe(name).to_yaml()}


@router.get("/schema", response_model=JSON)
def schema():
    """The recipe's JSON Schema (pydantic's): the Train page builds its form from it."""
    return Recipe.model_json_schema()


def resolve(body: TrainRequest) -> Recipe:
    """The request's recipe, validated exactly as the CLI validates (errors name the key and the
    allowed values)."""
    if (body.preset is None) == (body.recipe_yaml is None):
        raise TrainlabError("give either a preset or recipe_yaml")
    if body.preset is not None:
        if body.preset not in preset_names():
            raise TrainlabError(f"preset {body.preset[:60]!r}: use one of {', '.join(preset_names())}")
        data, _ = recipe_dict(body.preset)
    else:
        try:
            data = load_yaml(body.recipe_yaml, "recipe")
        except yaml.YAMLError as exc:
            raise TrainlabError(f"recipe: not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise TrainlabError("recipe: a YAML mapping of recipe fields (data, model, optimizer, ...)")
    return validate(apply_overrides(data, body.overrides), where="recipe")


def check_data_paths(recipe: Recipe, settings, roots: tuple[str, ...]) -> None:
    """A recipe sent from a web page trains on a built-in dataset, or on an image tree inside the
    data folder or a folder the server was started with (`--data-root`): a page must not make the
    server read, and show back, any file on the machine."""
    check_paths({"data.name": recipe.data.name, "data.source": recipe.data.source,
                 "data.corrections": recipe.data.corrections}, settings, roots)


def check_paths(values: dict[str, str | None], settings, roots: tuple[str, ...]) -> None:
    """Each value a built-in dataset's name (for data.name) or an absolute path inside the data
    folders (a corrections file also inside <runs>/corrections); 403 naming what is allowed."""
    allowed = [Path(r).resolve() for r in roots] + ([settings.data_dir] if settings.data_dir else [])
    if values.get("data.corrections") is not None:  # the page's own corrections files, or the data folders'
        allowed.append((settings.runs_dir / "corrections").resolve())
    for key, value in values.items():
        if value is None or key == "data.name" and value in DATASETS:
            continue
        path = Path(value).expanduser()
        real = path.resolve() if path.is_absolute() else None
        if real is None or not any(real == root or root in real.parents for root in allowed):
            where = ", ".join(str(r) for r in allowed) or "none (start the dashboard with --data-root DIR)"
            raise HTTPException(403, f"{key} {value[:120]!r}: recipes from the page may use {', '.join(sorted(DATASETS))} "
                                     f"or an absolute path inside the data folders: {where}")


@router.post("/validate", response_model=Validated)
def check(body: TrainRequest, s: SettingsDep, roots: DataRootsDep):
    r = resolve(body)
    check_data_paths(r, s, roots)
    return {"ok": True, "recipe": r.to_dict()}


@router.post("/train", status_code=202, response_model=JobAnswer)
def start(body: TrainRequest, s: SettingsDep, roots: DataRootsDep, queue: JobsDep):
    r = resolve(body)
    check_data_paths(r, s, roots)
    job = queue.submit(r.name, recipe=r.to_dict())
    return {"job": job.to_dict()}


@router.get("/jobs", response_model=JobList)
def jobs(queue: JobsDep):
    return {"jobs": [j.to_dict() for j in queue.list()]}


@router.get("/jobs/{job_id}", response_model=JobInfo)
def job(job_id: int, queue: JobsDep):
    found = queue.get(job_id)
    if found is None:
        raise HTTPException(404, f"no job {job_id}")
    return found.to_dict()


@router.post("/jobs/{job_id}/stop", response_model=JobInfo)
def stop_job(job_id: int, queue: JobsDep):
    found = queue.get(job_id)
    if found is None:
        raise HTTPException(404, f"no job {job_id}")
    queue.stop(found)
    return found.to_dict()
