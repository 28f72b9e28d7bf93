"""Training as an application: a recipe in, a saved run out.

- `api`: `train()`, `resume()` and `rerun()`, the entry points (the CLI, the dashboard's worker, the
  tuner and notebooks all call these).
- `build`: the recipe resolved, the data, model, optimizer and scheduler built, the callbacks chosen.
- `threads`: how many CPU threads a run uses, recorded and matched on resume.
- `launcher`: `trainlab train --nproc N`, several local processes under one process group.
"""

from trainlab.training.api import rerun, resume, train
from trainlab.training.build import resolve_recipe, summarize

__all__ = ["rerun", "resolve_recipe", "resume", "summarize", "train"]
