"""The dashboard's FastAPI app: `create_app(settings)` wires the routers, the token guard, the
one-line JSON errors and the static pages; `serve(...)` runs it under uvicorn (what
`trainlab dashboard` calls)."""

from __future__ import annotations

import ipaddress
import secrets
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from trainlab.errors import RunNotFound, TrainlabError, first_line
from trainlab.runs.files import open_runs_folder
from trainlab.settings import Settings
from trainlab.version import __version__
from trainlab.web import api_data, api_health, api_predict, api_runs, api_studies, api_train
from trainlab.web.deps import MAX_UPLOAD_BYTES, DashboardModels, DatasetCache, ReportCache, RunCache
from trainlab.web.finite_json import FiniteJSONResponse
from trainlab.web.guard import RequestGuard, allowed_hosts
from trainlab.web.jobs import JobQueue
from trainlab.web.schemas import Health

STATIC = resources.files("trainlab.web").joinpath("static")


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())[:1000], "status": status}, status_code=status)


def _field_error(exc: RequestValidationError | ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
    return f"{where or 'request'}: {err.get('msg', 'invalid')}"


def _http_error(request: Request, exc) -> JSONResponse:
    if exc.status_code == 404 and exc.detail == "Not Found":
        return _error(404, f"no such page or API route: {request.url.path[:200]}")
    return _error(exc.status_code, exc.detail)


def install_errors(app: FastAPI) -> None:
    """Every error is one line of JSON {"error": ..., "status": ...}; never a traceback."""
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, lambda r, e: _error(422, _field_error(e)))
    app.add_exception_handler(ValidationError, lambda r, e: _error(422, _field_error(e)))
    # a user error's whole line: its fix comes last (e.g. where a missing dataset can be found)
    app.add_exception_handler(RunNotFound, lambda r, e: _error(404, first_line(e, 1000)))
    app.add_exception_handler(TrainlabError, lambda r, e: _error(422, first_line(e, 1000)))
    app.add_exception_handler(Exception, lambda r, e: _error(500, f"internal error: {type(e).__name__}: {first_line(e)}"))


def install_guard(app: FastAPI, host: str, allow_hosts: list[str] | tuple[str, ...], token: str | None,
                  need_client_header: bool, printed_link: bool = True) -> None:
    """The Host allow-list, the cross-site refusal, the streamed body limit and the token (guard.py),
    in front of every route."""
    hint = ("open the link printed at start (…/?token=…) or send Authorization: Bearer <token>" if printed_link
            else "send Authorization: Bearer <token> (the token given with --token or TRAINLAB_TOKEN)")
    app.add_middleware(RequestGuard, hosts=allowed_hosts(host, allow_hosts), token=token,
                       need_client_header=need_client_header, max_body=MAX_UPLOAD_BYTES, token_hint=hint)


def create_app(settings: Settings, token: str | None = None, workers: int = 1, host: str = "127.0.0.1",
               allow_hosts: list[str] | tuple[str, ...] = (), data_roots: list[str] | tuple[str, ...] = ()) -> FastAPI:
    """The app over one runs folder and run index (created if missing, checked before serving).
    `host` is where it listens: with `allow_hosts`, the Host names it answers for (guard.py);
    `data_roots`: the folders of images a recipe sent from the page may name (beside the built-in
    datasets and the data folder)."""
    open_runs_folder(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        app.state.jobs.close()

    app = FastAPI(title="trainlab", version=__version__, lifespan=lifespan, default_response_class=FiniteJSONResponse,
                  description="Train, watch, compare and use image classifiers.")
    app.state.settings, app.state.token = settings, token
    app.state.runs, app.state.jobs = RunCache(settings), JobQueue(settings, workers)
    app.state.models = DashboardModels(settings, app.state.runs)
    app.state.data_roots, app.state.datasets = tuple(data_roots), DatasetCache(settings)
    app.state.reports = ReportCache(settings)
    install_errors(app)
    install_guard(app, host, allow_hosts, token, need_client_header=True)
    api_studies.init_state(app)
    for module in (api_runs, api_train, api_data, api_health, api_predict, api_studies):
        app.include_router(module.router)

    @app.get("/healthz", response_model=Health)
    def healthz():
        return {"ok": True, "version": __version__, "runs_dir": str(settings.runs_dir)}

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon():
        return Response(status_code=204)

    @app.get("/")
    def page():
        return FileResponse(str(STATIC.joinpath("index.html")), headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    return app


def check_port(host: str, port: int) -> None:
    """A busy port or a bad host is one line, not uvicorn's traceback."""
    import socket
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise TrainlabError(f"cannot listen on {host}:{port} ({exc.strerror}); pass another --port or --host") from None


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8000, token: str | None = None, workers: int = 1,
          on_ready=None, allow_hosts: list[str] | tuple[str, ...] = (), data_roots: list[str] | tuple[str, ...] = ()) -> None:
    """Run the dashboard under uvicorn until Ctrl-C. A host other than loopback always needs a token."""
    import uvicorn
    check_port(host, port)
    token = token or settings.token or (None if is_loopback(host) else secrets.token_urlsafe(24))
    app = create_app(settings, token, workers, host=host, allow_hosts=allow_hosts, data_roots=data_roots)
    if on_ready is not None:
        on_ready(token)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, timeout_keep_alive=30)
