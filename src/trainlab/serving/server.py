"""`trainlab serve RUN`: the predict API alone, for one run, through torch or onnxruntime.

Routes: `POST /api/v1/predict`, `GET /api/v1/models`, `GET /healthz`, and the Open Inference
Protocol under `/v2` (open_inference.py: what KServe, Triton and their clients speak). With `--workers N` uvicorn
starts N processes, each building its app from the settings (`app_from_settings`)."""

from __future__ import annotations

import secrets

from fastapi import FastAPI

from trainlab.errors import TrainlabError
from trainlab.runs.record import read_record, resolve_run_dir
from trainlab.runs.run import load_run
from trainlab.serving import open_inference
from trainlab.settings import Settings, load_settings
from trainlab.system.process_wide import export_to_environment
from trainlab.version import __version__
from trainlab.web import api_predict
from trainlab.web.app import check_port, install_errors, install_guard, is_loopback
from trainlab.web.deps import ServedModel, model_info
from trainlab.web.finite_json import FiniteJSONResponse
from trainlab.web.schemas import ServeHealth


def load_predictor(settings: Settings):
    """The served run's predictor and description; with serve_onnx its model.onnx (exported and
    verified first when the run has none)."""
    if not settings.serve_run:
        raise TrainlabError("no run to serve: give RUN (trainlab serve RUN)")
    run_dir = resolve_run_dir(settings.serve_run, settings)
    record = read_record(run_dir)
    if record.status != "completed":
        raise TrainlabError(f"run {record.run_id} is {record.status}; serve a completed run")
    if settings.serve_onnx:
        from trainlab.serving.export import OnnxRun, export_onnx
        if not (run_dir / "model.onnx").is_file():
            export_onnx(run_dir, settings=settings)
        predictor = OnnxRun(run_dir / "model.onnx")
    else:
        predictor = load_run(run_dir, settings)
    return predictor, {**model_info(record), "backend": "onnxruntime" if settings.serve_onnx else "torch"}


def create_serve_app(settings: Settings, token: str | None = None) -> FastAPI:
    predictor, info = load_predictor(settings)
    app = FastAPI(title=f"trainlab serve {info['run_id']}", version=__version__, default_response_class=FiniteJSONResponse)
    app.state.settings, app.state.models = settings, ServedModel(predictor, info)
    install_errors(app)
    # predict changes nothing, so API clients need no extra header; Host, Origin and the token are still checked
    install_guard(app, settings.serve_host or "127.0.0.1", settings.allowed_host_names, token, need_client_header=False,
                  printed_link=False)
    app.include_router(api_predict.router)
    app.include_router(open_inference.router)  # the Open Inference Protocol (KServe V2)

    @app.get("/healthz", response_model=ServeHealth)
    def healthz():
        return {"ok": True, "version": __version__, "run_id": info["run_id"], "backend": info["backend"]}

    return app


def app_from_settings() -> FastAPI:
    """uvicorn's factory for worker processes: everything comes from the environment's settings."""
    settings = load_settings()
    return create_serve_app(settings, settings.token)


def serve_run(settings: Settings, host: str = "127.0.0.1", port: int = 8000, workers: int = 1, on_ready=None) -> None:
    """Serve one run until Ctrl-C; a host other than loopback always needs a token."""
    import uvicorn
    check_port(host, port)
    token = settings.token or (None if is_loopback(host) else secrets.token_urlsafe(24))
    settings = settings.with_(token=token, serve_host=host)
    if workers == 1:
        app = create_serve_app(settings, token)  # a bad run fails here, before listening
        if on_ready is not None:
            on_ready(token)
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, timeout_keep_alive=30)
        return
    load_predictor(settings)  # fail once, here, rather than in every worker
    export_to_environment(settings)
    if on_ready is not None:
        on_ready(token)
    uvicorn.run("trainlab.serving.server:app_from_settings", factory=True, host=host, port=port, workers=workers,
                log_level="warning", access_log=False, timeout_keep_alive=30)
