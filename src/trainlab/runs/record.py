"""`RunRecord`: the one typed shape of a run. run.json holds it; the run index stores it; the CLI
and the web API show it."""

from __future__ import annotations

import json
import os
import re
import socket
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Literal, get_args

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from trainlab.errors import RunNotFound, TrainlabError, WriteError
from trainlab.fileio import atomic_write, overwrite_in_place, read_text_inside
from trainlab.settings import Settings

Status = Literal["running", "completed", "failed", "interrupted", "pruned"]  # what run.json records
STATUSES: tuple[str, ...] = get_args(Status)
ENDED = frozenset({"completed", "failed", "interrupted", "pruned"})  # a run in one of these trains no more
LIVE_STATUSES = (*STATUSES, "stale", "missing")  # RunRecord.live_status: its process gone / its folder gone
RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class DatasetInfo(BaseModel):
    name: str
    source: str = ""
    classes: list[str]
    n_train: int
    n_val: int
    n_test: int
    corrections: dict | None = None  # data.corrections applied: path, sha256, relabeled, excluded


class OODThresholds(BaseModel):
    """When a prediction's input looks unlike the training data, calibrated on the validation split:
    the 2nd percentile of the model's top probability and the ranges holding 99% of images' pixel
    mean and standard deviation. Recorded in run.json (`ood`) and in an exported model."""

    confidence_p02: float
    mean_range: tuple[float, float]
    std_range: tuple[float, float]
    n: int


class Metrics(BaseModel):
    """A finished run's summary (metrics.json, run.json's `metrics`, `Run.metrics`): the last epoch,
    the epoch the recipe's monitor (val_loss by default) rates best and the validation accuracy at
    that epoch, the test pass, and the timings. Read as attributes (`run.metrics.test_acc`) or, as
    a notebook would, by key (`run.metrics["test_acc"]`). Files written before the rename name
    `val_acc_at_best` `best_val_acc`; both are read."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    test_loss: float | None = None
    test_acc: float | None = None
    loss: float | None = None  # the last epoch's training loss
    acc: float | None = None
    val_loss: float | None = None  # the last epoch's validation loss
    val_acc: float | None = None
    monitor: str = "val_loss"
    best_epoch: int | None = None  # 1-based, as in history.csv
    val_acc_at_best: float | None = Field(None, validation_alias=AliasChoices("val_acc_at_best", "best_val_acc"))
    epochs: int = 0
    data_seconds: float | None = None
    train_seconds: float | None = None
    total_seconds: float | None = None

    def __getitem__(self, key: str):
        if key not in type(self).model_fields:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default=None):
        return getattr(self, key) if key in type(self).model_fields else default


class ProcessInfo(BaseModel):
    """The process that trains a run: enough to tell, later, whether it is still alive."""

    host: str
    pid: int
    boot_id: str | None = None  # this boot of the host (a pid is only unique within one)
    start_ticks: int | None = None  # the process's start time (Linux: /proc/<pid>/stat), to tell a reused pid

    @classmethod
    def current(cls) -> "ProcessInfo":
        return cls(host=socket.gethostname(), pid=os.getpid(), boot_id=_boot_id(), start_ticks=_start_ticks(os.getpid()))

    def alive(self) -> bool | None:
        """True or False for a process of this host; None when it ran on another host (unknowable here)."""
        if self.host != socket.gethostname() or (self.boot_id and self.boot_id != _boot_id()):
            return None if self.host != socket.gethostname() else False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # alive, another user's
            pass
        return self.start_ticks is None or _start_ticks(self.pid) == self.start_ticks


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])  # field 22, counted after the command name
    except (OSError, IndexError, ValueError):
        return None


RUN_HEARTBEAT_SECONDS = 30.0  # how often a training process refreshes run.json's heartbeat
STALE_AFTER = timedelta(seconds=10 * RUN_HEARTBEAT_SECONDS)  # a run on another host without one for this long is stale


class RunRecord(BaseModel):
    """Everything known about a run but its tensors: what run.json holds and the index stores."""

    model_config = ConfigDict(extra="ignore")

    run_id: str = Field(pattern=RUN_ID_RE.pattern)  # used in paths (exports, the index): a run folder may come from anywhere
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
    ood: OODThresholds | None = None
    timings: dict | None = None
    resumed_at: list[str] = []
    metrics: Metrics | None = None  # the final metrics (also metrics.json)
    epochs: int = 0
    tags: list[str] = []
    note: str | None = None
    run_dir: str | None = None
    process: ProcessInfo | None = None
    heartbeat_at: str | None = None
    threads: int | None = None  # torch's intra-op threads: results depend on them
    processes: int = 1  # processes training it together (`--nproc N`, torchrun); each with `threads` threads
    precision: str | None = None  # the training step's arithmetic, fp32 or bf16-mixed (engine/precision.py)
    precision_reason: str | None = None  # why: the recipe set it, or what `auto` saw
    train_step: str | None = None  # the step strategy that trained it: autograd, fused-dense or cuda-graph (engine/strategy.py)
    cpu: dict | None = None  # what chose `threads`: CPUs allowed, busy elsewhere, share, OpenMP wait policy (cpus.py)
    system: dict | None = None  # what it used of the machine: peak_rss_mb, cpu_mean, starved_fraction, GPU (system/usage.py)
    study: str | None = None  # the tuning study this run is a trial of (`trainlab tune`)
    trial: int | None = None  # its trial number in that study

    def live_status(self) -> str:
        """The status, with `stale` for a run recorded as running whose process is gone (killed,
        crashed, its machine rebooted), and `missing` when its folder was deleted."""
        if self.run_dir is not None and not Path(self.run_dir, "run.json").is_file():
            return "missing"
        if self.status != "running":
            return self.status
        if self.run_dir is not None:  # the index can lag behind run.json (a full disk at the end)
            try:
                on_disk = json.loads(read_text_inside(self.run_dir, "run.json", "")).get("status")
            except (OSError, ValueError, AttributeError, TrainlabError, RecursionError):
                on_disk = None
            if on_disk in ("completed", "failed", "interrupted", "pruned"):
                return on_disk
        if self.process is None:
            return self.status
        alive = self.process.alive()
        if alive is None:  # another host: trust the heartbeat
            beat = datetime.fromisoformat(self.heartbeat_at or self.started_at or "1970-01-01T00:00:00+00:00")
            alive = datetime.now(timezone.utc) - beat < STALE_AFTER
        return "running" if alive else "stale"

    def save(self, run_dir: Path, last_resort: bool = False) -> None:
        """run.json, atomically. With `last_resort` (a run that ends badly), a full disk that cannot
        take a temp file gets the record written over the old one's blocks instead (compact), so
        the run does not go on saying it is running; the WriteError is raised all the same."""
        text = self.model_dump_json(indent=2, exclude={"tags", "note", "run_dir"}) + "\n"
        try:
            atomic_write(run_dir / "run.json", text)
        except WriteError:
            if last_resort:
                overwrite_in_place(run_dir / "run.json", self.model_dump_json(exclude={"tags", "note", "run_dir"}) + "\n")
            raise


# ---------------------------------------------------------------------------------------------
# One writer per run folder
# ---------------------------------------------------------------------------------------------

LOCK = ".lock"


class RunLock:
    """An exclusive lock on a run folder, held by the process that trains it (flock: the kernel
    releases it when the process dies, kill -9 included), so two processes never write one folder."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        self.fd: int | None = None

    def acquire(self, run_id: str) -> "RunLock":
        import fcntl
        try:  # never through a link: a run folder may come from anywhere
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        except OSError as exc:
            raise TrainlabError(f"{self.path}: cannot lock the run ({exc.strerror}); it must be a plain file of the "
                                f"run folder") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise TrainlabError(f"run {run_id} is being trained right now by {holder}; stop that process first "
                                f"(Ctrl-C in its terminal, or kill it), then resume") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None


def read_record(run_dir: Path) -> RunRecord:
    """run.json of a run folder, validated; a broken one is one line naming the file and the fix."""
    fix = f"the run folder is damaged: remove it with `trainlab runs rm {run_dir.name}`"
    try:  # the safe way: a regular file inside the folder (a run folder may come from anywhere), bounded
        data = json.loads(read_text_inside(run_dir, "run.json", fix))
    except json.JSONDecodeError as exc:
        raise TrainlabError(f"{run_dir / 'run.json'}: not valid JSON ({exc}); {fix}") from None
    except RecursionError:
        raise TrainlabError(f"{run_dir / 'run.json'}: nested too deeply to be a run record; {fix}") from None
    if not isinstance(data, dict):
        raise TrainlabError(f"{run_dir / 'run.json'}: holds a JSON {type(data).__name__}, not an object; {fix}")
    try:
        return RunRecord.model_validate(data).model_copy(update={"run_dir": str(run_dir)})
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        raise TrainlabError(f"{run_dir / 'run.json'}: {'.'.join(map(str, err['loc']))}: {err['msg']}; {fix}") from None


LAST_RE = re.compile(r"^last(?:~(\d{1,6}))?$")


def resolve_run_dir(run: str | os.PathLike, settings: Settings) -> Path:
    """A run folder from an id (under the runs folder), a unique part of one, `last` (the newest
    run), `last~N` (the one N before it), or a path; ids are checked against path traversal."""
    text = str(run)
    last = LAST_RE.match(text)
    if last:
        return newest_run(settings, int(last.group(1) or 0))
    path = Path(text).expanduser()
    if (path / "run.json").is_file():
        return path.resolve()
    if not RUN_ID_RE.match(text) or ".." in text:
        raise RunNotFound(f"'{text}' is not a valid run id (letters, digits, '.', '_' and '-') nor a run folder")
    root = settings.runs_dir
    candidate = root / text
    if (candidate / "run.json").is_file():
        return candidate
    matches = sorted(p for p in root.glob(f"*{text}*") if (p / "run.json").is_file()) if root.is_dir() else []
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise RunNotFound(f"'{text}' matches {len(matches)} runs in {root}; give more of the id")
    raise RunNotFound(f"no run '{text}' in {root}; list runs with `trainlab runs` or pass --runs-dir")


def newest_run(settings: Settings, back: int = 0) -> Path:
    """The run started most recently (`back` = 0), or `back` runs before it: run ids begin with their
    start time (YYYYmmdd-HHMMSS), so their order is the folders' name order."""
    root = settings.runs_dir
    stamped = re.compile(r"^\d{8}-\d{6}-")
    runs = sorted(p for p in root.iterdir() if stamped.match(p.name) and (p / "run.json").is_file()) if root.is_dir() else []
    if back >= len(runs):
        have = f"only {len(runs)} run{'s' * (len(runs) != 1)}" if runs else "no runs yet"
        raise RunNotFound(f"'last{f'~{back}' if back else ''}': {root} has {have}; train one with `trainlab train RECIPE`")
    return runs[-1 - back]
