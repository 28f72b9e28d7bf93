"""`RunRecord`: the one typed shape of a run. run.json holds it; the run index stores it; the CLI
and the web API show it."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from trainlab.errors import TrainlabError
from trainlab.fileio import atomic_write, read_json_object

Status = Literal["running", "completed", "failed", "interrupted", "pruned"]
STATUSES = ("running", "completed", "failed", "interrupted", "pruned")


class DatasetInfo(BaseModel):
    name: str
    source: str = ""
    classes: list[str]
    n_train: int
    n_val: int
    n_test: int


class RunRecord(BaseModel):
    """Everything known about a run but its tensors: what run.json holds and the index stores."""

    model_config = ConfigDict(extra="ignore")

    run_id: str
    recipe: str
    recipe_digest: str
    status: Status
    seed: int
    device: str = "cpu"
    versions: dict[str, str] = {}
    started_at: str | None = None
    ended_at: str | None = None
    error: str | None = None
    custom_model: str | None = None
    dataset: DatasetInfo | None = None
    preprocess: dict | None = None
    notes: list[str] = []
    ood: dict | None = None
    timings: dict | None = None
    resumed_at: list[str] = []
    metrics: dict | None = None  # the final metrics (also metrics.json)
    epochs: int = 0
    tags: list[str] = []
    note: str | None = None
    run_dir: str | None = None

    def save(self, run_dir: Path) -> None:
        atomic_write(run_dir / "run.json", self.model_dump_json(indent=2, exclude={"tags", "note", "run_dir"}) + "\n")


def read_record(run_dir: Path) -> RunRecord:
    """run.json of a run folder, validated; a broken one is one line naming the file and the fix."""
    fix = f"the run folder is damaged: remove it with `trainlab runs rm {run_dir.name}`"
    data = read_json_object(run_dir / "run.json", fix)
    try:
        return RunRecord.model_validate(data).model_copy(update={"run_dir": str(run_dir)})
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        raise TrainlabError(f"{run_dir / 'run.json'}: {'.'.join(map(str, err['loc']))}: {err['msg']}; {fix}") from None


