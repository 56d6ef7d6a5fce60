"""The app factory: `readmit api` builds the app itself for one worker, and has each of several uvicorn
workers call `create_app` (`factory=True`), which then reads its settings from the environment.

The scoring service is loaded once per worker, in `lifespan`, from `READMIT_MODEL_DIR`, else the
promoted model (`readmit promote`), else models/champion (`serving.monitoring.serving_model_dir`).
Torch runs with `READMIT_TORCH_THREADS` intra-op threads (default 1): on a small
machine several single-threaded workers beat one multi-threaded worker, and torch's default (one
thread per core in every worker) oversubscribes the CPU.

Every prediction of `/predict` and `/predict/batch` goes to the prediction log (channel "api",
`serving.prediction_log`): the route hands the scored rows to a `PredictionLogWriter`, whose thread
computes the feature rows and writes them, so the answer does not wait for the database (a bounded queue:
rows it refuses are counted in /metrics as `readmit_api_prediction_log_rows{outcome="dropped"}`).
`READMIT_API_PREDICTION_LOG` = `async` (default), `sync` (written before the answer) or `off`.

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

import anyio
import pandas as pd
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
from serving.database import get_engine
from serving.monitoring import serving_model_dir
from serving.prediction_log import PredictionLogWriter, record_features, with_context
from serving.scoring import ScoringService

log = logging.getLogger("uvicorn.error")  # uvicorn's own log: each worker's model load shows beside its start

ScorerLoader = Callable[[str], Any]
PREDICTION_LOG_VARIABLE = "READMIT_API_PREDICTION_LOG"
PREDICTION_LOG_MODES = ("async", "sync", "off")
PREDICTION_LOG_LINGER_S = 0.5  # the log's thread writes at most about twice a second: many requests per write


def prediction_log_mode(mode: Optional[str] = None) -> str:
    chosen = (mode or os.environ.get(PREDICTION_LOG_VARIABLE) or "async").strip().lower()
    if chosen not in PREDICTION_LOG_MODES:
        raise ValueError(f"{PREDICTION_LOG_VARIABLE} must be one of {', '.join(PREDICTION_LOG_MODES)}")
    return chosen


def _record_frames(parts: list) -> tuple[pd.DataFrame, Optional[pd.DataFrame]]:
    """(record, prediction row) pairs of `score_records` calls -> the log's frames, in one go."""
    return pd.DataFrame([row for _, row in parts]), record_features([record for record, _ in parts])


def _frame_frames(scorer: Any) -> Callable[[list], tuple[pd.DataFrame, Optional[pd.DataFrame]]]:
    """(canonical frame, predictions) pairs of `score_encounters` calls -> the log's frames; each call's
    features from the scorer's own `features_for` (history included), none from a scorer without it."""
    def build(parts: list) -> tuple[pd.DataFrame, Optional[pd.DataFrame]]:
        predictions = pd.concat([s if isinstance(s, pd.DataFrame) else pd.DataFrame(s) for _, s in parts],
                                ignore_index=True)
        features_for = getattr(scorer, "features_for", None)
        if features_for is None:
            return predictions, None
        return predictions, pd.concat([with_context(features_for(frame), frame) for frame, _ in parts],
                                      ignore_index=True)
    return build


def _prediction_logger(app: FastAPI, mode: str) -> Optional[PredictionLogWriter]:
    if mode == "off":
        return None
    writer = PredictionLogWriter(get_engine(), synchronous=mode == "sync", linger=PREDICTION_LOG_LINGER_S,
                                 on_rows=app.state.metrics.observe_prediction_log)

    scorer = app.state.scorer
    frames_of = _frame_frames(scorer)  # one function for the app's lifetime: calls of one kind merge

    def log_scored(inputs: Any, scored: Any) -> None:
        if isinstance(inputs, list):  # independent records (`score_records`)
            writer.submit("api", scorer.model_version, len(scored), list(zip(inputs, scored)), _record_frames)
        else:
            writer.submit("api", scorer.model_version, len(scored), [(inputs, scored)], frames_of)

    app.state.log_scored = log_scored
    return writer


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
               scorer_loader: Optional[ScorerLoader] = None, prediction_log: Optional[str] = None) -> FastAPI:
    settings = settings or Settings()
    api_settings = api_settings or ApiSettings.from_settings(settings)  # raises without a key
    loader = scorer_loader or load_scoring_service
    log_mode = prediction_log_mode(prediction_log)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        install_redaction()  # here, after uvicorn has configured its loggers
        model_dir = serving_model_dir(settings=settings)
        app.state.scorer = loader(model_dir)
        icd.titles(9)  # diagnosis titles for the reasons: built once now, not on the first request
        writer = _prediction_logger(app, log_mode)
        app.state.batcher = MicroBatcher(app.state.scorer, on_call=app.state.metrics.microbatch_rows.observe,
                                         on_scored=getattr(app.state, "log_scored", None))
        await app.state.batcher.start()
        log.info("worker %d: model %s loaded from %s (prediction log: %s)", os.getpid(),
                 app.state.scorer.model_version, model_dir, log_mode)
        batcher = app.state.batcher
        yield
        await batcher.stop()
        if writer is not None:
            await anyio.to_thread.run_sync(writer.close)  # what waits is written before the worker exits
        app.state.scorer = app.state.batcher = app.state.log_scored = None

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
