"""One explanation, computed once, shown everywhere.

A demo warehouse is built by the real pipeline (`readmit etl --source synthetic`, then `readmit score
--warehouse` with the shipped model). For 200 of its scored encounters, the reasons stored in the
`predictions` table are the ones the Patient page shows (Streamlit AppTest), the ones `/explain` returns
(FastAPI TestClient, the real champion, history from the warehouse) and the ones `readmit score --input`
writes; where a path shows the attributions, they are the stored numbers too. An explanation computed
now (the page's path for a score stored without one, or by another model) gives the same numbers.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from streamlit.testing.v1 import AppTest

from api.main import create_app
from api.security import ApiSettings
from core.intake import from_warehouse_frame
from core.schema import LIST_SEPARATOR, template_columns
from core.warehouse import Warehouse
from serving import patient
from serving.scoring import ScoringService

ROOT = Path(__file__).resolve().parent.parent
CHAMPION = ROOT / "models" / "champion"
ENCOUNTERS = 200
KEY = "Xq7vN2pL9sK4mW8rT1yB6hF3jD5gC0zA"


def readmit(*args: str) -> None:
    completed = subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=ROOT, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr[-3000:]


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("consistency") / "warehouse"
    readmit("etl", "--source", "synthetic", "--rows", "1200", "--seed", "11", "--end", "2026-11-25",
            "--warehouse", str(root), "--master", "local[1]", "--driver-memory", "1g")
    readmit("score", "--warehouse", str(root), "--model", str(CHAMPION))
    return root


@pytest.fixture(scope="module")
def stored(warehouse) -> pd.DataFrame:
    """200 scored encounters spread over the warehouse (some with earlier stays), as stored."""
    table = Warehouse(str(warehouse)).query(
        "SELECT p.*, e.encounter_seq FROM predictions p JOIN encounters e USING (encounter_id) "
        "WHERE p.risk IS NOT NULL ORDER BY p.encounter_id")
    chosen = table.iloc[np.linspace(0, len(table) - 1, ENCOUNTERS).astype(int)].reset_index(drop=True)
    assert (chosen["encounter_seq"] > 1).sum() >= 20 and chosen["attributions"].notna().all()
    return chosen


def reasons_of(row) -> list[str]:
    return [row[f"reason_{k}"] for k in (1, 2, 3) if isinstance(row[f"reason_{k}"], str) and row[f"reason_{k}"]]


@pytest.fixture(scope="module")
def service(warehouse) -> ScoringService:
    return ScoringService.load(CHAMPION, warehouse=str(warehouse))


def test_the_scorer_stored_additive_explanations_of_the_shipped_model(stored, service):
    assert set(stored["model_version"]) == {service.model_version}
    for _, row in stored.iterrows():
        points = json.loads(row["attributions"])
        assert row["base_risk"] + sum(points.values()) == pytest.approx(row["risk"], abs=2e-5)  # 6 decimals each


def test_the_patient_page_shows_the_stored_reasons(stored, warehouse, tmp_path, monkeypatch):
    monkeypatch.setenv("READMIT_WAREHOUSE", str(warehouse))
    monkeypatch.setenv("READMIT_MODEL_DIR", str(CHAMPION))
    monkeypatch.setenv("READMIT_AUDIT_LOG", str(tmp_path / "audit.jsonl"))
    monkeypatch.setenv("READMIT_DATABASE_URL", f"sqlite:///{tmp_path / 'operational.sqlite3'}")
    monkeypatch.delenv("READMIT_IDLE_MINUTES", raising=False)
    computed_now = []
    monkeypatch.setattr(patient, "live_explanation", lambda *args, **kwargs: computed_now.append(args) or None)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at.switch_page("pages/2_Patient.py")
    for _, row in stored.iterrows():
        at.query_params["encounter"] = row["encounter_id"]
        at.run()
        assert not at.exception, row["encounter_id"]
        shown = [m.value for m in at.markdown if m.value.startswith("**Main reasons for this score:**")]
        assert shown, row["encounter_id"]
        lines = shown[0].split("\n")[1:]
        assert [line.split(". ", 1)[1] for line in lines] == reasons_of(row), row["encounter_id"]
        assert any("stored when model" in c.value for c in at.caption)
    assert computed_now == []  # stored explanations of the loaded model are never recomputed


def test_an_explanation_computed_now_is_the_stored_one(stored, warehouse, service):
    """The page's path when a score was stored without an explanation, or by another model version."""
    wh = Warehouse(str(warehouse))
    for _, row in stored.iloc[::10].iterrows():
        live = patient.live_explanation(service, wh, row["encounter_id"])
        assert live.risk == row["risk"] and live.base_risk == row["base_risk"]
        assert list(live.reasons) == reasons_of(row)
        assert live.points == json.loads(row["attributions"])


def _request(encounter: dict) -> dict:
    """A warehouse encounter as an API request body (the template's fields, JSON values)."""
    body = {}
    for name in template_columns():
        value = encounter.get(name)
        if isinstance(value, pd.Timestamp):
            value = value.isoformat()
        elif isinstance(value, float) and math.isnan(value):
            value = None
        elif hasattr(value, "item"):
            value = value.item()
        if value is not None:
            body[name] = value
    return body


def _encounters(warehouse: Path, ids: list[str]) -> pd.DataFrame:
    rows = Warehouse(str(warehouse)).query("SELECT * FROM encounters WHERE encounter_id IN (SELECT UNNEST(?))", [ids])
    return from_warehouse_frame(rows).set_index("encounter_id", drop=False).loc[ids]


def test_explain_returns_the_stored_reasons_and_numbers(stored, warehouse, service):
    app = create_app(ApiSettings(key=KEY), scorer_loader=lambda _model_dir: service)
    encounters = _encounters(warehouse, stored["encounter_id"].tolist())
    with TestClient(app) as client:
        for _, row in stored.iterrows():
            response = client.post("/explain", json=_request(encounters.loc[row["encounter_id"]].to_dict()),
                                   headers={"Authorization": f"Bearer {KEY}"})
            assert response.status_code == 200, response.text
            out = response.json()
            assert out["risk"] == pytest.approx(row["risk"], abs=1e-12), row["encounter_id"]
            assert out["reasons"] == reasons_of(row), row["encounter_id"]
            assert {g["group"]: g["points"] for g in out["groups"]} == json.loads(row["attributions"])
            assert out["base_risk"] == row["base_risk"]


def test_readmit_score_input_writes_the_stored_reasons(stored, warehouse, tmp_path):
    encounters = _encounters(warehouse, stored["encounter_id"].tolist())
    template = pd.DataFrame([{name: _cell(encounter.get(name)) for name in template_columns()}
                             for encounter in encounters.to_dict("records")])
    source, output = tmp_path / "discharges.csv", tmp_path / "scored.csv"
    template.to_csv(source, index=False)
    readmit("score", "--input", str(source), "--output", str(output), "--warehouse", str(warehouse),
            "--model", str(CHAMPION))
    written = pd.read_csv(output, dtype={"encounter_id": str}, keep_default_na=False).set_index("encounter_id")
    for _, row in stored.iterrows():
        line = written.loc[row["encounter_id"]]
        assert [r for r in (line["reason_1"], line["reason_2"], line["reason_3"]) if r] == reasons_of(row), \
            row["encounter_id"]
        assert float(line["risk"]) == pytest.approx(row["risk"], abs=1e-9)


def _cell(value) -> str:
    """One template cell (CSV text) from a canonical value."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return ""
    if isinstance(value, list):  # an empty list is a lone separator: known to be empty, not missing
        return LIST_SEPARATOR.join("" if v is None else str(v) for v in value) if value else LIST_SEPARATOR
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
