"""Datasets: find, download, verify and decode MNIST, Fashion-MNIST, CIFAR-10 and image trees.

Every dataset comes back as a `Dataset` of uint8 arrays in NHWC layout with int64 labels; the
training engine moves them to the device once and slices batches from there.

Where files are looked for, in order: the data directory (`--data-dir` or `TRAINLAB_DATA`), the
user cache (`$XDG_CACHE_HOME/trainlab/datasets`), `/usr/share/datasets/<name>` (Debian's
`dataset-fashion-mnist`), then a download from the canonical locations into the user cache.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trainlab.errors import DataError
from trainlab.preprocess import IMAGE_EXTENSIONS

SPLIT_NAMES = {"train": "train", "test": "test", "val": "test", "valid": "test", "validation": "test"}
SYSTEM_DATASETS = Path("/usr/share/datasets")


# ---------------------------------------------------------------------------------------------
# Registry of the built-in datasets
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RemoteFile:
    """One canonical file; `digest` is of the decompressed content (IDX) or of the archive."""

    name: str
    digest: str
    algorithm: str = "sha256"
    decompress: bool = True  # digest covers the gunzipped bytes


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    title: str
    kind: str  # "idx" or "cifar-python"
    classes: tuple[str, ...]
    shape: tuple[int, int, int]  # (H, W, C)
    files: tuple[RemoteFile, ...]
    mirrors: tuple[str, ...]
    license: str = ""


_IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist", title="MNIST handwritten digits", kind="idx",
        classes=tuple(str(i) for i in range(10)), shape=(28, 28, 1),
        files=tuple(RemoteFile(n + ".gz", d) for n, d in zip(_IDX_NAMES, (
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"))),
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        license="CC BY-SA 3.0"),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist", title="Fashion-MNIST (Zalando)", kind="idx",
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                 "Sneaker", "Bag", "Ankle boot"), shape=(28, 28, 1),
        files=tuple(RemoteFile(n + ".gz", d) for n, d in zip(_IDX_NAMES, (
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"))),
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        license="MIT"),
    "cifar10": DatasetSpec(
        name="cifar10", title="CIFAR-10 (Krizhevsky, 2009)", kind="cifar-python",
        classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                 "ship", "truck"), shape=(32, 32, 3),
        files=(RemoteFile("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
                          algorithm="md5", decompress=False),),
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
        license="free for research use"),
}


@dataclass
class Dataset:
    """A dataset in memory: uint8 images (N, H, W, C) and int64 labels (N,)."""

    name: str
    classes: list[str]
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str = ""
    info: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


# ---------------------------------------------------------------------------------------------
# Where files are looked for
# ---------------------------------------------------------------------------------------------

def data_dir_from_env(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The explicit data directory: the argument, else `TRAINLAB_DATA`, else None."""
    value = data_dir if data_dir is not None else os.environ.get("TRAINLAB_DATA")
    return Path(value).expanduser().resolve() if value else None


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "trainlab"


def search_dirs(spec: DatasetSpec, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders that may hold `spec`'s files, in the order they are tried."""
    dirs = []
    explicit = data_dir_from_env(data_dir)
    if explicit is not None:
        dirs += [explicit / spec.name, explicit]
    dirs += [cache_root() / "datasets" / spec.name, SYSTEM_DATASETS / spec.name]
    return dirs


def _find_file(dirs: list[Path], name: str) -> Path | None:
    for d in dirs:
        for candidate in (d / name, d / name.removesuffix(".gz")):
            if candidate.is_file():
                return candidate
    return None


def locate(spec: DatasetSpec, data_dir=None, download: bool | None = None,
           progress: bool = True) -> dict[str, Path]:
    """Paths of all of `spec`'s files, downloading the missing ones into the cache if allowed."""
    if download is None:
        download = os.environ.get("TRAINLAB_OFFLINE", "") not in ("1", "true", "yes")
    dirs = search_dirs(spec, data_dir)
    found: dict[str, Path] = {}
    for f in spec.files:
        path = _find_file(dirs, f.name)
        if path is None and download:
            path = _download(spec, f, progress=progress, tried=dirs)
        if path is None:
            where = ", ".join(str(d) for d in dirs)
            hint = ""
            if spec.name == "cifar10":
                jpeg = next((d / "cifar10-jpeg.zip" for d in dirs if (d / "cifar10-jpeg.zip").is_file()), None)
                if jpeg:
                    hint = f"; or use the image tree beside it with --set data.source={jpeg}"
            raise DataError(
                f"{spec.name}: {f.name} not found in {where} (downloads are off). "
                f"Fix: pass --data-dir DIR or set TRAINLAB_DATA to a folder holding {spec.name}/{f.name}, "
                f"run `trainlab datasets fetch {spec.name}` with internet access, "
                f"or install it under {SYSTEM_DATASETS / spec.name}{hint}")
        found[f.name] = path
    return found


# ---------------------------------------------------------------------------------------------
# Download and verification
# ---------------------------------------------------------------------------------------------

def _read_maybe_gzip(path: Path) -> bytes:
    """The file's bytes, gunzipped if it is a .gz; a truncated or corrupt gzip is a DataError."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
        if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
            raise DataError(f"{path}: cannot read it ({exc.strerror}); check the path and its permissions") from None
        raise DataError(f"{path}: truncated or not a valid gzip file ({exc}); delete it and fetch it again "
                        f"(`trainlab datasets fetch`)") from None


def _digest(data: bytes, algorithm: str) -> str:
    return hashlib.new(algorithm, data).hexdigest()


def _file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_file(path: Path, remote: RemoteFile, content: bytes | None = None) -> bytes | None:
    """Check `path` against its known digest; returns the decompressed bytes when it read them."""
    if remote.decompress:
        content = content if content is not None else _read_maybe_gzip(path)
        actual = _digest(content, remote.algorithm)
    else:
        actual = _file_digest(path, remote.algorithm)
    if actual != remote.digest:
        raise DataError(
            f"{path}: checksum mismatch ({remote.algorithm} {actual[:12]}…, expected {remote.digest[:12]}…); "
            f"the file is corrupt or not the original: delete it and run `trainlab datasets fetch`")
    return content


def _download(spec: DatasetSpec, remote: RemoteFile, progress: bool = True,
              tried: list[Path] | None = None) -> Path | None:
    """Fetch one file into the cache: temp file, verify, then rename. None when every mirror fails."""
    target_dir = cache_root() / "datasets" / spec.name
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / remote.name
    errors = []
    for mirror in spec.mirrors:
        url = mirror + remote.name
        fd, tmp = tempfile.mkstemp(dir=target_dir, prefix=".part-", suffix="-" + remote.name)
        try:
            with os.fdopen(fd, "wb") as out:
                _stream(url, out, remote.name, progress)
            verify_file(Path(tmp), remote)
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
            return target
        except (urllib.error.URLError, OSError, ValueError, DataError) as exc:
            errors.append(f"{url}: {getattr(exc, 'reason', exc)}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    _download.last_errors = errors  # type: ignore[attr-defined]
    return None


def _stream(url: str, out, label: str, progress: bool) -> None:
    timeout = float(os.environ.get("TRAINLAB_DOWNLOAD_TIMEOUT", "30"))
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        total = int(resp.headers.get("Content-Length") or 0) or None
        if not progress:
            shutil.copyfileobj(resp, out, 1 << 20)
            return
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                                   TransferSpeedColumn)
        with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                      TransferSpeedColumn(), transient=True) as bar:
            task = bar.add_task(f"downloading {label}", total=total)
            for block in iter(lambda: resp.read(1 << 16), b""):
                out.write(block)
                bar.advance(task, len(block))


# ---------------------------------------------------------------------------------------------
# Format readers
# ---------------------------------------------------------------------------------------------

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def parse_idx(data: bytes, path: Path | str, expect_ndim: int) -> np.ndarray:
    """Decode IDX bytes (LeCun's format): 2 zero bytes, a dtype code, ndim, then big-endian dims."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        magic = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
        raise DataError(f"{path}: wrong magic number {magic!r} for an IDX file (expected 0x{0x800 + expect_ndim:08x}); "
                        f"the file is not MNIST-format data: replace it with the original")
    ndim = data[3]
    if ndim != expect_ndim:
        raise DataError(f"{path}: wrong magic number 0x{int.from_bytes(data[:4], 'big'):08x}: an IDX file of {ndim} "
                        f"dimensions where {expect_ndim} were expected; are images and labels swapped?")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    offset = 4 + 4 * ndim
    expected = offset + int(np.prod(dims)) * dtype.itemsize
    if len(data) != expected:
        raise DataError(f"{path}: truncated or padded IDX file ({len(data)} bytes, header says {expected}); "
                        f"delete it and fetch it again")
    return np.frombuffer(data, dtype=dtype, offset=offset).reshape(dims).astype(np.uint8 if data[2] == 0x08 else dtype)


def load_idx_dataset(spec: DatasetSpec, paths: dict[str, Path], verify: bool = True) -> Dataset:
    arrays, contents = {}, {}
    for remote in spec.files:  # structure first: its errors say more than a checksum does
        path = paths[remote.name]
        contents[remote.name] = _read_maybe_gzip(path)
        ndim = 3 if "images" in remote.name else 1
        arrays[remote.name.split("-idx")[0]] = parse_idx(contents[remote.name], path, ndim)
    if verify:
        for remote in spec.files:
            verify_file(paths[remote.name], remote, contents[remote.name])
    x_train, y_train = arrays["train-images"], arrays["train-labels"]
    x_test, y_test = arrays["t10k-images"], arrays["t10k-labels"]
    for x, y, split in ((x_train, y_train, "train"), (x_test, y_test, "test")):
        if len(x) != len(y):
            raise DataError(f"{spec.name}: {split} has {len(x)} images but {len(y)} labels; the files do not belong together")
    return Dataset(spec.name, list(spec.classes), x_train[..., None], y_train.astype(np.int64),
                   x_test[..., None], y_test.astype(np.int64),
                   source=str(paths[spec.files[0].name].parent))


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches (dicts of bytes, lists and numpy arrays) and refuses anything else."""

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")


def read_cifar10_archive(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read the canonical `cifar-10-python.tar.gz`: five training batches and one test batch."""
    def load(tar: tarfile.TarFile, member: str) -> tuple[np.ndarray, np.ndarray]:
        try:
            fh = tar.extractfile(f"cifar-10-batches-py/{member}")
        except KeyError:
            raise DataError(f"{path}: no cifar-10-batches-py/{member} inside; this is not the CIFAR-10 python archive") from None
        try:
            batch = _SafeUnpickler(io.BytesIO(fh.read()), encoding="bytes").load()
            data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            labels = np.asarray(batch[b"labels"], dtype=np.int64)
        except (pickle.UnpicklingError, KeyError, ValueError, EOFError) as exc:
            raise DataError(f"{path}: batch {member} is corrupt ({exc}); delete the archive and fetch it again") from None
        return np.ascontiguousarray(data), labels

    try:
        with tarfile.open(path, "r:gz") as tar:
            parts = [load(tar, f"data_batch_{i}") for i in range(1, 6)]
            x_test, y_test = load(tar, "test_batch")
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
        raise DataError(f"{path}: truncated or not a valid tar.gz archive ({exc}); delete it and fetch it again") from None
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    return x_train, y_train, x_test, y_test


# ---------------------------------------------------------------------------------------------
# Image trees: <split>/<class>/<image> or <class>/<image>, as a folder or a .zip
# ---------------------------------------------------------------------------------------------

def _tree_entries(root: Path) -> tuple[list[str], set[str], callable, str]:
    """Relative paths of image files, the set of folders, a reader and a content key for the cache."""
    if root.is_file() and zipfile.is_zipfile(root):
        zf = zipfile.ZipFile(root)
        infos = [i for i in zf.infolist() if not _hidden(i.filename)]
        files = sorted(i.filename for i in infos if not i.is_dir())
        folders = {i.filename.rstrip("/") for i in infos if i.is_dir()}
        for f in files:  # zips need not list folders
            parts = f.split("/")
            folders.update("/".join(parts[:k]) for k in range(1, len(parts)))
        key = hashlib.sha256("\n".join(f"{i.filename}:{i.CRC}:{i.file_size}" for i in
                                       sorted(infos, key=lambda i: i.filename)).encode()).hexdigest()
        return files, folders, ("zip", str(root)), key
    if root.is_dir():
        files, folders, h = [], set(), hashlib.sha256()
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel_dir = os.path.relpath(dirpath, root)
            if rel_dir != ".":
                folders.add(rel_dir.replace(os.sep, "/"))
            for name in sorted(filenames):
                rel = name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")
                if _hidden(rel):
                    continue
                st = os.stat(os.path.join(dirpath, name))
                h.update(f"{rel}:{st.st_size}:{st.st_mtime_ns}\n".encode())
                files.append(rel)
        return sorted(files), folders, ("dir", str(root)), h.hexdigest()
    if root.exists():
        raise DataError(f"{root}: not a folder or a .zip file; point at an image tree laid out as <split>/<class>/*.png")
    raise DataError(f"{root}: no such file or folder; check the path of the image tree")


def _hidden(rel: str) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in rel.split("/") if p)


def _layout(root: Path, files: list[str], folders: set[str]) -> tuple[str, dict[str, dict[str, list[str]]]]:
    """Group image paths as {split: {class: [paths]}}; the prefix is a single wrapping folder."""
    images = [f for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
    if not images:
        raise DataError(f"{root}: no images found ({', '.join(IMAGE_EXTENSIONS)}); lay it out as <class>/<image> "
                        f"or <split>/<class>/<image>")
    prefix = ""
    while True:
        parts = [f[len(prefix):].split("/") for f in images]
        heads = {p[0] for p in parts}
        if all(len(p) >= 3 for p in parts) and len(heads) == 1 and heads.pop().lower() not in SPLIT_NAMES:
            prefix += parts[0][0] + "/"
            continue
        break
    depths = {len(p) for p in parts}
    if depths == {3} and all(p[0].lower() in SPLIT_NAMES for p in parts):
        with_splits = True
    elif depths == {2}:
        with_splits = False
    else:
        odd = next((images[i] for i, p in enumerate(parts) if len(p) not in (2, 3)), images[0])
        raise DataError(f"{root}: cannot tell the layout (e.g. '{odd}'); expected <split>/<class>/<image> with splits "
                        f"named train and test, or <class>/<image>")
    groups: dict[str, dict[str, list[str]]] = {}
    for full, p in zip(images, parts):
        split = SPLIT_NAMES[p[0].lower()] if with_splits else "all"
        cls = p[-2]
        groups.setdefault(split, {}).setdefault(cls, []).append(full)
    # An empty class folder is a mistake the user should hear about, not a silently missing class.
    for folder in folders:
        if not folder.startswith(prefix.rstrip("/")) and prefix:
            continue
        rel = folder[len(prefix):] if prefix else folder
        if not rel:
            continue
        bits = rel.split("/")
        depth = 2 if with_splits else 1
        if len(bits) == depth and (not with_splits or bits[0].lower() in SPLIT_NAMES):
            split = SPLIT_NAMES[bits[0].lower()] if with_splits else "all"
            if not groups.get(split, {}).get(bits[-1]):
                raise DataError(f"{root}: class folder '{folder}' has no images; add images to it or remove it")
    if with_splits and "train" not in groups:
        raise DataError(f"{root}: has split folders but no 'train'; rename the training folder to train")
    return prefix, groups


_OPEN_ZIPS: dict[str, zipfile.ZipFile] = {}


def _read_member(source: tuple[str, str], rel: str) -> bytes:
    """One file of a tree. A zip is opened once per process: opening parses its whole directory
    (0.7 s for the 60,000-entry CIFAR zip), far too slow to repeat per image."""
    if source[0] != "zip":
        return Path(source[1], rel).read_bytes()
    key = f"{os.getpid()}:{source[1]}"  # forked workers must not share the parent's file offset
    zf = _OPEN_ZIPS.get(key)
    if zf is None:
        zf = _OPEN_ZIPS[key] = zipfile.ZipFile(source[1])
    return zf.read(rel)


def _decode_one(args) -> np.ndarray | str:
    source, rel, size, channels = args
    from trainlab.preprocess import open_image, resize_to
    try:
        return resize_to(open_image(_read_member(source, rel), rel), size, channels)
    except (ValueError, OSError, KeyError) as exc:
        return f"{rel}: {exc}"


def _probe(source, rel) -> tuple[tuple[int, int], int]:
    from PIL import Image
    try:
        data = _read_member(source, rel)
    except OSError as exc:
        raise DataError(f"{source[1]}: cannot read '{rel}' ({exc}); check the file") from None
    try:
        with Image.open(io.BytesIO(data)) as im:
            channels = 1 if im.mode in ("1", "L", "I;16", "I;16B", "I;16L", "I", "F") else 3
            return (im.size[1], im.size[0]), channels
    except Exception as exc:
        raise DataError(f"{source[1]}: cannot read image '{rel}' ({exc}); delete or replace it") from None


def _decode_many(source, rels: list[str], size, channels, root: Path) -> np.ndarray:
    jobs = [(source, r, size, channels) for r in rels]
    workers = min(os.cpu_count() or 1, 8)
    if len(jobs) > 4000 and workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            out = list(pool.map(_decode_one, jobs, chunksize=512))
    else:
        out = [_decode_one(j) for j in jobs]
    bad = next((o for o in out if isinstance(o, str)), None)
    if bad is not None:
        raise DataError(f"{root}: cannot read image {bad}; delete or replace the file")
    return np.stack(out) if out else np.zeros((0, size[0], size[1], channels), np.uint8)


def load_image_tree(path: str | os.PathLike, *, size: tuple[int, int] | None = None, channels: int | None = None,
                    test_fraction: float = 0.2, split_seed: int = 0, use_cache: bool = True) -> Dataset:
    """Decode an image tree once into uint8 arrays, cached by the tree's content.

    Without split folders, a seeded `test_fraction` of each class is held out as the test set.
    Each split is shuffled with a fixed seed so that a tail validation split is class-mixed.
    """
    root = Path(path).expanduser().resolve()
    files, folders, source, content_key = _tree_entries(root)
    prefix, groups = _layout(root, files, folders)
    classes = sorted({c for split in groups.values() for c in split})
    if "test" in groups and set(groups["test"]) - set(groups.get("train", {})):
        extra = sorted(set(groups["test"]) - set(groups["train"]))
        raise DataError(f"{root}: test has classes {extra} that train lacks; every class needs training images")
    first = groups.get("train", groups.get("all"))[classes[0]][0]
    probe_size, probe_channels = _probe(source, first)
    size = tuple(size) if size else probe_size
    channels = channels or probe_channels
    key = hashlib.sha256(json.dumps([content_key, list(size), channels, test_fraction, split_seed]).encode()).hexdigest()[:24]
    cache_dir = cache_root() / "trees" / key
    if use_cache and (cache_dir / "meta.json").is_file():
        meta = json.loads((cache_dir / "meta.json").read_text())
        arrays = {k: np.load(cache_dir / f"{k}.npy") for k in ("x_train", "y_train", "x_test", "y_test")}
        return Dataset(root.name, meta["classes"], **arrays, source=str(root), info={"cache": str(cache_dir)})

    rng = np.random.default_rng(split_seed)
    index = {c: i for i, c in enumerate(classes)}
    split_files: dict[str, list[tuple[str, int]]] = {"train": [], "test": []}
    if "all" in groups:
        for c in classes:
            items = groups["all"][c]
            order = rng.permutation(len(items))
            n_test = int(round(len(items) * test_fraction))
            split_files["test"] += [(items[i], index[c]) for i in order[:n_test]]
            split_files["train"] += [(items[i], index[c]) for i in order[n_test:]]
    else:
        for split in ("train", "test"):
            for c, items in groups.get(split, {}).items():
                split_files[split] += [(f, index[c]) for f in items]
    arrays = {}
    for split in ("train", "test"):
        items = split_files[split]
        order = np.random.default_rng(split_seed + 1).permutation(len(items))
        items = [items[i] for i in order]
        arrays[f"x_{split}"] = _decode_many(source, [f for f, _ in items], size, channels, root)
        arrays[f"y_{split}"] = np.asarray([y for _, y in items], dtype=np.int64)
    if use_cache:
        _write_cache(cache_dir, arrays, {"classes": classes, "root": str(root), "prefix": prefix})
    return Dataset(root.name, classes, **arrays, source=str(root), info={"cache": str(cache_dir)})


def _write_cache(cache_dir: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Write into a temp folder, then rename, so a half-written cache entry never exists."""
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache_dir.parent, prefix=".tmp-"))
    try:
        for k, v in arrays.items():
            np.save(tmp / f"{k}.npy", v)
        (tmp / "meta.json").write_text(json.dumps(meta))
        try:
            os.replace(tmp, cache_dir)
        except OSError:  # another process won the race; its entry is as good as ours
            pass
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# The one entry point
# ---------------------------------------------------------------------------------------------

def is_tree_path(name: str) -> bool:
    return name not in DATASETS and ("/" in name or os.sep in name or name.endswith(".zip") or Path(name).exists())


def load_dataset(name: str, *, source: str | None = None, data_dir=None, download: bool | None = None,
                 verify: bool = True, test_fraction: float = 0.2, split_seed: int = 0,
                 progress: bool = True) -> Dataset:
    """Load a built-in dataset by name, the same dataset from another `source` tree, or an image tree."""
    if name not in DATASETS:
        if is_tree_path(name):
            return load_image_tree(name, test_fraction=test_fraction, split_seed=split_seed)
        from difflib import get_close_matches
        close = get_close_matches(name, DATASETS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise DataError(f"unknown dataset '{name}'{hint}; use one of {', '.join(DATASETS)} or a path to an image tree")
    spec = DATASETS[name]
    if source:
        return _load_from_source(spec, source, test_fraction, split_seed)
    paths = locate(spec, data_dir, download=download, progress=progress)
    if spec.kind == "idx":
        return load_idx_dataset(spec, paths, verify=verify)
    archive = paths[spec.files[0].name]
    if verify:
        verify_file(archive, spec.files[0])
    x_train, y_train, x_test, y_test = read_cifar10_archive(archive)
    return Dataset(spec.name, list(spec.classes), x_train, y_train, x_test, y_test, source=str(archive))


def _load_from_source(spec: DatasetSpec, source: str, test_fraction: float, split_seed: int) -> Dataset:
    """The same dataset from an image tree whose class folders carry the dataset's class names."""
    h, w, c = spec.shape
    tree = load_image_tree(source, size=(h, w), channels=c, test_fraction=test_fraction, split_seed=split_seed)
    def norm(s: str) -> str:
        return s.lower().replace("/", "").replace("-", "").replace("_", "").replace(" ", "")
    wanted = {norm(cn): i for i, cn in enumerate(spec.classes)}
    missing = sorted(set(wanted) - {norm(x) for x in tree.classes})
    extra = [x for x in tree.classes if norm(x) not in wanted]
    if missing or extra:
        raise DataError(f"{source}: its classes do not match {spec.name}'s (missing {missing}, unexpected {extra}); "
                        f"name the class folders {', '.join(spec.classes)}")
    remap = np.asarray([wanted[norm(x)] for x in tree.classes], dtype=np.int64)
    return Dataset(spec.name, list(spec.classes), tree.x_train, remap[tree.y_train], tree.x_test, remap[tree.y_test],
                   source=str(source), info=tree.info)


def dataset_status(name: str, data_dir=None) -> dict:
    """Where each of a dataset's files was found, without downloading; used by `datasets list`."""
    spec = DATASETS[name]
    dirs = search_dirs(spec, data_dir)
    files = {f.name: _find_file(dirs, f.name) for f in spec.files}
    return {"name": name, "title": spec.title, "classes": list(spec.classes), "shape": list(spec.shape),
            "license": spec.license, "available": all(files.values()),
            "files": {k: (str(v) if v else None) for k, v in files.items()}}


def verify_dataset(name: str, data_dir=None) -> list[str]:
    """Verify every file of a dataset that is present; returns one line per file checked."""
    spec = DATASETS[name]
    paths = locate(spec, data_dir, download=False)
    lines = []
    for remote in spec.files:
        content = verify_file(paths[remote.name], remote)
        if spec.kind == "idx":
            parse_idx(content, paths[remote.name], 3 if "images" in remote.name else 1)
        lines.append(f"ok  {paths[remote.name]}  {remote.algorithm} {remote.digest[:16]}…")
    return lines
