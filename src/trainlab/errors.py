"""User-facing errors: each one prints as a single line that says what was wrong and how to fix it."""


class TrainlabError(Exception):
    """An error caused by input (a file, a recipe, a flag), shown to the user as one line."""


class DataError(TrainlabError):
    """A dataset file is missing, corrupt or laid out wrongly."""


class RecipeError(TrainlabError):
    """A recipe has an unknown key or a bad value."""


class TrainingDiverged(TrainlabError):
    """The loss became NaN or infinite."""


class RunNotFound(TrainlabError):
    """A run id or path does not name a run."""
