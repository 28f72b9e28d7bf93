"""The Studies pages: every Optuna study in the storage `trainlab tune` uses (the run index's database
when it is a server, else <runs>/studies.db), a study's trials with their intermediate values and
parameters, Optuna's parameter importances, the best recipe, and a search started from the page as a
dashboard job. The data comes from Optuna's storage API, so a study run from the CLI, by several
`--jobs`, or on another machine sharing the database shows here live (the page polls)."""

from __future__ import annotations

import re
import threading

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from trainlab.errors import TrainlabError
from trainlab.recipes import load_recipe, preset_names
from trainlab.tuning.space import load_space, space_names
from trainlab.tuning.study import importances, list_studies, storage_url, study_report
from trainlab.web.api_train import check_data_paths
from trainlab.web.deps import DataRootsDep, JobsDep, SettingsDep
from trainlab.web.schemas import JSON, JobAnswer, StudyList

router = APIRouter(prefix="/api/v1", tags=["studies"])
STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


class StudyDetail(BaseModel):
    study: str
    storage: str
    recipe: str
    objective: str
    direction: str
    counts: dict[str, int]
    params: list[str] = Field(description="the search space's parameters, in order")
    trials: list[JSON]
    best: JSON | None = None
    best_recipe_yaml: str | None = None
    importances: dict[str, float] = Field(description="Optuna's parameter importances (fANOVA); {} before 3 complete trials")


class SearchRequest(BaseModel):
    preset: str = Field(..., max_length=100, description="the recipe to start from (a preset name)")
    space: str = Field(..., max_length=100, description="a preset search space (`trainlab tune spaces`)")
    trials: int | None = Field(10, ge=1, le=1000, description="trials to run")
    timeout: float | None = Field(None, gt=0, le=7 * 86400, description="seconds after which no new trial starts")
    study: str | None = Field(None, max_length=200, description="a study name (default PRESET-SPACE; the same name continues it)")
    overrides: dict = Field(default_factory=dict, description="recipe changes for every trial, {'data.limit_train': 5000, ...}")


def _storage(settings) -> str | None:
    """The studies' storage URL, or None when it is a SQLite file that does not exist yet (a GET
    must not create it)."""
    url = storage_url(settings)
    if url.startswith("sqlite:///"):
        from pathlib import Path
        if not Path(url.removeprefix("sqlite:///")).is_file():
            return None
    return url


@router.get("/studies", response_model=StudyList)
def studies(s: SettingsDep):
    url = _storage(s)
    return {"studies": list_studies(url) if url else [], "storage": storage_url(s)}


def _importances(request: Request, name: str, url: str, complete: int) -> dict[str, float]:
    """Importances, computed again only when the study has more complete trials (fANOVA takes a while)."""
    state = request.app.state
    with state.studies_lock:
        cached = state.study_importances.get((url, name))
    if cached and cached[0] == complete:
        return cached[1]
    found = importances(name, url)
    with state.studies_lock:
        state.study_importances[(url, name)] = (complete, found)
    return found


@router.get("/studies/{name}", response_model=StudyDetail)
def study(name: str, s: SettingsDep, request: Request):
    if not STUDY_NAME.match(name):
        raise HTTPException(404, f"no study '{name[:80]}': study names are letters, digits, '.', '_' and '-'")
    url = _storage(s)
    if url is None:
        raise HTTPException(404, f"no study '{name}': no search has run yet (trainlab tune, or Start a search)")
    try:
        rep = study_report(name, url)
    except TrainlabError as exc:
        raise HTTPException(404, str(exc)) from None
    data = rep.to_dict()
    best = rep.best_recipe
    complete = data["counts"].get("complete", 0)
    return {"study": rep.name, "storage": rep.storage, "recipe": rep.recipe.name, "objective": rep.objective,
            "direction": rep.direction, "counts": data["counts"], "params": list(rep.space.params),
            "trials": data["trials"], "best": data["best"],
            "best_recipe_yaml": best.to_yaml() if best is not None else None,
            "importances": _importances(request, name, url, complete)}


@router.post("/studies", status_code=202, response_model=JobAnswer)
def start_search(body: SearchRequest, s: SettingsDep, roots: DataRootsDep, queue: JobsDep):
    """A search as a dashboard job (one trial after another, in a worker process); the recipe with its
    overrides and the space are checked here, so a mistake is a 422 now, not a failed job later."""
    if body.preset not in preset_names():
        raise HTTPException(422, f"preset {body.preset[:60]!r}: use one of {', '.join(preset_names())}")
    if body.space not in space_names():
        raise HTTPException(422, f"space {body.space[:60]!r}: use one of {', '.join(space_names())}")
    if body.study is not None and not STUDY_NAME.match(body.study):
        raise HTTPException(422, "study: letters, digits, '.', '_' and '-'")
    if body.trials is None and body.timeout is None:
        raise HTTPException(422, "give a budget: trials, timeout, or both")
    base = load_recipe(body.preset, body.overrides)
    check_data_paths(base, s, roots)
    load_space(body.space).check(base)
    order = body.model_dump()
    order["study"] = body.study or f"{body.preset}-{body.space}"
    job = queue.submit(f"search {order['study']}", tune=order)
    return {"job": job.to_dict()}


def init_state(app) -> None:
    """The app's cache of importances (per study and complete-trial count)."""
    app.state.study_importances, app.state.studies_lock = {}, threading.Lock()

