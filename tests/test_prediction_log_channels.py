"""Every channel logs what it serves (issue 12): the API's /predict and /predict/batch, dashboard uploads
and `readmit score` files land in the prediction log (SQLite) with the model version and the feature rows,
and no identifier reaches the application log. Also: the API and `readmit score` serve the promoted model.

Real parts: the shipped model, a migrated SQLite database, FastAPI's TestClient running the app's lifespan
(so the log's background thread starts, and is flushed when the app stops).
"""
from __future__ import annotations

import logging
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from api.main import create_app
from api.security import ApiSettings
from cli import main as cli_main
from core import synthetic
from core.config import Settings, get_settings
from core.schema import EncounterIn
from serving import monitoring, upload
from serving.database import get_engine
from serving.prediction_log import read_log
from serving.prediction_log_writer import PredictionLogWriter
from serving.scoring import ScoringService

REPO = Path(__file__).resolve().parents[1]
CHAMPION = REPO / "models" / "champion"
KEY = "Xq7vN2pL9sK4mW8rT1yB6hF3jD5gC0zA"
EXAMPLE = EncounterIn.model_config["json_schema_extra"]["examples"][0]


@pytest.fixture(scope="module")
def service() -> ScoringService:
    return ScoringService.load(CHAMPION, explain=True)


@pytest.fixture
def engine(tmp_path, monkeypatch) -> Iterator[Engine]:
    """A fresh migrated SQLite database, also what `get_engine()` (the API, the CLI) opens."""
    monkeypatch.setenv("READMIT_DATABASE_URL", f"sqlite:///{tmp_path / 'ops.sqlite3'}")
    get_settings.cache_clear()  # the settings are cached per process
    yield get_engine()
    monkeypatch.undo()
    get_settings.cache_clear()


def logged(engine: Engine) -> pd.DataFrame:
    parts = list(read_log(engine))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["channel"])


def records(n: int, prefix: str) -> list[dict]:
    out = []
    for i in range(n):
        record = dict(EXAMPLE, encounter_id=f"{prefix}E{i:05d}", patient_id=f"{prefix}P{i:05d}",
                      prior_inpatient_visits=i % 4)
        out.append(record)
    return out


def assert_no_identifier(messages: list[str], ids) -> None:
    text = "\n".join(messages)
    leaked = [i for i in ids if i and str(i) in text]
    assert not leaked, f"{len(leaked)} identifiers in the application log"


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_api_predict_and_batch_are_logged_with_model_version_and_no_id_in_the_log(mode, service, engine, caplog):
    app = create_app(ApiSettings(key=KEY), settings=Settings(model_dir=str(CHAMPION)),
                     scorer_loader=lambda _dir: service, prediction_log=mode)
    singles, batch = records(3, "S"), records(4, "B")
    headers = {"X-API-Key": KEY}
    with caplog.at_level(logging.DEBUG), TestClient(app) as client:
        for record in singles:
            assert client.post("/predict", json=record, headers=headers).status_code == 200
        assert client.post("/predict", params={"explain": "true"}, json=singles[0], headers=headers).status_code == 200
        assert client.post("/predict/batch", json={"encounters": batch}, headers=headers).status_code == 200
        # stopping the app (leaving the block) writes what waits; the scrape comes first
        if mode == "sync":
            metrics = client.get("/metrics", headers=headers).text
    log = logged(engine)
    assert len(log) == 3 + 1 + 4
    assert set(log["channel"]) == {"api"} and set(log["model_version"]) == {service.model_version}
    assert set(log["encounter_id"]) == {r["encounter_id"] for r in singles + batch}
    assert set(log["source"]) == {"discharges"}
    assert log["risk"].notna().all() and log["_discharge_time"].notna().all()
    by_id = log.drop_duplicates("encounter_id").set_index("encounter_id")
    for record in singles + batch:  # the feature rows the model saw
        assert by_id.loc[record["encounter_id"], "prior_inpatient_visits"] == record["prior_inpatient_visits"]
    if mode == "sync":
        assert 'readmit_api_prediction_log_rows_total{outcome="logged"} 8.0' in metrics
        assert 'readmit_api_prediction_log_rows_total{outcome="dropped"} 0.0' in metrics
    assert_no_identifier([r.getMessage() for r in caplog.records],
                         [r[k] for r in singles + batch for k in ("encounter_id", "patient_id")])


def test_a_predict_answer_comes_only_once_its_row_is_in_the_database(service, engine, monkeypatch):
    """The default mode is durable: each answer's row is readable as soon as the answer arrives (read at once,
    no flush, no sleep), also for concurrent clients whose requests share micro-batches and commits."""
    monkeypatch.delenv("READMIT_API_PREDICTION_LOG", raising=False)
    app = create_app(ApiSettings(key=KEY), settings=Settings(model_dir=str(CHAMPION)),
                     scorer_loader=lambda _dir: service)
    headers = {"X-API-Key": KEY}
    with TestClient(app) as client:
        def answered_then_logged(record: dict) -> bool:
            assert client.post("/predict", json=record, headers=headers).status_code == 200
            return record["encounter_id"] in set(logged(engine)["encounter_id"])

        assert answered_then_logged(records(1, "D")[0])
        with ThreadPoolExecutor(8) as pool:  # concurrent clients
            assert all(pool.map(answered_then_logged, records(24, "C")))
        batch = records(5, "K")
        assert client.post("/predict/batch", json={"encounters": batch}, headers=headers).status_code == 200
        assert {r["encounter_id"] for r in batch} <= set(logged(engine)["encounter_id"])
        assert client.post("/predict", params={"explain": "true"}, json=records(1, "X")[0],
                           headers=headers).status_code == 200
        log = logged(engine)
        assert "XE00000" in set(log["encounter_id"])
        metrics = client.get("/metrics", headers=headers).text
    assert len(log) == 1 + 24 + 5 + 1 and log["encounter_id"].is_unique
    assert log["risk"].notna().all() and log["_discharge_time"].notna().all()
    assert 'readmit_api_prediction_log_rows_total{outcome="logged"} 31.0' in metrics


def test_api_logging_can_be_switched_off(service, engine):
    app = create_app(ApiSettings(key=KEY), scorer_loader=lambda _dir: service, prediction_log="off")
    with TestClient(app) as client:
        assert client.post("/predict", json=records(1, "O")[0], headers={"X-API-Key": KEY}).status_code == 200
    assert len(logged(engine)) == 0


def test_a_full_log_queue_refuses_and_counts_never_silently(engine, caplog):
    counted: list[tuple[str, int]] = []
    writer = PredictionLogWriter(engine, max_pending_rows=3, on_rows=lambda outcome, n: counted.append((outcome, n)))
    gate = threading.Event()

    def frames(parts):
        gate.wait(10)
        return pd.DataFrame(parts), None

    rows = [{"encounter_id": "X1", "patient_id": "Y1", "risk": 0.1, "risk_tier": "Low"},
            {"encounter_id": "X2", "patient_id": "Y2", "risk": 0.2, "risk_tier": "Low"}]
    with caplog.at_level(logging.WARNING):
        assert writer.submit("api", "m@1", 2, rows, frames)          # waits (the gate holds the thread)
        assert not writer.submit("api", "m@1", 2, rows, frames)      # 4 > 3: refused and counted
    gate.set()
    assert writer.flush(10)
    writer.close()
    assert writer.counts == {"logged": 2, "dropped": 2, "failed": 0}
    assert ("dropped", 2) in counted and ("logged", 2) in counted
    assert any("2 rows dropped" in r.getMessage() for r in caplog.records)
    assert_no_identifier([r.getMessage() for r in caplog.records], ["X1", "X2", "Y1", "Y2"])


def test_a_failed_write_is_counted_and_logged_by_type_only(engine, caplog):
    writer = PredictionLogWriter(engine)

    def broken(parts):
        raise ValueError("PAT-SECRET-1")

    with caplog.at_level(logging.ERROR):
        writer.submit("api", "m@1", 5, [None] * 5, broken)
        assert writer.flush(10)
    writer.close()
    assert writer.counts["failed"] == 5
    assert "PAT-SECRET-1" not in caplog.text and "ValueError" in caplog.text


def test_waiting_calls_of_one_kind_are_merged_into_one_write(engine):
    calls: list[int] = []
    gate = threading.Event()

    def frames(parts):
        gate.wait(10)
        calls.append(len(parts))
        return pd.DataFrame(parts), None

    writer = PredictionLogWriter(engine)
    for i in range(5):
        row = {"encounter_id": f"M{i}", "patient_id": f"N{i}", "risk": 0.1, "risk_tier": "Low"}
        writer.submit("api", "m@1", 1, [row], frames)
    gate.set()
    assert writer.flush(10)
    writer.close()
    assert sum(calls) == 5 and len(calls) <= 2, "the first call may start alone; the rest wait and merge"
    assert writer.counts["logged"] == 5 and len(logged(engine)) == 5


def test_uploaded_rows_are_logged_with_channel_upload(service, engine, tmp_path, caplog):
    path = tmp_path / "discharges.csv"
    synthetic.write_template_csv(path, rows=60, seed=5)
    data = path.read_bytes()
    with caplog.at_level(logging.DEBUG):
        first = upload.add_to_worklist(engine, service, data, "discharges.csv", by="anna")
        again = upload.add_to_worklist(engine, service, data, "discharges.csv", by="ben")
    assert first.added > 0 and again.added == 0
    log = logged(engine)
    assert len(log) == first.added, "stored rows are logged once; a second upload of the same file adds nothing"
    assert set(log["channel"]) == {"upload"} and set(log["model_version"]) == {service.model_version}
    assert log["_discharge_time"].notna().all() and log["age_years_est"].notna().any()
    frame = pd.read_csv(path, dtype=str)
    assert_no_identifier([r.getMessage() for r in caplog.records],
                         frame["encounter_id"].tolist() + frame["patient_id"].tolist())


def test_readmit_score_file_is_logged_with_channel_cli_unless_no_log(engine, tmp_path, capsys, caplog):
    path = tmp_path / "discharges.csv"
    synthetic.write_template_csv(path, rows=40, seed=6)
    args = ["score", "--input", str(path), "--output", str(tmp_path / "out.csv"), "--model", str(CHAMPION),
            "--no-explain"]
    with caplog.at_level(logging.DEBUG):
        assert cli_main.main(args) == 0
        assert cli_main.main(args[:-1] + ["--no-explain", "--no-log"]) == 0
    out = pd.read_csv(tmp_path / "out.csv", dtype=str)
    log = logged(engine)
    assert len(log) == len(out), "one run logged, the --no-log run not"
    assert set(log["channel"]) == {"cli"} and set(log["model_version"]) == set(out["model_version"])
    assert log["_discharge_time"].notna().all()
    assert_no_identifier([r.getMessage() for r in caplog.records] + [capsys.readouterr().err],
                         out["encounter_id"].tolist() + out["patient_id"].tolist())


# --- the promoted model serves ----------------------------------------------------------------------

@pytest.fixture
def promoted(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("READMIT_PROMOTION_FILE", str(tmp_path / "promoted_model.json"))
    monkeypatch.delenv("READMIT_MODEL_DIR", raising=False)
    get_settings.cache_clear()
    copy = tmp_path / "model-v2"
    shutil.copytree(CHAMPION, copy)
    monitoring.promote(copy, by="tester")
    return copy.resolve()


def test_the_api_serves_the_promoted_model(promoted, engine):
    loaded: list[str] = []

    def loader(model_dir: str):
        loaded.append(model_dir)
        return ScoringService.load(model_dir, explain=False)

    with TestClient(create_app(ApiSettings(key=KEY), scorer_loader=loader, prediction_log="off")) as client:
        health = client.get("/health").json()
    assert loaded == [str(promoted)]
    assert health["model_version"] == monitoring.promotion_record()["model_version"]


def test_model_resolution_order(promoted, monkeypatch, tmp_path):
    assert monitoring.serving_model_dir() == str(promoted)
    assert monitoring.serving_model_dir("explicit") == "explicit"
    monkeypatch.setenv("READMIT_MODEL_DIR", str(CHAMPION))
    get_settings.cache_clear()
    assert monitoring.serving_model_dir() == str(CHAMPION), "READMIT_MODEL_DIR comes before the promoted model"
    monkeypatch.delenv("READMIT_MODEL_DIR")
    get_settings.cache_clear()
    shutil.rmtree(promoted)
    assert monitoring.serving_model_dir() == Settings().model_dir, "a promoted folder that is gone: the default"


def test_readmit_score_uses_the_promoted_model(promoted, engine, tmp_path):
    import argparse  # noqa: PLC0415

    from cli.score_commands import _model_dir, register  # noqa: PLC0415
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    assert _model_dir(parser.parse_args(["score", "--input", "x.csv"])) == str(promoted)
    assert _model_dir(parser.parse_args(["score", "--model", str(CHAMPION)])) == str(CHAMPION)
