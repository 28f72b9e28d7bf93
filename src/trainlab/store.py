"""The run index: a real database through SQLAlchemy. Artifacts stay in `runs/<run_id>/`.

Default: embedded SQLite at `<runs>/trainlab.db` in WAL mode; `TRAINLAB_DB` or `--db` takes any
SQLAlchemy URL (PostgreSQL: `postgresql+psycopg://user@host/db`). The schema carries a version;
an older database is upgraded in place, a newer one is refused.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from sqlalchemy import (Column, Float, ForeignKey, Integer, MetaData, String, Table, Text, create_engine, event,
                        insert, select, update)
from sqlalchemy import delete as sa_delete
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from trainlab.errors import TrainlabError

SCHEMA_VERSION = 1

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
    Column("best_val_acc", Float), Column("best_epoch", Integer),
    Column("val_acc", Float), Column("test_acc", Float), Column("test_loss", Float),
    Column("train_seconds", Float),
    Column("run_dir", Text, nullable=False),
    Column("note", Text),
)
epochs_table = Table(
    "epochs", metadata,
    Column("run_id", String(160), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("epoch", Integer, primary_key=True),
    Column("loss", Float), Column("acc", Float), Column("val_loss", Float), Column("val_acc", Float),
    Column("lr", Float), Column("seconds", Float),
)
tags_table = Table(
    "tags", metadata,
    Column("run_id", String(160), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("tag", String(100), primary_key=True),
)

# version -> function upgrading a database at that version to the next one
MIGRATIONS: dict[int, callable] = {}


def default_url(runs_dir: Path) -> str:
    return os.environ.get("TRAINLAB_DB") or f"sqlite:///{runs_dir / 'trainlab.db'}"


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
        try:
            if url.startswith("sqlite:///"):
                Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(url, future=True, pool_pre_ping=True)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise TrainlabError(f"--db {_safe(url)}: cannot use this database URL ({exc.__class__.__name__}: {exc}); "
                                f"use sqlite:///path.db or postgresql+psycopg://user@host/db") from None
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._retry(self._migrate)

    def _retry(self, fn, *args):
        delay = 0.05
        for attempt in range(40):
            try:
                return fn(*args)
            except OperationalError as exc:
                locked = "locked" in str(exc).lower() or "busy" in str(exc).lower()
                if not locked or attempt == 39:
                    raise TrainlabError(f"run index {_safe(self.url)}: {str(exc.orig).strip() or exc}; check that the "
                                        f"database is reachable (--db / TRAINLAB_DB)") from None
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _migrate(self) -> None:
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

    def record_start(self, info: dict, recipe: dict, run_dir: Path) -> None:
        v = info.get("versions", {})
        row = dict(id=info["run_id"], recipe=info["recipe"], recipe_digest=info["recipe_digest"],
                   recipe_json=json.dumps(recipe, sort_keys=True), seed=info["seed"], status=info["status"],
                   error=None, trainlab_version=v.get("trainlab"), torch_version=v.get("torch"),
                   python_version=v.get("python"), platform=v.get("platform"), device=info.get("device"),
                   started_at=info.get("started_at"), ended_at=None, epochs=0, run_dir=str(run_dir))

        def write():
            with self.engine.begin() as conn:
                if conn.execute(select(runs_table.c.id).where(runs_table.c.id == row["id"])).first():
                    conn.execute(update(runs_table).where(runs_table.c.id == row["id"])
                                 .values(status=row["status"], error=None, ended_at=None))
                else:
                    conn.execute(insert(runs_table).values(**row))
        self._retry(write)

    def record_epochs(self, run_id: str, history: list[dict]) -> None:
        """Replace the run's epoch rows with `history` (a resumed run rewrites what it re-did)."""
        vals = [h for h in history if h.get("val_acc") is not None]
        best = max(vals, key=lambda h: h["val_acc"]) if vals else None

        def write():
            with self.engine.begin() as conn:
                conn.execute(sa_delete(epochs_table).where(epochs_table.c.run_id == run_id))
                if history:
                    conn.execute(insert(epochs_table), [
                        {"run_id": run_id, **{k: h.get(k) for k in ("epoch", "loss", "acc", "val_loss", "val_acc", "lr", "seconds")}}
                        for h in history])
                conn.execute(update(runs_table).where(runs_table.c.id == run_id).values(
                    epochs=len(history), val_acc=history[-1].get("val_acc") if history else None,
                    best_val_acc=best["val_acc"] if best else None, best_epoch=best["epoch"] if best else None))
        self._retry(write)

    def record_end(self, run_id: str, status: str, error: str | None, ended_at: str, metrics: dict | None) -> None:
        values = dict(status=status, error=error, ended_at=ended_at)
        if metrics:
            values.update(test_acc=metrics.get("test_acc"), test_loss=metrics.get("test_loss"),
                          train_seconds=metrics.get("train_seconds"))

        def write():
            with self.engine.begin() as conn:
                conn.execute(update(runs_table).where(runs_table.c.id == run_id).values(**values))
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
             limit: int | None = None, tag: str | None = None) -> list[dict]:
        sortable = {"started_at", "best_val_acc", "test_acc", "train_seconds", "recipe", "epochs"}
        if sort not in sortable:
            raise TrainlabError(f"--sort {sort!r}: use one of {', '.join(sorted(sortable))}")
        q = select(runs_table)
        if recipe:
            q = q.where(runs_table.c.recipe == recipe)
        if status:
            q = q.where(runs_table.c.status == status)
        if tag:
            q = q.where(runs_table.c.id.in_(select(tags_table.c.run_id).where(tags_table.c.tag == tag)))
        col = runs_table.c[sort]
        q = q.order_by(col.desc().nulls_last() if sort != "recipe" else col, runs_table.c.started_at.desc())
        if limit:
            q = q.limit(limit)
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(q)]
            tags = {}
            for r in conn.execute(select(tags_table)):
                tags.setdefault(r.run_id, []).append(r.tag)
        for r in rows:
            r["tags"] = sorted(tags.get(r["id"], []))
            r["recipe_json"] = json.loads(r["recipe_json"])
        return rows

    def get(self, run_id: str) -> dict:
        with self.engine.connect() as conn:
            row = dict(self._require(conn, run_id)._mapping)
            row["history"] = [dict(r._mapping) for r in conn.execute(
                select(epochs_table).where(epochs_table.c.run_id == run_id).order_by(epochs_table.c.epoch))]
            row["tags"] = sorted(r.tag for r in conn.execute(select(tags_table.c.tag).where(tags_table.c.run_id == run_id)))
        row["recipe_json"] = json.loads(row["recipe_json"])
        return row


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    from sqlalchemy.engine import make_url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL has no password to hide
        return url


_OPEN: dict[str, Store] = {}


def open_store(runs_dir: Path, db: str | None = None) -> Store:
    """The store for a runs folder (one per URL per process)."""
    url = db or default_url(runs_dir)
    if url not in _OPEN:
        _OPEN[url] = Store(url)
    return _OPEN[url]
