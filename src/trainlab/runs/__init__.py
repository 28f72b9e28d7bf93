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

from trainlab.runs.admin import compare_runs, reindex, remove_run, stop_run
from trainlab.runs.curves import curves_png
from trainlab.runs.record import RunRecord, read_record
from trainlab.runs.run import Run, load_run
from trainlab.runs.writer import RunWriter

__all__ = ["Run", "RunRecord", "RunWriter", "compare_runs", "curves_png", "load_run", "read_record", "reindex",
           "remove_run", "stop_run"]
