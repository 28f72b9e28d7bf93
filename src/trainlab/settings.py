"""One settings object, read from the environment in one place.

The CLI resolves its flags and the environment into a `Settings` once; the Python API takes one
(or reads the environment through `Settings()` when none is given). Nothing else in trainlab
reads environment variables.

| field | variable | default |
|---|---|---|
| runs_dir | TRAINLAB_RUNS | ./runs |
| data_dir | TRAINLAB_DATA | none (cache, /usr/share/datasets, then download) |
| db | TRAINLAB_DB | sqlite:///<runs_dir>/trainlab.db |
| offline | TRAINLAB_OFFLINE | false (downloads allowed) |
| cache_dir | TRAINLAB_CACHE | $XDG_CACHE_HOME/trainlab or ~/.cache/trainlab |
| system_data_dir | TRAINLAB_SYSTEM_DATA | /usr/share/datasets |
| download_timeout | TRAINLAB_DOWNLOAD_TIMEOUT | 30 seconds |
| token | TRAINLAB_TOKEN | none on loopback; generated for another host |
| allow_hosts | TRAINLAB_ALLOW_HOSTS | none: the servers answer only for the bound host and loopback names |
| serve_host | TRAINLAB_SERVE_HOST | set by `trainlab serve` for its worker processes |
| serve_run | TRAINLAB_SERVE_RUN | set by `trainlab serve` for its worker processes |
| serve_onnx | TRAINLAB_SERVE_ONNX | false (serve through torch) |
| serve_timeout | TRAINLAB_SERVE_TIMEOUT | 10 seconds per predict request |
| step | TRAINLAB_STEP | auto: the fused dense step for dense stacks on the CPU, a captured CUDA graph on a GPU, else autograd (engine/strategy.py) |
| precision | TRAINLAB_PRECISION | unset: each recipe's `precision` (auto picks per model and CPU); fp32 or bf16-mixed for the recipes that say auto |
| threads | TRAINLAB_THREADS | chosen per run from the free CPUs (cpus.py) |
| omp_num_threads | OMP_NUM_THREADS | unset; when set, torch's own count is kept |
| rank, world_size, local_rank | RANK, WORLD_SIZE, LOCAL_RANK | 0, 1, 0 (torchrun and `--nproc` set them) |

Only these variables are read: a variable without the TRAINLAB_ prefix (TOKEN, DB, THREADS) is
never a setting, whatever its case. system/process_wide.py also reads TRAINLAB_CPU_SHARE (how many
trainlab processes share the CPUs, written by trainlab's own launchers) and OMP_WAIT_POLICY before
torch loads, when no Settings exists yet.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from trainlab.errors import TrainlabError


def _default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "trainlab"


class _OwnVariables(EnvSettingsSource):
    """The environment, less every variable that is not one of the settings' own names: pydantic-settings
    would otherwise read a field's plain name too (TOKEN, DB, THREADS: a CI secret as the server's token)."""

    def _load_env_vars(self):
        own = {str(f.validation_alias).lower() for f in Settings.model_fields.values()}
        return {k: v for k, v in super()._load_env_vars().items() if k.lower() in own}


class Settings(BaseSettings):
    """Where runs, data, the run index and caches live; whether downloads are allowed."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    runs_dir: Path = Field(Path("runs"), validation_alias="TRAINLAB_RUNS",
                           description="folder of run folders")
    data_dir: Path | None = Field(None, validation_alias="TRAINLAB_DATA",
                                  description="folder holding dataset files (<dir>/<name>/<file> or <dir>/<file>)")
    db: str | None = Field(None, validation_alias="TRAINLAB_DB",
                           description="run index URL; default sqlite:///<runs_dir>/trainlab.db")
    offline: bool = Field(False, validation_alias="TRAINLAB_OFFLINE", description="never download")
    cache_dir: Path = Field(default_factory=_default_cache, validation_alias="TRAINLAB_CACHE",
                            description="downloads and decoded image trees")
    system_data_dir: Path = Field(Path("/usr/share/datasets"), validation_alias="TRAINLAB_SYSTEM_DATA",
                                  description="a machine-wide folder of dataset files, looked in after the cache")
    download_timeout: float = Field(30.0, gt=0, validation_alias="TRAINLAB_DOWNLOAD_TIMEOUT",
                                    description="seconds per download attempt")

    token: str | None = Field(None, validation_alias="TRAINLAB_TOKEN",
                              description="the dashboard's access token (one is generated when the host is not loopback)")

    allow_hosts: str | None = Field(None, validation_alias="TRAINLAB_ALLOW_HOSTS",
                                    description="more Host names the servers answer for, comma-separated (* for any)")
    serve_host: str | None = Field(None, validation_alias="TRAINLAB_SERVE_HOST",
                                   description="the interface `trainlab serve` listens on (its worker processes read it)")
    serve_run: str | None = Field(None, validation_alias="TRAINLAB_SERVE_RUN",
                                  description="the run `trainlab serve` answers for (its worker processes read it)")
    serve_onnx: bool = Field(False, validation_alias="TRAINLAB_SERVE_ONNX",
                             description="serve through onnxruntime instead of torch")
    serve_timeout: float = Field(10.0, gt=0, validation_alias="TRAINLAB_SERVE_TIMEOUT",
                                 description="seconds a predict request may take")

    step: Literal["auto", "autograd", "fused-dense", "cuda-graph"] = Field(
        "auto", validation_alias="TRAINLAB_STEP",
        description="how a training step runs (engine/strategy.py): auto picks per model and device; autograd always works")
    precision: Literal["fp32", "bf16-mixed"] | None = Field(
        None, validation_alias="TRAINLAB_PRECISION",
        description="the training precision of recipes whose `precision` is auto (engine/precision.py); unset: auto decides")
    threads: int | None = Field(None, ge=1, validation_alias="TRAINLAB_THREADS",
                                description="CPU threads to train with; unset: torch's count, or 1 for a small dense stack")
    omp_num_threads: str | None = Field(None, validation_alias="OMP_NUM_THREADS",
                                        description="set by you or a launcher: trainlab then keeps torch's thread count")
    rank: int = Field(0, ge=0, validation_alias="RANK", description="this process's rank (torchrun sets it)")
    world_size: int = Field(1, ge=1, validation_alias="WORLD_SIZE",
                            description="processes training together (torchrun sets it)")
    local_rank: int = Field(0, ge=0, validation_alias="LOCAL_RANK",
                            description="the rank on this machine: its GPU (torchrun sets it)")

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):
        return init_settings, _OwnVariables(settings_cls)

    @field_validator("runs_dir", "data_dir", "cache_dir", "system_data_dir", mode="after")
    @classmethod
    def _absolute(cls, v: Path | None) -> Path | None:
        return None if v is None else v.expanduser().resolve()

    @property
    def db_url(self) -> str:
        return self.db or f"sqlite:///{self.runs_dir / 'trainlab.db'}"

    @property
    def allowed_host_names(self) -> tuple[str, ...]:
        return tuple(h.strip() for h in (self.allow_hosts or "").split(",") if h.strip())

    def environment(self) -> dict[str, str]:
        """These settings as TRAINLAB_ variables (each field's own), for a worker process to read back;
        the fields torchrun or OpenMP set (RANK, OMP_NUM_THREADS, ...) stay out."""
        out = {}
        for name, field in Settings.model_fields.items():
            value = getattr(self, name)
            if value is not None and str(field.validation_alias).startswith("TRAINLAB_"):
                out[str(field.validation_alias)] = str(int(value)) if isinstance(value, bool) else str(value)
        return out

    def with_(self, **changes) -> "Settings":
        """A copy with the given fields replaced; None leaves a field as it is (flags not given)."""
        given = {k: v for k, v in changes.items() if v is not None}
        return self if not given else load_settings(**{**self.model_dump(exclude_unset=False), **given})


def load_settings(**overrides) -> Settings:
    """Settings from the environment, with explicit values (flags, arguments) taking precedence."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        key = ".".join(str(p) for p in err["loc"])
        named = {str(f.validation_alias): name for name, f in Settings.model_fields.items()}
        key = f"{named[key]} ({key})" if key in named else key
        raise TrainlabError(f"setting {key}: {err['msg']} (got {str(err.get('input'))[:80]!r})") from None
