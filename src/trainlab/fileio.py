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


umask = _umask


def safe_name(text: str, limit: int = 80, default: str = "data") -> str:
    """`text` as a file name: letters, digits, '-', '_' and '.' kept, anything else a '-'."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in text)[:limit] or default


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


def overwrite_in_place(path: str | os.PathLike, data: bytes | str) -> bool:
    """The last resort on a full disk, where a temp file cannot be made: write over the existing
    file's own blocks (truncated after). Not atomic; only for a small record that must not go on
    saying the wrong thing (a run marked running after it failed). True when it worked."""
    data = data.encode() if isinstance(data, str) else data
    try:
        with open(path, "r+b") as fh:
            fh.write(data)
            fh.truncate()
            fh.flush()
            os.fsync(fh.fileno())
        return True
    except OSError:
        return False


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


def open_inside(folder: str | os.PathLike, name: str):
    """Open `folder/name` for reading only when it is a regular file right inside `folder`: no
    symbolic link is followed (neither the folder nor the file), no '/' or '..' in `name`, no
    FIFO, device or folder. Returns a binary file object; FileNotFoundError otherwise (what a
    server answers 404 to)."""
    if not name or "/" in name or "\0" in name or name in (".", ".."):
        raise FileNotFoundError(name)
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    try:
        dfd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | nofollow)
    except OSError:
        raise FileNotFoundError(str(folder)) from None
    try:
        fd = os.open(name, os.O_RDONLY | nofollow | getattr(os, "O_NONBLOCK", 0), dir_fd=dfd)
    except OSError:  # ELOOP for a link, ENOENT, EACCES...
        raise FileNotFoundError(name) from None
    finally:
        os.close(dfd)
    import stat
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise FileNotFoundError(name)
    return os.fdopen(fd, "rb")


YAML_MAX_CHARS = 1_000_000
YAML_MAX_NODES = 100_000  # values after expanding aliases: recipes and spaces hold a few hundred
YAML_MAX_DEPTH = 64


def load_yaml(text: str, where: str = "YAML", max_chars: int = YAML_MAX_CHARS, max_nodes: int = YAML_MAX_NODES,
              max_depth: int = YAML_MAX_DEPTH):
    """yaml.safe_load with limits on size, nesting and alias expansion (a 500-byte "billion laughs"
    of nested aliases expands to billions of values in whatever walks the result). Raises
    TrainlabError naming `where`; yaml.YAMLError for text that is not YAML."""
    import yaml
    if len(text) > max_chars:
        raise TrainlabError(f"{where}: {len(text):,} characters; the limit is {max_chars:,}")
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    sizes: dict[int, int] = {}

    def size(node, depth: int, path: frozenset) -> int:
        if depth > max_depth:
            raise TrainlabError(f"{where}: nested deeper than {max_depth} levels")
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in path:
            raise TrainlabError(f"{where}: an alias refers to itself")
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = node.value
        else:
            children = []
        total, inner = 1, path | {id(node)}
        for child in children:
            total += size(child, depth + 1, inner)
            if total > max_nodes:
                raise TrainlabError(f"{where}: over {max_nodes:,} values once its aliases are expanded; "
                                    "write the values out or use fewer aliases")
        sizes[id(node)] = total
        return total

    if root is not None:
        size(root, 0, frozenset())
    return yaml.safe_load(text)
