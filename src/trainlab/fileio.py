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
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path), suffix=".tmp")
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


def temp_prefix(path: Path) -> str:
    """The prefix of a temp file written beside `path`: hidden, naming the file and this process, so a
    temp file left by a killed writer can be told from one being written (`remove_stale_temps`)."""
    return f".{path.name}.pid{os.getpid()}."


def remove_stale_temps(folder: str | os.PathLike, name: str) -> list[Path]:
    """Delete the temp files of `folder/name` left by writers that were killed (kill -9, a crash):
    those whose process is gone. Those of a live writer stay."""
    removed = []
    for tmp in Path(folder).glob(f".{glob_escape(name)}.pid*.tmp"):
        pid = tmp.name[len(name) + 5:].split(".", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            pass
    return removed


def glob_escape(text: str) -> str:
    import glob
    return glob.escape(text)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


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


class NotRegularFile(FileNotFoundError):
    """A path that is there but is not a regular file to read: a symbolic link, a FIFO, a device, a
    folder. A FileNotFoundError, so a server still answers 404; `why` says which."""

    def __init__(self, name: str, why: str):
        super().__init__(f"{name}: {why}")
        self.why = why


def open_inside(folder: str | os.PathLike, name: str):
    """Open `folder/name` for reading only when it is a regular file right inside `folder`: no
    symbolic link is followed (neither the folder nor the file), no '/' or '..' in `name`, no
    FIFO, device or folder. Returns a binary file object; FileNotFoundError when it is missing,
    NotRegularFile (a FileNotFoundError: what a server answers 404 to) when it is not a plain file."""
    if not name or "/" in name or "\0" in name or name in (".", ".."):
        raise FileNotFoundError(name)
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    try:
        dfd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | nofollow)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(folder):
            raise NotRegularFile(str(folder), "the folder is a symbolic link; refused") from None
        raise FileNotFoundError(str(folder)) from None
    try:
        fd = os.open(name, os.O_RDONLY | nofollow | getattr(os, "O_NONBLOCK", 0), dir_fd=dfd)
    except OSError as exc:  # ELOOP for a link, ENOENT, EACCES...
        if exc.errno == errno.ELOOP:
            raise NotRegularFile(name, "a symbolic link; refused (run files are read only from inside their folder)") from None
        raise FileNotFoundError(name) from None
    finally:
        os.close(dfd)
    import stat
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotRegularFile(name, "not a regular file (a FIFO, device or folder); refused")
    return os.fdopen(fd, "rb")


# The most a run folder's own files are read into memory: a damaged or hostile file (a history.csv
# linked to /dev/zero, a multi-gigabyte run.json) is refused in one line instead of exhausting memory.
RUN_FILE_LIMITS = {"run.json": 8 << 20, "recipe.yaml": 1 << 20, "history.csv": 32 << 20, "metrics.json": 8 << 20,
                   "events.jsonl": 256 << 20}
DEFAULT_LIMIT = 16 << 20


def read_inside(folder: str | os.PathLike, name: str, fix: str, limit: int | None = None) -> bytes:
    """The bytes of a run folder's own file, read the safe way (`open_inside`: a regular file right
    inside the folder, no link followed) and at most `limit` bytes (RUN_FILE_LIMITS by name).
    FileNotFoundError when it is missing; one TrainlabError naming it and `fix` for anything else."""
    path = Path(folder) / name
    limit = limit or RUN_FILE_LIMITS.get(name, DEFAULT_LIMIT)
    try:
        with open_inside(folder, name) as fh:
            data = fh.read(limit + 1)
    except NotRegularFile as exc:
        raise TrainlabError(f"{path}: {exc.why}; {fix}") from None
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise TrainlabError(f"{path}: cannot read it ({exc.strerror or exc}); {fix}") from None
    if len(data) > limit:
        raise TrainlabError(f"{path}: over {_size(limit)}, far more than trainlab writes; refused; {fix}")
    return data


def read_text_inside(folder: str | os.PathLike, name: str, fix: str, limit: int | None = None) -> str:
    """`read_inside` as UTF-8 text; a missing file is one TrainlabError too."""
    path = Path(folder) / name
    try:
        return read_inside(folder, name, fix, limit).decode()
    except FileNotFoundError:
        raise TrainlabError(f"{path}: missing; {fix}") from None
    except UnicodeDecodeError:
        raise TrainlabError(f"{path}: not UTF-8 text (a binary file?); {fix}") from None


def read_regular(path: str | os.PathLike, fix: str, limit: int = DEFAULT_LIMIT) -> str:
    """A user-named text file (a corrections file, say) as UTF-8: links are followed, but it must be
    a regular file of at most `limit` bytes; anything else is one TrainlabError."""
    path = Path(path)
    import stat
    try:
        with open(path, "rb", opener=lambda p, flags: os.open(p, flags | getattr(os, "O_NONBLOCK", 0))) as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise TrainlabError(f"{path}: not a regular file (a FIFO, device or folder); {fix}")
            data = fh.read(limit + 1)
    except FileNotFoundError:
        raise TrainlabError(f"{path}: missing; {fix}") from None
    except OSError as exc:
        raise TrainlabError(f"{path}: cannot read it ({exc.strerror or exc}); {fix}") from None
    if len(data) > limit:
        raise TrainlabError(f"{path}: over {_size(limit)}; refused; {fix}")
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise TrainlabError(f"{path}: not UTF-8 text (a binary file?); {fix}") from None


def _check_depth(text: str, where: str, max_depth: int) -> None:
    """Refuse YAML nested deeper than `max_depth` from its parser's event stream (a loop, no recursion)."""
    import yaml
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            depth += 1
            if depth > max_depth:
                raise TrainlabError(f"{where}: nested deeper than {max_depth} levels")
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            depth -= 1


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
    _check_depth(text, where, max_depth)  # before composing, which recurses once per level (RecursionError past ~1,000)
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
