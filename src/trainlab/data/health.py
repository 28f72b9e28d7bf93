"""Data health: what is wrong with a dataset's labels and images (`trainlab data check`).

1. **Out-of-sample probabilities** by K-fold cross-fitting: the images are split into K stratified
   folds; a fast recipe trains on K-1 of them and predicts the one it never saw, K times, so every
   image is scored by a model that did not train on it.
2. **Label issues** from those probabilities by confident learning (Northcutt, Jiang and Chuang,
   "Confident Learning: Estimating Uncertainty in Dataset Labels", JAIR 2021), with cleanlab's
   `find_label_issues` and `get_label_quality_scores` (self-confidence: the out-of-sample
   probability of the given label): ranked by that score, each with the class the models suggest.
3. **Near-duplicates and leaks**: a 64-bit perceptual hash per image (imagehash's pHash, the low
   frequencies of a 32x32 DCT) finds candidates cheaply, without a model and in O(n) buckets (two
   images within 4 bits share at least one of the hash's four 16-bit quarters); each candidate pair
   is then confirmed by the correlation of the two grey thumbnails (<= 32x32, >= 0.985), so that the
   thousands of look-alike MNIST ones are not all called duplicates. Groups within a split are
   `duplicate`s; groups that span train and test are `leak`s (test accuracy counted on images the
   model trained on).
4. **Outliers**: images whose out-of-sample top probability is below the 0.2nd percentile (they
   belong to no class the models know), or whose pixel mean or spread lies outside the range of
   99.9% of the images; **class balance**; and files the loader could not read.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trainlab.data.corrections import Correction, read_corrections, update_corrections
from trainlab.data.readers import Dataset
from trainlab.data.registry import load_dataset
from trainlab.errors import TrainlabError
from trainlab.settings import Settings, load_settings

KINDS = ("label", "leak", "duplicate", "outlier", "balance", "unreadable")
FAST = {"mnist": "mnist-fast", "fashion-mnist": "fashion-fast", "cifar10": "cifar10-fast"}
HASH_BITS = 4  # pHash distance of a duplicate candidate
SAME_THUMB = 0.985  # thumbnail correlation that confirms a duplicate (see _thumbs)
MIN_LIMIT = 20  # images a split: fewer cannot be cross-fitted in folds
MIN_STEPS = 300  # each fold trains for at least this many steps (a small tree, a --limit look), 30 epochs at most
WEAK = 0.8  # below this out-of-sample accuracy the summary says the label findings are unreliable


@dataclass
class HealthReport:
    dataset: str
    split: str
    folds: int
    recipe: str
    images: int
    classes: list[str]
    issues: list[dict] = field(default_factory=list)  # ranked within each kind, kinds in KINDS order
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> class -> images
    accuracy: float = float("nan")  # of the out-of-sample predictions against the given labels
    seconds: float = 0.0
    scores: np.ndarray | None = field(default=None, repr=False)  # each image's label quality (self-confidence)
    probs: np.ndarray | None = field(default=None, repr=False)  # out-of-sample probabilities (N, classes)
    labels: np.ndarray | None = field(default=None, repr=False)  # the given labels
    where: list = field(default_factory=list, repr=False)  # (split, index) of each image
    files: dict = field(default_factory=dict, repr=False)

    def suspects(self, n: int, split: str | None = None) -> list[dict]:
        """The `n` images whose given label is least likely (of `split`, or of all), whether or not
        confident learning flagged them: what to look at first."""
        if self.scores is None:
            return []
        order = [int(i) for i in np.argsort(self.scores, kind="stable") if split is None or self.where[i][0] == split][:n]
        return [_item("label", self.where[i], self.files, given=self.classes[self.labels[i]],
                      suggested=self.classes[int(self.probs[i].argmax())], score=float(self.scores[i])) for i in order]

    def of(self, kind: str) -> list[dict]:
        return [i for i in self.issues if i["kind"] == kind]

    def summary(self) -> str:
        found = ", ".join(f"{len(self.of(k))} {k}" for k in KINDS if self.of(k)) or "nothing"
        line = (f"checked {self.images:,} {self.dataset} images ({self.split}) with {self.folds}-fold {self.recipe} "
                f"(out-of-sample accuracy {self.accuracy:.4f}, {self.seconds:.0f} s): {found}")
        if self.accuracy < WEAK:
            line += (f"\nnote: the cross-fitted models are right on only {self.accuracy:.0%} of the images they never saw; "
                     "most label findings are then their mistakes, not the labels': add images or give a stronger --recipe")
        return line

    def lines(self, per_kind: int = 10, more: str = "report.of(KIND) lists them all") -> list[str]:
        """One line per finding, `per_kind` of each kind; `more` says where the rest are (the CLI: --json)."""
        out = []
        for k in KINDS:
            found = self.of(k)
            out += [describe(i) for i in found[:per_kind]]
            if len(found) > per_kind:
                out.append(f"           ... {len(found) - per_kind} more {k} findings ({more})")
        return out

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "split": self.split, "folds": self.folds, "recipe": self.recipe, "images": self.images,
                "classes": self.classes, "accuracy": self.accuracy, "seconds": self.seconds, "counts": self.counts,
                "issues": self.issues}


def _pool(ds: Dataset, split: str) -> tuple[np.ndarray, np.ndarray, list[tuple[str, int]]]:
    parts = [s for s in ("train", "test") if split in (s, "all")]
    xs = [ds.x_train if s == "train" else ds.x_test for s in parts]
    ys = [ds.y_train if s == "train" else ds.y_test for s in parts]
    where = [(s, i) for s, x in zip(parts, xs) for i in range(len(x))]
    return np.concatenate(xs), np.concatenate(ys), where


def stratified_folds(y: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """A fold number 0..k-1 per image, each class spread evenly over the folds."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), np.int64)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        fold[rng.permutation(idx)] = np.arange(len(idx)) % k
    return fold


def cross_fit(x: np.ndarray, y: np.ndarray, classes: list[str], recipe: str, k: int, settings: Settings, name: str,
              progress: Callable[[str, int, int], None], overrides: dict | None = None, stop=None) -> np.ndarray:
    """Out-of-sample class probabilities (N, classes): fold f's images predicted by a model trained
    on the other folds."""
    import torch

    from trainlab.training.api import train
    fold = stratified_folds(y, k)
    probs = np.zeros((len(y), len(classes)), np.float32)
    for f in range(k):
        progress("training", f, k)
        held, rest = np.flatnonzero(fold == f), np.flatnonzero(fold != f)
        part = Dataset(name, classes, x[rest], y[rest], x[held], y[held])
        # unsmoothed targets: label smoothing caps every probability (0.91 at 0.1), and confident
        # learning's per-class thresholds then pass over most wrong labels (4 found on MNIST, not ~100)
        sets = {"data.validation": "none", "loss.label_smoothing": 0.0, **(overrides or {})}
        run = train(recipe, dataset=part, overrides=sets, save=False, progress="none", settings=settings, stop=stop)
        logits, _, _ = run.logits("test")
        probs[held] = torch.softmax(logits.float(), 1).numpy()
    progress("training", k, k)
    return probs


def label_issues(y: np.ndarray, probs: np.ndarray, where, classes, files) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """The label issues, most unlikely label first, their positions in the pool, and every image's
    label quality score (self-confidence)."""
    find_label_issues, get_label_quality_scores = _cleanlab()
    scores = get_label_quality_scores(y, probs, method="self_confidence")
    # n_jobs=1: cleanlab's default forks a multiprocessing.Pool from this process, whose torch
    # (OpenMP, oneDNN) threads may hold locks at that moment; a forked child then waits forever. It
    # did: the dashboard's check hung beside two busy processes. One process prunes 70,000 MNIST
    # labels in well under a second.
    flagged = find_label_issues(y, probs, return_indices_ranked_by="self_confidence", n_jobs=1)
    return [_item("label", where[i], files, given=classes[y[i]], suggested=classes[int(probs[i].argmax())],
                  score=float(scores[i])) for i in flagged], flagged, scores


def _cleanlab():
    """cleanlab's two functions; its import of tqdm.auto warns in a notebook without ipywidgets."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from cleanlab.filter import find_label_issues
        from cleanlab.rank import get_label_quality_scores
    return find_label_issues, get_label_quality_scores


def _range_text(value: float, lo: float, hi: float) -> str:
    """'0.0296 below 0.0304' rather than '0.03 outside 0.03..0.28': as many digits as tell the value
    from the bound it crossed."""
    bound, side = (lo, "below") if value < lo else (hi, "above")
    digits = 2
    while digits < 8 and f"{value:.{digits}f}" == f"{bound:.{digits}f}":
        digits += 1
    return f"{value:.{digits}f} {side} {bound:.{digits}f} (the usual range {lo:.{digits}f}..{hi:.{digits}f})"


def _item(kind: str, at: tuple[str, int], files: dict, **more) -> dict:
    split, index = at
    names = files.get(split)
    return {"kind": kind, "split": split, "index": None if names else index, "file": names[index] if names else None, **more}


def _thumbs(x: np.ndarray) -> np.ndarray:
    """Grey thumbnails of at most 32x32, zero mean and unit length: their dot product is the
    correlation. Measured on MNIST's training ones (the most alike digits): no two of 3,000
    different ones reach 0.99 (78 pairs reach 0.98), while a JPEG re-encoding (quality 70) keeps
    >= 0.994 and a resize to 40 px and back >= 0.985."""
    import torch
    t = torch.from_numpy(x).permute(0, 3, 1, 2).float().mean(1, keepdim=True)
    t = torch.nn.functional.adaptive_avg_pool2d(t, (min(32, t.shape[2]), min(32, t.shape[3]))).flatten(1)
    t = t - t.mean(1, keepdim=True)
    return torch.nn.functional.normalize(t, dim=1).numpy()


def phashes(x: np.ndarray) -> np.ndarray:
    """imagehash's 64-bit pHash of each uint8 image (N, H, W, C), as uint64."""
    import imagehash
    from PIL import Image
    out = np.empty(len(x), np.uint64)
    for i, im in enumerate(x):
        bits = imagehash.phash(Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im)).hash.flatten()
        out[i] = int.from_bytes(np.packbits(bits).tobytes(), "big")
    return out


def duplicate_groups(x: np.ndarray, hashes: np.ndarray | None = None) -> list[list[int]]:
    """Groups (2 or more) of near-identical images: pHash within HASH_BITS bits, confirmed by thumbnails."""
    hashes = phashes(x) if hashes is None else hashes
    thumbs = _thumbs(x)
    parent = np.arange(len(x))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    seen: set[tuple[int, int]] = set()
    for quarter in range(4):
        key = (hashes >> np.uint64(16 * quarter)) & np.uint64(0xFFFF)
        order = np.argsort(key, kind="stable")
        bounds = np.flatnonzero(np.diff(key[order])) + 1
        for bucket in np.split(order, bounds):
            if len(bucket) < 2:
                continue
            for start in range(0, len(bucket), 2048):
                a = bucket[start:start + 2048]
                xor = hashes[a][:, None] ^ hashes[bucket][None, :]
                near = np.unpackbits(xor.view(np.uint8).reshape(len(a), len(bucket), 8), axis=2).sum(2) <= HASH_BITS
                same = (thumbs[a] @ thumbs[bucket].T) >= SAME_THUMB
                for i, j in zip(*np.nonzero(near & same)):
                    p, q = int(a[i]), int(bucket[j])
                    if p < q and (p, q) not in seen:
                        seen.add((p, q))
                        parent[root(p)] = root(q)
    groups: dict[int, list[int]] = {}
    for i in {i for pair in seen for i in pair}:
        groups.setdefault(root(i), []).append(i)
    return sorted((sorted(g) for g in groups.values()), key=lambda g: (-len(g), g))


def duplicate_issues(x, y, where, classes, files) -> list[dict]:
    out = []
    for g in duplicate_groups(x):
        splits = {where[i][0] for i in g}
        members = [_item("member", where[i], files, label=classes[y[i]]) for i in g]
        for m in members:
            m.pop("kind")
        first = members[0]
        out.append({"kind": "leak" if len(splits) > 1 else "duplicate", "split": "+".join(sorted(splits)),
                    "index": first["index"], "file": first["file"], "size": len(g),
                    "labels_agree": len({classes[y[i]] for i in g}) == 1, "members": members})
    return sorted(out, key=lambda d: (d["kind"] != "leak", d["labels_agree"], -d["size"]))  # leaks, then disagreeing labels


def outlier_issues(x, probs, where, files, skip: set[int]) -> list[dict]:
    top = probs.max(1)
    low = np.quantile(top, 0.002)
    flat = x.reshape(len(x), -1).astype(np.float32) / 255.0
    mean, std = flat.mean(1), flat.std(1)
    m_lo, m_hi = np.quantile(mean, [0.0005, 0.9995])
    s_lo, s_hi = np.quantile(std, [0.0005, 0.9995])
    out = []
    for i in np.argsort(top):
        reasons = []
        if top[i] < low:
            reasons.append(f"top probability {top[i]:.2f} (below {low:.2f}, the 0.2nd percentile)")
        if not m_lo <= mean[i] <= m_hi:
            reasons.append(f"pixel mean {_range_text(mean[i], m_lo, m_hi)}")
        if not s_lo <= std[i] <= s_hi:
            reasons.append(f"pixel spread {_range_text(std[i], s_lo, s_hi)}")
        if reasons and int(i) not in skip:
            out.append(_item("outlier", where[i], files, score=float(top[i]), reason="; ".join(reasons)))
    return out


def balance(ds: Dataset, split: str) -> tuple[dict, list[dict]]:
    counts, issues = {}, []
    for s in ("train", "test"):
        if split not in (s, "all"):
            continue
        y = ds.y_train if s == "train" else ds.y_test
        c = np.bincount(y, minlength=len(ds.classes))
        counts[s] = {name: int(n) for name, n in zip(ds.classes, c)}
        if c.min() == 0 or c.max() / c.min() > 1.5:
            few = ds.classes[int(c.argmin())]
            issues.append({"kind": "balance", "split": s, "index": None, "file": None, "score": float(c.min() / max(c.max(), 1)),
                           "reason": f"{few} has {int(c.min())} images against {int(c.max())} of {ds.classes[int(c.argmax())]}"})
    return counts, issues


def check_data(data: str | Dataset = "mnist", *, split: str = "all", recipe: str | None = None, folds: int = 5,
               top: int | None = None, limit: int | None = None, settings: Settings | None = None,
               progress: Callable[[str, int, int], None] | None = None, overrides: dict | None = None,
               stop=None) -> HealthReport:
    """Check a dataset (a built-in name, an image tree's path, or a Dataset): label issues,
    near-duplicates and train/test leaks, outliers, class balance and unreadable files.

    `split`: train, test or all (leaks need all). `recipe`: what cross-fits (default: the
    dataset's fast preset). `folds`: K of the cross-fitting. `top`: keep the N best-ranked of each
    kind. `limit`: the first N images of each split (quick looks). `progress(stage, done, total)`
    hears how far it is; `stop` (an Event) ends it after the current training step (StopRun)."""
    if split not in ("train", "test", "all"):
        raise TrainlabError(f"--split {split!r}: use train, test or all")
    if not 2 <= folds <= 20:
        raise TrainlabError(f"--folds {folds}: use 2-20")
    if top is not None and top < 1:
        raise TrainlabError(f"--top {top}: give at least 1")
    if limit is not None and limit < MIN_LIMIT:  # 0 is no "no limit": leave the option out for all images
        raise TrainlabError(f"--limit {limit}: give at least {MIN_LIMIT} images a split, or leave it out to check all")
    settings = settings or load_settings()
    say = progress or (lambda *a: None)
    t0 = time.perf_counter()
    say("loading", 0, 1)
    ds = data if isinstance(data, Dataset) else load_dataset(data, settings=settings, skip_unreadable=True)
    if limit is not None:
        ds = Dataset(ds.name, ds.classes, ds.x_train[:limit], ds.y_train[:limit], ds.x_test[:limit], ds.y_test[:limit],
                     ds.source, dict(ds.info), list(ds.notes), {k: v[:limit] for k, v in ds.files.items()})
    x, y, where = _pool(ds, split)
    if len(np.unique(y)) < 2 or np.bincount(y).max() < folds:
        raise TrainlabError(f"{ds.name}: {len(y)} images in {len(np.unique(y))} classes are too few for {folds}-fold "
                            f"cross-fitting; use --folds 2 or add images")
    recipe = recipe or FAST.get(ds.name, "mnist-fast")
    sets = dict(overrides or {})
    if "epochs" not in sets:  # a small tree or a first-N look: enough steps to learn something
        from trainlab.recipes import load_recipe
        base = load_recipe(recipe)
        steps = math.ceil(len(y) * (folds - 1) / folds / base.batch_size)
        if steps * base.epochs < MIN_STEPS:
            sets["epochs"] = min(30, math.ceil(MIN_STEPS / max(steps, 1)))  # more memorises the wrong labels
    probs = cross_fit(x, y, ds.classes, recipe, folds, settings, ds.name, say, sets, stop)
    say("duplicates", 0, 1)
    labels, flagged, scores = label_issues(y, probs, where, ds.classes, ds.files)
    dups = duplicate_issues(x, y, where, ds.classes, ds.files) if len(x) > 1 else []
    outliers = outlier_issues(x, probs, where, ds.files, {int(i) for i in flagged})
    counts, unbalanced = balance(ds, split)
    unreadable = [{"kind": "unreadable", "split": None, "index": None, "file": u.split(": ", 1)[0], "reason": u.split(": ", 1)[-1]}
                  for u in ds.info.get("unreadable", [])]
    groups = [labels, [d for d in dups if d["kind"] == "leak"], [d for d in dups if d["kind"] == "duplicate"], outliers,
              unbalanced, unreadable]
    issues = [i for g in groups for i in (g[:top] if top else g)]
    say("done", 1, 1)
    return HealthReport(ds.name, split, folds, recipe, len(y), list(ds.classes), issues, counts,
                        float((probs.argmax(1) == y).mean()), time.perf_counter() - t0, scores, probs, y, where, ds.files)


def _target(text: str, flag: str, ds: Dataset) -> tuple[str, int | None, str | None]:
    """'947', 'test:947', 'train:cats/IMG_1.jpg' -> (split, index, file); the split defaults to test."""
    split, sep, which = text.partition(":")
    if not sep:
        split, which = "test", text
    if split not in ("train", "test"):
        raise TrainlabError(f"{flag} {text!r}: the split is train or test (as in test:947)")
    if which.isdigit():
        return split, int(which), None
    if ds.files:
        return split, None, which
    raise TrainlabError(f"{flag} {text!r}: give an image's index (as in {split}:947)")


def fix_data(path, *, dataset: str | None = None, relabel: list[str] = (), exclude: list[str] = (), keep: list[str] = (),
             settings: Settings | None = None) -> tuple[Path, list[Correction]]:
    """Add decisions to a corrections file (made if it does not exist; then `dataset` names what it
    corrects): `relabel` 'SPLIT:INDEX=LABEL' (or an image tree's 'SPLIT:FILE=LABEL'; the split
    defaults to test), `exclude` and `keep` 'SPLIT:INDEX'. Each is checked against the dataset
    first; the file is written whole, atomically, or not at all."""
    path = Path(path)
    settings = settings or load_settings()
    corr = read_corrections(path) if path.exists() else None
    if corr is not None and dataset and dataset != corr.dataset and Path(dataset).name != corr.dataset:
        raise TrainlabError(f"{path} corrects '{corr.dataset}', not '{dataset}'; use another file for {dataset}")
    if corr is None and not dataset:
        raise TrainlabError(f"{path} does not exist yet: say which dataset it corrects with --dataset NAME")
    if not (relabel or exclude or keep):
        raise TrainlabError("nothing to do: give --relabel SPLIT:INDEX=LABEL, --exclude SPLIT:INDEX or --keep SPLIT:INDEX")
    ds = load_dataset(dataset or corr.dataset, settings=settings, skip_unreadable=True)
    added = []
    for text in relabel:
        where, eq, label = text.rpartition("=")
        if not eq or not where:
            raise TrainlabError(f"--relabel {text!r}: give SPLIT:INDEX=LABEL, as in test:947=9")
        split, index, file = _target(where, "--relabel", ds)
        added.append(Correction(split, "relabel", index, file, label=label))
    for action, items in (("exclude", exclude), ("keep", keep)):
        for text in items:
            split, index, file = _target(text, f"--{action}", ds)
            added.append(Correction(split, action, index, file))
    update_corrections(path, ds, added)  # under the file's lock: parallel writers never lose a decision
    return path, added


def _where(item: dict) -> str:
    return f"{item['split']}:{item['index'] if item['index'] is not None else item['file']}" if item.get("split") else item["file"]


def describe(item: dict) -> str:
    """One finding as a line."""
    k = item["kind"]
    if k == "label":
        return f"label      {_where(item):<22} given {item['given']!r} -> suggested {item['suggested']!r} (score {item['score']:.4f})"
    if k in ("leak", "duplicate"):
        members = ", ".join(f"{m['split']}:{m['index'] if m['index'] is not None else m['file']}" for m in item["members"][:6])
        agree = "" if item["labels_agree"] else " (their labels differ)"
        return f"{k:<10} {item['size']} images: {members}{', ...' if item['size'] > 6 else ''}{agree}"
    return f"{k:<10} {_where(item) if item.get('split') or item.get('file') else '':<22} {item.get('reason', '')}"


def write_picture(report: HealthReport, data, path=None, settings: Settings | None = None, n: int = 50,
                  split: str | None = None):
    """The `n` least likely labels (of `split`, or all) as a grid: each image with its given and
    suggested label; the ones confident learning flagged are marked with *. A PNG at `path`, or
    (no path) the matplotlib Figure, as a notebook shows it."""
    from trainlab.plots import plot_gallery
    ds = data if isinstance(data, Dataset) else load_dataset(data, settings=settings, skip_unreadable=True)
    items = report.suspects(n, split)
    flagged = {(i["split"], i["index"], i["file"]) for i in report.of("label")}
    images, titles = [], []
    for it in items:
        x = ds.x_train if it["split"] == "train" else ds.x_test
        i = it["index"] if it["index"] is not None else ds.files[it["split"]].index(it["file"])
        images.append(x[i])
        star = "*" if (it["split"], it["index"], it["file"]) in flagged else ""
        titles.append(f"{star}{it['split']}[{i}]: {it['given']} -> {it['suggested']}")
    if not images:
        raise TrainlabError("no label issues to draw")
    where = f" {split}" if split else ""
    out = plot_gallery(np.stack(images), titles, path, title=f"{report.dataset}{where}: the {len(items)} least likely labels "
                       f"(given -> suggested; * flagged by confident learning), {report.folds}-fold {report.recipe}", cols=10)
    return Path(path) if path is not None else out


def save_report(report: HealthReport, settings: Settings) -> Path:
    """The report as JSON under <runs>/health/ (what the dashboard's Data health page shows)."""
    import json

    from trainlab.fileio import atomic_write, safe_name
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return atomic_write(settings.runs_dir / "health" / f"{stamp}-{safe_name(report.dataset, 60)}-{report.split}.json",
                        json.dumps(report.to_dict()))
