"""The prediction log (serving.prediction_log): one row per scored encounter, one transaction per call,
read back in chunks, batch runs logged once; on SQLite and PostgreSQL. No identifier reaches the log."""
from __future__ import annotations

import datetime as dt
import logging
import sys
import threading
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError

from api.deps import canonical_record
from api.schemas import EncounterRequest
from core import synthetic
from core.features import FEATURE_COLUMNS
from core.schema import EncounterIn
from serving import prediction_log, prediction_log_writer
from serving.database import engine_for, migrate
from serving.db_tables import PredictionLog
from serving.prediction_log import log_predictions, log_warehouse_predictions, parse_features, read_log
from serving.prediction_log_writer import PredictionLogWriter
from serving.scoring import ScoringService

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "app"
sys.path.insert(0, str(FIXTURES))
import make_warehouse  # noqa: E402

LOGGED_AT = dt.datetime(2026, 11, 1, 8, 0, tzinfo=dt.timezone.utc)


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path) -> Iterator[Engine]:
    url = (f"sqlite:///{tmp_path / 'ops.sqlite3'}" if request.param == "sqlite"
           else request.getfixturevalue("postgres_database"))
    migrated = engine_for(url)
    migrate(migrated)
    yield migrated
    migrated.dispose()


@pytest.fixture
def sqlite_engine(tmp_path) -> Iterator[Engine]:
    migrated = engine_for(f"sqlite:///{tmp_path / 'ops.sqlite3'}")
    migrate(migrated)
    yield migrated
    migrated.dispose()


def frames(n: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Predictions and feature rows as the scoring service returns them (a few feature columns)."""
    ids = [f"ENC-{i:04d}" for i in range(n)]
    predictions = pd.DataFrame({"encounter_id": ids, "patient_id": [f"PAT-{i // 2:04d}" for i in range(n)],
                                "risk": [0.1 * (i + 1) for i in range(n)], "risk_tier": ["Low"] * n,
                                "eligible": [True] * n, "problem": [None] * n})
    features = pd.DataFrame({"encounter_id": ids, "patient_id": predictions["patient_id"], "source": "discharges",
                             "age_years_est": [70.0 + i for i in range(n)], "race": ["Caucasian"] * (n - 1) + [None],
                             "num_lab_procedures": [40.0] * n,
                             "discharge_time": pd.date_range("2026-10-01 10:00", periods=n, freq="D")})
    return predictions, features


def count(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(PredictionLog.__table__)).scalar()


def test_rows_round_trip_in_chunks(engine):
    predictions, features = frames(7)
    assert log_predictions(engine, "api", predictions, features, "model@abc", logged_at=LOGGED_AT, chunk=3) == 7
    chunks = list(read_log(engine, chunk=3))
    assert [len(c) for c in chunks] == [3, 3, 1]
    log = pd.concat(chunks, ignore_index=True)
    assert log["encounter_id"].tolist() == predictions["encounter_id"].tolist()
    assert set(log["channel"]) == {"api"} and set(log["model_version"]) == {"model@abc"}
    assert set(log["source"]) == {"discharges"}
    assert log["logged_at"].iloc[0] == pd.Timestamp(LOGGED_AT)
    np.testing.assert_allclose(log["risk"], predictions["risk"])
    np.testing.assert_allclose(log["age_years_est"], features["age_years_est"])
    assert log["race"].tolist()[-2:] == ["Caucasian", None]
    assert log["_discharge_time"].iloc[0] == "2026-10-01T10:00:00"
    assert log["_eligible"].all() and not log["_invalid"].any()
    assert log["length_of_stay_days"].isna().all()   # a feature the caller did not give stays null


def test_read_log_selects_a_time_window_and_a_channel(sqlite_engine):
    predictions, features = frames(4)
    log_predictions(sqlite_engine, "api", predictions.iloc[:2], features, "m", logged_at=LOGGED_AT)
    later = LOGGED_AT + dt.timedelta(days=1)
    log_predictions(sqlite_engine, "upload", predictions.iloc[2:], features, "m", logged_at=later)
    assert sum(len(c) for c in read_log(sqlite_engine, start=later)) == 2
    assert sum(len(c) for c in read_log(sqlite_engine, end=later)) == 2
    assert sum(len(c) for c in read_log(sqlite_engine, channel="api")) == 2
    raw = next(read_log(sqlite_engine, expand=False))
    assert isinstance(raw["features"].iloc[0], dict)


def test_a_call_is_one_transaction(engine, monkeypatch):
    predictions, features = frames(6)
    real_rows = prediction_log.log_rows

    def broken_rows(*args, **kwargs):
        rows = real_rows(*args, **kwargs)
        rows[-1]["channel"] = None   # NOT NULL: the last chunk fails
        return rows

    monkeypatch.setattr(prediction_log, "log_rows", broken_rows)
    with pytest.raises(IntegrityError):
        log_predictions(engine, "api", predictions, features, "m", chunk=2)
    assert count(engine) == 0, "the first chunks must not stay behind"


def test_no_identifier_reaches_the_application_log(sqlite_engine, caplog):
    predictions, features = frames(3)
    caplog.set_level(logging.DEBUG)
    log_predictions(sqlite_engine, "cli", predictions, features, "m")
    assert "3 rows" in caplog.text
    for identifier in predictions["encounter_id"].tolist() + predictions["patient_id"].tolist():
        assert identifier not in caplog.text


def test_unknown_channels_are_refused(sqlite_engine):
    predictions, features = frames(1)
    with pytest.raises(ValueError, match="unknown channel"):
        log_predictions(sqlite_engine, "email", predictions, features, "m")


def test_unscored_rows_keep_their_status(sqlite_engine):
    predictions, features = frames(3)
    predictions.loc[1, ["risk", "risk_tier", "eligible"]] = [np.nan, None, False]
    predictions.loc[2, ["risk", "risk_tier", "problem"]] = [np.nan, None, "length_of_stay_days: above 365"]
    log_predictions(sqlite_engine, "upload", predictions, features.iloc[:2], "m")
    log = pd.concat(read_log(sqlite_engine))
    assert log["risk"].isna().tolist() == [False, True, True]
    assert log["_eligible"].tolist() == [True, False, True]
    assert log["_invalid"].tolist() == [False, False, True]
    assert pd.isna(log["age_years_est"].iloc[2]), "no feature row: status only"


def test_real_scores_log_every_feature_the_model_saw(sqlite_engine):
    service = ScoringService.load("models/champion", explain=False)
    encounters = synthetic.generate_chunk(0, 300, seed=5)
    predictions = service.score_encounters(encounters, explain=False)
    features = service.features_for(encounters).merge(encounters[["encounter_id", "discharge_time"]])
    log_predictions(sqlite_engine, "cli", predictions, features, service.model_version)
    log = pd.concat(read_log(sqlite_engine))
    assert len(log) == 300 and log["source"].eq("synthetic").all()
    expected = features.set_index("encounter_id").loc[log["encounter_id"]]
    for name in ("age_years_est", "encounter_seq", "admission_type", "dx_1", "discharge_weekday"):
        pd.testing.assert_series_equal(log[name].reset_index(drop=True), expected[name].reset_index(drop=True),
                                       check_names=False, check_dtype=False)
    assert set(FEATURE_COLUMNS) <= set(log.columns)


def test_a_warehouse_run_is_logged_once(tmp_path, sqlite_engine):
    root = make_warehouse.build(tmp_path / "wh", patients=80, seed=2)
    total = log_warehouse_predictions(sqlite_engine, str(root))
    assert total == count(sqlite_engine) > 80
    assert log_warehouse_predictions(sqlite_engine, str(root)) == 0
    log = pd.concat(read_log(sqlite_engine))
    assert set(log["channel"]) == {"warehouse"} and set(log["model_version"]) == {"fixture-0.1"}
    assert log["_discharge_time"].notna().all()


def test_a_warehouse_run_can_start_at_go_live(tmp_path, sqlite_engine):
    root = make_warehouse.build(tmp_path / "wh", patients=80, seed=2)
    logged = log_warehouse_predictions(sqlite_engine, str(root), since=dt.date(2026, 10, 1))
    log = pd.concat(read_log(sqlite_engine))
    assert 0 < logged < 160 and (pd.to_datetime(log["_discharge_time"]) >= "2026-10-01").all()


def test_parse_features_reads_text_and_dicts_alike():
    text = parse_features(['{"age_years_est": 71, "race": "Asian", "_invalid": false}'])
    dicts = parse_features([{"age_years_est": 71.0, "race": "Asian", "_invalid": False}])
    pd.testing.assert_frame_equal(text, dicts)
    assert text["age_years_est"].dtype == np.float64 and text["_eligible"].isna().all()


def api_records(n: int) -> list[dict]:
    """Canonical records as the API builds them (`canonical_record`), one ineligible and one impossible."""
    example = EncounterIn.model_config["json_schema_extra"]["examples"][0]
    out = [canonical_record(EncounterRequest.model_validate(
        {**example, "encounter_id": f"R{i:03d}", "patient_id": f"Q{i:03d}", "prior_inpatient_visits": i % 3,
         "num_medications": 5 + i})) for i in range(n)]
    out[1]["discharge_disposition"] = "hospice"
    out[2]["length_of_stay_days"] = 9_999.0  # impossible: not scored, its status logged
    return out


def test_the_api_rows_log_the_features_the_scorer_built_as_the_frame_path_does():
    """`record_log_rows` (the API's fast path: the scorer's own feature columns, no DataFrame) writes the same
    rows as `log_rows` over features built again (`record_features`)."""
    service = ScoringService.load("models/champion", explain=False)
    records = api_records(6)
    scored, positions, columns = service.score_records_with_features(records)
    assert scored == service.score_records(records) and positions == [0, 3, 4, 5]
    fast = prediction_log.record_log_rows([(records[:3], scored[:3], positions[:1], {k: v[:1] for k, v in columns.items()}),
                                           (records[3:], scored[3:], [0, 1, 2], {k: v[1:] for k, v in columns.items()})],
                                          "api", service.model_version, logged_at=LOGGED_AT)
    slow = prediction_log.log_rows(pd.DataFrame(scored), prediction_log.record_features(records), "api",
                                   service.model_version, logged_at=LOGGED_AT)
    assert fast == slow
    assert [row["features"]["_invalid"] for row in fast] == [False, False, True, False, False, False]
    assert [row["features"]["_eligible"] for row in fast] == [True, False, True, True, True, True]


def test_waiting_calls_share_one_commit_and_each_learns_when_it_is_durable(engine, monkeypatch):
    """The durable writer (`submit_waiting`): every call waiting when a commit ends goes into the next one
    transaction; each call's Future is True only once its rows are readable."""
    gate, first_built = threading.Event(), threading.Event()

    def rows(parts):
        if parts[0][0] == "E0":
            first_built.set()
            gate.wait(10)  # the first write holds the thread while the others queue up
        return [{"logged_at": LOGGED_AT, "channel": "api", "model_version": "m", "source": "discharges",
                 "encounter_id": e, "patient_id": "P", "risk": 0.2, "risk_tier": "Low", "features": {}}
                for e, in parts]

    commits: list[int] = []
    writer = PredictionLogWriter(engine)
    real_insert = prediction_log_writer.insert_rows

    def counting_insert(engine_, rows_, *args):
        commits.append(len(rows_))
        return real_insert(engine_, rows_, *args)

    monkeypatch.setattr(prediction_log_writer, "insert_rows", counting_insert)
    try:
        futures = [writer.submit_waiting("api", "m", 1, [("E0",)], rows)]
        assert first_built.wait(10)
        futures += [writer.submit_waiting("api", "m", 1, [(f"E{i}",)], rows) for i in range(1, 6)]
        assert not any(f.done() for f in futures) and count(engine) == 0
        gate.set()
        assert all(f.result(10) is True for f in futures)
        assert count(engine) == 6
        assert commits == [1, 5], "the five calls that waited share one transaction"
    finally:
        writer.close()
    assert writer.counts == {"logged": 6, "dropped": 0, "failed": 0}


def test_a_durable_call_whose_write_fails_learns_it(sqlite_engine):
    writer = PredictionLogWriter(sqlite_engine)

    def broken(parts):
        raise ValueError("PAT-SECRET-2")

    assert writer.submit_waiting("api", "m", 2, [None, None], broken).result(10) is False
    writer.close()
    assert writer.counts["failed"] == 2 and count(sqlite_engine) == 0


def test_the_writers_relaxed_sync_stays_on_its_own_sqlite_connection(sqlite_engine):
    """The durable writer commits with synchronous = NORMAL (survives a process crash) on its own connection
    only; every other connection, and its own once back in the pool, keeps the database's FULL (2)."""
    writer = PredictionLogWriter(sqlite_engine)
    row = {"logged_at": LOGGED_AT, "channel": "api", "model_version": "m", "source": None, "encounter_id": "E1",
           "patient_id": "P1", "risk": 0.2, "risk_tier": "Low", "features": {}}
    assert writer.submit_waiting("api", "m", 1, [row], lambda parts: list(parts)).result(10) is True
    assert writer._connection is not None
    assert writer._connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1
    with sqlite_engine.connect() as other:
        assert other.exec_driver_sql("PRAGMA synchronous").scalar() == 2
    writer.close()
    connections = [sqlite_engine.connect() for _ in range(3)]
    try:
        assert [c.exec_driver_sql("PRAGMA synchronous").scalar() for c in connections] == [2, 2, 2]
    finally:
        for connection in connections:
            connection.close()
    assert count(sqlite_engine) == 1
