"""Run records: every run is a folder `runs/<run_id>/` and a row in the run index.

- `record`: `RunRecord`, the typed run.json, with the folder lock and run-id resolution.
- `files`: the folder's files (recipe.yaml, history.csv, weights) and opening the runs folder.
- `writer`: `RunWriter`, the callback that writes a run as it trains.
- `run`: `Run` (what `trainlab.train` returns) and `load_run`.
- `curves`: learning curves (`curves.png`), drawn on first view.
- `events`: the append-only event log the dashboard follows.
- `store`: the SQL run index (SQLite by default, PostgreSQL too).
- `admin`: re-index, remove, stop and compare runs.
"""

from trainlab.lazy import lazy_exports

_EXPORTS = {"Run": "trainlab.runs.run", "RunRecord": "trainlab.runs.record", "RunWriter": "trainlab.runs.writer", "compare_runs": "trainlab.runs.admin", "curves_png": "trainlab.runs.curves", "load_run": "trainlab.runs.run", "read_record": "trainlab.runs.record", "reindex": "trainlab.runs.admin", "remove_run": "trainlab.runs.admin", "stop_run": "trainlab.runs.admin"}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
