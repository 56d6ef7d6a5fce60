"""No identifier or clinical value in any log line, whatever fails.

Records whose every field carries a marker go to every route and fail in every way they can (bad
JSON, wrong types, NaN, a lone surrogate, NUL, unknown fields, an oversized body, wrong keys, a
scorer that raises with the patient id in its message), in-process with every logger at DEBUG and
through a real `readmit -v api` (uvicorn) subprocess on 127.0.0.1; `readmit score` gets a file
with the marker in every cell. The marker must appear in no log line and not on stderr.
"""
from __future__ import annotations

import json
import logging
import socket
from pathlib import Path
from typing import Iterator

import httpx
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from test_api import EXAMPLE, KEY_A, StandInScorer
from test_api_integration import KEY, build_tiny_model_dir, free_port, start_api, stop, wait_ready

from api.deps import get_scorer
from api.logging import configure_access_logger
from api.main import create_app
from api.security import ApiSettings
from cli.main import main
from core.schema import ENCOUNTER_FIELDS, template_columns

MARKER = "ZZMARKERZZ"
CLIENT_LOGGERS = ("httpx", "httpcore")  # the tests' own HTTP client logs its requests, URL and all
INPUT_FIELDS = [f.name for f in ENCOUNTER_FIELDS if not f.derived]


def valid_marked(i: int = 0) -> dict:
    """A valid record whose free-text fields carry the marker (ids, payer, specialty, a code)."""
    return {**EXAMPLE, "patient_id": f"{MARKER}P{i}", "encounter_id": f"{MARKER}E{i}", "payer": MARKER,
            "admitting_specialty": MARKER, "diagnoses": ["428.0", MARKER]}


def failing_requests(key: str) -> Iterator[tuple[str, str, bytes, dict]]:
    """(method, path, body, headers) for every way a request can fail, each carrying the marker."""
    good = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    every_field = {name: MARKER for name in INPUT_FIELDS}
    variants = [every_field, valid_marked(),
                {**valid_marked(1), "age_years": float("nan")}, {**valid_marked(2), "num_medications": 1e309},
                {**valid_marked(3), "patient_id": MARKER + "\ud800"}, {**valid_marked(4), "encounter_id": MARKER + "\x00"},
                {**valid_marked(5), MARKER: MARKER}, {**valid_marked(6), "admit_time": MARKER},
                {**valid_marked(7), "age_band": "[0-10)"}, {**valid_marked(8), "payer": MARKER * 10}]
    for path in ("/predict", "/explain", "/predict/batch"):
        for record in variants:
            body = {"encounters": [record, record]} if path == "/predict/batch" else record
            yield "POST", path, json.dumps(body).encode("utf-8", "surrogatepass"), good
        yield "POST", path, b'{"patient_id": "' + MARKER.encode() + b'", ', good
        yield "POST", path, json.dumps({"x": MARKER * 500_000}).encode(), good  # over the body limit
        yield "POST", f"{path}?patient={MARKER}", json.dumps(valid_marked()).encode(), good
        yield "POST", path, json.dumps(valid_marked()).encode(), {**good, "Authorization": f"Bearer {MARKER}x"}
        yield "POST", path, json.dumps(valid_marked()).encode(), {"X-API-Key": MARKER, "Content-Type": "text/plain"}
    yield "GET", "/metrics", b"", {"X-API-Key": MARKER}
    yield "GET", f"/{MARKER}", b"", good


class Capture(logging.Handler):
    """Every record, formatted with its exception and stack if it kept them."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(CLIENT_LOGGERS):
            return
        self.lines.append(logging.Formatter("%(name)s %(message)s").format(record) + repr(record.args))


@pytest.fixture()
def capture(caplog):
    """A DEBUG handler on the root logger and on every logger that does not propagate to it."""
    handler = Capture()
    configure_access_logger()  # the access log does not propagate: it gets the handler too
    loggers = [logging.getLogger()] + [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
                                       if not getattr(logging.getLogger(name), "propagate", True)]
    caplog.set_level(logging.DEBUG)
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    yield handler
    for logger, level in zip(loggers, levels):
        logger.removeHandler(handler)
        logger.setLevel(level)


def lines_with_marker(lines: list[str]) -> list[str]:
    return [line[:300] for line in lines if MARKER in line]


class RaisingScorer(StandInScorer):
    """Fails the way a bug might: the patient id in the exception's message."""

    def score_encounters(self, canonical, explain=True, top_reasons=3):
        raise KeyError(f"no history for {canonical['patient_id'].iloc[0]}")


def test_no_marker_in_any_log_in_process(capture, caplog):
    app = create_app(ApiSettings(key=KEY_A, max_body_bytes=1_000_000), scorer_loader=lambda _d: RaisingScorer())
    statuses = []
    with TestClient(app) as client:
        for method, path, body, headers in failing_requests(KEY_A):
            statuses.append(client.request(method, path, content=body, headers=headers).status_code)
        client.app.dependency_overrides[get_scorer] = RaisingScorer
        statuses.append(client.post("/explain", content=json.dumps(valid_marked()),
                                    headers={"Authorization": f"Bearer {KEY_A}"}).status_code)
    assert {500, 422, 413, 401, 404} <= set(statuses)  # the scorer's exception became a 500
    assert len(capture.lines) > len(statuses)
    assert lines_with_marker(capture.lines) == []
    assert [r.getMessage() for r in caplog.records if MARKER in r.getMessage() and
            not r.name.startswith(CLIENT_LOGGERS)] == []


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, diabetes_csv) -> Path:
    return build_tiny_model_dir(tmp_path_factory.mktemp("model") / "tiny", diabetes_csv)


def raw_http(port: int, request: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(request)
        try:
            connection.recv(4096)
        except OSError:
            pass


def test_no_marker_on_the_stderr_of_a_real_server(tiny_model, tmp_path):
    port = free_port()
    log_path = tmp_path / "server.log"
    process = start_api(tiny_model, port, log_path=log_path, verbose=True)
    base = f"http://127.0.0.1:{port}"
    statuses = []
    try:
        wait_ready(base, process)
        with httpx.Client(base_url=base, timeout=30) as client:
            for method, path, body, headers in failing_requests(KEY):
                statuses.append(client.request(method, path, content=body, headers=headers).status_code)
        marker = MARKER.encode()
        for request in (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: " + marker + b"\r\n\r\n",
                        b"GET /" + marker + b"\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
                        b"POST /predict HTTP/1.1\r\nHost: x\r\n" + marker + b"\r\n\r\n",
                        b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + marker + b"\r\n\r\n"):
            raw_http(port, request)
    finally:
        stop(process)
    log = log_path.read_text(errors="replace")
    assert 200 in statuses and 500 not in statuses and {401, 404, 413, 422} <= set(statuses)
    assert "request" in log and "DEBUG" in log  # the log was captured, at DEBUG
    assert [line[:300] for line in log.splitlines() if MARKER in line] == []


def test_readmit_score_prints_no_value(tiny_model, tmp_path, capsys, capture):
    every_cell = {name: MARKER for name in template_columns()}
    valid = {name: ("" if value is None else ";".join(value) if isinstance(value, list) else
                    str(value).lower() if isinstance(value, bool) else str(value)) for name, value in EXAMPLE.items()}
    rows = [every_cell, {**valid, "patient_id": MARKER, "encounter_id": MARKER + "1"},
            {**valid, "patient_id": MARKER, "encounter_id": MARKER + "1"},  # a duplicate id
            {**valid, "patient_id": MARKER, "encounter_id": MARKER + "2", "age_band": "[0-10)"}]
    source = tmp_path / "in.csv"
    pd.DataFrame(rows, columns=template_columns()).to_csv(source, index=False)
    with source.open("a") as handle:
        handle.write(f"{MARKER},{MARKER},\"{MARKER}\n")  # malformed row
    output = tmp_path / "out.csv"
    assert main(["score", "--input", str(source), "--output", str(output), "--model", str(tiny_model)]) == 0
    err = capsys.readouterr().err
    assert "row 1, column 'age_years': must be a number" in err and "more problems, all in" in err
    assert MARKER not in err and lines_with_marker(capture.lines) == []
    problems = pd.read_csv(tmp_path / "out.errors.csv")
    assert problems.query("row == 3")["problem"].tolist() == ["repeats the encounter_id of row 2"]
    assert problems.query("row == 5")["problem"].tolist() == ["the row is not valid CSV (unexpected end of data)"]
    assert MARKER in output.read_text()  # the user's own output file names the rows
