"""The Train page: presets, the recipe schema the form is generated from, validation with the CLI's
one-line errors, and jobs (start, list, stop)."""

from __future__ import annotations

import yaml
from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from trainlab.errors import TrainlabError
from trainlab.recipes import Recipe, apply_overrides, load_recipe, preset_names, recipe_dict, validate

router = APIRouter(prefix="/api/v1")
MAX_RECIPE_CHARS = 100_000


class TrainRequest(BaseModel):
    preset: str | None = Field(None, description="a preset name")
    recipe_yaml: str | None = Field(None, max_length=MAX_RECIPE_CHARS, description="a whole recipe, as YAML")
    overrides: dict = Field(default_factory=dict, description="{'optimizer.lr': 0.01, ...}")


@router.get("/presets")
def presets():
    out = []
    for name in preset_names():
        r = load_recipe(name)
        out.append({"name": name, "description": r.description, "dataset": r.data.name, "epochs": r.epochs})
    return {"presets": out}


@router.get("/presets/{name}")
def preset(name: str):
    if name not in preset_names():
        raise HTTPException(404, f"no preset {name[:60]!r}; use one of {', '.join(preset_names())}")
    return {"name": name, "recipe": load_recipe(name).to_dict(), "yaml": load_recipe(name).to_yaml()}


@router.get("/schema")
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
            data = yaml.safe_load(body.recipe_yaml)
        except yaml.YAMLError as exc:
            raise TrainlabError(f"recipe: not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise TrainlabError("recipe: a YAML mapping of recipe fields (data, model, optimizer, ...)")
    return validate(apply_overrides(data, body.overrides), where="recipe")


@router.post("/validate")
def check(body: TrainRequest):
    return {"ok": True, "recipe": resolve(body).to_dict()}


@router.post("/train", status_code=202)
def start(body: TrainRequest, request: Request):
    r = resolve(body)
    job = request.app.state.jobs.submit(r.name, recipe=r.to_dict())
    return {"job": job.to_dict()}


@router.get("/jobs")
def jobs(request: Request):
    return {"jobs": [j.to_dict() for j in request.app.state.jobs.list()]}


@router.get("/jobs/{job_id}")
def job(job_id: int, request: Request):
    found = request.app.state.jobs.get(job_id)
    if found is None:
        raise HTTPException(404, f"no job {job_id}")
    return found.to_dict()


@router.post("/jobs/{job_id}/stop")
def stop_job(job_id: int, request: Request):
    found = request.app.state.jobs.get(job_id)
    if found is None:
        raise HTTPException(404, f"no job {job_id}")
    request.app.state.jobs.stop(found)
    return found.to_dict()
