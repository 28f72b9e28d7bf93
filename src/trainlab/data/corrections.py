"""Corrections to a dataset's labels, kept beside it and never written into it.

A corrections file (`corrections.yaml`) names its dataset and lists decisions about single images:

    dataset: mnist
    corrections:
      - {split: test, index: 947, action: relabel, label: "9", when: "2026-12-01T15:40:00"}
      - {split: train, file: "cats/IMG_0003.jpg", action: exclude, when: "2026-12-01T15:41:10"}
      - {split: test, index: 1234, action: keep, when: "2026-12-01T15:42:00"}

`index` numbers an image of a built-in dataset's split; `file` names an image tree's file (as in
`Dataset.files`). `relabel` gives it another class (a class name), `exclude` leaves it out,
`keep` records that it was looked at and is right. The last decision about an image wins.
A recipe's `data.corrections: PATH` applies a file when the data is loaded; the run records its
path and sha256, and `trainlab evaluate` says so when the file has changed since.

An image tree is named by its folder, which two trees can share: the file also records the tree's
`fingerprint` (its classes and files), so a file made for one tree is refused for another of the
same name. Decisions are added under a lock (`update_corrections`): writers in parallel (the
dashboard's buttons, several `trainlab data fix`) never lose one another's decisions.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from trainlab.data.readers import Dataset
from trainlab.errors import DataError, TrainlabError
from trainlab.fileio import atomic_write, load_yaml, read_regular

ACTIONS = ("keep", "relabel", "exclude")
SPLITS = ("train", "test")


@dataclass
class Correction:
    split: str
    action: str
    index: int | None = None
    file: str | None = None
    label: str | None = None
    when: str = ""

    @property
    def key(self) -> tuple[str, int | str]:
        return (self.split, self.index if self.index is not None else self.file)

    def to_dict(self) -> dict:
        out = {"split": self.split, ("index" if self.index is not None else "file"): self.index if self.index is not None else self.file,
               "action": self.action}
        if self.label is not None:
            out["label"] = self.label
        out["when"] = self.when
        return out


@dataclass
class Corrections:
    dataset: str
    items: list[Correction] = field(default_factory=list)
    fingerprint: str | None = None  # an image tree's (dataset_fingerprint); None for a built-in dataset

    def decisions(self) -> dict[tuple[str, int | str], Correction]:
        """The last decision about each image."""
        return {c.key: c for c in self.items}

    def add(self, correction: Correction) -> None:
        self.items.append(replace(correction, when=correction.when or now()))

    def to_yaml(self) -> str:
        import yaml
        head = {"dataset": self.dataset, **({"fingerprint": self.fingerprint} if self.fingerprint else {})}
        return yaml.safe_dump({**head, "corrections": [c.to_dict() for c in self.items]}, sort_keys=False,
                              default_flow_style=None, width=200)


def now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


def _correction(raw, where: str) -> Correction:
    if not isinstance(raw, dict):
        raise DataError(f"{where}: each correction is a mapping (split, index or file, action, label, when)")
    unknown = sorted(set(raw) - {"split", "index", "file", "action", "label", "when"})
    if unknown:
        raise DataError(f"{where}: unknown key '{unknown[0]}'; allowed: split, index, file, action, label, when")
    split, action = raw.get("split"), raw.get("action")
    if split not in SPLITS:
        raise DataError(f"{where}.split: {split!r} is not allowed; allowed: train, test")
    if action not in ACTIONS:
        raise DataError(f"{where}.action: {action!r} is not allowed; allowed: {', '.join(ACTIONS)}")
    index, file = raw.get("index"), raw.get("file")
    if (index is None) == (file is None):
        raise DataError(f"{where}: give index (a built-in dataset's image) or file (an image tree's), one of them")
    if index is not None and (not isinstance(index, int) or isinstance(index, bool) or index < 0):
        raise DataError(f"{where}.index: {index!r} is not allowed; allowed: a whole number 0 or more")
    label = raw.get("label")
    if action == "relabel" and label is None:
        raise DataError(f"{where}: relabel needs label: the new class")
    return Correction(split, action, index, str(file) if file is not None else None, str(label) if label is not None else None,
                      str(raw.get("when", "")))


def read_corrections(path: str | os.PathLike) -> Corrections:
    """A corrections file, validated: one-line errors naming the entry and key."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        raise DataError(f"{path}: no such corrections file; write one with `trainlab data fix {path} --dataset NAME ...`")
    try:  # a regular file of at most 16 MB (a million decisions), whatever the recipe that names it says
        text = read_regular(path, "give the corrections file `trainlab data fix` wrote")
    except TrainlabError as exc:
        raise DataError(str(exc)) from None
    try:
        raw = load_yaml(text, str(path)) or {}
    except Exception as exc:  # yaml's own errors span lines
        raise DataError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("dataset"), str):
        raise DataError(f"{path}: a corrections file starts with `dataset: NAME` (the dataset it corrects)")
    items = raw.get("corrections") or []
    if not isinstance(items, list):
        raise DataError(f"{path}: corrections is a list of entries")
    fingerprint = raw.get("fingerprint")
    return Corrections(raw["dataset"], [_correction(c, f"{path}: corrections.{i}") for i, c in enumerate(items)],
                       str(fingerprint) if fingerprint is not None else None)


def write_corrections(corr: Corrections, path: str | os.PathLike) -> Path:
    return atomic_write(path, corr.to_yaml())


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock for the read-modify-write of one corrections file (flock on `.NAME.lock`
    beside it: released by the kernel whatever happens to the holder)."""
    import fcntl
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.parent / f".{path.name}.lock", os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def update_corrections(path: str | os.PathLike, ds: Dataset, added: list[Correction]) -> Corrections:
    """Add decisions to the file at `path` (made for `ds` when it does not exist), under its lock:
    read what is there now, add, check against the dataset, write atomically. Writers in parallel
    each keep their decisions; a decision that does not fit the dataset writes nothing."""
    path = Path(path)
    try:
        with _locked(path):
            corr = read_corrections(path) if path.exists() else Corrections(dataset_key(ds), [], dataset_fingerprint(ds))
            corr.fingerprint = corr.fingerprint or dataset_fingerprint(ds)
            for c in added:
                corr.add(c)
            check_against(corr, ds, str(path))
            write_corrections(corr, path)
    except OSError as exc:
        raise DataError(f"{path}: cannot write it ({exc.strerror or exc})") from None
    return corr


def file_sha256(path: str | os.PathLike) -> str:
    return hashlib.sha256(read_regular(path, "give the corrections file `trainlab data fix` wrote").encode()).hexdigest()


def dataset_key(ds: Dataset) -> str:
    """How a corrections file names a dataset: the built-in name, or the tree folder's name."""
    return ds.name


def dataset_fingerprint(ds: Dataset) -> str | None:
    """An image tree's identity beyond its folder name: a short hash of its classes and each split's
    files; None for a built-in dataset (its name says it all)."""
    if not ds.files:
        return None
    h = hashlib.sha256(json.dumps({"classes": list(ds.classes), "files": {k: list(v) for k, v in sorted(ds.files.items())}},
                                  sort_keys=True).encode())
    return h.hexdigest()[:16]


def check_against(corr: Corrections, ds: Dataset, where: str = "corrections") -> None:
    """Every entry names an image and a class this dataset has; one line for the first that does not."""
    if corr.dataset != dataset_key(ds):
        raise DataError(f"{where}: the file corrects '{corr.dataset}', not '{dataset_key(ds)}'; use a corrections file made for "
                        f"{dataset_key(ds)}")
    mine = dataset_fingerprint(ds)
    if corr.fingerprint and mine and corr.fingerprint != mine:
        raise DataError(f"{where}: the file corrects another image tree named '{corr.dataset}' (fingerprint "
                        f"{corr.fingerprint}, this one is {mine}); use a corrections file made for this tree")
    for c in corr.items:
        n = len(ds.x_train if c.split == "train" else ds.x_test)
        if c.index is not None and c.index >= n:
            raise DataError(f"{where}: {c.split} index {c.index} does not exist; the {c.split} split has images 0..{n - 1}")
        if c.file is not None and c.file not in (ds.files.get(c.split) or []):
            raise DataError(f"{where}: {c.split} has no file '{c.file}'" +
                            ("" if ds.files else f" ({ds.name} has no files: give index instead)"))
        if c.label is not None and c.label not in ds.classes:
            raise DataError(f"{where}: label {c.label!r} is not a class of {ds.name}; allowed: {', '.join(ds.classes)}")


def apply_corrections(ds: Dataset, corr: Corrections, where: str = "data.corrections") -> tuple[Dataset, dict]:
    """The dataset with relabels and exclusions applied (a new Dataset; the original arrays are not
    changed), and a summary {relabeled, excluded, kept}."""
    check_against(corr, ds, where)
    decisions = corr.decisions()
    arrays = {}
    files = {}
    counts = {"relabeled": 0, "excluded": 0, "kept": 0}
    for split in SPLITS:
        x, y = (ds.x_train, ds.y_train) if split == "train" else (ds.x_test, ds.y_test)
        names = ds.files.get(split)
        y = y.copy()
        keep = np.ones(len(y), bool)
        position = {f: i for i, f in enumerate(names)} if names else {}
        for (s, which), c in decisions.items():
            if s != split:
                continue
            i = which if isinstance(which, int) else position[which]
            if c.action == "relabel":
                y[i] = ds.classes.index(c.label)
                counts["relabeled"] += 1
            elif c.action == "exclude":
                keep[i] = False
                counts["excluded"] += 1
            else:
                counts["kept"] += 1
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x[keep], y[keep]
        if names:
            files[split] = [f for f, k in zip(names, keep) if k]
    notes = [*ds.notes, f"note: corrections applied: {counts['relabeled']} relabeled, {counts['excluded']} excluded"]
    return replace(ds, **arrays, files=files or ds.files, notes=notes), counts
