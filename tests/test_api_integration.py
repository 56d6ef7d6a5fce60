"""The API over real HTTP: `readmit api` (uvicorn) on 127.0.0.1 with the real scoring service.

The model is a tiny, untrained transformer saved in the Hugging Face format with the preprocessing
fitted on the head of the real Diabetes 130 file, so the test does not wait for a trained champion
and still runs every real step: `ScoringService.load` -> features -> encoding -> forward pass ->
calibration -> explanations. Then schemathesis fuzzes every operation in /openapi.json.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from fixtures.tiny_model import champion_preprocessing, tiny_model

from core.schema import EncounterIn
from models.calibration import Calibrator
from models.manifest import write_manifest

REPO = Path(__file__).resolve().parent.parent
KEY = "Ik3vQ8zL2wN7pR5tY0uB4sD6fG9hJ1kM"      # two fixed keys that pass the strength rule
SECOND_KEY = "Mh2nB5vC8xZ1aS4dF7gJ0kL3qW6eR9tY"
EXAMPLE = EncounterIn.model_config["json_schema_extra"]["examples"][0]


TIERS = ("Very high", "High", "Medium", "Low")


def build_tiny_model_dir(out: Path, diabetes_csv: Path, nrows: int = 2000) -> Path:
    """A complete, untrained model folder (config, weights, preprocessing, calibration, thresholds)."""

    prep = champion_preprocessing()
    out.mkdir(parents=True, exist_ok=True)
    tiny_model(prep).save_pretrained(out)
    prep.save(out)
    Calibrator("identity", {}).save(out)
    probabilities = np.linspace(0, 1, 21)
    (out / "thresholds.json").write_text(json.dumps({
        "tiers": [{"name": name, "min_risk": cut} for name, cut in zip(TIERS, (0.6, 0.4, 0.2, 0.0))],
        "risk_quantiles": {"values": probabilities.tolist(), "probabilities": probabilities.tolist()}}))
    write_manifest(out)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_api(model_dir: Path, port: int, workers: int = 1, extra_env: dict | None = None,
              log_path: Path | None = None, verbose: bool = False) -> subprocess.Popen:
    """`readmit api` on 127.0.0.1 (`verbose`: `readmit -v`, every log at DEBUG), its output to `log_path`."""
    env = {**os.environ, "READMIT_API_KEY": f"{KEY},{SECOND_KEY}", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO), **(extra_env or {})}
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    return subprocess.Popen([sys.executable, "-m", "cli.main", *(["-v"] if verbose else []), "api", "--host",
                             "127.0.0.1", "--port", str(port), "--workers", str(workers), "--model", str(model_dir)],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_ready(base: str, process: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"API exited with {process.returncode}")
        try:
            if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"API not ready after {timeout} s")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, diabetes_csv) -> Path:
    return build_tiny_model_dir(tmp_path_factory.mktemp("model") / "tiny", diabetes_csv)


@pytest.fixture(scope="module")
def live_api(tiny_model_dir, tmp_path_factory):
    port = free_port()
    log_path = tmp_path_factory.mktemp("api") / "server.log"
    process = start_api(tiny_model_dir, port, log_path=log_path)
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_ready(base, process)
        except Exception as error:
            raise RuntimeError(log_path.read_text()[-3000:]) from error
        yield base, log_path
    finally:
        stop(process)


def test_live_server_scores_the_openapi_example(live_api):
    base, _ = live_api
    schema = httpx.get(f"{base}/openapi.json").json()
    example = schema["components"]["schemas"]["EncounterRequest"]["examples"][0]
    assert httpx.post(f"{base}/predict", json=example).status_code == 401
    response = httpx.post(f"{base}/predict", json=example, headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 200, response.text
    out = response.json()
    assert 0 <= out["risk"] <= 1 and out["risk_tier"] in ("Very high", "High", "Medium", "Low")
    assert not out["reasons"]  # reasons only when asked: they never set /predict's speed
    explained = httpx.post(f"{base}/predict", params={"explain": "true"}, json=example,
                           headers={"Authorization": f"Bearer {KEY}"}).json()
    assert explained["risk"] == out["risk"]
    assert 1 <= len(explained["reasons"]) <= 3 and all(isinstance(r, str) and r for r in explained["reasons"])
    assert out["model_version"].startswith("readmit-transformer@")
    health = httpx.get(f"{base}/health").json()
    assert health["status"] == "ok" and health["model_version"] == out["model_version"]
    assert response.headers["x-request-id"]


def test_live_server_batch_explain_and_unseen_categories(live_api):
    base, _ = live_api
    headers = {"X-API-Key": SECOND_KEY}
    records = [{**EXAMPLE, "encounter_id": f"E{i}", "patient_id": f"P{i % 7}", "prior_inpatient_visits": i % 5,
                "payer": f"payer-never-seen-{i}", "admitting_specialty": "Unheard-of"} for i in range(50)]
    records[3]["discharge_disposition"] = "expired"
    batch = httpx.post(f"{base}/predict/batch", json={"encounters": records}, headers=headers, timeout=60)
    assert batch.status_code == 200, batch.text
    predictions = batch.json()["predictions"]
    assert [p["encounter_id"] for p in predictions] == [r["encounter_id"] for r in records]
    assert predictions[3]["risk"] is None and predictions[3]["ineligible_reason"] == "died"
    assert all(0 <= p["risk"] <= 1 for i, p in enumerate(predictions) if i != 3)
    # one record scored alone gets the same risk as in a batch when it has no history there
    alone = httpx.post(f"{base}/predict", json={**records[0], "patient_id": "P-alone"}, headers=headers).json()
    first_of_patient0 = predictions[0]
    assert alone["risk"] == pytest.approx(first_of_patient0["risk"], abs=1e-6)  # float32 batching
    explained = httpx.post(f"{base}/explain", json=EXAMPLE, headers=headers).json()
    points = sum(g["points"] for g in explained["groups"])
    assert explained["base_risk"] + points == pytest.approx(explained["risk"], abs=1e-4)


def test_live_server_validation_metrics_and_logs(live_api):
    base, log_path = live_api
    headers = {"Authorization": f"Bearer {KEY}"}
    bad = httpx.post(f"{base}/predict", json={**EXAMPLE, "age_years": 300, "patient_id": "PLOGCHECK77"},
                     headers=headers)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "age_years"]
    huge = httpx.post(f"{base}/predict", content=b'{"x": "' + b"a" * 5_000_000 + b'"}', headers={
        **headers, "Content-Type": "application/json"})
    assert huge.status_code == 413
    httpx.post(f"{base}/predict", json={**EXAMPLE, "patient_id": "PLOGCHECK77"}, headers=headers)
    metrics = httpx.get(f"{base}/metrics", headers=headers).text
    assert 'readmit_api_requests_total{method="POST",route="/predict",status="200"}' in metrics
    assert "readmit_api_risk_bucket" in metrics
    time.sleep(0.5)
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    assert any(line.get("path") == "/predict" and line.get("status") == 422 for line in lines)
    assert "PLOGCHECK77" not in log_path.read_text() and "300" not in json.dumps(
        [line for line in lines if line.get("status") == 422])


SCHEMATHESIS_TIMEOUT_S = 60


def schemathesis_run(base: str, report_dir: Path, seconds: int, *options: str,
                     phases: str = "examples,coverage,fuzzing") -> subprocess.CompletedProcess:
    """`schemathesis run` over every operation of /openapi.json with a valid key: examples, coverage
    (boundary and negative values of every field) and fuzzing phases within `seconds`, and every check
    but `positive_data_acceptance`: not_a_server_error, status-code, content-type, header and
    response-schema conformance, negative_data_rejection, ignored_auth, ... The API refuses some
    schema-valid records on purpose (a discharge before its admission, a stay its dates contradict)."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "schemathesis"), "run", f"{base}/openapi.json",
         "-H", f"Authorization: Bearer {KEY}", "--phases", phases, "--max-time", str(seconds),
         "--request-timeout", "20", "--checks", "all", "--exclude-checks", "positive_data_acceptance",
         "--suppress-health-check", "all", "--no-color", "--report", "junit", "--report-dir", str(report_dir),
         *options], capture_output=True, text=True, timeout=seconds + 60, cwd=report_dir)


def test_schemathesis_finds_no_failures(live_api, tmp_path):
    """Fuzz every operation with every check but positive_data_acceptance; bounded to well under 90 s.
    The longer run is `make fuzz` (benchmarks/fuzz_api.py)."""
    base, _ = live_api
    started = time.monotonic()
    result = schemathesis_run(base, tmp_path, SCHEMATHESIS_TIMEOUT_S, "--max-examples", "30",
                              "--generation-deterministic")
    elapsed = time.monotonic() - started
    print(result.stdout[-4000:])
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "Coverage" in result.stdout and "Fuzzing" in result.stdout
    assert elapsed < 90
