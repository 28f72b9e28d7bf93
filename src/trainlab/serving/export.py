"""ONNX export with the preparation inside the graph, and prediction through onnxruntime.

Two graphs, both returning class probabilities with the run's normalisation, flattening,
test-time flip and softmax inside, so that a deployer cannot get them wrong:

- `prepare="dataset"` (`model.onnx`): dataset-format uint8 batches, (N, H, W) for grayscale runs
  and (N, H, W, C) for colour ones; the batch size is dynamic. Checked against torch on 1,000 test
  images (max |difference of probabilities| <= 1e-5 and identical top-1).
- `prepare="full"` (`model-full.onnx`): one decoded photo of any size, uint8 (H, W, C) with C = 1,
  3 or 4, with the whole preparation `trainlab predict` applies to a file (the digit recipe's ink
  estimate, crop, fit and centre of mass; Fashion-MNIST's; or the plain resize) written as tensor
  operations (serving/graph_prep.py). Checked against `trainlab predict` on drawn and photographed
  images (top-1 agreement >= 99.5%).

Class names, the preparation style, the preprocessing and the recipe are in the model's metadata.
Nothing is written when the check fails.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from trainlab.data.preprocess import Preprocess
from trainlab.engine.inference import Predictions, as_batch, input_stats, ood_warnings
from trainlab.errors import TrainlabError, first_line
from trainlab.fileio import remove_stale_temps, temp_prefix, umask, write_error
from trainlab.runs.record import OODThresholds, read_record, resolve_run_dir
from trainlab.runs.run import Run, load_run
from trainlab.serving.graph_prep import PreparePhoto
from trainlab.settings import Settings, load_settings
from trainlab.version import __version__

TOLERANCE = 1e-5
CHECK_IMAGES = 1000
CHECK_PHOTOS = 300  # images of each kind a --prepare full graph is checked on
FULL_AGREEMENT = 0.995  # top-1 agreement a --prepare full graph needs with `trainlab predict`
MAX_SIDE = 16384  # the longest photo side a --prepare full graph accepts


class WithPreparation(nn.Module):
    """uint8 images (N, H, W) or (N, H, W, C) -> probabilities, the run's preparation included."""

    def __init__(self, model: nn.Module, prep: Preprocess, tta: str = "none"):
        super().__init__()
        self.model, self.flatten, self.tta = model, prep.flatten, tta
        self.gray = prep.shape[0] == 1
        scale, shift = prep.scale_shift("cpu")
        self.register_buffer("scale", scale)
        self.register_buffer("shift", shift)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        return self.classify(x.unsqueeze(1) if self.gray else x.permute(0, 3, 1, 2))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """float (N, C, H, W) pixel values 0-255 -> probabilities."""
        x = x * self.scale + self.shift
        logits = self.model(x.flatten(1) if self.flatten else x)
        if self.tta == "flip" and not self.flatten:
            logits = 0.5 * (logits + self.model(x.flip(3)))
        return torch.softmax(logits, 1)


class WithPhotoPreparation(nn.Module):
    """One decoded photo of any size, uint8 (H, W, C) with C = 1, 3 or 4, -> probabilities (1, classes):
    the whole preparation of `trainlab predict` (the digit, fashion or photo style) in the graph."""

    def __init__(self, model: nn.Module, prep: Preprocess, tta: str = "none"):
        super().__init__()
        self.prepare = PreparePhoto(prep.style, prep.shape)
        self.inner = WithPreparation(model, prep, tta)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.inner.classify(self.prepare(image))


@dataclass
class ExportReport:
    path: Path
    images: int
    max_abs_diff: float
    top1_agree: int
    opset: int
    seconds: float
    prepare: str = "dataset"
    checked_on: str = "test images"  # what the check ran on, in words
    card: Path | None = None  # the model card written beside the model

    @property
    def ok(self) -> bool:
        if self.prepare == "full":
            return self.images > 0 and self.top1_agree >= FULL_AGREEMENT * self.images
        return self.max_abs_diff <= TOLERANCE and self.top1_agree == self.images

    def to_dict(self) -> dict:
        return {**asdict(self), "path": str(self.path), "card": str(self.card) if self.card else None}

    def text(self) -> str:
        size = self.path.stat().st_size / 1e6 if self.path.is_file() else 0.0
        head = f"exported {self.path} ({size:.2f} MB, opset {self.opset}, {self.seconds:.1f} s{', card ' + self.card.name if self.card else ''}): "
        if self.prepare == "full":
            return (head + f"any photo in (uint8 H x W x C); onnxruntime and `trainlab predict` agree on {self.images:,} "
                    f"{self.checked_on}: top-1 identical {self.top1_agree:,}/{self.images:,}, max |probability "
                    f"difference| {self.max_abs_diff:.1e}")
        return (head + f"onnxruntime and torch agree on {self.images:,} test images: max |probability difference| "
                f"{self.max_abs_diff:.1e} (limit {TOLERANCE:.0e}), top-1 identical {self.top1_agree:,}/{self.images:,}")


def metadata(run: Run) -> dict[str, str]:
    c, h, w = run.preprocess.shape
    return {"classes": json.dumps(run.classes), "style": run.preprocess.style, "preprocess": json.dumps(run.preprocess.to_dict()),
            "recipe": run.recipe.to_yaml(), "run_id": run.run_id or "", "trainlab": __version__,
            "input": f"uint8 (N, {h}, {w})" if c == 1 else f"uint8 (N, {h}, {w}, {c})", "output": "probabilities (N, classes)",
            "ood": run.ood.model_dump_json() if run.ood else ""}


def _export_graph(module: nn.Module, example: torch.Tensor, path: Path, opset: int, input_name: str,
                  dynamic: dict[int, torch.export.Dim]) -> None:
    import onnx
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    # the exporter prints its steps and warns about torchvision: none of it is the user's business
    try:
        with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, (example,), dynamo=True, opset_version=opset, input_names=[input_name],
                                        output_names=["probabilities"], dynamic_shapes={input_name: dynamic}, verbose=False)
    finally:
        quiet.setLevel(level)
    program.save(str(path))
    onnx.checker.check_model(str(path))


def _add_metadata(path: Path, meta: dict[str, str]) -> None:
    import onnx
    model = onnx.load(str(path))
    for k, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(model, str(path))


def _session(path: Path):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def to_graph_input(x_nchw: torch.Tensor) -> np.ndarray:
    """uint8 (N, C, H, W) -> what the graph takes: (N, H, W) grayscale or (N, H, W, C)."""
    return (x_nchw[:, 0] if x_nchw.shape[1] == 1 else x_nchw.permute(0, 2, 3, 1)).contiguous().numpy()


def photo_array(data: bytes, name: str = "image") -> np.ndarray:
    """What a `--prepare full` graph takes from an image file: its decoded pixels (EXIF rotation
    applied), uint8 (H, W, C)."""
    from trainlab.data.images import open_image
    arr = np.asarray(open_image(data, name), dtype=np.uint8)
    return np.ascontiguousarray(arr[..., None] if arr.ndim == 2 else arr)


def photo_pixels(item, name: str = "image") -> np.ndarray:
    """A decoded photo given as an array, checked as a photo file would be: uint8 values (0-255; a
    wider type is refused, not wrapped: 300 is not 44), (H, W) or (H, W, 1 | 3 | 4), at least 1x1."""
    a = np.asarray(item)
    if a.dtype.kind not in "iub" and not (a.dtype.kind == "f" and a.size and np.all(np.mod(a, 1) == 0)):
        raise TrainlabError(f"{name}: give uint8 pixels 0-255 (got {a.dtype} values)")
    if a.size and (a.min() < 0 or a.max() > 255):
        raise TrainlabError(f"{name}: pixel values run {a.min()}..{a.max()}; give 0-255")
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise TrainlabError(f"{name}: shape {tuple(a.shape)}; give a photo (H, W) or (H, W, C) with 1, 3 or 4 channels")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise TrainlabError(f"{name}: an empty image ({a.shape[0]}x{a.shape[1]})")
    return np.ascontiguousarray(a.astype(np.uint8))


def verify(path: Path, run: Run, x: torch.Tensor) -> tuple[float, int]:
    """(max |p_onnx - p_torch|, identical top-1 count) on uint8 images (N, C, H, W); torch's side is
    `Run.predict`, the path `trainlab predict` takes (its own normalisation, channels_last, TTA)."""
    sess = _session(path)
    inp = to_graph_input(x)
    got = np.concatenate([sess.run(None, {"images": inp[i:i + 250]})[0] for i in range(0, len(inp), 250)])
    want = run.predict(x.permute(0, 2, 3, 1).numpy()).probs
    return float(np.abs(got - want).max()), int((got.argmax(1) == want.argmax(1)).sum())


def check_photos(run: Run, settings: Settings, n: int = CHECK_PHOTOS) -> list[tuple[str, bytes]]:
    """What a `--prepare full` graph is checked on: what its users will send. For digit and fashion
    runs, digits drawn with a mouse (the Try-it canvas) and test images photographed on paper; for
    the others, test images as phone-like JPEGs of other sizes and shapes; for an image tree, also
    its own files, as they are on disk."""
    from PIL import Image

    from trainlab.data.handwriting import drawn_digits, photographed_digits
    from trainlab.data.images import expand_inputs
    x, y = run.split("test", settings)
    images = x[:n].cpu().permute(0, 2, 3, 1).numpy()
    out: list[tuple[str, bytes]] = []
    if run.preprocess.style in ("digit", "fashion"):
        drawn, _ = drawn_digits(max(1, n // 20), seed=0)
        out += [(f"drawn digit {i}", b) for i, b in enumerate(drawn)]
        photos, _ = photographed_digits(images[: n // 2, ..., 0], y[: n // 2].cpu().numpy(), seed=0)
        out += [(f"photo of test[{i}]", b) for i, b in enumerate(photos)]
    else:
        rng = np.random.default_rng(0)
        for i, im in enumerate(images[:n]):
            w, h = int(rng.integers(40, 400)), int(rng.integers(40, 400))
            buf = io.BytesIO()
            Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im).resize((w, h), Image.BICUBIC).save(
                buf, "JPEG", quality=int(rng.integers(70, 95)))
            out.append((f"test[{i}] as a {w}x{h} JPEG", buf.getvalue()))
    folder = Path(run.recipe.data.name)
    if folder.is_dir():
        out += [(f, Path(f).read_bytes()) for f in expand_inputs([folder])[:n]]
    return out


def verify_photos(path: Path, run: Run, files: list[tuple[str, bytes]]) -> tuple[float, int, int]:
    """(max |p_onnx - p_predict|, identical top-1 count, images) on image files: the graph gets each
    file's decoded pixels, `trainlab predict`'s path gets the file."""
    from trainlab.analysis.predict import predict_bytes
    want = predict_bytes(run, files)
    good = set(want.files)
    sess = _session(path)
    got = np.concatenate([sess.run(None, {"image": photo_array(data, name)})[0] for name, data in files if name in good])
    return float(np.abs(got - want.probs).max()), int((got.argmax(1) == want.probs.argmax(1)).sum()), len(got)


PREPARES = ("dataset", "full")
CARD_MARK = "library_name: onnx"


def write_card(r: Run, folder: Path, settings: Settings) -> Path:
    """The model card, README.md beside the model (the Hub reads that name); a README.md that is not
    a trainlab card is left alone and the card goes to model-card.md."""
    from trainlab.fileio import atomic_write
    from trainlab.serving.card import model_card
    path = folder / "README.md"
    if path.exists() and CARD_MARK not in path.read_text(errors="replace")[:200]:
        path = folder / "model-card.md"
    record = read_record(r.run_dir) if r.run_dir else None
    return atomic_write(path, model_card(r, record, r.evaluate("test", settings)))


def _checked_run(run: str | os.PathLike | Run, settings: Settings) -> Run:
    if not isinstance(run, Run):
        record = read_record(resolve_run_dir(run, settings))
        if record.status != "completed":
            how = (f"resume it first (trainlab train --resume {record.run_id})" if record.status in ("interrupted", "running")
                   else "train it again" if record.status == "failed" else "export a completed run")
            raise TrainlabError(f"run {record.run_id} is {record.live_status()}, not completed: its weights are not a "
                                f"finished model; {how}")
    r = run if isinstance(run, Run) else load_run(run, settings)
    if r.device.type != "cpu":
        raise TrainlabError("export loads the run on the CPU: load_run(..., device='cpu')")
    return r


def export_onnx(run: str | os.PathLike | Run, out: str | os.PathLike | None = None, opset: int = 18,
                settings: Settings | None = None, check_images: int = CHECK_IMAGES, prepare: str = "dataset") -> ExportReport:
    """Write an ONNX graph of the run, checked before it is written; a graph that disagrees is
    refused and nothing is written.

    `prepare="dataset"` (`model.onnx` in the run folder unless `out`): dataset-format uint8 batches
    in, checked against torch on `check_images` test images. `prepare="full"` (`model-full.onnx`):
    one decoded photo of any size in, the whole preparation of `trainlab predict` inside, checked
    against `trainlab predict` on drawn and photographed images (top-1 agreement >= 99.5%)."""
    if not 14 <= opset <= 23:
        raise TrainlabError(f"--opset {opset}: use 14-23 (18 is the default)")
    if prepare not in PREPARES:
        raise TrainlabError(f"--prepare {prepare!r}: use dataset (dataset-format arrays in) or full (any photo in)")
    settings = settings or load_settings()
    r = _checked_run(run, settings)
    default = "model.onnx" if prepare == "dataset" else "model-full.onnx"
    dest = Path(out) if out else (r.run_dir / default)
    if dest.is_dir():
        dest = dest / default
    if not dest.parent.is_dir():
        raise TrainlabError(f"--out {dest}: the folder {dest.parent} does not exist")
    t0 = time.perf_counter()
    remove_stale_temps(dest.parent, dest.name)  # what a killed export left (kill -9 mid-export)
    try:
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(dest), suffix=".tmp", dir=dest.parent)
    except OSError as exc:
        raise write_error(dest, exc, 0) from None
    os.close(fd)
    tmp = Path(tmp)
    try:
        report = (_write_dataset_graph if prepare == "dataset" else _write_photo_graph)(r, tmp, dest, opset, settings, check_images)
        report.seconds = time.perf_counter() - t0
        os.chmod(tmp, 0o666 & ~umask())  # like every other file trainlab writes, not mkstemp's 0600
        os.replace(tmp, dest)
        report.card = write_card(r, dest.parent, settings)
        return report
    finally:
        tmp.unlink(missing_ok=True)


def _graph(module: nn.Module, example: torch.Tensor, tmp: Path, opset: int, input_name: str, dynamic: dict) -> None:
    try:
        _export_graph(module, example, tmp, opset, input_name, dynamic)
    except Exception as exc:  # the exporter's own errors: one line
        raise TrainlabError(f"ONNX export failed: {first_line(exc, 300)}") from None


def _write_dataset_graph(r: Run, tmp: Path, dest: Path, opset: int, settings: Settings, check_images: int) -> ExportReport:
    module = WithPreparation(r.model.float().eval(), r.preprocess, r.recipe.tta).eval()
    x, _ = r.split("test", settings)
    x = x[:check_images].cpu()
    _graph(module, torch.from_numpy(to_graph_input(x[:2])), tmp, opset, "images", {0: torch.export.Dim("batch", min=1, max=1 << 20)})
    _add_metadata(tmp, metadata(r))
    diff, agree = verify(tmp, r, x)
    report = ExportReport(dest, len(x), diff, agree, opset, 0.0)
    if not report.ok:
        raise TrainlabError(f"refused: the exported graph disagrees with torch (max |Δp| {diff:.1e}, top-1 identical "
                            f"{agree}/{len(x)}); nothing written")
    return report


def _write_photo_graph(r: Run, tmp: Path, dest: Path, opset: int, settings: Settings, check_images: int) -> ExportReport:
    module = WithPhotoPreparation(r.model.float().eval(), r.preprocess, r.recipe.tta).eval()
    dims = {0: torch.export.Dim("height", min=2, max=MAX_SIDE), 1: torch.export.Dim("width", min=2, max=MAX_SIDE),
            2: torch.export.Dim("channels", min=1, max=4)}
    _graph(module, torch.zeros((96, 80, 3), dtype=torch.uint8), tmp, opset, "image", dims)
    c, h, w = r.preprocess.shape
    meta = {**metadata(r), "prepare": "full", "input": "uint8 (H, W, C), C = 1, 3 or 4: one decoded photo of any size "
            "(EXIF rotation applied)", "output": "probabilities (1, classes)", "dataset_input": f"({c}, {h}, {w})"}
    _add_metadata(tmp, meta)
    photos = check_photos(r, settings, min(check_images, CHECK_PHOTOS))
    diff, agree, n = verify_photos(tmp, r, photos)
    words = ("drawn digits and photographed test images" if r.preprocess.style in ("digit", "fashion")
             else "test images as JPEGs of other sizes")
    if any(not name.startswith(("drawn", "photo of", "test[")) for name, _ in photos):
        words += " and the folder's own photos"
    report = ExportReport(dest, n, diff, agree, opset, 0.0, prepare="full", checked_on=words)
    if not report.ok:
        raise TrainlabError(f"refused: the exported graph and `trainlab predict` disagree on {n - agree} of {n} photos "
                            f"(top-1 agreement {agree / max(n, 1):.1%}, {FULL_AGREEMENT:.1%} needed); nothing written")
    return report


class OnnxRun:
    """A run served through onnxruntime: the same `predict`, `classes` and `preprocess` as `Run`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self.session = _session(self.path)
        except Exception as exc:
            raise TrainlabError(f"{self.path}: not an ONNX model onnxruntime can load ({first_line(exc, 200)})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if "classes" not in meta or "preprocess" not in meta:
            raise TrainlabError(f"{self.path}: no trainlab metadata; export it with `trainlab export RUN`")
        self.classes = json.loads(meta["classes"])
        self.preprocess = Preprocess.from_dict(json.loads(meta["preprocess"]))
        self.ood = OODThresholds.model_validate_json(meta["ood"]) if meta.get("ood") else None
        self.run_id = meta.get("run_id") or self.path.parent.name
        self.prepare = meta.get("prepare", "dataset")

    def predict(self, inputs) -> Predictions:
        """Probabilities for dataset-format uint8 arrays (N, H, W, C), as `Run.predict` takes them."""
        if self.prepare == "full":
            raise TrainlabError(f"{self.path} takes photos (exported with --prepare full): use predict_photos(files)")
        x = as_batch(np.asarray(inputs), self.preprocess.shape)
        if len(x) == 0:
            return Predictions(np.zeros((0, len(self.classes))), self.classes, [], [], [], x.permute(0, 2, 3, 1).numpy())
        probs = self.session.run(None, {"images": to_graph_input(x)})[0]
        means, stds = input_stats(x, self.preprocess)
        warns = [ood_warnings(self.ood, float(p.max()), float(m), float(s)) for p, m, s in zip(probs, means, stds)]
        return Predictions(probs, self.classes, [f"[{i}]" for i in range(len(x))], warns, [], x.permute(0, 2, 3, 1).numpy())

    def predict_photos(self, inputs: list) -> Predictions:
        """Probabilities for photos of any size through a `--prepare full` graph: image files (paths
        or bytes) or decoded uint8 arrays (H, W) / (H, W, C), one graph call each."""
        if self.prepare != "full":
            raise TrainlabError(f"{self.path} takes dataset-format arrays: export with --prepare full for photos")
        names, probs = [], []
        for i, item in enumerate(inputs):
            if isinstance(item, (str, os.PathLike)):
                arr, name = photo_array(Path(item).read_bytes(), str(item)), str(item)
            elif isinstance(item, bytes):
                arr, name = photo_array(item), f"[{i}]"
            else:
                arr, name = photo_pixels(item, f"[{i}]"), f"[{i}]"
            probs.append(self.session.run(None, {"image": arr})[0][0])
            names.append(name)
        p = np.stack(probs) if probs else np.zeros((0, len(self.classes)))
        return Predictions(p, self.classes, names, [[] for _ in names], [], None)
