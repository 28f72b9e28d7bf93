"""Datasets by name: the registry of built-in datasets, where their files are looked for, downloads,
verification, and the one entry point `load_dataset`.

Where files are looked for, in order: the data directory (`--data-dir` or `TRAINLAB_DATA`), the
user cache (`<cache>/datasets/<name>`), `/usr/share/datasets/<name>` (Debian's
`dataset-fashion-mnist`), then a download with pooch from each canonical mirror into the cache.
Every built-in file is verified: the SHA-256 of the decompressed IDX contents (so recompressed
copies pass), the md5 of the CIFAR-10 archive. Formats are in readers.py, image trees in trees.py.
"""

from __future__ import annotations

import difflib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainlab.data.readers import Dataset, parse_idx, read_cifar10_archive, read_maybe_gzip
from trainlab.data.trees import load_image_tree
from trainlab.errors import DataError, first_line
from trainlab.settings import Settings, load_settings
from trainlab.system.process_wide import quiet_loggers

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


# ---------------------------------------------------------------------------------------------
# Where files are looked for, and downloads
# ---------------------------------------------------------------------------------------------

def search_dirs(spec: DatasetSpec, settings: Settings) -> list[Path]:
    """Folders that may hold `spec`'s files, in the order they are tried."""
    dirs = []
    if settings.data_dir is not None:
        dirs += [settings.data_dir / spec.name, settings.data_dir]
    dirs += [settings.cache_dir / "datasets" / spec.name, settings.system_data_dir / spec.name]
    return dirs


TREE_COPIES = {"cifar10": "cifar10-jpeg.zip"}  # a dataset's image-tree copy, used when its archive is not here


def image_tree_copy(spec: DatasetSpec, settings: Settings) -> Path | None:
    """A built-in dataset's image-tree copy (`cifar10-jpeg.zip`) in the data folders, or None."""
    name = TREE_COPIES.get(spec.name)
    return _find_file(search_dirs(spec, settings), name) if name else None


def _find_file(dirs: list[Path], name: str) -> Path | None:
    for d in dirs:
        for candidate in (d / name, d / name.removesuffix(".gz")):
            if candidate.is_file():
                return candidate
    return None


def locate(spec: DatasetSpec, settings: Settings, download: bool | None = None, progress: bool = False) -> dict[str, Path]:
    """Paths of all of `spec`'s files, downloading the missing ones into the cache unless offline."""
    download = not settings.offline if download is None else download
    dirs = search_dirs(spec, settings)
    found: dict[str, Path] = {}
    for f in spec.files:
        path = _find_file(dirs, f.name)
        if path is None:
            if not download:
                raise DataError(f"{spec.name}: {f.name} not found in {', '.join(str(d) for d in dirs)} (downloads are off). "
                                f"Fix: {_fixes(spec, dirs, settings)}")
            path = fetch(spec, f, settings, progress)
        found[f.name] = path
    return found


def _fixes(spec: DatasetSpec, dirs: list[Path], settings: Settings) -> str:
    copy = TREE_COPIES.get(spec.name)
    also = f" (or its image-tree copy {copy})" if copy else ""
    return (f"pass --data-dir DIR or set TRAINLAB_DATA to a folder holding {spec.name}/{spec.files[0].name}{also}, "
            f"run `trainlab datasets fetch {spec.name}` with internet access, "
            f"or install it under {settings.system_data_dir / spec.name}")


def fetch(spec: DatasetSpec, remote: RemoteFile, settings: Settings, progress: bool = False) -> Path:
    """Download one file into the cache with pooch (retries, temp file then rename), trying each
    mirror in turn, and verify it; a file that fails verification is deleted."""
    import pooch  # only when a download is needed

    target = settings.cache_dir / "datasets" / spec.name
    known = None if remote.decompress else f"{remote.algorithm}:{remote.digest}"  # IDX: checked after gunzip
    errors = []
    with quiet_loggers("pooch"):  # its retry notices; the error below names every attempt
        found = _fetch_from_mirrors(pooch, spec, remote, target, known, settings, progress, errors)
    if found is not None:
        return found
    raise DataError(f"{spec.name}: could not download {remote.name}; tried {len(errors)} mirror(s): "
                    f"{' | '.join(errors)}. Fix: {_fixes(spec, search_dirs(spec, settings), settings)}")


def _fetch_from_mirrors(pooch, spec, remote, target: Path, known, settings: Settings, progress: bool,
                        errors: list[str]) -> Path | None:
    for mirror in spec.mirrors:
        fetcher = pooch.create(path=target, base_url=mirror, registry={remote.name: known}, retry_if_failed=1)
        downloader = pooch.HTTPDownloader(timeout=settings.download_timeout, progressbar=progress and _has_tqdm())
        try:
            path = Path(fetcher.fetch(remote.name, downloader=downloader))
        except Exception as exc:  # requests' and pooch's errors: connection, HTTP status, hash
            errors.append(f"{mirror}{remote.name}: {_reason(exc)}")
            continue
        try:
            verify_file(path, remote)
            return path
        except DataError as exc:
            path.unlink(missing_ok=True)
            errors.append(f"{mirror}{remote.name}: {exc}")
    return None


def _reason(exc: Exception) -> str:
    """A short reason for a failed download (requests' own messages run to several hundred characters)."""
    text = str(exc)
    response = getattr(exc, "response", None)
    if response is not None and getattr(response, "status_code", None):
        return f"HTTP {response.status_code}"
    for needle, reason in (("NameResolution", "host not found (no network?)"), ("timed out", "timed out"),
                           ("Connection refused", "connection refused"), ("SSL", "TLS error")):
        if needle in text:
            return reason
    return first_line(exc)


def _has_tqdm() -> bool:
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return False
    return True


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
        content = content if content is not None else read_maybe_gzip(path)
        actual = _digest(content, remote.algorithm)
    else:
        actual = _file_digest(path, remote.algorithm)
    if actual != remote.digest:
        raise DataError(
            f"{path}: checksum mismatch ({remote.algorithm} {actual[:12]}…, expected {remote.digest[:12]}…); "
            f"the file is corrupt or not the original: delete it and run `trainlab datasets fetch`")
    return content


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------

def load_idx_dataset(spec: DatasetSpec, paths: dict[str, Path], verify: bool = True) -> Dataset:
    arrays, contents = {}, {}
    for remote in spec.files:  # structure first: its errors say more than a checksum does
        path = paths[remote.name]
        contents[remote.name] = read_maybe_gzip(path)
        ndim = 3 if "images" in remote.name else 1
        arrays[remote.name.split("-idx")[0]] = parse_idx(contents[remote.name], path, ndim)
    x_train, y_train = arrays["train-images"], arrays["train-labels"]
    x_test, y_test = arrays["t10k-images"], arrays["t10k-labels"]
    for x, y, split in ((x_train, y_train, "train"), (x_test, y_test, "test")):
        if len(x) != len(y):
            raise DataError(f"{spec.name}: {split} has {len(x)} images but {len(y)} labels; the files do not belong together")
    if verify:
        for remote in spec.files:
            verify_file(paths[remote.name], remote, contents[remote.name])
    return Dataset(spec.name, list(spec.classes), x_train[..., None], y_train.astype(np.int64),
                   x_test[..., None], y_test.astype(np.int64), source=str(paths[spec.files[0].name].parent))


def is_tree_path(name: str) -> bool:
    return name not in DATASETS and ("/" in name or os.sep in name or name.endswith(".zip") or Path(name).exists())


def load_dataset(name: str, *, source: str | None = None, settings: Settings | None = None,
                 data_dir: str | os.PathLike | None = None, download: bool | None = None, verify: bool = True,
                 test_fraction: float = 0.2, split_seed: int = 0, progress: bool = False,
                 image_size: list[int] | None = None, skip_unreadable: bool = False) -> Dataset:
    """Load a built-in dataset by name, the same dataset from another `source` tree, or an image tree
    (resized to `image_size` [height, width], or to the size trees.choose_size picks). `data_dir`
    overrides the settings' data folder."""
    settings = (settings or load_settings()).with_(data_dir=data_dir)
    if name not in DATASETS:
        if is_tree_path(name):
            return load_image_tree(name, size=image_size, test_fraction=test_fraction, split_seed=split_seed,
                                   cache_dir=settings.cache_dir, skip_unreadable=skip_unreadable)
        close = difflib.get_close_matches(name, DATASETS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise DataError(f"unknown dataset '{name}'{hint}; use one of {', '.join(DATASETS)} or a path to an image tree")
    spec = DATASETS[name]
    if source:
        return _load_from_source(spec, source, test_fraction, split_seed, settings.cache_dir)
    copy = image_tree_copy(spec, settings)
    if copy is not None and not all(_find_file(search_dirs(spec, settings), f.name) for f in spec.files):
        try:
            ds = _load_from_source(spec, str(copy), test_fraction, split_seed, settings.cache_dir)
        except DataError as exc:
            raise DataError(f"{spec.name}: its image-tree copy {copy} could not be read ({exc}); replace it with a good "
                            f"copy, or remove it and {_fixes(spec, search_dirs(spec, settings), settings)}") from None
        ds.notes = [*ds.notes, f"note: {spec.name} from its image-tree copy {copy} (the {spec.files[0].name} archive is "
                               f"not here); JPEG is lossy, so accuracies run a little below the original pixels'"]
        return ds
    paths = locate(spec, settings, download=download, progress=progress)
    if spec.kind == "idx":
        return load_idx_dataset(spec, paths, verify=verify)
    archive = paths[spec.files[0].name]
    if verify:
        verify_file(archive, spec.files[0])
    x_train, y_train, x_test, y_test = read_cifar10_archive(archive)
    return Dataset(spec.name, list(spec.classes), x_train, y_train, x_test, y_test, source=str(archive))


def load_for_recipe(data, settings: Settings | None = None, progress: bool = False) -> Dataset:
    """The dataset a recipe's `data` section names (name, source, hold-out, image size), with its
    `corrections` file applied; what training, a saved run and tuning load."""
    ds = load_dataset(data.name, source=data.source, settings=settings, test_fraction=data.test_fraction,
                      split_seed=data.split_seed, progress=progress, image_size=data.image_size)
    if data.corrections:
        from trainlab.data.corrections import apply_corrections, file_sha256, read_corrections
        ds, counts = apply_corrections(ds, read_corrections(data.corrections))
        ds.info = {**ds.info, "corrections": {"path": str(Path(data.corrections).resolve()),
                                              "sha256": file_sha256(data.corrections), **counts}}
    return ds


def _load_from_source(spec: DatasetSpec, source: str, test_fraction: float, split_seed: int, cache_dir: Path) -> Dataset:
    """The same dataset from an image tree whose class folders carry the dataset's class names."""
    h, w, c = spec.shape
    tree = load_image_tree(source, size=(h, w), channels=c, test_fraction=test_fraction, split_seed=split_seed,
                           cache_dir=cache_dir)
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
                   source=str(source), info=tree.info, files=tree.files)


def input_spec(name: str, settings: Settings | None = None, image_size: list[int] | None = None) -> tuple[tuple[int, int, int], list[str]]:
    """(H, W, C) and class names of a dataset, without loading a built-in one."""
    if name in DATASETS:
        return DATASETS[name].shape, list(DATASETS[name].classes)
    ds = load_dataset(name, settings=settings, image_size=image_size)
    return ds.shape, ds.classes


def dataset_status(name: str, settings: Settings) -> dict:
    """Where each of a dataset's files was found, without downloading; used by `datasets list`."""
    spec = DATASETS[name]
    dirs = search_dirs(spec, settings)
    files = {f.name: _find_file(dirs, f.name) for f in spec.files}
    copy = image_tree_copy(spec, settings)
    return {"name": name, "title": spec.title, "classes": list(spec.classes), "shape": list(spec.shape),
            "license": spec.license, "available": all(files.values()) or copy is not None,
            "files": {k: (str(v) if v else None) for k, v in files.items()},
            "image_tree_copy": str(copy) if copy else None, "uses_copy": copy is not None and not all(files.values())}


def verify_dataset(name: str, settings: Settings) -> list[str]:
    """Verify every file of a dataset that is present; returns one line per file checked."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset '{name}'; built-in datasets: {', '.join(DATASETS)}")
    spec = DATASETS[name]
    paths = locate(spec, settings, download=False)
    lines = []
    for remote in spec.files:
        content = verify_file(paths[remote.name], remote)
        if spec.kind == "idx":
            parse_idx(content, paths[remote.name], 3 if "images" in remote.name else 1)
        lines.append(f"ok  {paths[remote.name]}  {remote.algorithm} {remote.digest[:16]}…")
    return lines
