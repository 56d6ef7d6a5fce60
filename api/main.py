"""The app factory: `readmit api` builds the app itself for one worker, and has each of several uvicorn
workers call `create_app` (`factory=True`), which then reads its settings from the environment.

The scoring service is loaded once per worker, in `lifespan`, from `READMIT_MODEL_DIR`, else the
promoted model (`readmit promote`), else models/champion (`serving.monitoring.serving_model_dir`).
Torch runs with `READMIT_TORCH_THREADS` intra-op threads (default 1): on a small
machine several single-threaded workers beat one multi-threaded worker, and torch's default (one
thread per core in every worker) oversubscribes the CPU.

Every prediction of `/predict` and `/predict/batch` goes to the prediction log (channel "api",
`serving.prediction_log`), with the feature values the scorer built for it (not built again).
`READMIT_API_PREDICTION_LOG` chooses how:
- `sync` (default, durable): a request is answered only once its row is committed. The micro-batcher hands
  each scoring call's rows to a `PredictionLogWriter`, whose thread writes every call waiting in one
  transaction (group commit) while the next requests are scored; the answers of a call go out when its
  commit returns. On SQLite the writer commits with `synchronous = NORMAL` (WAL): a committed row
  survives a crash of the process; a power loss or OS crash may lose the last commits.
- `async`: opt-in, the answer does not wait; the thread writes about twice a second (`linger`), so a crash
  of the process loses the rows of the last half second or so: this breaks the durability promise.
- `off`: nothing is logged.
A bounded queue: rows refused are counted in /metrics as `readmit_api_prediction_log_rows{outcome="dropped"}`,
rows whose write failed as `outcome="failed"` (the answer still goes out; watch that counter).

Settings are `core.config.Settings` (API keys from the environment only); `ApiSettings` is the API's
view of them plus the `--insecure-no-auth` flag, which only `readmit api` passes (it builds the app
itself then: no variable or file can switch authentication off). No request content reaches a log:
422s never echo the input (`api.errors`), unhandled errors are logged by type and code location
(`api.logging`), and `install_redaction` filters the root and uvicorn loggers.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import Future
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
from serving.prediction_log import record_log_rows, with_context
from serving.prediction_log_writer import PredictionLogWriter
from serving.scoring import ScoringService

log = logging.getLogger("uvicorn.error")  # uvicorn's own log: each worker's model load shows beside its start

ScorerLoader = Callable[[str], Any]
PREDICTION_LOG_VARIABLE = "READMIT_API_PREDICTION_LOG"
PREDICTION_LOG_MODES = ("async", "sync", "off")
PREDICTION_LOG_LINGER_S = 0.5  # `async` only: the log's thread writes at most about twice a second
DEFAULT_PREDICTION_LOG = "sync"


def prediction_log_mode(mode: Optional[str] = None) -> str:
    chosen = (mode or os.environ.get(PREDICTION_LOG_VARIABLE) or DEFAULT_PREDICTION_LOG).strip().lower()
    if chosen not in PREDICTION_LOG_MODES:
        raise ValueError(f"{PREDICTION_LOG_VARIABLE} must be one of {', '.join(PREDICTION_LOG_MODES)}")
    return chosen


def _frame_frames(scorer: Any) -> Callable[[list], tuple[pd.DataFrame, Optional[pd.DataFrame]]]:
    """(canonical frame, predictions, features or None) of `score_encounters` calls -> the log's frames; the
    features the scorer built, else its own `features_for` (history included), none from a scorer without it."""
    def build(parts: list) -> tuple[pd.DataFrame, Optional[pd.DataFrame]]:
        predictions = pd.concat([s if isinstance(s, pd.DataFrame) else pd.DataFrame(s) for _, s, _ in parts],
                                ignore_index=True)
        features_for = getattr(scorer, "features_for", None)
        features = [f if f is not None else features_for(frame) if features_for is not None else None
                    for frame, _, f in parts]
        if any(f is None for f in features):
            return predictions, None
        return predictions, pd.concat([with_context(f, frame) for f, (frame, _, _) in zip(features, parts)],
                                      ignore_index=True)
    return build


def _prediction_logger(app: FastAPI, mode: str) -> Optional[PredictionLogWriter]:
    if mode == "off":
        return None
    writer = PredictionLogWriter(get_engine(), linger=PREDICTION_LOG_LINGER_S if mode == "async" else 0.0,
                                 on_rows=app.state.metrics.observe_prediction_log)
    scorer = app.state.scorer
    version = scorer.model_version
    frames_of = _frame_frames(scorer)  # one function for the app's lifetime: calls of one kind merge

    def records_of(parts: list) -> list:
        return record_log_rows(parts, "api", version)

    submit = writer.submit_waiting if mode == "sync" else writer.submit

    def log_scored(inputs: Any, scored: Any, features: Any = None) -> Optional[Future]:
        """Hand one scoring call to the log; a Future to answer after (`sync`), else None."""
        if isinstance(inputs, list):  # independent records (`score_records[_with_features]`)
            positions, columns = features if features is not None else ([], {})
            pending = submit("api", version, len(scored), [(inputs, scored, positions, columns)], records_of)
        else:
            pending = submit("api", version, len(scored), [(inputs, scored, features)], frames_of)
        return pending if isinstance(pending, Future) else None

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
        logging.getLogger(__name__).debug(
            "worker %d: micro-batches of up to %d rows; %s", os.getpid(), batcher.max_rows,
            "records scored alone" if batcher.independent else "history from the configured warehouse")
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
