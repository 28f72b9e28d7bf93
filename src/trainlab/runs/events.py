"""The per-run event log, `events.jsonl`: one JSON object a line, appended as training goes, so that
another process (the dashboard, `tail -f`) can follow a run live without re-reading whole files.

Each event has `id` (1, 2, ...), `t` (Unix seconds) and `type`: `status` (running, completed, ...),
`batch` (epoch, step, steps, loss, acc, progress 0-1), `epoch` (the history row). A follower keeps
the byte offset it has read to and asks for what came after (`read_events(path, offset)`).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from trainlab.errors import TrainlabError
from trainlab.fileio import open_inside

EVENTS = "events.jsonl"


class EventLog:
    """Appends events; each line is written with one `write` on an O_APPEND descriptor, so a reader
    never sees half a line from another writer."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.next_id = _last_id(self.path) + 1

    def append(self, type_: str, **fields) -> None:
        event = {"id": self.next_id, "t": round(time.time(), 3), "type": type_, **fields}
        line = (json.dumps(event, separators=(",", ":")) + "\n").encode()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        except FileNotFoundError:
            raise TrainlabError(f"the run folder {self.path.parent} was removed while the run was writing to it; "
                                f"the run is lost (train it again)") from None
        except OSError as exc:  # ELOOP: a link put in the run's place; never written through
            raise TrainlabError(f"{self.path}: cannot append to it ({exc.strerror}); it must be a plain file of the "
                                f"run folder") from None
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        self.next_id += 1


def _last_id(path: Path) -> int:
    """The id of the last complete event in an existing log (a resumed run continues the numbering)."""
    try:
        with _open(path) as fh:
            size = os.fstat(fh.fileno()).st_size
    except OSError:
        return 0
    events, _ = read_events(path, max(0, size - 65536))
    return events[-1]["id"] if events else 0


READ_CHUNK = 4 << 20  # the most one read takes: a follower reads a long log in steps, never all at once


def _open(path: Path):
    """The log opened the safe way (a regular file inside its run folder, no link followed)."""
    return open_inside(path.parent, path.name)


def read_events(path: Path, offset: int = 0, limit: int = READ_CHUNK) -> tuple[list[dict], int]:
    """The complete events in the `limit` bytes after byte `offset`, and the offset to continue from.
    A log that is not a regular file inside its folder (a link to /dev/zero) reads as empty."""
    try:
        with _open(path) as fh:
            fh.seek(offset)
            data = fh.read(limit)
    except FileNotFoundError:  # missing, or not a plain file (fileio.NotRegularFile)
        return [], offset
    if len(data) == limit and b"\n" not in data:  # a single line longer than any event: skip past it
        return [], offset + len(data)
    end = data.rfind(b"\n") + 1  # a line still being written stays for next time
    events = []
    for line in data[:end].splitlines():
        try:
            event = json.loads(line)
        except (ValueError, RecursionError):  # a partial first line when starting mid-file
            continue
        if isinstance(event, dict) and isinstance(event.get("id"), int) and isinstance(event.get("type"), str):
            events.append(event)  # what trainlab writes; anything else in a hand-edited log is passed over
    return events, offset + end


def offset_after(path: Path, last_id: int) -> int:
    """The byte offset just past event `last_id` (0 for none): where a reconnecting follower resumes.
    Reads the log once, at connection time; a follower then reads only what is appended."""
    if last_id <= 0:
        return 0
    offset = 0
    try:
        with _open(path) as fh:
            while line := fh.readline(1 << 20):  # at most 1 MB a line: an event is ~150 bytes
                if not line.endswith(b"\n"):
                    break
                offset += len(line)
                try:
                    if json.loads(line).get("id", 0) >= last_id:
                        return offset
                except ValueError:
                    continue
    except FileNotFoundError:
        return 0
    return offset


def last_events(path: Path, tail_bytes: int = 8192) -> dict[str, dict]:
    """The last event of each type in the log's tail (the latest progress of a live run), by type."""
    try:
        with _open(path) as fh:
            size = os.fstat(fh.fileno()).st_size
    except OSError:
        return {}
    events, _ = read_events(path, max(0, size - tail_bytes))
    return {e["type"]: e for e in events}
