"""Structured JSON access logs, one line per request, and no request content in any log line.

A line holds: time, request id (the client's `X-Request-ID` when it is a plain token, else a new
one; echoed in the response), method, route path, status, latency in ms, model version and the
fingerprint of the API key used. Never the query string, headers, body, patient or encounter ids,
or clinical values. The same middleware feeds the Prometheus request metrics, and turns an
unhandled error into a 500 naming the request id, logged by exception type and code location only:
an exception's text may quote a request (a KeyError of a patient id), and a traceback prints it.

`install_redaction` puts `RedactFilter` on the root logger, uvicorn's loggers and their handlers,
for what this middleware cannot catch (uvicorn's "Invalid HTTP request received.", a library's
exception log): a record keeps its message, loses its exception text and traceback.
"""
from __future__ import annotations

import json
import logging
import re
import time
import traceback
import uuid
from typing import Any, Callable

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ACCESS_LOGGER = "readmit.api.access"
ERROR_LOGGER = "readmit.api.error"
REDACTED_LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi", "fastapi", "starlette",
                    ACCESS_LOGGER, ERROR_LOGGER)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
                                "logger": record.name, "event": record.getMessage()}
        line.update(getattr(record, "access", {}) or {})
        return json.dumps(line, separators=(",", ":"))


def where(error: BaseException, frames: int = 3) -> str:
    """An exception's type and the last code locations it passed through; never its text."""
    stack = traceback.extract_tb(error.__traceback__)[-frames:]
    return type(error).__name__ + "".join(f" < {frame.name} ({frame.filename.rsplit('/', 1)[-1]}:{frame.lineno})"
                                          for frame in reversed(stack))


class RedactFilter(logging.Filter):
    """Drops a record's exception text, traceback and stack (they may quote a request), keeping its
    message plus the exception's type and code location."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None:
            record.msg, record.args = f"{record.getMessage()} [{where(error)}]", ()
        record.exc_info = record.exc_text = record.stack_info = None
        return True


def install_redaction() -> None:
    """`RedactFilter` on the root logger, uvicorn's and ours, and on each of their handlers (a filter on
    a logger does not see what its children propagate; one on a handler does)."""
    for name in REDACTED_LOGGERS:
        logger = logging.getLogger(name)
        for target in (logger, *logger.handlers):
            if not any(isinstance(f, RedactFilter) for f in target.filters):
                target.addFilter(RedactFilter())


def configure_access_logger() -> logging.Logger:
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(getattr(h, "_readmit_json", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        handler._readmit_json = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


class AccessLogMiddleware:
    """Pure ASGI middleware (no body buffering): request id, timing, access log line, metrics."""

    def __init__(self, app: ASGIApp, route_of: Callable[[str], str], model_version: Callable[[], str | None],
                 on_done: Callable[[str, str, int, float], None]) -> None:
        self.app = app
        self.route_of = route_of
        self.model_version = model_version
        self.on_done = on_done
        self.logger = logging.getLogger(ACCESS_LOGGER)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or ()).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started = False
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [(b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as error:
            if started:  # the response is under way (or an outer middleware unwinds after its own reply)
                raise
            logging.getLogger(ERROR_LOGGER).error("unhandled error in %s %s, request %s: %s", scope["method"],
                                                  self.route_of(scope["path"]), request_id, where(error))
            response = JSONResponse({"detail": "internal error", "request_id": request_id}, status_code=500)
            await response(scope, receive, send_with_id)  # not re-raised: uvicorn would print the traceback
        finally:
            seconds = time.perf_counter() - start
            route = self.route_of(scope["path"])
            self.on_done(scope["method"], route, status, seconds)
            state = scope.get("state") or {}
            self.logger.info("request", extra={"access": {
                "request_id": request_id, "method": scope["method"], "path": route, "status": status,
                "latency_ms": round(seconds * 1000, 2), "model_version": self.model_version(),
                "key_id": state.get("key_id")}})
