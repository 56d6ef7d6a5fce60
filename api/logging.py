"""Structured JSON access logs, one line per request.

A line holds: time, request id (the client's `X-Request-ID` when it is a plain token, else a new
one; echoed in the response), method, route path, status, latency in ms, model version and the
fingerprint of the API key used. Never the query string, headers, body, patient or encounter ids,
or clinical values. The same middleware feeds the Prometheus request metrics.
"""
from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any, Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

ACCESS_LOGGER = "readmit.api.access"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
                                "logger": record.name, "event": record.getMessage()}
        line.update(getattr(record, "access", {}) or {})
        return json.dumps(line, separators=(",", ":"))


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
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [(b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - start
            route = self.route_of(scope["path"])
            self.on_done(scope["method"], route, status, seconds)
            state = scope.get("state") or {}
            self.logger.info("request", extra={"access": {
                "request_id": request_id, "method": scope["method"], "path": route, "status": status,
                "latency_ms": round(seconds * 1000, 2), "model_version": self.model_version(),
                "key_id": state.get("key_id")}})
