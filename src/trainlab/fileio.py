"""File writes that never leave a half-written file, and reads that fail in one line."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path

from trainlab.errors import TrainlabError, WriteError


def _umask() -> int:
    """The process umask: from /proc on Linux (no change to process state, safe from threads),
    elsewhere by setting and restoring it (os.umask can only be read by setting it)."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write to a temp file in the same folder, fsync, then rename over `path`. The file gets the
    usual mode (0666 less the umask), not mkstemp's private 0600."""
    path = Path(path)
    data = data.encode() if isinstance(data, str) else data
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise write_error(path, exc, len(data)) from None
        raise
    return path


def write_error(path: Path, exc: OSError, needed: int) -> WriteError:
    """One line for a failed write: a full disk with the space needed, a read-only or forbidden folder."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        try:
            free = shutil.disk_usage(next(p for p in [path.parent, *path.parents] if p.exists())).free
        except (OSError, StopIteration):
            free = 0
        return WriteError(f"{path}: no space left on the device ({_size(free)} free, {_size(needed)} needed); "
                             f"free some space or write elsewhere (--runs-dir)")
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return WriteError(f"{path}: cannot write here ({exc.strerror}); use a writable folder (--runs-dir, --out)")
    return WriteError(f"{path}: cannot write it ({exc.strerror or exc})")


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def read_text(path: str | os.PathLike, fix: str) -> str:
    """A text file's contents; a missing, unreadable or non-UTF-8 file is one TrainlabError naming it and `fix`."""
    path = Path(path)
    try:
        return path.read_text()
    except FileNotFoundError:
        raise TrainlabError(f"{path}: missing; {fix}") from None
    except UnicodeDecodeError:
        raise TrainlabError(f"{path}: not UTF-8 text (a binary file?); {fix}") from None
    except OSError as exc:
        raise TrainlabError(f"{path}: cannot read it ({exc.strerror or exc}); {fix}") from None


def read_json_object(path: str | os.PathLike, fix: str) -> dict:
    """A JSON object from a file; anything else is one TrainlabError naming the file and `fix`."""
    try:
        data = json.loads(read_text(path, fix))
    except json.JSONDecodeError as exc:
        raise TrainlabError(f"{path}: not valid JSON ({exc}); {fix}") from None
    if not isinstance(data, dict):
        raise TrainlabError(f"{path}: holds a JSON {type(data).__name__}, not an object; {fix}")
    return data
