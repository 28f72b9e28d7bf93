"""Hyperparameter search with Optuna: every trial is a trainlab run, studies live in a database.

Reading order: `tune` (the entry point: validate, open the study, run workers), `_Worker` (one
process's loop: sample a recipe, train it, report epochs to the pruner), `study_report` /
`best_recipe` / `plot_study` (results). A study is stored through Optuna's RDB storage: SQLite
beside the runs by default (`<runs>/studies.db`), the run index's database when `--db` names one, or
any `--storage` URL; several `trainlab tune` processes, here (`jobs=`) or on other machines, share a
study through it. Trials beat a heartbeat, so a worker killed mid-trial leaves a trial that the next
worker (or `study_report`) marks failed instead of "running" forever.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import multiprocessing
import os
import random
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import optuna
import sqlalchemy.exc
from optuna.trial import TrialState

from trainlab.data.readers import Dataset
from trainlab.data.registry import load_for_recipe
from trainlab.engine.callbacks import Callback
from trainlab.errors import Interrupted, Pruned, TrainlabError, first_line
from trainlab.history import best_epoch
from trainlab.plots import save_figure
from trainlab.recipes import Recipe, validate
from trainlab.runs.files import open_runs_folder
from trainlab.settings import Settings, load_settings
from trainlab.system.process_wide import prepare_process
from trainlab.system.signals import Interrupt, StopSignals
from trainlab.training.api import train
from trainlab.training.build import resolve_recipe
from trainlab.tuning.space import Space, load_space, space_digest

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "hyperband", "none")
TRIAL_HEARTBEAT_SECONDS = 10

@contextlib.contextmanager
def _quiet():
    """Heartbeats and stale-trial checks are marked experimental in Optuna; they are what keeps a killed
    worker's trial from staying "running" forever, so trainlab relies on them knowingly. Optuna's own
    log lines are off meanwhile: trainlab reports each trial itself (a failed or stopped one too, no
    tracebacks); the caller's Optuna verbosity is back afterwards."""
    was = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(was)


@dataclass
class TrialRow:
    """One trial as `trainlab tune show` lists it."""

    number: int
    state: str
    value: float | None
    params: dict
    run_id: str | None = None
    seconds: float | None = None
    epochs: int | None = None
    test_acc: float | None = None
    error: str | None = None
    intermediate: list[tuple[int, float]] = field(default_factory=list)  # (epoch, objective) as reported to the pruner
    started: str | None = None

    @classmethod
    def of(cls, t: optuna.trial.FrozenTrial) -> "TrialRow":
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
        a = t.user_attrs
        state = "interrupted" if a.get("interrupted") and t.state == TrialState.FAIL else t.state.name.lower()
        steps = sorted((int(k), float(v)) for k, v in t.intermediate_values.items() if v is not None and math.isfinite(v))
        return cls(t.number, state, t.value if t.state == TrialState.COMPLETE else None, dict(t.params), a.get("run_id"),
                   seconds, a.get("epochs"), a.get("test_acc"), a.get("error"), steps,
                   t.datetime_start.isoformat(timespec="seconds") if t.datetime_start else None)


@dataclass
class StudyReport:
    """A study's state: its trials, the best one and the recipe that won."""

    name: str
    storage: str
    objective: str
    direction: str
    recipe: Recipe
    space: Space
    trials: list[TrialRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def best(self) -> TrialRow | None:
        done = [t for t in self.trials if t.state == "complete" and t.value is not None]
        if not done:
            return None
        return (max if self.direction == "maximize" else min)(done, key=lambda t: t.value)

    @property
    def best_recipe(self) -> Recipe | None:
        b = self.best
        if b is None:
            return None
        r = self.space.apply(self.recipe, b.params)
        return r.model_copy(update={"name": f"{self.recipe.name}-tuned",
                                    "description": f"best of study {self.name}: trial {b.number}, {self.objective} {b.value:.4f}"})

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.trials:
            out[t.state] = out.get(t.state, 0) + 1
        return out

    def to_dict(self) -> dict:
        b = self.best
        return {"study": self.name, "storage": self.storage, "objective": self.objective, "direction": self.direction,
                "recipe": self.recipe.name, "space": self.space.to_dict(), "counts": self.counts(),
                "best": None if b is None else b.__dict__,
                "best_recipe": None if b is None else self.best_recipe.to_dict(),
                "trials": [t.__dict__ for t in self.trials]}


# ---------------------------------------------------------------------------------------------
# Storage and study
# ---------------------------------------------------------------------------------------------

def storage_url(settings: Settings, storage: str | None = None) -> str:
    """--storage, else the run index's database when it is a server (--db), else <runs>/studies.db."""
    if storage:
        return storage
    if settings.db and not settings.db.startswith("sqlite"):
        return settings.db
    return f"sqlite:///{settings.runs_dir.resolve() / 'studies.db'}"


def open_storage(url: str, heartbeat: int = TRIAL_HEARTBEAT_SECONDS) -> optuna.storages.RDBStorage:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    for attempt in range(4):
        try:
            with _quiet():
                return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=heartbeat,
                                                  grace_period=max(3 * heartbeat, heartbeat + 5))
        except sqlalchemy.exc.DBAPIError as exc:  # workers starting together race to create the tables: retry
            if attempt == 3:
                raise TrainlabError(f"--storage {url}: cannot open it ({first_line(exc)})") from None
            time.sleep(0.2 + random.random() * attempt)
        except Exception as exc:  # a bad URL, a missing driver, a server that does not answer
            raise TrainlabError(f"--storage {url}: cannot open it ({first_line(exc)}); give an SQLAlchemy URL such as "
                                f"sqlite:///studies.db or postgresql+psycopg://user@host/db") from None


def _sampler(name: str, space: Space, seed: int, startup: int):
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True, constant_liar=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler(space.grid(), seed=seed)
    raise TrainlabError(f"--sampler {name!r}: use {', '.join(SAMPLERS)}")


def _pruner(name: str, max_epochs: int):
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(max_epochs, 2), reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise TrainlabError(f"--pruner {name!r}: use {', '.join(PRUNERS)}")


def _max_epochs(base: Recipe, space: Space) -> int:
    dist = space.params.get("epochs")
    return max(dist.edges()) if dist is not None else int(space.fixed.get("epochs", base.epochs))


def open_study(name: str, storage, base: Recipe, space: Space, sampler: str = "tpe", pruner: str = "median",
               seed: int = 0, startup: int = 10) -> optuna.Study:
    """Create the study, or continue it when it exists with the same recipe and space."""
    meta = {"recipe": base.to_dict(), "space": space_digest(space), "space_yaml": space.to_dict(), "objective": space.objective,
            "heartbeat": getattr(storage, "heartbeat_interval", None)}  # what its trials beat with: when one is stale
    with _quiet():  # "A new study created in RDB with name ...": trainlab says what it does itself
        study = optuna.create_study(storage=storage, study_name=name, direction=space.direction, load_if_exists=True,
                                    sampler=_sampler(sampler, space, seed, startup),
                                    pruner=_pruner(pruner, _max_epochs(base, space)))
    have = study.user_attrs.get("trainlab")
    if have is None:
        study.set_user_attr("trainlab", meta)
    elif have["recipe"] != meta["recipe"] or have["space"] != meta["space"]:
        what = "recipe" if have["recipe"] != meta["recipe"] else "search space"
        raise TrainlabError(f"study {name!r} was started with another {what}; continue it with the same recipe and "
                            f"space, or pick a new --study name")
    return study


def load_study(name: str, storage_url_: str, heartbeat: int = TRIAL_HEARTBEAT_SECONDS) -> optuna.Study:
    storage = open_storage(storage_url_, heartbeat)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
        raise TrainlabError(f"no study {name!r} in {storage_url_}; studies there: {', '.join(names) or 'none'}") from None
    if "trainlab" not in study.user_attrs:
        raise TrainlabError(f"study {name!r} was not made by trainlab tune (it has no recipe)")
    return study


# ---------------------------------------------------------------------------------------------
# Running trials
# ---------------------------------------------------------------------------------------------

class TrialReporter(Callback):
    """Links a trial to its run, reports each epoch's objective and prunes when the pruner says so."""

    key = "trial_reporter"

    def __init__(self, trial: optuna.Trial, metric: str):
        self.trial, self.metric = trial, metric

    def on_train_begin(self, state) -> None:
        if state.run_id:
            self.trial.set_user_attr("run_id", state.run_id)

    def on_epoch_end(self, state, epoch, logs) -> None:
        self.trial.set_user_attr("epochs", epoch + 1)
        value = logs.get(self.metric)
        if value is None:
            return
        self.trial.report(value, epoch + 1)
        if self.trial.should_prune():
            raise Pruned(f"pruned after epoch {epoch + 1} ({self.metric} {value:.4f})")


@dataclass(frozen=True)
class TuneOptions:
    """How a search runs (every `trainlab tune run` flag but the recipe, the space and the folders).
    `trials` is the number this call runs in total, shared between `jobs` worker processes;
    `timeout` (seconds) stops starting new trials; `seed` seeds the sampler (worker i uses seed + i);
    `startup` is TPE's number of random trials; a trial silent for 3 `heartbeat`s is failed."""

    trials: int | None = 20
    timeout: float | None = None
    jobs: int = 1
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int = 0
    startup: int = 10
    heartbeat: int = TRIAL_HEARTBEAT_SECONDS

    def check(self) -> None:
        """One-line errors for counts that cannot make a study."""
        if self.trials is not None and self.trials < 1:
            raise TrainlabError(f"--trials {self.trials}: give at least 1")
        if self.timeout is not None and not 0 < self.timeout < math.inf:
            raise TrainlabError(f"--timeout {self.timeout}: give a positive number of seconds")
        if self.trials is None and self.timeout is None:
            raise TrainlabError("give --trials N or --timeout SECONDS (or both): a study needs an end")
        if not 1 <= self.jobs <= 64:
            raise TrainlabError(f"--jobs {self.jobs}: give 1 to 64 worker processes")
        if self.heartbeat < 1:
            raise TrainlabError(f"--heartbeat {self.heartbeat}: give at least 1 second")


@dataclass
class _Worker:
    """One process's share of a study."""

    name: str
    storage: str
    base: Recipe
    space: Space
    settings: Settings
    device: str = "auto"
    stop: threading.Event | None = None
    datasets: dict = field(default_factory=dict)

    @staticmethod
    def key(r: Recipe) -> tuple:
        return r.data.name, r.data.source, r.data.test_fraction, r.data.split_seed, str(r.data.image_size), r.data.corrections

    def dataset(self, r: Recipe) -> Dataset:
        key = self.key(r)
        if key not in self.datasets:
            self.datasets[key] = load_for_recipe(r.data, self.settings)
        return self.datasets[key]

    def objective(self, trial: optuna.Trial) -> float:
        metric = self.space.objective
        try:
            recipe = self.space.apply(self.base, self.space.suggest(trial))
            run = train(recipe, settings=self.settings, dataset=self.dataset(recipe), device=self.device, progress="none",
                        stop=self.stop, callbacks=[TrialReporter(trial, metric)], study=(self.name, trial.number))
        except Pruned as exc:
            trial.set_user_attr("error", str(exc))
            raise optuna.TrialPruned(str(exc)) from None
        except (Interrupted, KeyboardInterrupt, Interrupt):
            trial.set_user_attr("interrupted", True)
            trial.study.stop()  # Interrupted is an Exception, which `catch` would otherwise pass over
            raise
        except Exception as exc:  # a diverged or invalid trial is recorded as failed; the study goes on
            trial.set_user_attr("error", first_line(exc, 300))
            raise
        m = run.metrics
        trial.set_user_attr("test_acc", m.test_acc)
        best = best_epoch(run.history, metric)
        if best is None or best[metric] is None or not math.isfinite(best[metric]):
            raise TrainlabError(f"the run recorded no {metric}")
        return float(best[metric])

    def run(self, opts: TuneOptions, report: Callable[[TrialRow], None] | None) -> None:
        """This worker's trials: `opts.trials` of them (its share), or until `opts.timeout`."""
        storage = open_storage(self.storage, opts.heartbeat)
        study = open_study(self.name, storage, self.base, self.space, opts.sampler, opts.pruner, opts.seed, opts.startup)

        def on_trial(st: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
            if report is not None:
                report(TrialRow.of(frozen))

        with _quiet():
            study.optimize(self.objective, n_trials=opts.trials, timeout=opts.timeout, catch=(Exception,),
                           callbacks=[on_trial], gc_after_trial=False)
        if self.stop is not None and self.stop.is_set():
            raise Interrupted("tuning stopped on request")


def _process_main(worker: _Worker, opts: TuneOptions, report, jobs: int, parent: int) -> None:
    """A worker process (`jobs > 1`): its share of the trials. Ctrl-C, SIGTERM, and the death of the
    parent (kill -9 of `trainlab tune` included: PR_SET_PDEATHSIG) all stop it as Ctrl-C stops a
    run: the trial under way ends after its current step, checkpointed, recorded as interrupted,
    and no new trial starts. Each trial's run plans its threads as one of `jobs` processes."""
    prepare_process(share=jobs)
    handler = StopSignals(armed=True)  # the one stop handler (system/signals.py): a trial stops after its step
    handler.install()
    die_with_parent(parent)
    try:
        dataclasses.replace(worker, stop=handler.stop).run(opts, report)
    except (Interrupted, KeyboardInterrupt, Interrupt):
        pass


def die_with_parent(parent: int) -> None:
    """Ask Linux to send SIGTERM when the parent dies; a parent already gone means stop now."""
    try:
        import ctypes
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the heartbeat still fails the trials of a lost worker
        pass
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


def split_trials(trials: int | None, jobs: int) -> list[int | None]:
    """`trials` shared as evenly as possible between `jobs` workers (None: no limit for each)."""
    if trials is None:
        return [None] * jobs
    return [trials // jobs + (1 if i < trials % jobs else 0) for i in range(jobs)]


def tune(recipe: str | Path | Recipe, space: str | Path | Space | dict, *, options: TuneOptions | None = None,
         study: str | None = None, storage: str | None = None, overrides: dict | list[str] | None = None,
         settings: Settings | None = None, data_dir: str | Path | None = None, runs_dir: str | Path | None = None,
         db: str | None = None, device: str = "auto", stop: threading.Event | None = None,
         report: Callable[[TrialRow], None] | None = None, dataset: Dataset | None = None, **option_fields) -> StudyReport:
    """Search `space` around `recipe` with Optuna and return the study's report.

    Every trial trains a run (linked to the study: `trainlab runs --study NAME`). How the search runs
    is a `TuneOptions` (`options=`), or its fields as keywords: `trials=20, timeout=None, jobs=1,
    sampler="tpe", pruner="median", seed=0, startup=10, heartbeat=10`. The same `study` name
    continues a study; any number of calls, here or on other machines, share one through `storage`
    (an SQLAlchemy URL; default: <runs>/studies.db). `dataset=` trains every trial on that Dataset
    instead of loading the recipe's; `stop` (an Event) ends the trial under way after its current
    step and starts no other; `report` is called with each finished trial's `TrialRow`.
    """
    settings = (settings or load_settings()).with_(data_dir=data_dir, runs_dir=runs_dir, db=db)
    unknown = sorted(set(option_fields) - {f.name for f in dataclasses.fields(TuneOptions)})
    if unknown:
        raise TypeError(f"tune() got unexpected keyword arguments {', '.join(unknown)}")
    opts = dataclasses.replace(options or TuneOptions(), **option_fields)
    opts.check()
    base, sp = resolve_recipe(recipe, overrides, {}), load_space(space)
    sp.check(base)
    name = study or f"{base.name}-{sp.name}"
    url = storage_url(settings, storage)
    open_runs_folder(settings).engine.dispose()
    open_study(name, open_storage(url, opts.heartbeat), base, sp, opts.sampler, opts.pruner, opts.seed, opts.startup)  # create, or check it matches
    worker = _Worker(name, url, base, sp, settings, device, stop)
    if dataset is not None:
        worker.datasets[worker.key(base)] = dataset
    notes = []
    if opts.jobs == 1:
        worker.run(opts, report)
    else:
        notes = _run_processes(worker, opts, report)
    out = study_report(name, url, opts.heartbeat)
    out.notes += notes
    return out


def _run_processes(worker: _Worker, opts: TuneOptions, report) -> list[str]:
    """Worker processes (spawned: no inherited torch threads or locks), each with its share, its own
    sampler seed and an equal share of the CPUs. Returns notes on workers that did not end well."""
    ctx = multiprocessing.get_context("spawn")
    stop = worker.stop
    worker = dataclasses.replace(worker, stop=None)  # an Event does not cross processes: each worker has its own
    shares = split_trials(opts.trials, opts.jobs)
    jobs = sum(1 for s in shares if s != 0)
    procs = [ctx.Process(target=_process_main, daemon=False, name=f"trainlab-tune-{i}",
                         args=(worker, dataclasses.replace(opts, trials=share, seed=opts.seed + i), report, jobs, os.getpid()))
             for i, share in enumerate(shares) if share != 0]
    for p in procs:
        p.start()
    told = False
    try:
        while any(p.is_alive() for p in procs):
            if stop is not None and stop.is_set() and not told:  # a stop sent to this process alone (kill -INT PID)
                told = True
                for p in procs:
                    if p.is_alive():
                        os.kill(p.pid, signal.SIGINT)
            for p in procs:
                p.join(timeout=0.2)
    except (KeyboardInterrupt, Interrupt):  # a second Ctrl-C: the workers got it too; let them record their trials, then stop
        for p in procs:
            p.join(timeout=60)
        raise
    if stop is not None and stop.is_set():
        raise Interrupted("tuning stopped on request")
    return [f"worker {p.name.rsplit('-', 1)[1]} " + (f"was killed by signal {-p.exitcode}" if p.exitcode < 0 else f"failed (exit {p.exitcode})")
            + "; the study keeps every trial it finished" for p in procs if p.exitcode]


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------

def study_report(name: str, storage: str, heartbeat: int = TRIAL_HEARTBEAT_SECONDS) -> StudyReport:
    """The study's trials (stale ones, whose worker died, marked failed first) and its best recipe."""
    study = load_study(name, storage, heartbeat)
    beat = study.user_attrs["trainlab"].get("heartbeat")
    if beat and beat != heartbeat:  # judge staleness by the heartbeat the study's trials beat with
        study = load_study(name, storage, beat)
    with _quiet():
        optuna.storages.fail_stale_trials(study)
    meta = study.user_attrs["trainlab"]
    base = validate(meta["recipe"], where=f"study {name}")
    sp = load_space(meta["space_yaml"])
    return StudyReport(name, storage, meta["objective"], study.direction.name.lower(), base, sp,
                       [TrialRow.of(t) for t in study.get_trials(deepcopy=False)])


def list_studies(storage: str) -> list[dict]:
    out = []
    with _quiet():
        summaries = optuna.get_all_study_summaries(open_storage(storage), include_best_trial=True)
    for s in summaries:
        best = s.best_trial
        meta = s.user_attrs.get("trainlab") or {}
        out.append({"study": s.study_name, "trials": s.n_trials, "direction": s.direction.name.lower(),
                    "best_value": best.value if best else None, "best_trial": best.number if best else None,
                    "started": s.datetime_start.isoformat(timespec="seconds") if s.datetime_start else None,
                    "recipe": (meta.get("recipe") or {}).get("name")})
    return out


def importances(name: str, storage: str) -> dict[str, float]:
    """Optuna's own parameter importances (its default evaluator, fANOVA) of a study's complete
    trials; {} until at least 3 trials with different parameters have completed."""
    study = load_study(name, storage)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if len(complete) < 3 or len({tuple(sorted(t.params.items())) for t in complete}) < 3:
        return {}
    try:
        with _quiet():
            return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    except (ValueError, RuntimeError):  # a parameter with a single value, say: no importance to tell
        return {}


def plot_study(name: str, storage: str, out_dir: str | Path) -> list[Path]:
    """Optuna's matplotlib plots of a study as PNGs: optimisation history, parallel coordinates,
    parameter importances and the pruner's intermediate values (those that can be drawn)."""
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm
    study = load_study(name, storage)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    plots = {"history": ovm.plot_optimization_history, "intermediate": ovm.plot_intermediate_values}
    if len(complete) >= 2:
        plots["parallel"] = ovm.plot_parallel_coordinate
    if len(complete) >= 3 and len({tuple(sorted(t.params.items())) for t in complete}) >= 3:
        plots["importance"] = ovm.plot_param_importances
    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for key, fn in plots.items():
            try:
                ax = fn(study)
            except (ValueError, RuntimeError):  # too few trials of the kind this plot needs
                continue
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
            fig.set_size_inches(9, 5)
            written.append(save_figure(fig, out_dir / f"{name}-{key}.png"))
            plt.close(fig)
    return written
