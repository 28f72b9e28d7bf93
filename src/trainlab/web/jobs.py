"""Training started from the dashboard: each job runs `trainlab.train` in a worker process
(`python -m trainlab.web.worker`: the server stays responsive and a crash cannot take it down), one at a time by default and queued
beyond. Stop sends the worker SIGINT, which sets the run's stop event exactly as Ctrl-C does in the
CLI: training ends after the current step, checkpointed, marked interrupted and resumable."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from trainlab.settings import Settings
from trainlab.system.process_wide import training_child_environment

JOB_STATES = ("queued", "starting", "running", "completed", "interrupted", "failed", "cancelled")


@dataclass
class Job:
    id: int
    label: str
    recipe: dict | None = None
    resume: str | None = None
    state: str = "queued"
    run_id: str | None = None
    error: str | None = None
    created: float = field(default_factory=time.time)
    process: subprocess.Popen | None = None
    stop_requested: bool = False
    ready: bool = False  # the worker's signal handlers are in place
    check: dict | None = None  # a data check (trainlab data check) instead of a training
    tune: dict | None = None  # a search (trainlab tune): preset, space, trials, timeout, study
    progress: dict | None = None  # a check's or search's last {stage, done, total}
    report: str | None = None  # a finished check's report file; a search's study name

    @property
    def kind(self) -> str:
        return "check" if self.check is not None else "tune" if self.tune is not None else "train"

    def to_dict(self) -> dict:
        return {"id": self.id, "kind": self.kind, "label": self.label, "state": self.state, "run_id": self.run_id,
                "error": self.error, "created": self.created, "resume": self.resume, "progress": self.progress,
                "check": self.check, "tune": self.tune}


class JobQueue:
    """Jobs in order; `workers` run at the same time (1 by default: two trainings on 2 cores only
    slow each other down)."""

    def __init__(self, settings: Settings, workers: int = 1):
        self.settings, self.workers = settings, workers
        self.jobs: dict[int, Job] = {}
        self.ids = itertools.count(1)
        self.lock = threading.Condition()
        self.closed = False
        self.threads: list[threading.Thread] = []  # started with the first job, not by the constructor
        self.worker_command = [sys.executable, "-m", "trainlab.web.worker"]  # reads the order on stdin (worker.py)

    def _start_workers(self) -> None:
        """Called with the lock held."""
        if not self.threads and not self.closed:
            self.threads = [threading.Thread(target=self._serve, daemon=True, name=f"trainlab-job-{i}")
                            for i in range(self.workers)]
            for t in self.threads:
                t.start()

    def submit(self, label: str, recipe: dict | None = None, resume: str | None = None, check: dict | None = None,
               tune: dict | None = None) -> Job:
        with self.lock:
            job = Job(next(self.ids), label, recipe, resume, check=check, tune=tune)
            self.jobs[job.id] = job
            self._start_workers()
            self.lock.notify_all()
            return job

    def submit_resume(self, run_id: str) -> Job | None:
        """A resume job for `run_id`, or None when one for it is already queued or running
        (two quick clicks must not train the same run twice)."""
        with self.lock:
            if any((j.resume == run_id or j.run_id == run_id) and j.state in ("queued", "starting", "running")
                   for j in self.jobs.values()):
                return None
            job = Job(next(self.ids), f"resume {run_id}", None, run_id)
            self.jobs[job.id] = job
            self._start_workers()
            self.lock.notify_all()
            return job

    def get(self, job_id: int) -> Job | None:
        with self.lock:
            return self.jobs.get(job_id)

    def list(self) -> list[Job]:
        with self.lock:
            return sorted(self.jobs.values(), key=lambda j: -j.id)

    def for_run(self, run_id: str) -> Job | None:
        with self.lock:
            return next((j for j in self.jobs.values() if j.run_id == run_id and j.state in ("starting", "running")), None)

    def stop(self, job: Job) -> None:
        """A queued job is cancelled; a running one gets SIGINT (Ctrl-C)."""
        with self.lock:
            job.stop_requested = True
            if job.state == "queued":
                job.state = "cancelled"
                return
            ready = job.ready
        if ready:  # else the worker's "ready" line sends it (a SIGINT before would be a traceback)
            self._interrupt(job)

    @staticmethod
    def _interrupt(job: Job) -> None:
        if job.process is not None and job.process.poll() is None:
            job.process.send_signal(signal.SIGINT)

    def close(self, timeout: float = 30.0) -> None:
        """Stop what runs (checkpointed, resumable) and wait for the workers."""
        with self.lock:
            self.closed = True
            for j in self.jobs.values():
                if j.state == "queued":
                    j.state = "cancelled"
            self.lock.notify_all()
            jobs = list(self.jobs.values())
        for j in jobs:
            if j.process is not None and j.process.poll() is None:
                self.stop(j)
                try:
                    j.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    j.process.kill()

    def _next(self) -> Job | None:
        with self.lock:
            while not self.closed:
                job = next((j for j in sorted(self.jobs.values(), key=lambda j: j.id) if j.state == "queued"), None)
                if job is not None:
                    job.state = "starting"
                    return job
                self.lock.wait()
            return None

    def _serve(self) -> None:
        while (job := self._next()) is not None:
            self._run(job)

    def _run(self, job: Job) -> None:
        with self.lock:
            if job.stop_requested:  # stopped between being picked and starting
                job.state = "cancelled"
                return
        order = {"recipe": job.recipe, "resume": job.resume, "check": job.check, "tune": job.tune,
                 "settings": self.settings.model_dump(mode="json")}
        process = subprocess.Popen(self.worker_command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, errors="replace",
                                   env=training_child_environment(self.workers))
        with self.lock:
            job.process = process
        # stderr is drained beside stdout: a worker that fills the stderr pipe (64 kB) while this
        # thread waits on stdout would block both for good; only its last lines are kept
        err: deque[str] = deque(maxlen=20)
        drain = threading.Thread(target=lambda: err.extend(process.stderr), daemon=True)
        drain.start()
        try:
            process.stdin.write(json.dumps(order))
            process.stdin.close()
        except (BrokenPipeError, OSError):  # the worker died at once: its stderr says why
            pass
        for line in process.stdout:  # one JSON object a line: {"run": id}, then how it ended
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            self._on_message(job, msg)
        code = process.wait()
        drain.join(timeout=5)
        if code != 0:
            tail = [line.strip() for line in err if line.strip()][-1:] or [f"exit code {process.returncode}"]
            with self.lock:
                if job.state in ("starting", "running"):
                    job.state, job.error = "failed", f"the training process ended: {tail[0][:300]}"

    def _on_message(self, job: Job, msg: dict) -> None:
        """One line from the worker: ready (its signal handlers are in place), its run id, how it ended."""
        with self.lock:
            if msg.get("ready"):
                job.ready = True
                stop = job.stop_requested
            else:
                stop = False
                if "run" in msg:
                    job.state, job.run_id = "running", msg["run"]
                elif "progress" in msg:
                    job.state, job.progress = "running", msg["progress"]
                elif "end" in msg:
                    job.state = msg["end"] if msg["end"] in JOB_STATES else "failed"
                    job.error = msg.get("error")
                    job.run_id = msg.get("run_id") or job.run_id
                    job.report = msg.get("report") or job.report
        if stop:
            self._interrupt(job)
