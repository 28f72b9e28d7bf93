"""User-facing errors: each one prints as a single line that says what was wrong and how to fix it."""


class TrainlabError(Exception):
    """An error caused by input (a file, a recipe, a flag), shown to the user as one line."""


class DataError(TrainlabError):
    """A dataset file is missing, corrupt or laid out wrongly."""


class RecipeError(TrainlabError):
    """A recipe has an unknown key or a bad value."""


class TrainingDiverged(TrainlabError):
    """The loss became NaN or infinite."""


class WriteError(TrainlabError):
    """A file could not be written: a full disk, a read-only or forbidden folder."""


class RunNotFound(TrainlabError):
    """A run id or path does not name a run."""


class NotResumable(TrainlabError):
    """A run that resume cannot continue: completed, still training, or without a checkpoint."""


class StopRun(Exception):
    """Training was asked to stop before its end (not an error). `status` is what the run becomes."""

    status = "interrupted"

    def __init__(self, message: str = "", run_id: str | None = None):
        super().__init__(message or self.status)
        self.run_id = run_id  # filled in by train() once the run is known


class Interrupted(StopRun):
    """A stop request (Ctrl-C, SIGTERM, the dashboard's Stop button): checkpointed, resumable."""

    status = "interrupted"


class Pruned(StopRun):
    """A tuner stopped an unpromising trial."""

    status = "pruned"


def first_line(exc: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message (or its type's name), for one-line errors."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]
