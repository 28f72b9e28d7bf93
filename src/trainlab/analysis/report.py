"""`trainlab report RUN [RUN...]`: one self-contained HTML file that anyone can open, offline, with
no account: the recipe and what differs between the runs, the learning curves (interactive: the
dashboard's uPlot, inlined), test metrics per class, the confusion matrix, the highest-loss mistakes
with their images, the environment each run trained in (versions, machine, seed, threads), and each
run's model card. Nothing is fetched when it opens: scripts, styles and images are inside."""

from __future__ import annotations

import html
import json
import math
import os
from importlib import resources
from pathlib import Path

import numpy as np

from trainlab.data.images import png_data_url
from trainlab.errors import TrainlabError
from trainlab.fileio import atomic_write
from trainlab.recipes import differing_keys, flatten_recipe
from trainlab.runs.files import read_history, read_recipe
from trainlab.runs.record import read_record, resolve_run_dir
from trainlab.runs.run import load_run
from trainlab.serving.card import model_card
from trainlab.settings import Settings, load_settings

MISTAKES = 12
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"]


def _vendor(name: str) -> str:
    return resources.files("trainlab.web").joinpath("static", "vendor", name).read_text()


def inline_json(value) -> str:
    """JSON safe inside a <script> element: every '<', '>' and '&' as a \\u escape, so no text
    from a run (a recipe named `<!--<script>`) can end the element or open a comment in it."""
    text = json.dumps(value, allow_nan=False, default=lambda v: None)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _esc(v) -> str:
    return html.escape(str(v))


def _mistakes(run, settings: Settings, n: int = MISTAKES) -> list[dict]:
    import torch
    logits, y, x = run.logits("test", settings)
    loss = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    wrong = torch.nonzero(logits.argmax(1) != y).flatten()
    order = wrong[torch.argsort(loss[wrong], descending=True)][:n]
    probs = torch.softmax(logits, 1)
    return [{"index": int(i), "true": run.classes[int(y[i])], "predicted": run.classes[int(probs[i].argmax())],
             "p": float(probs[i].max()), "loss": float(loss[i]), "image": png_data_url(x[i].permute(1, 2, 0).numpy(), 84)} for i in order]


def _confusion(report) -> str:
    cm = np.asarray(report.confusion, float)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    head = "".join(f"<th>{_esc(c)}</th>" for c in report.classes)
    rows = "".join(f"<tr><th>{_esc(c)}</th>" + "".join(
        f'<td style="background:rgba(31,119,180,{norm[i, j]:.2f});color:{"#fff" if norm[i, j] > .5 else "#000"}">'
        f"{int(cm[i, j]) or ''}</td>" for j in range(len(report.classes))) + "</tr>" for i, c in enumerate(report.classes))
    return f'<table class="cm"><tr><th>true \\ predicted</th>{head}</tr>{rows}</table>'


def _per_class(report) -> str:
    rows = "".join(f"<tr><td>{_esc(c.name)}</td><td>{c.precision:.4f}</td><td>{c.recall:.4f}</td><td>{c.f1:.4f}</td>"
                   f"<td>{c.support}</td></tr>" for c in report.per_class)
    return ("<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>"
            f"{rows}</table>")


def _system_rows(system: dict | None) -> dict:
    """What the run used of the machine (system/usage.py), as the environment table shows it."""
    s = system or {}
    rows = {"peak memory": f"{s['peak_rss_mb']:.0f} MB" if s.get("peak_rss_mb") else None,
            "mean CPU use": f"{s['cpu_mean']:.2f} of {s.get('cpus_allowed', '?')} CPUs" if s.get("cpu_mean") is not None else None,
            "starved by other programs": f"{100 * s['starved_fraction']:.0f}% of the time" if s.get("starved_fraction") else None,
            "peak GPU memory": f"{s['peak_gpu_mem_mb']:.0f} MB" if s.get("peak_gpu_mem_mb") else None,
            "mean GPU use": f"{s['gpu_util_mean']:.0f}%" if s.get("gpu_util_mean") is not None else None}
    return rows


def _environment(record) -> str:
    cpu = record.cpu or {}
    items = {"trainlab": record.versions.get("trainlab"), "torch": record.versions.get("torch"),
             "python": record.versions.get("python"), "machine": record.versions.get("platform"), "device": record.device, "seed": record.seed,
             "threads": record.threads, "precision": record.precision, "training step": record.train_step, "processes": record.processes, "CPUs allowed": cpu.get("allowed"),
             "busy elsewhere": cpu.get("busy_elsewhere"), "OpenMP wait policy": cpu.get("wait_policy"),
             "started": record.started_at, "ended": record.ended_at, **_system_rows(record.system),
             "train seconds": f"{record.metrics.train_seconds:.1f}" if record.metrics and record.metrics.train_seconds else None}
    return "<table>" + "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in items.items() if v is not None) + "</table>"


def _run_section(i: int, run_dir: Path, settings: Settings) -> tuple[str, dict]:
    record = read_record(run_dir)
    history = read_history(run_dir / "history.csv") if (run_dir / "history.csv").is_file() else []
    history = [{k: v if not isinstance(v, float) or math.isfinite(v) else None for k, v in h.items()} for h in history]
    color = COLORS[i % len(COLORS)]
    parts = [f'<section><h2><span style="color:{color}">■</span> {_esc(record.run_id)} <small>{_esc(record.recipe)} · '
             f"{_esc(record.status)}</small></h2>"]
    try:
        run = load_run(run_dir, settings)
        report = run.evaluate("test", settings)
        parts += [f"<p>test accuracy <b>{report.accuracy:.4f}</b>, loss {report.loss:.4f}, macro F1 {report.macro['f1']:.4f} "
                  f"on {report.n:,} images</p>", '<div class="two"><div><h3>Per class</h3>', _per_class(report),
                  "</div><div><h3>Confusion matrix</h3>", _confusion(report), "</div></div>", "<h3>The highest-loss mistakes</h3>",
                  '<div class="gallery">' + "".join(
                      f'<figure><img src="{m["image"]}" alt="test {m["index"]}"><figcaption>test[{m["index"]}]<br>'
                      f'{_esc(m["true"])} → <b>{_esc(m["predicted"])}</b> ({m["p"]:.2f})</figcaption></figure>'
                      for m in _mistakes(run, settings)) + "</div>",
                  "<h3>Model card</h3>", f"<details><summary>README.md (as `trainlab export` writes it)</summary><pre>"
                  f"{_esc(model_card(run, record, report))}</pre></details>"]
    except TrainlabError as exc:  # a run without weights or data: its curves and settings still compare
        parts.append(f'<p class="note">no test metrics: {_esc(exc)}</p>')
    parts += ["<h3>Environment</h3>", _environment(record), "</section>"]
    return "".join(parts), {"name": record.run_id, "color": color, "history": history}


def build_report(runs: list[str | os.PathLike], settings: Settings | None = None, title: str | None = None) -> str:
    """The report's HTML for one run or several (compared)."""
    if not runs:
        raise TrainlabError("give one or more runs to report on")
    settings = settings or load_settings()
    dirs = [resolve_run_dir(r, settings) for r in runs]
    flat = [flatten_recipe(read_recipe(d).to_dict()) for d in dirs]
    keys = differing_keys(flat) if len(dirs) > 1 else [k for k in flat[0] if k not in ("description",)]
    table = ("<table><tr><th>setting</th>" + "".join(f"<th>{_esc(d.name)}</th>" for d in dirs) + "</tr>" +
             "".join(f"<tr><td>{_esc(k)}</td>" + "".join(f"<td>{_esc(f.get(k))}</td>" for f in flat) + "</tr>" for k in keys)
             + "</table>")
    sections, series = zip(*(_run_section(i, d, settings) for i, d in enumerate(dirs)))
    title = title or (f"trainlab report: {dirs[0].name}" if len(dirs) == 1 else f"trainlab report: {len(dirs)} runs compared")
    data = inline_json(list(series))
    return TEMPLATE.format(title=_esc(title), uplot_css=_vendor("uPlot.min.css"), uplot_js=_vendor("uPlot.iife.min.js"),
                           settings_title="Settings that differ" if len(dirs) > 1 else "Recipe", settings=table,
                           sections="".join(sections), data=data)


def write_report(runs: list[str | os.PathLike], out: str | os.PathLike = "report.html", settings: Settings | None = None) -> Path:
    """Write the report (atomically) and return its path."""
    out = Path(out)
    if out.is_dir():
        out = out / "report.html"
    if not out.parent.is_dir():
        raise TrainlabError(f"--out {out}: the folder {out.parent} does not exist")
    return atomic_write(out, build_report(runs, settings))


TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{uplot_css}</style>
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1180px; padding: 0 16px; color: #222; overflow-wrap: anywhere; }}
section, .two > * {{ max-width: 100%; overflow-x: auto; }}
@media (max-width: 600px) {{ body {{ margin: 10px auto; padding: 0 8px; }} }}
h1 {{ font-size: 22px; }} h2 {{ font-size: 18px; margin-top: 32px; border-top: 1px solid #ddd; padding-top: 16px; }}
small {{ color: #777; font-weight: normal; }} table {{ border-collapse: collapse; margin: 6px 0 12px; }}
td, th {{ border: 1px solid #e3e3e3; padding: 3px 8px; text-align: left; font-size: 13px; }}
.cm td {{ text-align: center; min-width: 26px; }} .two {{ display: flex; gap: 28px; flex-wrap: wrap; }}
.charts {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(min(520px, 100%), 1fr)); gap: 12px; }}
.chart {{ min-width: 0; overflow: hidden; }}
.gallery {{ display: flex; flex-wrap: wrap; gap: 10px; }} figure {{ margin: 0; font-size: 12px; text-align: center; }}
figure img {{ width: 84px; height: 84px; image-rendering: pixelated; background: #000; }}
pre {{ white-space: pre-wrap; background: #f7f7f7; padding: 10px; font-size: 12px; }} .note {{ color: #a33; }}
</style></head><body>
<h1>{title}</h1>
<h2>{settings_title}</h2>{settings}
<h2>Learning curves</h2><div class="charts" id="charts"></div>
{sections}
<p><small>Written by trainlab; self-contained (no network needed to open it).</small></p>
<script>{uplot_js}</script>
<script id="report-data" type="application/json">{data}</script>
<script>
const runs = JSON.parse(document.getElementById("report-data").textContent);
const n = Math.max(1, ...runs.map(r => r.history.length));
const x = Array.from({{length: n}}, (_, i) => i + 1);
const charts = [["val_acc", "Validation accuracy"], ["val_loss", "Validation loss"], ["acc", "Training accuracy"], ["loss", "Training loss"]]
  .map(([key, title]) => {{ const el = document.createElement("div"); el.className = "chart"; document.getElementById("charts").appendChild(el); return [key, title, el]; }});
for (const [key, title, el] of charts) {{  // sized once all four are in the grid
  const series = [{{label: "epoch"}}, ...runs.map(r => ({{label: r.name, stroke: r.color, width: 1.5, spanGaps: true, points: {{show: true, size: 6, fill: r.color}}}}))];
  const data = [x, ...runs.map(r => x.map(i => (r.history[i - 1] || {{}})[key] ?? null))];
  new uPlot({{title, width: Math.max(200, el.clientWidth || 540), height: 260, series, scales: {{x: {{time: false}}}},
             axes: [{{label: "epoch", incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]}}, {{}}]}}, data, el);
}}
</script></body></html>
"""
