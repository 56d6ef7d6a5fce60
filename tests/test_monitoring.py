"""Monitoring (serving.monitoring, `readmit monitor` / `readmit outcomes`, the Monitoring page's empty states).

The data: synthetic discharges (core.synthetic), scored by the shipped model and logged like a batch run,
without Spark (`logged_warehouse` writes the warehouse tables the ETL would). The ETL path, with a shift
injected into one column of a discharges file, is the slow test at the end."""
from __future__ import annotations

import datetime as dt
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import Engine, select
from streamlit.testing.v1 import AppTest

from cli.main import main
from core import monitoring as mon
from core import synthetic
from core.config import REPO_ROOT, get_settings
from core.features import build_features
from core.predictions import write_predictions
from core.schema import arrow_schema
from core.warehouse import MANIFEST_FILE, table_version_path, write_pointer
from serving import monitoring
from serving.database import engine_for, migrate
from serving.db_tables import Outcome
from serving.monitoring import alerting as monitoring_alerts
from serving.outcomes import outcomes_from_warehouse, read_outcomes_file, write_outcomes
from serving.prediction_log import log_predictions, log_warehouse_predictions
from serving.scoring import ScoringService

CHAMPION = REPO_ROOT / "models" / "champion"
END = synthetic.DEFAULT_END
WINDOW_START = synthetic.window_start(END)
GO_LIVE = WINDOW_START + dt.timedelta(days=365)
SHIFT = synthetic.drift_start(END)
AS_OF = END - dt.timedelta(days=1)
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "app"
sys.path.insert(0, str(FIXTURES))
import make_warehouse  # noqa: E402


@dataclass(frozen=True)
class Logged:
    root: Path
    model_dir: Path
    engine: Engine
    url: str


def _write_table(root: Path, table: str, frame: pd.DataFrame, schema=None) -> None:
    folder = Path(table_version_path(root, table, "v1"))
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False), folder / "part-00000.parquet")
    (folder / MANIFEST_FILE).write_text(json.dumps({"table": table, "version": "v1", "writer": "tests"}))


def logged_warehouse(folder: Path, rows: int, seed: int, scenario: str = "stable") -> Logged:
    """A warehouse of synthetic discharges (encounters and features as the ETL writes them), the shipped model
    recalibrated on its first year (`serving.monitoring.recalibrate`, reference rebased: the go-live), the
    warehouse scored by that model, and its predictions from go-live on logged with the outcomes."""
    root = folder / "warehouse"
    encounters = synthetic.generate_chunk(0, rows, seed, end=END, scenario=scenario)
    _write_table(root, "encounters", encounters, arrow_schema())
    _write_table(root, "features", build_features(encounters).assign(split="test"))
    write_pointer(root, {"tables": {"encounters": "v1", "features": "v1"}})
    model_dir = folder / "model"
    monitoring.recalibrate(str(root), CHAMPION, WINDOW_START, model_dir, until=GO_LIVE, as_of=GO_LIVE,
                           reason="go-live (test)", by="tests", rebase_reference=True)
    service = ScoringService.load(model_dir, explain=False)
    write_predictions(root, service.score_encounters(encounters, explain=False),
                      manifest={"model_version": service.model_version}, encounters_version="v1")
    url = f"sqlite:///{folder / 'ops.sqlite3'}"
    engine = engine_for(url)
    migrate(engine)
    log_warehouse_predictions(engine, str(root), since=GO_LIVE)
    outcomes_from_warehouse(engine, str(root))
    return Logged(root, model_dir, engine, url)


@pytest.fixture(scope="module")
def drift(tmp_path_factory) -> Logged:
    return logged_warehouse(tmp_path_factory.mktemp("drift"), 20_000, seed=7, scenario="drift")


def report_of(logged: Logged, as_of: dt.date = AS_OF, reference: str = "model", **options) -> dict:
    return monitoring.monitoring_report(logged.engine, as_of=as_of, reference=reference, model_dir=logged.model_dir,
                                        calls_per_day=10, n_boot=50, **options)


def drift_alerts(report: dict) -> list[dict]:
    return [a for a in report["alerts"] if a["check"] in ("feature_drift", "dataset_drift", "score_drift")]


# --- profiles and drift of one input ------------------------------------------------------------------

def test_small_bins_merge_to_twenty_rows_and_rare_levels_pool_as_other():
    values = np.r_[np.zeros(500), np.arange(1, 12)]       # eleven values seen once each
    profile = monitoring.numeric_profile(values)
    assert min(profile["counts"]) >= monitoring.MIN_CELL and sum(profile["counts"]) == 511
    levels = monitoring.categorical_profile(["a"] * 300 + ["b"] * 100 + ["rare"] * 5 + [None] * 7)
    assert levels["levels"] == ["a", "b"] and levels["other"] == 5 and levels["missing"] == 7


def test_unseen_levels_count_as_other_and_missing_has_its_own_bin():
    profile = monitoring.categorical_profile(["a"] * 50 + ["b"] * 50)
    bins = monitoring.bin_index(profile, ["a", "b", "new code", None])
    assert bins.tolist() == [0, 1, 2, 3]
    numeric = monitoring.numeric_profile(np.arange(100.0))
    assert monitoring.bin_index(numeric, [np.nan])[0] == len(numeric["edges"]) + 1


def test_drift_cells_agree_with_core_psi():
    rng = np.random.default_rng(0)
    reference, current = rng.normal(0, 1, 5000), rng.normal(0.5, 1, 2000)
    profile = monitoring.numeric_profile(reference)
    cell = monitoring.drift_cells(profile, monitoring.bin_index(profile, current), current,
                                  np.zeros(2000, dtype=np.int64), 1)[0]
    assert cell["psi"] == pytest.approx(mon.score_psi(reference, current), rel=0.05)
    assert cell["p_value"] < 1e-6 and cell["effect"] == pytest.approx(0.5, abs=0.08)


def test_an_input_never_filled_in_the_reference_is_not_monitored():
    assert not monitoring.is_monitorable(monitoring.numeric_profile([np.nan] * 100))
    assert monitoring.is_monitorable(monitoring.numeric_profile(np.arange(100.0)))


def test_metrics_scrape_gives_requests_errors_and_latency():
    text = "\n".join(
        ['readmit_api_requests_total{method="POST",route="/predict",status="200"} 95',
         'readmit_api_requests_total{method="POST",route="/predict",status="500"} 5',
         'readmit_api_requests_total{method="GET",route="/metrics",status="200"} 1000']
        + [f'readmit_api_request_seconds_bucket{{method="POST",route="/predict",le="{le}"}} {n}'
           for le, n in (("0.01", 50), ("0.1", 90), ("1.0", 100), ("+Inf", 100))])
    metrics = monitoring.parse_api_metrics("# TYPE readmit_api_requests counter\n# TYPE readmit_api_request_seconds "
                                           "histogram\n" + text + "\n")
    assert metrics["requests"] == 100 and metrics["error_rate"] == pytest.approx(0.05)
    assert metrics["p50_seconds"] == pytest.approx(0.01) and metrics["p95_seconds"] == pytest.approx(0.55)
    assert [a.severity for a in monitoring_alerts._service_alerts({"metrics": metrics})] == ["act"]


# --- the log matched to outcomes, on both backends ------------------------------------------------------

@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_each_encounter_counts_once_with_its_outcome_and_status(backend, request, tmp_path):
    url = (f"sqlite:///{tmp_path / 'ops.sqlite3'}" if backend == "sqlite"
           else request.getfixturevalue("postgres_database"))
    engine = engine_for(url)
    migrate(engine)
    ids = ["A", "B", "C", "D"]
    predictions = pd.DataFrame({"encounter_id": ids, "patient_id": ["P1", "P2", "P3", "P4"],
                                "risk": [0.1, 0.2, 0.3, 0.4], "risk_tier": ["Low"] * 4, "eligible": [True] * 4,
                                "problem": [None] * 4})
    features = predictions.assign(source="s", discharge_time=pd.to_datetime(
        ["2026-09-01 10:00", "2026-09-02 10:00", "2026-09-03 10:00", "2026-10-30 10:00"]))
    log_predictions(engine, "warehouse", predictions, features, "v1")
    log_predictions(engine, "api", predictions.iloc[:1].assign(risk=0.9), features, "v2")   # A again, later
    write_outcomes(engine, pd.DataFrame({"source": ["s", "s", "s"], "encounter_id": ["A", "B", "D"],
                                         "readmitted_30d": [True, None, False],
                                         "readmission_date": [None, dt.date(2026, 9, 20), None]}), origin="upload")
    rows = monitoring.load_monitoring_rows(engine, dt.date(2026, 11, 1)).set_index("encounter_id")
    assert rows.loc["A", "risk"] == 0.9 and rows.loc["A", "model_version"] == "v2" and len(rows) == 4
    assert rows["label"].to_dict() == pytest.approx({"A": 1.0, "B": 1.0, "C": np.nan, "D": np.nan}, nan_ok=True)
    assert rows["status"].to_dict() == {"A": "known", "B": "known", "C": "unknown", "D": "unmatured"}
    only_v1 = monitoring.load_monitoring_rows(engine, dt.date(2026, 11, 1), model_version="v1")
    assert only_v1.set_index("encounter_id").loc["A", "risk"] == 0.1
    engine.dispose()


# --- stable data: no drift alert ------------------------------------------------------------------------

@pytest.mark.parametrize("seed, reference", [(1, "window"), (2, "window"), (1, "model"), (2, "model")])
def test_stable_data_raises_no_act_drift_and_little_watch(tmp_path, seed, reference):
    """Reference: the log's first year, or the shipped model's Diabetes 130 validation profile (whose blank
    dispositions a served row cannot have: compared on recorded values, `drift.REQUIRED_INPUTS`)."""
    service = ScoringService.load(CHAMPION, explain=False)
    encounters = synthetic.generate_chunk(0, 14_000, seed, end=END)
    predictions = service.score_encounters(encounters, explain=False)
    features = service.features_for(encounters).merge(encounters[["encounter_id", "discharge_time"]])
    engine = engine_for(f"sqlite:///{tmp_path / 'ops.sqlite3'}")
    migrate(engine)
    in_window = (features["discharge_time"] >= pd.Timestamp(WINDOW_START)).to_numpy()
    log_predictions(engine, "warehouse", predictions[in_window], features[in_window], service.model_version)
    half = WINDOW_START + dt.timedelta(days=365)
    report = monitoring.monitoring_report(engine, as_of=AS_OF, n_boot=20, model_dir=CHAMPION,
                                          reference=f"{WINDOW_START}:{half}" if reference == "window" else "model")
    judged = [c for c in report["drift"]["cells"]
              if next(p for p in report["periods"] if p["period"] == c["period"])["complete"]
              and not next(p for p in report["periods"] if p["period"] == c["period"])["in_reference"]]
    assert len(judged) > 500
    assert not [a for a in drift_alerts(report) if a["severity"] == "act"]
    assert sum(c["severity"] == "watch" for c in judged) <= 0.05 * len(judged)


# --- the drift scenario ----------------------------------------------------------------------------------

def test_the_shift_is_flagged_from_the_first_full_period_after_it(drift):
    report = report_of(drift)
    first_full = (SHIFT.replace(day=1) + dt.timedelta(days=32)).replace(day=1).strftime("%Y-%m")
    flagged = {(a["subject"], a["period"]) for a in report["alerts"] if a["check"] == "feature_drift"}
    assert ("number_diagnoses", first_full) in flagged
    before = {period for _, period in flagged if period < SHIFT.strftime("%Y-%m")}
    assert not before, f"drift flagged before the shift: {sorted(before)}"


def test_estimated_performance_moves_before_calibration_is_flagged(drift):
    early = report_of(drift, as_of=SHIFT + dt.timedelta(days=40))
    shifted = {a["period"] for a in early["alerts"] if a["check"] == "estimated_performance"}
    assert shifted and min(shifted) >= SHIFT.strftime("%Y-%m")
    assert not [a for a in early["alerts"] if a["check"] == "calibration"], "no outcome has matured yet"
    late = report_of(drift)
    calibration = [a for a in late["alerts"] if a["check"] == "calibration"]
    assert calibration and all(a["period"] >= SHIFT.strftime("%Y-%m") for a in calibration)
    assert any(a["severity"] == "act" for a in calibration)
    assert "against" in calibration[0]["message"] and "predicted" in calibration[0]["message"]


def test_report_has_stable_keys_and_counts_outcomes_apart(drift):
    report = report_of(drift, period="week")
    assert {"periods", "drift", "performance", "fairness", "service", "alerts"} <= set(report)
    assert all(set(a) >= {"check", "subject", "severity", "message"} for a in report["alerts"])
    counts = report["counts"]
    assert counts["with_outcome"] + counts["unmatured"] + counts["unknown"] == counts["scored"]
    assert counts["unmatured"] > 0 and counts["with_outcome"] > counts["unmatured"]
    assert report["periods"][0]["period"].startswith(str(GO_LIVE.isocalendar().year))
    assert json.loads(json.dumps(report)) == report
    realised = [r for r in report["performance"] if r["kind"] == "realised"]
    assert realised and all(r["auroc_low"] <= r["auroc"] <= r["auroc_high"] for r in realised)
    assert report["service"]["message"].startswith("No API traffic")


def test_a_window_of_the_log_can_be_the_reference(drift):
    report = report_of(drift, reference=f"{GO_LIVE}:{GO_LIVE + dt.timedelta(days=120)}")
    assert report["reference"]["kind"] == "window"
    inside = {p["period"] for p in report["periods"] if p["in_reference"]}
    assert len(inside) >= 3
    assert not [a for a in report["alerts"] if a["period"] in inside]


def test_readmit_monitor_writes_html_json_text_and_exits_3_on_act(drift, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("READMIT_DATABASE_URL", drift.url)
    get_settings.cache_clear()
    try:
        html = tmp_path / "report.html"
        code = main(["monitor", "--as-of", AS_OF.isoformat(), "--model", str(drift.model_dir), "--format", "html",
                     "--output", str(html)])
        assert code == 3
        page = html.read_text()
        assert "Calibration:" in page and "plotly" in page.lower()
        assert not re.search(r"<(script|link|img)[^>]+(src|href)=", page), "the report must not fetch anything"
        assert main(["monitor", "--as-of", AS_OF.isoformat(), "--model", str(drift.model_dir), "--format", "text"]) == 3
        assert "Alerts (" in capsys.readouterr().out
        assert main(["monitor", "--as-of", (GO_LIVE + dt.timedelta(days=100)).isoformat(), "--model",
                     str(drift.model_dir), "--output", str(tmp_path / "early.json")]) == 0
    finally:
        get_settings.cache_clear()


# --- outcomes ---------------------------------------------------------------------------------------

def test_outcomes_file_is_checked_row_by_row_without_echoing_identifiers(tmp_path, monkeypatch, capsys):
    url = f"sqlite:///{tmp_path / 'ops.sqlite3'}"
    engine = engine_for(url)
    migrate(engine)
    predictions = pd.DataFrame({"encounter_id": ["E-1", "E-2", "=HYPERLINK(1)"], "patient_id": ["P-1"] * 3,
                                "risk": [0.1, 0.2, 0.3], "risk_tier": ["Low"] * 3, "eligible": [True] * 3,
                                "problem": [None] * 3})
    log_predictions(engine, "upload", predictions, predictions.assign(source="discharges"), "m")
    csv = tmp_path / "outcomes.csv"
    csv.write_text("encounter_id,readmitted_30d,readmission_date\n"
                   "E-1,yes,\n"
                   "E-2,,2026-10-03\n"
                   "=HYPERLINK(1),maybe,\n"
                   ",no,\n"
                   "E-1,no,\n"
                   "E-9,no,\n"
                   "E-3,,03/10/2026\n")
    monkeypatch.setenv("READMIT_DATABASE_URL", url)
    get_settings.cache_clear()
    try:
        assert main(["outcomes", "--input", str(csv)]) == 1
    finally:
        get_settings.cache_clear()
    err = capsys.readouterr().err
    assert "row 3, column 'readmitted_30d': must be yes or no" in err
    assert "row 4, column 'encounter_id': missing" in err and "row 5, column 'encounter_id': repeated" in err
    assert "row 6, column 'source'" in err and "row 7, column 'readmission_date'" in err
    assert "HYPERLINK" not in err and "E-9" not in err and "E-1" not in err
    errors = (tmp_path / "outcomes.errors.csv").read_text()
    assert "HYPERLINK" not in errors
    with engine.connect() as connection:
        stored = connection.execute(select(Outcome.encounter_id, Outcome.readmitted_30d, Outcome.readmission_date,
                                           Outcome.source)).all()
    assert sorted(stored) == [("E-1", True, None, "discharges"), ("E-2", None, dt.date(2026, 10, 3), "discharges")]


def test_an_uploaded_outcome_is_not_overwritten_by_the_etl(tmp_path):
    engine = engine_for(f"sqlite:///{tmp_path / 'ops.sqlite3'}")
    migrate(engine)
    write_outcomes(engine, pd.DataFrame({"source": ["s"], "encounter_id": ["e"], "readmitted_30d": [True],
                                         "readmission_date": [None]}), origin="upload")
    write_outcomes(engine, pd.DataFrame({"source": ["s", "s"], "encounter_id": ["e", "f"],
                                         "readmitted_30d": [False, False], "readmission_date": [None, None]}),
                   origin="etl")
    with engine.connect() as connection:
        assert sorted(connection.execute(select(Outcome.encounter_id, Outcome.readmitted_30d, Outcome.origin)).all()) \
            == [("e", True, "upload"), ("f", False, "etl")]


def test_a_header_without_outcome_columns_is_refused(tmp_path):
    csv = tmp_path / "bad.csv"
    csv.write_text("encounter_id,outcome\nE-1,yes\n")
    with pytest.raises(Exception, match="the header must hold encounter_id"):
        read_outcomes_file(csv)


# --- the page's empty states (AppTest) ------------------------------------------------------------------

@pytest.fixture()
def page_env(monkeypatch, tmp_path):
    root = make_warehouse.build(tmp_path / "wh", patients=60, seed=5)
    url = f"sqlite:///{tmp_path / 'ops.sqlite3'}"
    monkeypatch.setenv("READMIT_WAREHOUSE", str(root))
    monkeypatch.setenv("READMIT_MODEL_DIR", str(CHAMPION))
    monkeypatch.setenv("READMIT_DATABASE_URL", url)
    monkeypatch.setenv("READMIT_AUDIT_LOG", str(tmp_path / "audit.jsonl"))
    engine = engine_for(url)
    migrate(engine)
    return engine


def monitoring_page() -> AppTest:
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=90)
    at.run()
    return at.switch_page("pages/6_Monitoring.py").run()


def page_text(at: AppTest) -> str:
    return "\n".join(str(e.value) for e in (*at.markdown, *at.info, *at.error, *at.warning, *at.caption,
                                             *at.success, *at.title))


def test_page_says_when_nothing_is_logged(page_env):
    at = monitoring_page()
    assert not at.exception
    assert "No predictions logged yet" in page_text(at)


def test_page_without_outcomes_or_api_traffic_says_so(page_env):
    service = ScoringService.load(CHAMPION, explain=False)
    today = dt.date.today()
    encounters = synthetic.generate_chunk(0, 600, seed=3, end=today)
    recent = encounters[encounters["discharge_time"] >= pd.Timestamp(today - dt.timedelta(days=25))]
    predictions = service.score_encounters(encounters, explain=False)
    features = service.features_for(encounters).merge(encounters[["encounter_id", "discharge_time"]])
    keep = predictions["encounter_id"].isin(recent["encounter_id"]).to_numpy()
    log_predictions(page_env, "warehouse", predictions[keep], features, service.model_version)
    at = monitoring_page()
    assert not at.exception
    text = page_text(at)
    assert "No outcomes yet" in text
    assert "No API traffic" in text
    assert "Observed rates appear once" in text


# --- through the ETL: a shift injected into one column of a discharges file (slow) -------------------------

@pytest.mark.spark
@pytest.mark.slow
def test_a_shift_injected_into_one_column_is_flagged_and_only_that_column(tmp_path, monkeypatch):
    """Discharges file -> `readmit etl` -> `readmit score --warehouse` -> `readmit monitor`: lab tests (one
    column) are shifted by +25 from a date on. About two minutes: Spark starts and scores 8,000 rows."""
    csv, root = tmp_path / "discharges.csv", tmp_path / "wh"
    synthetic.write_template_csv(csv, rows=8_000, seed=21, end=END)
    frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    change = pd.Timestamp("2026-06-15")
    after = pd.to_datetime(frame["discharge_time"]) >= change
    frame.loc[after, "num_lab_procedures"] = (frame.loc[after, "num_lab_procedures"].astype(int) + 25).astype(str)
    frame.to_csv(csv, index=False)
    url = f"sqlite:///{tmp_path / 'ops.sqlite3'}"
    monkeypatch.setenv("READMIT_DATABASE_URL", url)
    get_settings.cache_clear()
    try:
        assert main(["etl", "--source", "discharges", "--input", str(csv), "--warehouse", str(root)]) == 0
        assert main(["score", "--warehouse", str(root), "--no-explain"]) == 0
        out = tmp_path / "report.json"
        half = f"{WINDOW_START}:{WINDOW_START + dt.timedelta(days=365)}"
        main(["monitor", "--warehouse", str(root), "--as-of", AS_OF.isoformat(), "--reference", half,
              "--output", str(out)])
    finally:
        get_settings.cache_clear()
    report = json.loads(out.read_text())
    flagged = {(a["subject"], a["period"]) for a in report["alerts"] if a["check"] == "feature_drift"}
    assert {subject for subject, _ in flagged} == {"num_lab_procedures"}
    periods = sorted(period for _, period in flagged)
    assert periods[0] >= "2026-06", "nothing before the month of the change (June 15)"
    full_after = [p["period"] for p in report["periods"] if p["complete"] and p["start"] >= "2026-07-01"]
    assert set(full_after) <= set(periods) and "2026-07" in full_after, "every full month after it"
