"""Tuning: hyperparameter search over recipes and the learning-rate range test.

- `study`: `tune()` with Optuna (every trial a run, studies in a database), reports and plots.
- `space`: search spaces, a small YAML over recipe paths, validated like a recipe.
- `lrfind`: `find_lr()`, the learning-rate range test.
"""

from trainlab.lazy import lazy_exports

_EXPORTS = {"TuneOptions": "trainlab.tuning.study", "find_lr": "trainlab.tuning.lrfind", "load_space": "trainlab.tuning.space", "study_report": "trainlab.tuning.study", "tune": "trainlab.tuning.study"}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
