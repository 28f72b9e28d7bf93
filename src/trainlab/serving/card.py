"""A model card for an exported run: `README.md` beside the model, with the Hugging Face Hub's YAML
header (`library_name`, `tags`, `datasets`, `metrics`, `model-index` with the test results) and
then what a user of the model needs: intended use, the training data and its preparation, the
training, the evaluation per class, and the limits (out-of-distribution thresholds, the input the
model expects). The same card is part of `trainlab report`."""

from __future__ import annotations

import yaml

from trainlab.metrics import EvalReport
from trainlab.runs.record import RunRecord
from trainlab.runs.run import Run

HUB_DATASETS = {"mnist": "ylecun/mnist", "fashion-mnist": "zalando-datasets/fashion_mnist", "cifar10": "uoft-cs/cifar10"}
TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}
PREPARATION = {
    "digit": "as MNIST's digits were made: light ink on dark, cropped to the ink, fitted into 20x20 keeping the aspect "
             "ratio, and placed in 28x28 with the centre of mass at the centre (the paper estimated locally, so "
             "tinted paper and uneven light drop out)",
    "fashion": "as Fashion-MNIST's images were made: light on dark, trimmed, the longer side fitted to 28 px, centred",
    "photo": "resized to the training size (bilinear, PIL's reducing gap), grey or RGB as the training data",
}


def header(run: Run, record: RunRecord, report: EvalReport) -> dict:
    name = run.recipe.data.name
    dataset = HUB_DATASETS.get(name, name.rstrip("/").split("/")[-1])
    metrics = [{"type": "accuracy", "value": round(report.accuracy, 4), "name": "Test accuracy"},
               {"type": "loss", "value": round(report.loss, 4), "name": "Test loss (cross-entropy)"},
               {"type": "f1", "value": round(report.macro["f1"], 4), "name": "Macro F1"}]
    return {"library_name": "onnx", "pipeline_tag": "image-classification",
            "tags": ["image-classification", "onnx", "trainlab", name if name in HUB_DATASETS else "image-folder"],
            "datasets": [dataset], "metrics": ["accuracy", "f1"],
            "model-index": [{"name": record.run_id, "results": [{
                "task": {"type": "image-classification", "name": "Image Classification"},
                "dataset": {"name": TITLES.get(name, dataset), "type": dataset, "split": "test"},
                "metrics": metrics}]}]}


def cell(text: str) -> str:
    """Text as one Markdown table cell: a '|' (a class named 'cat|dog') escaped, lines joined."""
    return " ".join(str(text).split()).replace("\\", "\\\\").replace("|", "\\|")


def _per_class(report: EvalReport) -> list[str]:
    rows = ["| class | precision | recall | F1 | test images |", "|---|---|---|---|---|"]
    rows += [f"| {cell(c.name)} | {c.precision:.4f} | {c.recall:.4f} | {c.f1:.4f} | {c.support} |" for c in report.per_class]
    return rows


def _limits(run: Run) -> list[str]:
    c, h, w = run.preprocess.shape
    out = [f"- The model takes {'grey' if c == 1 else 'colour'} images of {h}x{w} pixels; `model.onnx` takes them as uint8 "
           f"arrays in that format, `model-full.onnx` (`trainlab export --prepare full`) takes any photo and prepares it inside.",
           f"- It knows {len(run.classes)} classes ({', '.join(run.classes[:10])}{', ...' if len(run.classes) > 10 else ''}) and "
           "names one of them for any input, however unlike the training data."]
    if run.ood:
        o = run.ood
        out.append(f"- Out-of-distribution thresholds (calibrated on {o.n:,} validation images): a top probability below "
                   f"{o.confidence_p02:.3f} (the 2nd percentile), or a pixel mean outside {o.mean_range[0]:.2f}..{o.mean_range[1]:.2f} "
                   f"or spread outside {o.std_range[0]:.2f}..{o.std_range[1]:.2f}, marks an input as unlike the training data "
                   "(`trainlab predict` and the serve API warn; the thresholds are in the ONNX metadata).")
    return out


def model_card(run: Run, record: RunRecord, report: EvalReport) -> str:
    """The card's Markdown, YAML header first."""
    r, d = run.recipe, record.dataset
    top = yaml.safe_dump(header(run, record, report), sort_keys=False, allow_unicode=True)
    data = TITLES.get(r.data.name, f"the image folder `{r.data.name}`")
    corrections = f" with the corrections of `{d.corrections['path']}` (sha256 {d.corrections['sha256'][:12]}…)" if d and d.corrections else ""
    def layer(spec) -> str:
        units = getattr(spec, "units", None)
        return spec.type + ("" if units is None else f" {len(run.classes) if units == 'classes' else units}")
    layers = ", ".join(layer(s) for s in r.model.layers)
    val = "validated on the test set" if r.data.validation == "test" else f"{d.n_val:,} validation" if d else ""
    lines = [
        "---", top.rstrip(), "---", "",
        f"# {r.name} ({record.run_id})", "", r.description or "", "",
        "## Intended use", "",
        f"Classifying {data} images into {len(run.classes)} classes, as the lesson it comes from teaches; a teaching and "
        "experimentation model, not one for decisions about people or safety.", "",
        "## Training data and preparation", "",
        f"{data}{corrections}: {d.n_train:,} training and {d.n_test:,} test images, {val}." if d else data,
        f"Pixels are normalised with `{r.data.normalize}` (inside the exported graph). A photo is prepared "
        f"{PREPARATION.get(run.preprocess.style, PREPARATION['photo'])}.", "",
        "## Training", "",
        f"trainlab {record.versions.get('trainlab', '')}, torch {record.versions.get('torch', '')}; layers: {layers}; "
        f"{r.optimizer.name} (lr {r.optimizer.lr:g}), batch {r.batch_size}, {record.epochs} epochs, seed {record.seed}, "
        f"{record.threads or '?'} thread(s) on {record.device}"
        f"{f', trained in {record.precision} precision (inference in fp32)' if record.precision == 'bf16-mixed' else ''}. The recipe is in the ONNX metadata and `recipe.yaml`.", "",
        "## Evaluation", "",
        f"On the {report.n:,} test images: accuracy {report.accuracy:.4f}, loss {report.loss:.4f}, macro F1 "
        f"{report.macro['f1']:.4f}.", "", *_per_class(report), "",
        "## Limits", "", *_limits(run), "",
        "## How to use", "",
        "```python",
        "import json, numpy as np, onnxruntime as ort",
        'session = ort.InferenceSession("model.onnx")',
        'classes = json.loads(session.get_modelmeta().custom_metadata_map["classes"])',
        f'probs = session.run(None, {{"images": images}})[0]   # images: uint8 (N, {run.preprocess.shape[1]}, '
        f'{run.preprocess.shape[2]}{", 3" if run.preprocess.shape[0] == 3 else ""})',
        "```", ""]
    return "\n".join(lines)
