"""Image trees as datasets: a folder or .zip laid out as <split>/<class>/<image> or <class>/<image>.

Images are decoded once (in parallel for large trees) into uint8 arrays and cached under
`<cache>/trees/<key>`, where the key hashes each zip entry's name, CRC and size (or each file's
path, size and mtime) with the decoding options. A damaged cache entry is rebuilt.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import shutil
import tempfile
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from trainlab.data.images import IMAGE_EXTENSIONS, MAX_PIXELS, open_image, resize_to
from trainlab.data.readers import Dataset
from trainlab.errors import DataError, first_line
from trainlab.system.cpus import allowed_cpus

DECODER = 2  # part of the cache key: 2 = images.resample's fixed pass order (Pillow 13 picks one by cost)
SPLIT_NAMES = {"train": "train", "test": "test", "val": "test", "valid": "test", "validation": "test"}


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
                try:
                    st = os.stat(os.path.join(dirpath, name))
                except FileNotFoundError:
                    raise DataError(f"{root}: '{rel}' is a broken link (its target is missing); remove it or restore "
                                    f"the target") from None
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


class TreeFiles:
    """Reads the files of one tree, a folder or a zip. A zip is opened once, for the whole load:
    opening parses its whole directory (0.7 s for the 60,000-entry CIFAR zip), far too slow to
    repeat per image; `close()` (or the `with` block's end) closes it."""

    def __init__(self, source: tuple[str, str]):
        self.source = source
        self.zip = zipfile.ZipFile(source[1]) if source[0] == "zip" else None

    def read(self, rel: str) -> bytes:
        return self.zip.read(rel) if self.zip is not None else Path(self.source[1], rel).read_bytes()

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()

    def __enter__(self) -> "TreeFiles":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _decode_one(files: TreeFiles, rel: str, size, channels) -> np.ndarray | str:
    try:
        return resize_to(open_image(files.read(rel), rel), size, channels)
    except (ValueError, OSError, KeyError, zipfile.BadZipFile) as exc:
        return f"{rel}: {exc}"


_worker_files: TreeFiles | None = None  # a decoding worker's own reader (it lives and ends with that process)


def _worker_open(source: tuple[str, str]) -> None:
    global _worker_files
    _worker_files = TreeFiles(source)


def _worker_decode(args) -> np.ndarray | str:
    return _decode_one(_worker_files, *args)


def _probe(files: TreeFiles, rel) -> tuple[tuple[int, int], int]:
    """(height, width) as shown (EXIF rotation applied: a phone's portrait photo is stored landscape)
    and channels (1 or 3) of one image, from its header."""
    from PIL import Image
    source = files.source
    try:
        data = files.read(rel)
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"{source[1]}: cannot read '{rel}' ({exc}); check the file") from None
    try:
        with Image.open(io.BytesIO(data)) as im:
            channels = 1 if im.mode in ("1", "L", "I;16", "I;16B", "I;16L", "I", "F") else 3
            w, h = im.size
            turned = im.getexif().get(0x0112) in (5, 6, 7, 8)  # Orientation: rotated by 90 or 270 degrees
    except Exception as exc:
        raise DataError(f"{source[1]}: cannot read image '{rel}' ({first_line(exc)}); delete or replace it") from None
    if w * h > MAX_PIXELS:  # from the header: refused before anything is decoded
        raise DataError(f"{source[1]}: image '{rel}' is {w}x{h} pixels, over the {MAX_PIXELS:,}-pixel limit "
                        f"(a decompression bomb?); delete or replace it")
    return ((w, h) if turned else (h, w)), channels


MAX_SIDE = 64  # the default size's longest side: the classic CNNs are built for 28-32 px images
MAX_DECODED_FRACTION = 0.5  # of the memory available now, for the decoded tree


def probe_tree(files: TreeFiles, rels: list[str], sample: int = 500, strict: bool = True) -> list[tuple[tuple[int, int], int]]:
    """(height, width) and channels of up to `sample` images spread over the tree, from their headers;
    not `strict`: an unreadable one is passed over (decoding reports it)."""
    step = max(1, len(rels) // sample)
    out = []
    for rel in rels[::step][:sample]:
        try:
            out.append(_probe(files, rel))
        except DataError:
            if strict:
                raise
    return out if out or strict else [((28, 28), 3)]  # nothing readable: decoding says why, file by file


def choose_size(probed: list[tuple[tuple[int, int], int]]) -> tuple[tuple[int, int], str | None]:
    """The default size of a tree: the median height and width of the probed images, scaled down
    (aspect kept) so that the longest side is at most MAX_SIDE; never larger than the median, so
    one giant photo cannot blow every image up. A line saying what was chosen and why when the
    images differ in size or were scaled."""
    hs, ws = sorted(s[0][0] for s in probed), sorted(s[0][1] for s in probed)
    h, w = hs[len(hs) // 2], ws[len(ws) // 2]
    scale = min(1.0, MAX_SIDE / max(h, w))
    size = (max(4, round(h * scale)), max(4, round(w * scale)))
    sizes = {s[0] for s in probed}
    if len(sizes) == 1 and scale == 1.0:
        return size, None
    small, large = min(sizes, key=lambda s: (s[0] * s[1], s)), max(sizes, key=lambda s: (s[0] * s[1], s))
    spread = (f"{len(sizes)} sizes among {len(probed)} probed, {small[1]}x{small[0]} to {large[1]}x{large[0]} (width x height)"
              if len(sizes) > 1 else f"{w}x{h} (width x height)")
    why = f"the median {w}x{h}" + (f" scaled to at most {MAX_SIDE} px a side" if scale < 1.0 else "")
    return size, (f"note: images of {spread}; training at {size[1]}x{size[0]} ({why}); "
                  f"set data.image_size=[H, W] to choose")


def check_decoded_size(n: int, size: tuple[int, int], channels: int, root: Path) -> None:
    """Refuse, before decoding, a tree whose decoded arrays would not fit in memory."""
    need = n * size[0] * size[1] * channels
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return
    if need > MAX_DECODED_FRACTION * available:
        raise DataError(f"{root}: {n:,} images at {size[1]}x{size[0]}x{channels} decode to {need / 2**30:.1f} GB, more than "
                        f"half the {available / 2**30:.1f} GB of memory available; set a smaller data.image_size")


def _majority_channels(probed: list[tuple[tuple[int, int], int]]) -> tuple[int, str | None]:
    """The channels most probed images have (1 or 3; ties go to 3), and a notice when the tree
    mixes grayscale and colour."""
    counts = {1: 0, 3: 0}
    for _, c in probed:
        counts[c] += 1
    channels = 1 if counts[1] > counts[3] else 3
    if counts[1] and counts[3]:
        return channels, (f"note: the tree mixes grayscale ({counts[1]}) and colour ({counts[3]}) images among "
                          f"{counts[1] + counts[3]} probed; all are converted to {'grayscale' if channels == 1 else 'RGB'}, "
                          f"the majority")
    return channels, None


def _decode_many(files: TreeFiles, rels: list[str], size, channels, root: Path,
                 skip: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Every image of a split, decoded and resized, and the files kept: in worker processes for a
    large tree. They are spawned, not forked (as tune's are): a fork of a process whose torch has
    started its OpenMP threads can deadlock in the child. An unreadable file stops the load, or,
    given a `skip` list, is left out and its reason appended there."""
    workers = min(allowed_cpus(), 8)
    if len(rels) > 4000 and workers > 1:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_open,
                                 initargs=(files.source,)) as pool:
            out = list(pool.map(_worker_decode, [(r, size, channels) for r in rels], chunksize=512))
    else:
        out = [_decode_one(files, r, size, channels) for r in rels]
    bad = next((o for o in out if isinstance(o, str)), None)
    if bad is not None and skip is None:
        raise DataError(f"{root}: cannot read image {bad}; delete or replace the file")
    if skip is not None:
        skip += [o for o in out if isinstance(o, str)]
    kept = [r for r, o in zip(rels, out) if not isinstance(o, str)]
    good = [o for o in out if not isinstance(o, str)]
    return (np.stack(good) if good else np.zeros((0, size[0], size[1], channels), np.uint8)), kept


def load_image_tree(path: str | os.PathLike, *, size: tuple[int, int] | None = None, channels: int | None = None,
                    test_fraction: float = 0.2, split_seed: int = 0, cache_dir: str | os.PathLike | None = None,
                    skip_unreadable: bool = False) -> Dataset:
    """Decode an image tree once into uint8 arrays, cached under `cache_dir` by the tree's content
    (no cache when None). An unreadable image stops the load, unless `skip_unreadable`: then it is
    left out and listed in `info["unreadable"]` ("file: reason"), as `trainlab data check` reports.

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
    rels = sorted(f for split in groups.values() for c in split.values() for f in c)
    with TreeFiles(source) as files:
        return _load(files, root, groups, classes, rels, size, channels, test_fraction, split_seed, content_key, prefix,
                     cache_dir, [] if skip_unreadable else None)


def _load(files: TreeFiles, root: Path, groups, classes, rels, size, channels, test_fraction, split_seed, content_key,
          prefix, cache_dir, skip: list[str] | None) -> Dataset:
    probed = probe_tree(files, rels, strict=skip is None) if size is None or channels is None else []
    notes = []
    if size is None:
        size, size_note = choose_size(probed)
        notes += [size_note] if size_note else []
    size = tuple(size)
    if channels is None:
        channels, notice = _majority_channels(probed)
        notes += [notice] if notice else []
    check_decoded_size(len(rels), size, channels, root)
    key = hashlib.sha256(json.dumps([content_key, list(size), channels, test_fraction, split_seed, DECODER,
                                     skip is not None]).encode()).hexdigest()[:24]
    entry = Path(cache_dir) / "trees" / key if cache_dir is not None else None
    cached = _read_cache(entry) if entry is not None else None
    if cached is not None:
        info = {"cache": str(entry), **({"unreadable": cached[3]} if skip is not None else {})}
        return Dataset(root.name, cached[0], **cached[1], source=str(root), info=info, notes=notes, files=cached[2])
    arrays, names = {}, {}
    for split, items in _split_files(groups, classes, test_fraction, split_seed).items():
        label = dict(items)
        arrays[f"x_{split}"], names[split] = _decode_many(files, [f for f, _ in items], size, channels, root, skip)
        arrays[f"y_{split}"] = np.asarray([label[f] for f in names[split]], dtype=np.int64)
    if entry is not None:
        _write_cache(entry, arrays, {"classes": classes, "root": str(root), "prefix": prefix, "files": names,
                                     "unreadable": skip or []})
    info = {"cache": str(entry) if entry else None, **({"unreadable": skip} if skip is not None else {})}
    return Dataset(root.name, classes, **arrays, source=str(root), info=info, notes=notes, files=names)


def _split_files(groups: dict, classes: list[str], test_fraction: float, split_seed: int) -> dict[str, list[tuple[str, int]]]:
    """(path, label) pairs per split, each split in a seeded shuffled order."""
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
    for split, items in split_files.items():
        order = np.random.default_rng(split_seed + 1).permutation(len(items))
        split_files[split] = [items[i] for i in order]
    return split_files


def _read_cache(entry: Path) -> tuple[list[str], dict[str, np.ndarray], dict[str, list[str]], list[str]] | None:
    """(classes, arrays, files per split) of a cache entry; None when there is none. A damaged entry
    (truncated .npy, invalid meta.json) is removed so that the caller rebuilds it."""
    if not (entry / "meta.json").is_file():
        return None
    try:
        meta = json.loads((entry / "meta.json").read_text())
        arrays = {k: np.load(entry / f"{k}.npy") for k in ("x_train", "y_train", "x_test", "y_test")}
        classes = list(meta["classes"])
        names = {split: list(meta["files"][split]) for split in ("train", "test")}
        if any(len(arrays[f"x_{s}"]) != len(arrays[f"y_{s}"]) or len(arrays[f"x_{s}"]) != len(names[s]) for s in names):
            raise ValueError("images, labels and file names differ in length")
        return classes, arrays, names, list(meta.get("unreadable", []))
    except (OSError, ValueError, KeyError, TypeError, EOFError):
        shutil.rmtree(entry, ignore_errors=True)
        return None


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
