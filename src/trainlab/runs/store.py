"""The run index: a real database through SQLAlchemy. Artifacts stay in `runs/<run_id>/`.

Default: embedded SQLite at `<runs>/trainlab.db` in WAL mode; `TRAINLAB_DB` or `--db` takes any
SQLAlchemy URL (PostgreSQL: `postgresql+psycopg://user@host/db`). The schema carries a version;
an older database is upgraded in place, a newer one is refused.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import (
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy import delete as sa_delete
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DatabaseError, OperationalError, SQLAlchemyError

from trainlab.errors import TrainlabError, first_line
from trainlab.history import HISTORY_COLUMNS, best_epoch
from trainlab.runs.record import RunRecord
from trainlab.settings import Settings

SCHEMA_VERSION = 4  # 1: columns only; 2: + record_json, the whole RunRecord; 3: best_val_acc named val_acc_at_best;
#                    4: + study, trial, dataset, peak_rss_mb, cpu_mean columns and indexes (the runs table, server-side)

metadata = MetaData()
schema_info = Table("schema_info", metadata, Column("version", Integer, nullable=False))
runs_table = Table(
    "runs", metadata,
    Column("id", String(160), primary_key=True),
    Column("recipe", String(200), nullable=False, index=True),
    Column("recipe_digest", String(32), nullable=False),
    Column("recipe_json", Text, nullable=False),
    Column("seed", Integer, nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("error", Text),
    Column("trainlab_version", String(32)), Column("torch_version", String(64)),
    Column("python_version", String(32)), Column("platform", String(200)), Column("device", String(32)),
    Column("started_at", String(40)), Column("ended_at", String(40)),
    Column("epochs", Integer, nullable=False, default=0),
    Column("val_acc_at_best", Float), Column("best_epoch", Integer),
    Column("val_acc", Float), Column("test_acc", Float), Column("test_loss", Float),
    Column("train_seconds", Float),
    Column("run_dir", Text, nullable=False),
    Column("note", Text),
    Column("record_json", Text),
    Column("study", String(200), index=True), Column("trial", Integer), Column("dataset", String(500), index=True),
    Column("peak_rss_mb", Float), Column("cpu_mean", Float),
    Index("ix_runs_started_at", "started_at"), Index("ix_runs_test_acc", "test_acc"),
)
epochs_table = Table(
    "epochs", metadata,
    Column("run_id", String(160), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("epoch", Integer, primary_key=True),
    *[Column(name, Float) for name in HISTORY_COLUMNS if name != "epoch"],
)
tags_table = Table(
    "tags", metadata,
    Column("run_id", String(160), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("tag", String(100), primary_key=True),
)



def _readonly_sqlite(url: str) -> bool:
    """Whether a SQLite index file exists in a folder this process cannot write (a read-only mount)."""
    if not url.startswith("sqlite:///"):
        return False
    path = Path(url.removeprefix("sqlite:///"))
    return path.is_file() and not os.access(path.parent, os.W_OK)


def _add_record_json(conn) -> None:
    conn.exec_driver_sql("ALTER TABLE runs ADD COLUMN record_json TEXT")


def _rename_val_acc_at_best(conn) -> None:
    """The validation accuracy at the monitor's best epoch (val_loss by default), not the best
    validation accuracy: named for what it is (SQLite >= 3.25 and PostgreSQL rename in place)."""
    conn.exec_driver_sql("ALTER TABLE runs RENAME COLUMN best_val_acc TO val_acc_at_best")


def _add_query_columns(conn) -> None:
    """Schema 4: what the runs table filters and sorts on, as columns (filled from each record)."""
    from sqlalchemy import inspect
    have = {c["name"] for c in inspect(conn).get_columns("runs")}
    for name, kind in (("study", "VARCHAR(200)"), ("trial", "INTEGER"), ("dataset", "VARCHAR(500)"),
                       ("peak_rss_mb", "FLOAT"), ("cpu_mean", "FLOAT")):
        if name not in have:
            conn.exec_driver_sql(f"ALTER TABLE runs ADD COLUMN {name} {kind}")
    for name, cols in (("ix_runs_started_at", "started_at"), ("ix_runs_test_acc", "test_acc"), ("ix_runs_study", "study"),
                       ("ix_runs_dataset", "dataset")):
        conn.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS {name} ON runs ({cols})")
    rows = conn.execute(select(runs_table.c.id, runs_table.c.record_json)).all()
    for run_id, raw in rows:
        try:
            rec = json.loads(raw) if raw else {}
        except ValueError:
            continue
        conn.execute(update(runs_table).where(runs_table.c.id == run_id).values(**_query_values(rec)))


def _query_values(rec: dict) -> dict:
    """The schema-4 columns of a record (as run.json holds it)."""
    system = rec.get("system") or {}
    return {"study": rec.get("study"), "trial": rec.get("trial"), "dataset": (rec.get("dataset") or {}).get("name"),
            "peak_rss_mb": system.get("peak_rss_mb"), "cpu_mean": system.get("cpu_mean")}


# version -> function upgrading a database at that version to the next one
MIGRATIONS: dict[int, callable] = {1: _add_record_json, 2: _rename_val_acc_at_best, 3: _add_query_columns}


def _sqlite_pragmas(dbapi_conn, _record):
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers don't block the writer; several processes can write
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


class Store:
    """Index of runs. Each write is a short transaction, retried while another process holds the lock."""

    def __init__(self, url: str):
        self.url = url
        self.readonly = _readonly_sqlite(url)
        try:
            if url.startswith("sqlite:///") and not self.readonly:
                Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            # a SQLite index in a read-only folder is opened immutable: listing and showing runs still work
            engine_url = f"sqlite:///file:{url.removeprefix('sqlite:///')}?mode=ro&immutable=1&uri=true" if self.readonly else url
            self.engine: Engine = create_engine(engine_url, future=True, pool_pre_ping=True)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise TrainlabError(f"--db {_safe(url)}: cannot use this database URL ({exc.__class__.__name__}: {exc}); "
                                f"use sqlite:///path.db or postgresql+psycopg://user@host/db") from None
        if self.engine.dialect.name == "sqlite" and not self.readonly:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._retry(self._migrate)

    def _retry(self, fn, *args):
        delay = 0.05
        for attempt in range(40):
            try:
                return fn(*args)
            except OperationalError as exc:
                text = str(exc).lower()
                # busy, or another process created the schema between our check and our CREATE (SQLite)
                locked = "locked" in text or "busy" in text or "already exists" in text
                if not locked or attempt == 39:
                    raise TrainlabError(f"run index {_safe(self.url)}: {_first_line(exc)}; check that the "
                                        f"database is reachable (--db / TRAINLAB_DB)") from None
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
            except DatabaseError as exc:  # a garbage or truncated SQLite file, a foreign schema
                racing = any(w in str(exc).lower() for w in ("duplicate key", "already exists"))
                if racing and attempt < 39:  # another process created the schema at the same moment
                    time.sleep(delay)
                    continue
                raise TrainlabError(f"not a trainlab run index: {_safe(self.url)} ({_first_line(exc)}); move the file "
                                    f"aside and rebuild the index with `trainlab runs reindex`") from None

    def _migrate(self) -> None:
        if self.readonly:
            with self.engine.connect() as conn:
                version = conn.execute(select(schema_info.c.version)).scalar()
            if version != SCHEMA_VERSION:
                raise TrainlabError(f"run index {_safe(self.url)} is read-only and has schema v{version}, this trainlab "
                                    f"reads v{SCHEMA_VERSION}; open it once where it can be upgraded")
            return
        with self.engine.begin() as conn:
            metadata.create_all(conn, tables=[schema_info])
            row = conn.execute(select(schema_info.c.version)).first()
            if row is None:
                metadata.create_all(conn)
                conn.execute(insert(schema_info).values(version=SCHEMA_VERSION))
                return
            version = row.version
            if version > SCHEMA_VERSION:
                raise TrainlabError(f"run index {_safe(self.url)} has schema v{version}, newer than this trainlab "
                                    f"(v{SCHEMA_VERSION}); upgrade trainlab or use another --db")
            while version < SCHEMA_VERSION:
                if version not in MIGRATIONS:
                    raise TrainlabError(f"run index {_safe(self.url)} has schema v{version}, which this trainlab cannot "
                                        f"upgrade; move it aside and re-index with `trainlab runs reindex`")
                MIGRATIONS[version](conn)
                version += 1
                conn.execute(update(schema_info).values(version=version))

    # --- writes -------------------------------------------------------------------------------

    def record_start(self, record: RunRecord, recipe: dict, run_dir: Path) -> None:
        v = record.versions
        row = dict(id=record.run_id, recipe=record.recipe, recipe_digest=record.recipe_digest,
                   recipe_json=json.dumps(recipe, sort_keys=True), seed=record.seed, status=record.status,
                   error=None, trainlab_version=v.get("trainlab"), torch_version=v.get("torch"),
                   python_version=v.get("python"), platform=v.get("platform"), device=record.device,
                   started_at=record.started_at, ended_at=None, epochs=record.epochs, run_dir=str(run_dir),
                   record_json=record.model_dump_json(), **_query_values(json.loads(record.model_dump_json())))

        def write():
            with self.engine.begin() as conn:
                if conn.execute(select(runs_table.c.id).where(runs_table.c.id == row["id"])).first():
                    conn.execute(update(runs_table).where(runs_table.c.id == row["id"])
                                 .values(status=row["status"], error=None, ended_at=None, record_json=row["record_json"]))
                else:
                    conn.execute(insert(runs_table).values(**row))
        self._retry(write)

    def record_epochs(self, run_id: str, history: list[dict], monitor: str = "val_acc") -> None:
        """Replace the run's epoch rows with `history` (a resumed run rewrites what it re-did)."""
        def write():
            with self.engine.begin() as conn:
                _write_epochs(conn, run_id, history, monitor)
        self._retry(write)

    def record_end(self, record: RunRecord, history: list[dict] | None = None, monitor: str = "val_acc") -> None:
        """The run's final state: status, error, end time, metrics, the whole record; with `history`,
        its epoch rows too, in the same transaction (one commit ends a run)."""
        m = record.metrics
        values = dict(status=record.status, error=record.error, ended_at=record.ended_at,
                      record_json=record.model_dump_json(), **_query_values(json.loads(record.model_dump_json())))
        if m is not None:
            values.update(test_acc=m.test_acc, test_loss=m.test_loss, train_seconds=m.train_seconds)

        def write():
            with self.engine.begin() as conn:
                if history is not None:
                    _write_epochs(conn, record.run_id, history, monitor)
                conn.execute(update(runs_table).where(runs_table.c.id == record.run_id).values(**values))
        self._retry(write)

    def tag(self, run_id: str, tags: list[str], note: str | None = None) -> None:
        def write():
            with self.engine.begin() as conn:
                self._require(conn, run_id)
                have = {r.tag for r in conn.execute(select(tags_table.c.tag).where(tags_table.c.run_id == run_id))}
                new = [t for t in dict.fromkeys(tags) if t not in have]
                if new:
                    conn.execute(insert(tags_table), [{"run_id": run_id, "tag": t} for t in new])
                if note is not None:
                    conn.execute(update(runs_table).where(runs_table.c.id == run_id).values(note=note))
        self._retry(write)

    def remove(self, run_id: str) -> None:
        def write():
            with self.engine.begin() as conn:
                conn.execute(sa_delete(tags_table).where(tags_table.c.run_id == run_id))
                conn.execute(sa_delete(epochs_table).where(epochs_table.c.run_id == run_id))
                conn.execute(sa_delete(runs_table).where(runs_table.c.id == run_id))
        self._retry(write)

    # --- reads --------------------------------------------------------------------------------

    @staticmethod
    def _require(conn, run_id: str):
        row = conn.execute(select(runs_table).where(runs_table.c.id == run_id)).first()
        if row is None:
            raise TrainlabError(f"no run '{run_id}' in the run index; list them with `trainlab runs`")
        return row

    def list(self, recipe: str | None = None, status: str | None = None, sort: str = "started_at",
             limit: int | None = None, tag: str | None = None, study: str | None = None) -> list[RunRecord]:
        """Runs, newest first (or by `sort`), filtered by recipe, status, tag or tuning study."""
        sortable = {"started_at", "val_acc_at_best", "test_acc", "train_seconds", "recipe", "epochs"}
        sort = "val_acc_at_best" if sort == "best_val_acc" else sort  # its name before schema v3
        if sort not in sortable:
            raise TrainlabError(f"--sort {sort!r}: use one of {', '.join(sorted(sortable))}")
        # not stored as columns: worked out from the record (RunRecord.live_status, RunRecord.study)
        computed = status in ("stale", "missing", "running") or study is not None
        q = select(runs_table)
        if recipe:
            q = q.where(runs_table.c.recipe == recipe)
        if status and status not in ("stale", "missing"):
            q = q.where(runs_table.c.status == status)
        if tag:
            q = q.where(runs_table.c.id.in_(select(tags_table.c.run_id).where(tags_table.c.tag == tag)))
        col = runs_table.c[sort]
        q = q.order_by(col.desc().nulls_last() if sort != "recipe" else col, runs_table.c.started_at.desc())
        if limit and not computed:
            q = q.limit(limit)
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(q)]
            tags: dict[str, list[str]] = {}
            for r in conn.execute(select(tags_table)):
                tags.setdefault(r.run_id, []).append(r.tag)
        records = [_to_record(r, sorted(tags.get(r["id"], []))) for r in rows]
        if status in ("stale", "missing", "running"):  # a "running" record whose process died is stale, not running
            records = [r for r in records if r.live_status() == status]
        if study is not None:
            records = [r for r in records if r.study == study]
        return records[:limit] if limit else records

    def query(self, q: "RunQuery") -> tuple[list[RunRecord], int]:
        """One page of runs, filtered and sorted in the database (the dashboard's runs table: fast
        with tens of thousands of runs), and how many match. `running`, `stale` and `missing` are
        worked out from the records (a process that died, a folder deleted), among the few rows
        the database names running, or every row for `missing`."""
        cond = []
        c = runs_table.c
        for col, value in ((c.recipe, q.recipe), (c.dataset, q.dataset), (c.study, q.study)):
            if value:
                cond.append(col == value)
        if q.status in ("running", "stale"):
            cond.append(c.status == "running")
        elif q.status and q.status != "missing":
            cond.append(c.status == q.status)
        if q.tag:
            cond.append(c.id.in_(select(tags_table.c.run_id).where(tags_table.c.tag == q.tag)))
        for col, low, high in ((c.test_acc, q.min_test_acc, q.max_test_acc), (c.val_acc_at_best, q.min_val_acc, q.max_val_acc)):
            if low is not None:
                cond.append(col >= low)
            if high is not None:
                cond.append(col <= high)
        if q.text:
            like = "%" + q.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            cond.append(or_(c.id.like(like, escape="\\"), c.recipe.like(like, escape="\\"), c.note.like(like, escape="\\"),
                            c.dataset.like(like, escape="\\"), c.study.like(like, escape="\\"),
                            c.id.in_(select(tags_table.c.run_id).where(tags_table.c.tag.like(like, escape="\\")))))
        col = c[SORTABLE[q.sort]]
        order = [col.desc().nulls_last() if q.descending else col.asc().nulls_last(), c.started_at.desc()]
        computed = q.status in ("running", "stale", "missing")
        with self.engine.connect() as conn:
            base = select(runs_table).where(*cond).order_by(*order)
            if computed:
                rows = [dict(r._mapping) for r in conn.execute(base)]
            else:
                total = conn.execute(select(func.count()).select_from(runs_table).where(*cond)).scalar_one()
                rows = [dict(r._mapping) for r in conn.execute(base.offset(q.offset).limit(q.limit))]
            ids = [r["id"] for r in rows]
            tags: dict[str, list[str]] = {}
            for i in range(0, len(ids), 500):
                for r in conn.execute(select(tags_table).where(tags_table.c.run_id.in_(ids[i:i + 500]))):
                    tags.setdefault(r.run_id, []).append(r.tag)
        records = [_to_record(r, sorted(tags.get(r["id"], []))) for r in rows]
        if computed:
            records = [r for r in records if r.live_status() == q.status]
            total = len(records)
            records = records[q.offset:q.offset + q.limit]
        return records, total

    def get(self, run_id: str) -> RunRecord:
        with self.engine.connect() as conn:
            row = dict(self._require(conn, run_id)._mapping)
            tags = sorted(r.tag for r in conn.execute(select(tags_table.c.tag).where(tags_table.c.run_id == run_id)))
        return _to_record(row, tags)

    def history(self, run_id: str) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(epochs_table).where(epochs_table.c.run_id == run_id).order_by(epochs_table.c.epoch))
            return [{k: r._mapping[k] for k in HISTORY_COLUMNS} for r in rows]

    def recipe(self, run_id: str) -> dict:
        with self.engine.connect() as conn:
            return json.loads(self._require(conn, run_id).recipe_json)


SORTABLE = {"started_at": "started_at", "recipe": "recipe", "status": "status", "epochs": "epochs", "test_acc": "test_acc",
            "val_acc_at_best": "val_acc_at_best", "train_seconds": "train_seconds", "seconds": "train_seconds",
            "peak_rss_mb": "peak_rss_mb", "cpu_mean": "cpu_mean", "run_id": "id", "dataset": "dataset", "study": "study"}


@dataclass
class RunQuery:
    """What the runs table asks for: filters, a sort, a page."""

    recipe: str | None = None
    status: str | None = None
    tag: str | None = None
    dataset: str | None = None
    study: str | None = None
    text: str | None = None  # a part of the id, recipe, note, dataset, study or a tag
    min_test_acc: float | None = None
    max_test_acc: float | None = None
    min_val_acc: float | None = None
    max_val_acc: float | None = None
    sort: str = "started_at"
    descending: bool = True
    offset: int = 0
    limit: int = 100

    def __post_init__(self):
        if self.sort not in SORTABLE:
            raise TrainlabError(f"sort {self.sort!r}: use one of {', '.join(SORTABLE)}")


def _to_record(row: dict, tags: list[str]) -> RunRecord:
    """A RunRecord from an index row: the stored record (schema v2), overlaid with what the index
    keeps current (status, epochs, tags, note); rows from schema v1 are rebuilt from their columns."""
    if row.get("record_json"):
        base = json.loads(row["record_json"])
    else:
        base = {"run_id": row["id"], "recipe": row["recipe"], "recipe_digest": row["recipe_digest"], "seed": row["seed"],
                "device": row["device"] or "cpu", "started_at": row["started_at"],
                "versions": {k: row[f"{k}_version"] for k in ("trainlab", "torch", "python") if row.get(f"{k}_version")},
                "metrics": {k: row[k] for k in ("test_acc", "test_loss", "train_seconds", "val_acc_at_best", "best_epoch")}}
    base.update(status=row["status"], error=row["error"], ended_at=row["ended_at"], epochs=row["epochs"], tags=tags,
                note=row["note"], run_dir=row["run_dir"])
    metrics = dict(base.get("metrics") or {})
    metrics.update({k: row[k] for k in ("val_acc_at_best", "best_epoch", "val_acc") if row.get(k) is not None})
    base["metrics"] = metrics
    return RunRecord.model_validate(base)


def _first_line(exc: SQLAlchemyError) -> str:
    return first_line(getattr(exc, "orig", None) or exc, 200)


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    from sqlalchemy.engine import make_url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL has no password to hide
        return url


def open_store(settings: Settings) -> Store:
    """The run index that `settings` name (their db URL, by default `<runs_dir>/trainlab.db`)."""
    return Store(settings.db_url)


def _write_epochs(conn, run_id: str, history: list[dict], monitor: str) -> None:
    best = best_epoch(history, monitor)
    conn.execute(sa_delete(epochs_table).where(epochs_table.c.run_id == run_id))
    if history:
        conn.execute(insert(epochs_table), [{"run_id": run_id, **{k: h.get(k) for k in HISTORY_COLUMNS}} for h in history])
    conn.execute(update(runs_table).where(runs_table.c.id == run_id).values(
        epochs=len(history), val_acc=history[-1].get("val_acc") if history else None,
        val_acc_at_best=best.get("val_acc") if best else None, best_epoch=best["epoch"] if best else None))
