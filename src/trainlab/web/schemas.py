"""The dashboard API's contract: the response model of every JSON route (as the FastAPI template
has them), so `/docs` and `/openapi.json` describe what the page and scripts receive, and a route
that returns anything else fails its own tests rather than the page.

Records and recipes stay open mappings here: their own models (`runs.record.RunRecord`,
`recipes.Recipe`) define them, and the API passes them through as JSON."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

JSON = dict[str, Any]


class Health(BaseModel):
    ok: bool
    version: str
    runs_dir: str


class ServeHealth(BaseModel):
    ok: bool
    version: str
    run_id: str
    backend: str = Field(description="torch or onnxruntime")


class JobInfo(BaseModel):
    """A training job or data check of the dashboard's queue."""

    id: int
    kind: str = Field(description="train or check")
    label: str
    state: str = Field(description="queued, starting, running, completed, interrupted, failed, cancelled")
    run_id: str | None = None
    error: str | None = None
    created: float | None = None
    resume: str | None = None
    progress: JSON | None = None
    check: JSON | None = Field(None, description="a data check's request: dataset, split, folds, limit")
    tune: JSON | None = Field(None, description="a search's request: preset, space, trials, timeout, study")


class JobAnswer(BaseModel):
    job: JobInfo


class JobList(BaseModel):
    jobs: list[JobInfo]


class RunRow(BaseModel):
    """One row of the runs table."""

    run_id: str
    recipe: str
    status: str
    live_status: str
    tags: list[str] = []
    started_at: str | None = None
    ended_at: str | None = None
    epochs: int = 0
    seed: int | None = None
    study: str | None = None
    trial: int | None = None
    error: str | None = None
    val_acc_at_best: float | None = None
    test_acc: float | None = None
    seconds: float | None = None
    dataset: str | None = None
    peak_rss_mb: float | None = None
    cpu_mean: float | None = None
    progress: float | None = None
    epochs_total: int | None = None


class RunsPage(BaseModel):
    """A page of the runs table, sorted and filtered on the server."""

    runs: list[RunRow]
    total: int = Field(description="rows that match the filters, on every page")
    offset: int = 0
    limit: int


class RunDetail(BaseModel):
    record: JSON
    live_status: str
    recipe: JSON
    recipe_yaml: str
    history: list[JSON]
    summary: str
    files: list[str]
    job: JobInfo | None = None


class Stopping(BaseModel):
    run_id: str
    stopping: bool


class ComparedRun(BaseModel):
    run_id: str
    recipe: str
    status: str
    test_acc: float | None = None
    val_acc_at_best: float | None = None
    history: list[JSON]
    system: JSON | None = None


class Hidden(BaseModel):
    run: str
    under: str
    epochs: int


class Comparison(BaseModel):
    runs: list[ComparedRun]
    differences: dict[str, list[Any]] = Field(description="only the recipe keys whose values differ, run by run")
    hidden: list[Hidden]


class PresetInfo(BaseModel):
    name: str
    description: str
    dataset: str
    epochs: int


class PresetList(BaseModel):
    presets: list[PresetInfo]


class PresetDetail(BaseModel):
    name: str
    recipe: JSON
    yaml: str


class Validated(BaseModel):
    ok: bool
    recipe: JSON


class DatasetNames(BaseModel):
    datasets: list[str]


class Sample(BaseModel):
    index: int
    label: int
    class_name: str
    image: str = Field(description="a PNG as a data: URL")


class Samples(BaseModel):
    dataset: str
    split: str
    size: int
    classes: list[str]
    items: list[Sample]


class ErrorsReport(BaseModel):
    """The test-set report of a run (metrics.EvalReport) and its classes."""

    run_id: str
    classes: list[str]
    split: str
    n: int
    loss: float
    accuracy: float
    top_k: dict[str, float]
    per_class: list[JSON]
    macro: dict[str, float]
    weighted: dict[str, float]
    confusion: list[list[int]]
    most_confused: list[JSON]


class CellImage(BaseModel):
    index: int
    loss: float
    confidence: float
    image: str


class Cell(BaseModel):
    true: int
    pred: int
    true_name: str
    pred_name: str
    items: list[CellImage]


class CheckStatus(BaseModel):
    job: JobInfo
    report: JSON | None = None


class DecisionList(BaseModel):
    path: str
    decisions: list[JSON]


class Decided(BaseModel):
    path: str
    decisions: int = Field(description="decisions in the file now")


class ModelInfo(BaseModel):
    run_id: str
    recipe: str
    dataset: str | None = None
    classes: list[str] = []
    test_acc: float | None = None
    started_at: str | None = None
    study: str | None = None
    backend: str | None = None


class ModelList(BaseModel):
    models: list[ModelInfo]
    default: str | None = None


class Failure(BaseModel):
    file: str
    error: str


class Prediction(BaseModel):
    file: str
    label: int
    class_name: str
    probability: float | None = None
    top_k: list[JSON]
    warnings: list[str]
    model_input: str = Field(description="what the model sees, as a PNG data: URL")
    ood: bool = Field(description="the image looks unlike the training data")


class Predictions(BaseModel):
    run_id: str
    classes: list[str]
    style: str
    results: list[Prediction]
    failures: list[Failure]


class StudyRow(BaseModel):
    study: str
    trials: int
    best_value: float | None = None
    best_trial: int | None = None
    direction: str
    started: str | None = None
    recipe: str | None = None


class StudyList(BaseModel):
    studies: list[StudyRow]
    storage: str
