"""Prometheus metrics: request counts, request latency, the distribution of served risks and wrong API keys.

Each app owns its registry (tests build many apps). With several uvicorn workers, `readmit api`
sets `PROMETHEUS_MULTIPROC_DIR` and `/metrics` aggregates every worker's values.
"""
from __future__ import annotations

import os
from typing import Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RISK_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))


class ApiMetrics:
    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = None if self.multiprocess else CollectorRegistry(auto_describe=True)
        kwargs = {} if self.multiprocess else {"registry": self.registry}
        self.requests = Counter("readmit_api_requests", "HTTP requests by route and status",
                                ("method", "route", "status"), **kwargs)
        self.latency = Histogram("readmit_api_request_seconds", "Request latency (server side)",
                                 ("method", "route"), buckets=LATENCY_BUCKETS, **kwargs)
        self.risk = Histogram("readmit_api_risk", "Served 30-day readmission risks (eligible encounters)",
                              buckets=RISK_BUCKETS, **kwargs)
        self.microbatch_rows = Histogram("readmit_api_microbatch_rows", "Rows per /predict scoring call",
                                         buckets=(1, 2, 4, 8, 16, 32, 64), **kwargs)
        self.ineligible = Counter("readmit_api_ineligible", "Scored encounters that were not eligible",
                                  **kwargs)
        self.auth_failures = Counter("readmit_api_auth_failures", "Requests that presented a wrong API key",
                                     **kwargs)
        self.prediction_log = Counter("readmit_api_prediction_log_rows", "Predictions handed to the prediction "
                                      "log, by outcome: logged, dropped (queue full) or failed (write error)",
                                      ("outcome",), **kwargs)
        for outcome in ("logged", "dropped", "failed"):
            self.prediction_log.labels(outcome)  # every outcome shows, at 0, from the start
        self.auth_throttled = Counter("readmit_api_auth_throttled", "Requests refused with 429 after too many "
                                      "wrong API keys from one address", **kwargs)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def observe_prediction_log(self, outcome: str, rows: int) -> None:
        self.prediction_log.labels(outcome).inc(rows)

    def observe_risks(self, risks: Iterable[float | None]) -> None:
        for risk in risks:
            if risk is None:
                self.ineligible.inc()
            else:
                self.risk.observe(risk)

    def exposition(self) -> tuple[bytes, str]:
        if self.multiprocess:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
