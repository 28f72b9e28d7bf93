"""Tuning: hyperparameter search over recipes and the learning-rate range test.

- `study`: `tune()` with Optuna (every trial a run, studies in a database), reports and plots.
- `space`: search spaces, a small YAML over recipe paths, validated like a recipe.
- `lrfind`: `find_lr()`, the learning-rate range test.
"""

from trainlab.tuning.lrfind import find_lr
from trainlab.tuning.space import load_space
from trainlab.tuning.study import TuneOptions, study_report, tune

__all__ = ["TuneOptions", "find_lr", "load_space", "study_report", "tune"]
