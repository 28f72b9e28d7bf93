"""`RunRecord`: the one typed shape of a run. run.json holds it; the run index stores it; the CLI
and the web API show it."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from trainlab.errors import RunNotFound, TrainlabError
from trainlab.fileio import atomic_write, read_json_object
from trainlab.settings import Settings, load_settings

Status = Literal["running", "completed", "failed", "interrupted", "pruned"]
STATUSES = ("running", "completed", "failed", "interrupted", "pruned")
RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


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


def resolve_run_dir(run: str | os.PathLike, settings: Settings | None = None) -> Path:
    """A run folder from an id (under the runs folder), a unique part of one, or a path; ids are
    checked against path traversal."""
    text = str(run)
    path = Path(text).expanduser()
    if (path / "run.json").is_file():
        return path.resolve()
    if not RUN_ID_RE.match(text) or ".." in text:
        raise RunNotFound(f"'{text}' is not a valid run id (letters, digits, '.', '_' and '-') nor a run folder")
    root = (settings or load_settings()).runs_dir
    candidate = root / text
    if (candidate / "run.json").is_file():
        return candidate
    matches = sorted(p for p in root.glob(f"*{text}*") if (p / "run.json").is_file()) if root.is_dir() else []
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise RunNotFound(f"'{text}' matches {len(matches)} runs in {root}; give more of the id")
    raise RunNotFound(f"no run '{text}' in {root}; list runs with `trainlab runs` or pass --runs-dir")
