"""ONNX export with the preparation inside the graph, and prediction through onnxruntime.

The exported graph takes raw uint8 images, (N, H, W) for grayscale runs and (N, H, W, C) for colour
ones, and returns class probabilities: the run's normalisation, flattening, test-time flip and
softmax are part of it, so a deployer cannot get them wrong. Class names, the preparation style,
the preprocessing and the recipe are in the model's metadata. The batch size is dynamic.

`export_onnx` verifies before it writes: onnxruntime and torch must agree on 1,000 test images
(max |difference of probabilities| <= 1e-5 and identical top-1), or no file is written.
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

from trainlab.errors import TrainlabError, first_line
from trainlab.fileio import umask, write_error
from trainlab.inference import Predictions, as_batch, input_stats, ood_warnings
from trainlab.data.preprocess import Preprocess
from trainlab.runs.record import OODThresholds, read_record, resolve_run_dir
from trainlab.runs.run import Run, load_run
from trainlab.settings import Settings, load_settings
from trainlab.version import __version__

TOLERANCE = 1e-5
CHECK_IMAGES = 1000


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
        x = x.unsqueeze(1) if self.gray else x.permute(0, 3, 1, 2)
        x = x * self.scale + self.shift
        logits = self.model(x.flatten(1) if self.flatten else x)
        if self.tta == "flip" and not self.flatten:
            logits = 0.5 * (logits + self.model(x.flip(3)))
        return torch.softmax(logits, 1)


@dataclass
class ExportReport:
    path: Path
    images: int
    max_abs_diff: float
    top1_agree: int
    opset: int
    seconds: float

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= TOLERANCE and self.top1_agree == self.images

    def to_dict(self) -> dict:
        return {**asdict(self), "path": str(self.path)}

    def text(self) -> str:
        size = self.path.stat().st_size / 1e6 if self.path.is_file() else 0.0
        return (f"exported {self.path} ({size:.2f} MB, opset {self.opset}, {self.seconds:.1f} s): onnxruntime and torch agree "
                f"on {self.images:,} test images: max |probability difference| {self.max_abs_diff:.1e} (limit {TOLERANCE:.0e}), "
                f"top-1 identical {self.top1_agree:,}/{self.images:,}")


def metadata(run: Run) -> dict[str, str]:
    c, h, w = run.preprocess.shape
    return {"classes": json.dumps(run.classes), "style": run.preprocess.style, "preprocess": json.dumps(run.preprocess.to_dict()),
            "recipe": run.recipe.to_yaml(), "run_id": run.run_id or "", "trainlab": __version__,
            "input": f"uint8 (N, {h}, {w})" if c == 1 else f"uint8 (N, {h}, {w}, {c})", "output": "probabilities (N, classes)",
            "ood": run.ood.model_dump_json() if run.ood else ""}


def _export_graph(module: nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    import onnx
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    # the exporter prints its steps and warns about torchvision: none of it is the user's business
    try:
        with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, (example,), dynamo=True, opset_version=opset, input_names=["images"],
                                        output_names=["probabilities"], dynamic_shapes={"images": {0: batch}}, verbose=False)
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


def verify(path: Path, run: Run, x: torch.Tensor) -> tuple[float, int]:
    """(max |p_onnx - p_torch|, identical top-1 count) on uint8 images (N, C, H, W); torch's side is
    `Run.predict`, the path `trainlab predict` takes (its own normalisation, channels_last, TTA)."""
    sess = _session(path)
    inp = to_graph_input(x)
    got = np.concatenate([sess.run(None, {"images": inp[i:i + 250]})[0] for i in range(0, len(inp), 250)])
    want = run.predict(x.permute(0, 2, 3, 1).numpy()).probs
    return float(np.abs(got - want).max()), int((got.argmax(1) == want.argmax(1)).sum())


def export_onnx(run: str | os.PathLike | Run, out: str | os.PathLike | None = None, opset: int = 18,
                settings: Settings | None = None, check_images: int = CHECK_IMAGES) -> ExportReport:
    """Write `model.onnx` (in the run folder unless `out`), verified against torch on test images;
    a graph that disagrees is refused and nothing is written."""
    if not 14 <= opset <= 23:
        raise TrainlabError(f"--opset {opset}: use 14-23 (18 is the default)")
    settings = settings or load_settings()
    if not isinstance(run, Run):
        record = read_record(resolve_run_dir(run, settings))
        if record.status != "completed":
            how = (f"resume it first (trainlab train --resume {record.run_id})" if record.status in ("interrupted", "running")
                   else "train it again" if record.status == "failed" else "export a completed run")
            raise TrainlabError(f"run {record.run_id} is {record.live_status()}, not completed: its weights are not a "
                                f"finished model; {how}")
    r = run if isinstance(run, Run) else load_run(run, settings)
    dest = Path(out) if out else (r.run_dir / "model.onnx")
    if dest.is_dir():
        dest = dest / "model.onnx"
    if not dest.parent.is_dir():
        raise TrainlabError(f"--out {dest}: the folder {dest.parent} does not exist")
    if r.device.type != "cpu":
        raise TrainlabError("export loads the run on the CPU: load_run(..., device='cpu')")
    module = WithPreparation(r.model.float().eval(), r.preprocess, r.recipe.tta).eval()
    x, _ = r.split("test", settings)
    x = x[:check_images].cpu()
    t0 = time.perf_counter()
    try:
        fd, tmp = tempfile.mkstemp(suffix=".onnx.tmp", dir=dest.parent)
    except OSError as exc:
        raise write_error(dest, exc, 0) from None
    os.close(fd)
    tmp = Path(tmp)
    try:
        try:
            _export_graph(module, torch.from_numpy(to_graph_input(x[:2])), tmp, opset)
        except Exception as exc:  # the exporter's own errors: one line
            raise TrainlabError(f"ONNX export failed: {first_line(exc, 300)}") from None
        _add_metadata(tmp, metadata(r))
        diff, agree = verify(tmp, r, x)
        report = ExportReport(dest, len(x), diff, agree, opset, time.perf_counter() - t0)
        if not report.ok:
            raise TrainlabError(f"refused: the exported graph disagrees with torch (max |Δp| {diff:.1e}, top-1 identical "
                                f"{agree}/{len(x)}); nothing written")
        os.chmod(tmp, 0o666 & ~umask())  # like every other file trainlab writes, not mkstemp's 0600
        os.replace(tmp, dest)
        return report
    finally:
        tmp.unlink(missing_ok=True)


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

    def predict(self, inputs) -> Predictions:
        """Probabilities for dataset-format uint8 arrays (N, H, W, C), as `Run.predict` takes them."""
        x = as_batch(np.asarray(inputs), self.preprocess.shape)
        if len(x) == 0:
            return Predictions(np.zeros((0, len(self.classes))), self.classes, [], [], [], x.permute(0, 2, 3, 1).numpy())
        probs = self.session.run(None, {"images": to_graph_input(x)})[0]
        means, stds = input_stats(x, self.preprocess)
        warns = [ood_warnings(self.ood, float(p.max()), float(m), float(s)) for p, m, s in zip(probs, means, stds)]
        return Predictions(probs, self.classes, [f"[{i}]" for i in range(len(x))], warns, [], x.permute(0, 2, 3, 1).numpy())
