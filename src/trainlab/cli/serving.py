"""`trainlab export`, `serve` and `dashboard`: a run as an ONNX file, as a predict API, and the live dashboard."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Annotated, Optional

import typer

from trainlab.cli.app import app
from trainlab.cli.common import DataDirOpt, DbOpt, JsonOpt, RunsDirOpt, fail, prepare_for_work, settings_for


@app.command()
def dashboard(host: Annotated[str, typer.Option(help="Interface to listen on; anything but loopback needs the token.")] = "127.0.0.1",
              port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
              runs_dir: RunsDirOpt = None, db: DbOpt = None, data_dir: DataDirOpt = None,
              token: Annotated[Optional[str], typer.Option(help="Access token (also TRAINLAB_TOKEN); generated for a non-loopback host.")] = None,
              workers: Annotated[int, typer.Option(min=1, max=8, help="Trainings run at the same time (others queue).")] = 1,
              allow_host: Annotated[Optional[list[str]], typer.Option(help="Another Host name to answer for (repeatable; * for any). Loopback names always are.")] = None,
              data_root: Annotated[Optional[list[Path]], typer.Option(help="A folder whose image trees recipes from the page may train on (repeatable).")] = None,
              no_browser: Annotated[bool, typer.Option("--no-browser", help="Do not open a browser.")] = False) -> None:
    """The live dashboard: train from the browser and watch every batch, compare runs, look at
    errors, draw a digit. Runs trained in a terminal show up live too."""
    prepare_for_work(server=True)
    from trainlab.web.app import is_loopback, serve
    settings = settings_for(data_dir, runs_dir, db)

    given = token or settings.token  # yours: never printed (it may be a secret from elsewhere)

    def ready(tok: str | None) -> None:
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        generated = tok if tok and not given else None
        url = f"http://{shown}:{port}/" + (f"?token={generated}" if generated else "")
        typer.echo(f"trainlab dashboard on {url}  (runs: {settings.runs_dir}; Ctrl-C stops)")
        if generated and not is_loopback(host):
            typer.echo(f"token: {generated}  (every request needs it; the link above sets it in the browser)")
        elif given:
            typer.echo(f"token: the one you gave ({_masked(given)}); open {url}?token=<token> once, or send "
                       f"Authorization: Bearer <token>")
        if not no_browser:
            import webbrowser
            threading.Timer(1.0, lambda: webbrowser.open(url)).start()

    roots = [str(p.expanduser().resolve()) for p in data_root or []]
    missing = [r for r in roots if not Path(r).is_dir()]
    if missing:
        fail(f"--data-root {missing[0]}: no such folder")
    serve(settings, host, port, token, workers, on_ready=ready, allow_hosts=[*settings.allowed_host_names, *(allow_host or [])],
          data_roots=roots)


@app.command()
def export(run: Annotated[str, typer.Argument(help="A run id or run folder.")],
           format_: Annotated[str, typer.Option("--format", help="onnx (the only format).")] = "onnx",
           out: Annotated[Optional[Path], typer.Option(help="Output file (default: model.onnx, or model-full.onnx, in the run folder).")] = None,
           opset: Annotated[int, typer.Option(help="ONNX opset, 14-23.")] = 18,
           prepare: Annotated[str, typer.Option(help="dataset: dataset-format uint8 arrays in; full: any photo in "
                                                     "(uint8 H x W x C), the whole preparation of `trainlab predict` inside.")] = "dataset",
           runs_dir: RunsDirOpt = None, data_dir: DataDirOpt = None, json_out: JsonOpt = False) -> None:
    """Export a run to ONNX: uint8 images in, probabilities out, the run's preparation inside;
    checked before it is written (against torch on 1,000 test images, or, with --prepare full,
    against `trainlab predict` on drawn and photographed images)."""
    if format_ != "onnx":
        fail(f"--format {format_!r}: use onnx")
    prepare_for_work()
    from trainlab.serving.export import export_onnx
    report = export_onnx(run, out, opset, settings_for(data_dir, runs_dir), prepare=prepare)
    if json_out:
        typer.echo(json.dumps(report.to_dict()))
    else:
        typer.echo(report.text())


@app.command()
def serve(run: Annotated[str, typer.Argument(help="A run id or run folder.")],
          onnx: Annotated[bool, typer.Option("--onnx", help="Serve through onnxruntime (exports model.onnx first if needed).")] = False,
          host: Annotated[str, typer.Option(help="Interface; anything but loopback needs the token.")] = "127.0.0.1",
          port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
          workers: Annotated[int, typer.Option(min=1, max=32, help="Server processes.")] = 1,
          token: Annotated[Optional[str], typer.Option(help="Access token (also TRAINLAB_TOKEN); generated for a non-loopback host.")] = None,
          timeout: Annotated[float, typer.Option(min=0.1, help="Seconds a predict request may take.")] = 10.0,
          allow_host: Annotated[Optional[list[str]], typer.Option(help="Another Host name to answer for (repeatable; * for any).")] = None,
          runs_dir: RunsDirOpt = None, data_dir: DataDirOpt = None) -> None:
    """Serve one run's predict API (POST /api/v1/predict, GET /api/v1/models, GET /healthz) and the Open
    Inference Protocol (KServe V2: /v2, /v2/models/RUN/infer) that tritonclient and KServe speak."""
    prepare_for_work(server=True)
    from trainlab.serving.server import serve_run
    from trainlab.web.app import is_loopback
    settings = settings_for(data_dir, runs_dir).with_(serve_run=run, serve_onnx=onnx or None, token=token,
                                                      serve_timeout=timeout)
    if allow_host:
        settings = settings.with_(allow_hosts=",".join([*settings.allowed_host_names, *allow_host]))

    given = settings.token  # --token or TRAINLAB_TOKEN: yours, never printed

    def ready(tok: str | None) -> None:
        typer.echo(f"serving {run} ({'onnxruntime' if onnx else 'torch'}, {workers} worker{'s' if workers > 1 else ''}) on "
                   f"http://{host}:{port}/api/v1/predict and /v2  (Ctrl-C stops)")
        if tok and not given and not is_loopback(host):
            typer.echo(f"token: {tok}  (send Authorization: Bearer <token>)")
        elif given:
            typer.echo(f"token: the one you gave ({_masked(given)}); send Authorization: Bearer <token>")

    serve_run(settings, host, port, workers, on_ready=ready)


def _masked(token: str) -> str:
    """A token you gave, as much of it as tells which one it is: never enough to use it."""
    return f"{token[:2]}…{len(token)} characters" if len(token) >= 12 else f"{len(token)} characters"
