"""The app factory: `readmit api` builds the app itself for one worker, and has each of several uvicorn
workers call `create_app` (`factory=True`), which then reads its settings from the environment.

The scoring service is loaded once per worker, in `lifespan`, from `READMIT_MODEL_DIR` (default
models/champion). Torch runs with `READMIT_TORCH_THREADS` intra-op threads (default 1): on a small
machine several single-threaded workers beat one multi-threaded worker, and torch's default (one
thread per core in every worker) oversubscribes the CPU.

Settings are `core.config.Settings` (API keys from the environment only); `ApiSettings` is the API's
view of them plus the `--insecure-no-auth` flag, which only `readmit api` passes (it builds the app
itself then: no variable or file can switch authentication off). No request content reaches a log:
422s never echo the input (`api.errors`), unhandled errors are logged by type and code location
(`api.logging`), and `install_redaction` filters the root and uvicorn loggers.
"""
from __future__ import annotations

import logging
import os
from contextlib import asynccontextmanager
from typing import Any, Callable, Optional

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError

from api.deps import MicroBatcher
from api.errors import invalid_request
from api.logging import AccessLogMiddleware, configure_access_logger, install_redaction
from api.metrics import ApiMetrics
from api.routes import health, metrics, predict
from api.security import ApiSettings, AuthThrottle
from core import icd
from core.config import Settings
from core.warehouse import Warehouse
from serving.scoring import ScoringService

log = logging.getLogger("uvicorn.error")  # uvicorn's own log: each worker's model load shows beside its start

ScorerLoader = Callable[[str], Any]


def load_scoring_service(model_dir: str) -> Any:
    """The model, loaded once per worker; torch threads come from READMIT_TORCH_THREADS. When the
    configured warehouse holds encounters, every request takes its patient's history from it, as the
    batch scorer does, so the API gives the same risk and reasons as the worklist."""
    root = Settings().warehouse
    history = root if Warehouse(root).has_table("encounters") else None
    return ScoringService.load(model_dir, warehouse=history)


def _paths(router: Any) -> set[str]:
    return {route.path for route in router.routes if hasattr(route, "path")}


def create_app(api_settings: Optional[ApiSettings] = None, settings: Optional[Settings] = None,
               scorer_loader: Optional[ScorerLoader] = None) -> FastAPI:
    settings = settings or Settings()
    api_settings = api_settings or ApiSettings.from_settings(settings)  # raises without a key
    loader = scorer_loader or load_scoring_service

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        install_redaction()  # here, after uvicorn has configured its loggers
        app.state.scorer = loader(settings.model_dir)
        icd.titles(9)  # diagnosis titles for the reasons: built once now, not on the first request
        app.state.batcher = MicroBatcher(app.state.scorer, on_call=app.state.metrics.microbatch_rows.observe)
        await app.state.batcher.start()
        log.info("worker %d: model %s loaded from %s", os.getpid(), app.state.scorer.model_version, settings.model_dir)
        batcher = app.state.batcher
        yield
        await batcher.stop()
        app.state.scorer = app.state.batcher = None

    app = FastAPI(title="Readmission risk API", version="1.0",
                  description="30-day hospital readmission risk for one discharge or a batch. "
                              "Send `Authorization: Bearer KEY` or `X-API-Key: KEY`.",
                  lifespan=lifespan, max_body_size=api_settings.max_body_bytes)
    app.state.api_settings = api_settings
    app.state.scorer = None
    app.state.metrics = ApiMetrics()
    app.state.auth_throttle = AuthThrottle()
    app.add_exception_handler(RequestValidationError, invalid_request)
    for module in (health, predict, metrics):
        app.include_router(module.router)

    known = {path for module in (health, predict, metrics) for path in _paths(module.router)}
    known |= {p for p in (app.docs_url, app.redoc_url, app.openapi_url, app.swagger_ui_oauth2_redirect_url) if p}

    def route_of(path: str) -> str:  # bounded label set for logs and metrics
        return path if path in known else "unmatched"

    configure_access_logger()
    app.add_middleware(AccessLogMiddleware, route_of=route_of,
                       model_version=lambda: getattr(app.state.scorer, "model_version", None),
                       on_done=app.state.metrics.observe_request)
    return app
