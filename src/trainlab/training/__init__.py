"""Training as an application: a recipe in, a saved run out.

- `api`: `train()`, `resume()` and `rerun()`, the entry points (the CLI, the dashboard's worker, the
  tuner and notebooks all call these).
- `build`: the recipe resolved, the data, model, optimizer and scheduler built, the callbacks chosen.
- `threads`: how many CPU threads a run uses, recorded and matched on resume.
- `launcher`: `trainlab train --nproc N`, several local processes under one process group.
"""

from trainlab.lazy import lazy_exports

_EXPORTS = {"rerun": "trainlab.training.api", "resolve_recipe": "trainlab.training.build", "resume": "trainlab.training.api", "summarize": "trainlab.training.build", "train": "trainlab.training.api"}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
