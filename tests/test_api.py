"""Unit tests of the API with FastAPI's TestClient and a stand-in scorer.

The stand-in honours the scoring service's output contract (one row per encounter, the documented
columns); the real service is exercised in tests/test_api_integration.py over real HTTP.
"""
from __future__ import annotations

import copy
import json
import logging

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from api.deps import get_scorer
from api.logging import ACCESS_LOGGER, JsonFormatter
from api.main import create_app
from api.schemas import feature_schema_hash
from api.security import ApiSettings
from core.schema import EncounterIn

KEY_A = "Xq7vN2pL9sK4mW8rT1yB6hF3jD5gC0zA"  # fixed keys of 32 random-looking characters (>= 128 bits)
KEY_B = "eR4tY7uI0oP3aS6dF9gH2jK5lZ8xC1vB"
EXAMPLE = EncounterIn.model_config["json_schema_extra"]["examples"][0]


class StandInScorer:
    """Deterministic scorer with the service's columns: risk rises with prior inpatient stays; reasons
    only with `explain`. `calls` holds every call's input as a canonical frame."""
    model_version = "stand-in-1"
    warehouse = None

    def __init__(self):
        self.calls = []

    def score_encounters(self, canonical: pd.DataFrame, explain: bool = True, top_reasons: int = 3) -> pd.DataFrame:
        self.calls.append(canonical.copy())
        out = canonical[["encounter_id", "patient_id"]].copy()
        ineligible = canonical["discharge_disposition"].map({"expired": "died", "hospice": "hospice"})
        prior = canonical["prior_inpatient_visits"].fillna(0).astype(float)
        risk = (0.05 + 0.1 * prior).clip(upper=0.95)
        out["eligible"] = ineligible.isna()
        out["ineligible_reason"] = ineligible.where(ineligible.notna(), None)
        out["risk"] = risk.where(out["eligible"], None)
        out["risk_tier"] = ["high" if r and r > 0.2 else "low" if r is not None else None for r in out["risk"]]
        out["risk_percentile"] = out["risk"] * 100
        out["reason_1"], out["reason_2"], out["reason_3"] = ("inpatient stays in the past year", "age", None) \
            if explain else (None, None, None)
        out["attributions"] = json.dumps([{"feature": "prior_inpatient_visits", "label": "inpatient stays",
                                           "contribution": 0.1}])
        out["base_risk"] = 0.11
        out["model_version"] = self.model_version
        return out

    def score_records(self, records: list[dict]) -> list[dict]:
        return self.score_encounters(pd.DataFrame(records), explain=False).to_dict(orient="records")

    def explain_one(self, canonical: pd.DataFrame) -> dict:
        return {"encounter_id": canonical["encounter_id"].iloc[-1], "risk": 0.25, "base_risk": 0.11,
                "groups": [{"group": "prior_use", "label": "earlier visits", "points": 0.1,
                            "sentence": "2 inpatient stays in the past year"},
                           {"group": "age", "label": "age", "points": 0.04, "sentence": "age 67"}]}


def make_app(keys: str = KEY_A, scorer: StandInScorer | None = None, **settings):
    scorer = scorer or StandInScorer()
    app = create_app(ApiSettings(key=keys, **settings), scorer_loader=lambda _dir: scorer)
    return app, scorer


@pytest.fixture()
def client():
    app, scorer = make_app()
    with TestClient(app) as c:
        c.scorer = scorer
        yield c


def auth(key: str = KEY_A) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# --- authentication --------------------------------------------------------------------------

def test_anonymous_calls_get_401_except_health_ready_docs(client):
    for method, path in (("post", "/predict"), ("post", "/predict/batch"), ("post", "/explain"), ("get", "/metrics")):
        response = getattr(client, method)(path, json=EXAMPLE) if method == "post" else client.get(path)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"] == "Bearer"
    for path in ("/health", "/ready", "/docs", "/openapi.json"):
        assert client.get(path).status_code == 200, path


def test_bearer_and_x_api_key_headers_both_work(client):
    assert client.post("/predict", json=EXAMPLE, headers=auth()).status_code == 200
    assert client.post("/predict", json=EXAMPLE, headers={"X-API-Key": KEY_A}).status_code == 200
    assert client.post("/predict", json=EXAMPLE, headers=auth(KEY_B)).status_code == 401
    assert client.post("/predict", json=EXAMPLE, headers={"X-API-Key": KEY_A + "x"}).status_code == 401
    assert client.post("/predict", json=EXAMPLE, headers={"Authorization": f"Basic {KEY_A}"}).status_code == 401


def test_key_rotation_two_keys_accepted_then_old_removed():
    app, _ = make_app(keys=f"{KEY_A}, {KEY_B}")
    with TestClient(app) as c:
        assert c.post("/predict", json=EXAMPLE, headers=auth(KEY_A)).status_code == 200
        assert c.post("/predict", json=EXAMPLE, headers={"X-API-Key": KEY_B}).status_code == 200
    app, _ = make_app(keys=KEY_B)
    with TestClient(app) as c:
        assert c.post("/predict", json=EXAMPLE, headers=auth(KEY_A)).status_code == 401
        assert c.post("/predict", json=EXAMPLE, headers=auth(KEY_B)).status_code == 200


def test_insecure_mode_needs_no_key():
    app = create_app(ApiSettings(insecure_no_auth=True), scorer_loader=lambda _d: StandInScorer())
    with TestClient(app) as c:
        assert c.post("/predict", json=EXAMPLE).status_code == 200


# --- scoring routes --------------------------------------------------------------------------

def test_openapi_example_is_accepted_as_is(client):
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    name = body["$ref"].split("/")[-1]
    example = schema["components"]["schemas"][name]["examples"][0]
    response = client.post("/predict", json=example, headers=auth())
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["encounter_id"] == example["encounter_id"]
    assert out["risk"] == pytest.approx(0.25) and out["risk_tier"] == "high"
    assert out["reasons"] == [] and out["model_version"] == "stand-in-1"  # reasons only when asked for
    assert "patient_id" not in out
    # the scorer got one canonical row with the request's values
    frame = client.scorer.calls[-1]
    assert list(frame["encounter_id"]) == ["E0004567"] and frame["source"].iloc[0] == "discharges"
    assert list(frame["diagnoses"].iloc[0]) == ["428.0", "250.02", "401.9"]
    explained = client.post("/predict?explain=true", json=example, headers=auth()).json()
    assert explained["reasons"] == ["inpatient stays in the past year", "age"]
    assert explained["risk"] == out["risk"]


def test_openapi_documents_both_key_schemes(client):
    schemes = client.get("/openapi.json").json()["components"]["securitySchemes"]
    assert {s["type"] for s in schemes.values()} == {"http", "apiKey"}


def test_explain_returns_full_attribution(client):
    out = client.post("/explain", json=EXAMPLE, headers=auth()).json()
    assert [g["group"] for g in out["groups"]] == ["prior_use", "age"]
    assert out["groups"][0]["points"] == pytest.approx(0.1) and out["base_risk"] == pytest.approx(0.11)


def test_ineligible_encounter_has_null_risk(client):
    out = client.post("/predict", json={**EXAMPLE, "discharge_disposition": "expired"}, headers=auth()).json()
    assert out["risk"] is None and out["eligible"] is False and out["ineligible_reason"] == "died"


def test_free_text_categories_accept_unseen_values(client):
    body = {**EXAMPLE, "payer": "Some New Payer", "admitting_specialty": "Space-Medicine"}
    assert client.post("/predict", json=body, headers=auth()).status_code == 200
    assert client.scorer.calls[-1]["payer"].iloc[0] == "Some New Payer"  # collapsed to other by core.encoding


def test_batch_scores_in_request_order(client):
    records = []
    for i in range(5):
        record = copy.deepcopy(EXAMPLE)
        record.update(encounter_id=f"E{i}", patient_id=f"P{i}", prior_inpatient_visits=i)
        records.append(record)
    out = client.post("/predict/batch", json={"encounters": records}, headers=auth()).json()
    assert out["count"] == 5 and [p["encounter_id"] for p in out["predictions"]] == [f"E{i}" for i in range(5)]
    assert [p["risk"] for p in out["predictions"]] == pytest.approx([0.05, 0.15, 0.25, 0.35, 0.45])


def test_batch_limit_is_configurable_and_enforced():
    app, _ = make_app(max_batch=3)
    records = [{**EXAMPLE, "encounter_id": f"E{i}"} for i in range(4)]
    with TestClient(app) as c:
        assert c.post("/predict/batch", json={"encounters": records[:3]}, headers=auth()).status_code == 200
        response = c.post("/predict/batch", json={"encounters": records}, headers=auth())
        assert response.status_code == 413
        assert "READMIT_API_MAX_BATCH" in response.json()["detail"]
        assert c.post("/predict/batch", json={"encounters": []}, headers=auth()).status_code == 422
        duplicate = c.post("/predict/batch", json={"encounters": records[:1] * 2}, headers=auth())
        assert duplicate.status_code == 422
        assert duplicate.json()["detail"] == [{"type": "row_rule", "loc": ["body", "encounters", 1, "encounter_id"],
                                               "msg": "repeats the encounter_id of row 1"}]


def test_body_over_limit_gets_413():
    app, _ = make_app(max_body_bytes=2048)
    big = {**EXAMPLE, "diagnoses": ["428.0"] + ["x" * 40] * 49}
    with TestClient(app) as c:
        assert c.post("/predict", json=EXAMPLE, headers=auth()).status_code == 200
        assert c.post("/predict", json=big, headers=auth()).status_code == 413


# --- validation: field-level 422 -------------------------------------------------------------

def errors_of(client, body):
    response = client.post("/predict", json=body, headers=auth())
    assert response.status_code == 422, response.text
    return {tuple(e["loc"][1:]): e["msg"] for e in response.json()["detail"]}


def test_422_wrong_types(client):
    errors = errors_of(client, {**EXAMPLE, "age_years": "old", "num_medications": 2.5, "diagnoses": "428.0"})
    assert errors[("age_years",)] == "must be a number"
    assert errors[("num_medications",)] == "must be a whole number"
    assert errors[("diagnoses",)] == "must be a list of texts"
    errors = errors_of(client, {**EXAMPLE, "readmitted_30d": 0, "sex": 1, "admit_time": "yesterday"})
    assert errors[("readmitted_30d",)] == "must be true or false"  # no silent 0 -> false
    assert errors[("sex",)] == "must be text"
    assert errors[("admit_time",)] == "must be a date-time (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS)"


def test_422_impossible_values_use_schema_bounds(client):
    errors = errors_of(client, {**EXAMPLE, "age_years": 150, "length_of_stay_days": -1, "icd_version": 8})
    assert errors[("age_years",)] == "must be between 0 and 120"
    assert errors[("length_of_stay_days",)] == "must be between 0 and 365"
    assert errors[("icd_version",)] == "must be between 9 and 10"
    errors = errors_of(client, {**EXAMPLE, "discharge_time": "2026-11-19T00:00:00"})
    assert errors == {("discharge_time",): "must not be before admit_time"}


def test_422_missing_required_fields_and_unknown_fields(client):
    body = {k: v for k, v in EXAMPLE.items() if k not in ("patient_id", "sex", "diagnoses")}
    body["favourite_colour"] = "blue"
    errors = errors_of(client, body)
    for name in ("patient_id", "sex", "diagnoses"):
        assert errors[(name,)] == "a value is required"
    assert errors[("favourite_colour",)] == "unknown field"


def test_422_never_echoes_the_input(client):
    response = client.post("/predict", json={**EXAMPLE, "age_years": 150, "payer": "P" * 70}, headers=auth())
    assert response.status_code == 422
    assert all(set(error) == {"type", "loc", "msg"} for error in response.json()["detail"])
    assert "150" not in response.text and "PPPP" not in response.text


def test_422_closed_categories_reject_values_outside_the_canonical_list(client):
    errors = errors_of(client, {**EXAMPLE, "sex": "F", "admission_type": "walk-in"})
    assert errors[("sex",)] == "must be one of: Female, Male"
    assert "emergency" in errors[("admission_type",)]


def test_422_principal_diagnosis_required(client):
    errors = errors_of(client, {**EXAMPLE, "diagnoses": [" "]})
    assert "principal diagnosis" in errors[("diagnoses",)]


def test_unhandled_error_is_a_500_with_the_request_id_and_no_details(client):
    class Broken(StandInScorer):
        def score_encounters(self, canonical, explain=True, top_reasons=3):
            raise KeyError(canonical["patient_id"].iloc[0])

    client.app.dependency_overrides[get_scorer] = Broken
    try:
        response = client.post("/explain", json={**EXAMPLE, "patient_id": "PBROKEN1"}, headers=auth())
    finally:
        client.app.dependency_overrides.clear()
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error", "request_id": response.headers["x-request-id"]}


# --- operations --------------------------------------------------------------------------------

def test_health_and_ready_are_open_and_report_the_model(client):
    health = client.get("/health").json()
    assert health == {"status": "ok", "model_version": "stand-in-1", "feature_schema_hash": feature_schema_hash(),
                      "schema_version": "1.0", "feature_spec_version": health["feature_spec_version"]}
    assert client.get("/ready").json() == {"ready": True, "model_version": "stand-in-1"}


def test_ready_is_503_and_scoring_503_without_a_model():
    app, _ = make_app()
    with TestClient(app) as c:
        c.app.state.scorer = c.app.state.batcher = None
        assert c.get("/ready").status_code == 503
        assert c.get("/health").json()["status"] == "loading"
        assert c.post("/predict", json=EXAMPLE, headers=auth()).status_code == 503


def test_dependency_override_swaps_the_scorer(client):
    other = StandInScorer()
    other.model_version = "override-2"
    client.app.dependency_overrides[get_scorer] = lambda: other
    assert client.post("/explain", json=EXAMPLE, headers=auth()).json()["model_version"] == "override-2"
    client.app.dependency_overrides.clear()


def test_metrics_expose_requests_latency_and_risk(client):
    client.post("/predict", json={**EXAMPLE, "prior_inpatient_visits": 3}, headers=auth())
    client.post("/predict", json={**EXAMPLE, "age_years": -3}, headers=auth())
    text = client.get("/metrics", headers=auth()).text
    assert 'readmit_api_requests_total{method="POST",route="/predict",status="200"} 1.0' in text
    assert 'readmit_api_requests_total{method="POST",route="/predict",status="422"} 1.0' in text
    assert 'readmit_api_request_seconds_bucket{le="0.05",method="POST",route="/predict"}' in text
    assert 'readmit_api_risk_bucket{le="0.3"} 0.0' in text and 'readmit_api_risk_bucket{le="0.4"} 1.0' in text
    assert "readmit_api_risk_count 1.0" in text
    client.get("/no/such/P000123")
    assert "P000123" not in client.get("/metrics", headers=auth()).text  # unknown paths share one label


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


def test_access_logs_are_json_with_request_id_and_no_patient_data(client, caplog):
    capture = _Capture()
    logging.getLogger(ACCESS_LOGGER).addHandler(capture)
    caplog.set_level(logging.DEBUG)
    secret = {**EXAMPLE, "patient_id": "PSECRET0042", "encounter_id": "ESECRET0099", "age_years": 87.25,
              "age_band": "[80-90)",
              "diagnoses": ["V58.67", "250.93"], "payer": "SECRETPAYER"}
    try:
        client.post("/predict", json=secret, headers={**auth(), "X-Request-ID": "req-123"})
        client.post("/predict", json={**secret, "age_years": 250}, headers=auth())  # a 422 echoes input to
        client.post("/explain?patient=PSECRET0042", json=secret, headers=auth())  # the client, never the log
        client.post("/predict/batch", json={"encounters": [secret]}, headers=auth())
    finally:
        logging.getLogger(ACCESS_LOGGER).removeHandler(capture)
    assert len(capture.records) == 4
    lines = [json.loads(JsonFormatter().format(r)) for r in capture.records]
    assert lines[0]["request_id"] == "req-123" and lines[0]["status"] == 200
    assert [line["status"] for line in lines] == [200, 422, 200, 200]
    for line in lines:
        assert {"request_id", "method", "path", "status", "latency_ms", "model_version"} <= set(line)
        assert line["model_version"] == "stand-in-1"
    server_side = [r for r in caplog.records if not r.name.startswith("httpx")]  # httpx = the test's client
    everything = "\n".join(JsonFormatter().format(r) for r in capture.records + server_side)
    everything += "\n".join(r.getMessage() for r in server_side)
    for value in ("PSECRET0042", "ESECRET0099", "87.25", "V58.67", "250.93", "SECRETPAYER", "250"):
        assert value not in everything.replace('"status":250', ""), value


def test_response_carries_request_id(client):
    response = client.get("/health", headers={"X-Request-ID": "abc-1"})
    assert response.headers["x-request-id"] == "abc-1"
    generated = client.get("/health", headers={"X-Request-ID": "bad id with spaces"}).headers["x-request-id"]
    assert generated != "bad id with spaces" and len(generated) == 32
