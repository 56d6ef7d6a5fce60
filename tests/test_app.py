"""Dashboard: core queries (DuckDB, parameterized) and every page through Streamlit's AppTest.

The warehouses are fake (tests/fixtures/app/make_warehouse.py): one synthetic (demo mode), one that
claims a real source (sign-in required)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import pytest
from streamlit.testing.v1 import AppTest

import ui.data
from cli.app_commands import APP, streamlit_command
from cli.main import main
from core import spreadsheet
from core.errors import UserError
from core.warehouse import Warehouse
from models.explain import FIELD_GROUPS
from serving import audit, figures
from serving import home as home_q
from serving import hospitals as hospitals_q
from serving import patient as patient_q
from serving import upload as upload_q
from serving import worklist as worklist_q
from serving.scoring import ScoringService
from ui import launch
from ui.auth import LAST_ACTIVITY

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "app"
sys.path.insert(0, str(FIXTURES))
import make_warehouse  # noqa: E402

AUTH_SECRETS = {"auth": {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "x" * 32,
                         "client_id": "readmit", "client_secret": "secret",
                         "server_metadata_url": "http://127.0.0.1:9/.well-known/openid-configuration"}}


@pytest.fixture(scope="session")
def demo_wh(tmp_path_factory) -> Path:
    return make_warehouse.build(tmp_path_factory.mktemp("wh_demo"), patients=400, seed=3)


@pytest.fixture(scope="session")
def real_wh(tmp_path_factory) -> Path:
    return make_warehouse.build(tmp_path_factory.mktemp("wh_real"), patients=60, seed=4, source="diabetes130")


@pytest.fixture()
def env(monkeypatch, tmp_path, demo_wh):
    monkeypatch.setenv("READMIT_WAREHOUSE", str(demo_wh))
    monkeypatch.setenv("READMIT_MODEL_DIR", str(tmp_path / "no-model"))
    monkeypatch.setenv("READMIT_AUDIT_LOG", str(tmp_path / "audit.jsonl"))
    monkeypatch.setenv("READMIT_DATABASE_URL", f"sqlite:///{tmp_path / 'operational.sqlite3'}")
    monkeypatch.delenv("READMIT_IDLE_MINUTES", raising=False)
    return tmp_path


def app(**kwargs) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    for key, value in kwargs.items():
        setattr(at, key, value)
    return at


def texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [e.value for e in at.error] + [i.value for i in at.info] \
        + [w.value for w in at.warning] + [t.value for t in at.title] + [s.value for s in at.subheader] \
        + [c.value for c in at.caption]
    return "\n".join(str(p) for p in parts)


# --- core ---------------------------------------------------------------------------------------

def test_status_decides_synthetic_from_the_encounters(demo_wh, real_wh, tmp_path):
    assert home_q.data_status(str(demo_wh)).synthetic is True
    assert home_q.data_status(str(real_wh)).synthetic is False
    missing = home_q.data_status(str(tmp_path / "nothing"))
    assert not missing.usable and "readmit demo" in missing.problem


def _today(wh: Warehouse, calls: int = 10) -> worklist_q.DayList:
    """The demo warehouse's list for its newest discharge date, without outreach."""
    index = worklist_q.WorklistIndex(wh)
    as_of = index.latest_discharge
    return worklist_q.build_day_list(worklist_q.window_rows(index, as_of, 30), {}, as_of, 30, calls)


def _top(wh: Warehouse) -> pd.Series:
    return _today(wh).open.iloc[0]


def test_worklist_ranks_filters_pages_and_binds_parameters(demo_wh):
    wh = Warehouse(str(demo_wh))
    index = worklist_q.WorklistIndex(wh)
    day = _today(wh)
    first = worklist_q.page_of(day.open, page=1, page_size=20)
    second = worklist_q.page_of(day.open, page=2, page_size=20)
    assert len(first.rows) == 20 and first.total == second.total == len(day.open)
    risks = list(first.rows["risk"]) + list(second.rows["risk"])
    assert risks == sorted(risks, reverse=True) and list(second.rows["rank"])[:1] == [21]
    assert day.open["patient_id"].is_unique
    high = worklist_q.page_of(day.open, worklist_q.WorklistFilters(tiers=("Very high",), sexes=("Female",)), 1, 500)
    assert set(high.rows["risk_tier"]) == {"Very high"} and set(high.rows["sex"]) == {"Female"}
    one = first.rows["patient_id"].iloc[0]
    assert set(worklist_q.search(day, index, one.lower()).open["patient_id"]) == {one}
    for hostile in ("' OR 1=1 --", "x'; DROP TABLE worklist; --"):
        assert not worklist_q.search(day, index, hostile).found
    assert index.query("SELECT count(*) AS n FROM worklist")["n"].iloc[0] == index.rows


def test_capacity_is_replayed_day_by_day(demo_wh):
    index = worklist_q.WorklistIndex(Warehouse(str(demo_wh)))
    small, large = (worklist_q.capacity_tradeoff(index, index.latest_discharge, 30, calls) for calls in (1, 3))
    assert small.replay.days == large.replay.days > 0 and small.replay.outcomes == large.replay.outcomes > 0
    assert small.replay.called < large.replay.called and small.threshold >= large.threshold
    assert small.flagged_fraction < large.flagged_fraction
    assert "Replayed over" in small.basis and "known 30-day outcome" in small.basis


def test_patient_detail_and_unknown_ids(demo_wh):
    wh = Warehouse(str(demo_wh))
    top = _top(wh)
    detail = patient_q.patient_detail(wh, top["encounter_id"])
    assert detail.patient_id == top["patient_id"]
    assert not detail.diagnoses.empty and detail.diagnoses["description"].str.len().min() > 0
    assert not detail.contributions.empty
    assert set(detail.lace) >= {"L", "A", "C", "E", "total"}
    assert patient_q.resolve_encounter(wh, "E9999999") is None
    assert patient_q.resolve_encounter(wh, None, "NOBODY") is None
    assert patient_q.patient_detail(wh, "E9999999") is None
    figures.contributions_figure(detail.contributions, detail.prediction["base_risk"])  # builds


CHAMPION = ROOT / "models" / "champion"


def _patient_with_stays(wh: Warehouse, at_least: int = 2) -> pd.DataFrame:
    """The encounters of a patient with several stays (history order: admission time, then id)."""
    who = wh.query("SELECT patient_id FROM encounters GROUP BY patient_id HAVING count(*) >= ? "
                   "ORDER BY patient_id LIMIT 1", [at_least])["patient_id"].iloc[0]
    return wh.query("SELECT encounter_id FROM encounters WHERE patient_id = ? ORDER BY admit_time, encounter_id", [who])


def test_live_explanation_history_stops_at_the_viewed_encounter(demo_wh):
    wh = Warehouse(str(demo_wh))
    stays = list(_patient_with_stays(wh)["encounter_id"])
    history = patient_q.encounters_up_to(wh, stays[0])
    assert list(history["encounter_id"]) == stays[:1]            # later stays never enter
    history = patient_q.encounters_up_to(wh, stays[-1])
    assert list(history["encounter_id"]) == stays                 # the viewed one last, earlier ones first
    assert patient_q.encounters_up_to(wh, "E9999999").empty
    assert patient_q.encounters_up_to(wh, "' OR 1=1 --").empty


@pytest.fixture(scope="module")
def champion():
    """The shipped model, loaded through the real scoring service."""
    return ScoringService.load(CHAMPION)


def test_live_explanation_is_additive_and_matches_explain_one(demo_wh, champion):
    service = champion
    wh = Warehouse(str(demo_wh))
    viewed = list(_patient_with_stays(wh)["encounter_id"])[-1]
    live = patient_q.live_explanation(service, wh, viewed)
    assert live is not None and live.encounter_id == viewed
    history = patient_q.encounters_up_to(wh, viewed)
    direct = service.explain_one(history)
    assert live.risk == pytest.approx(direct["risk"], abs=1e-12)
    # additive: base + sum of the field groups' points == risk (attributions are stored to 6 decimals)
    assert live.base_risk + sum(live.points.values()) == pytest.approx(live.risk, abs=1e-4)
    assert live.base_risk + live.contributions["contribution"].sum() == pytest.approx(live.risk, abs=1e-4)
    assert len(live.points) == len(direct["groups"])
    # the same model scoring the same history (batch path) gives the same risk: no warning on the page
    batch = service.score_encounters(history, explain=False)
    assert live.agrees_with(batch["risk"].iloc[-1])
    top = max(direct["groups"], key=lambda g: abs(g["points"] or 0))
    assert live.reasons[0] == top["sentence"]


class _ExplainingService:
    """A stand-in model for the Patient page: explain_one returns fixed points that add up to `risk`."""
    single_samples = 32

    def __init__(self, risk: float, version: str):
        self.risk, self.model_version, self.model_dir = float(risk), version, "fake-model"
        self.calls = []

    def explain_one(self, encounters):
        self.calls.append(list(encounters["encounter_id"]))
        points = {g.name: 0.0 for g in FIELD_GROUPS}
        points[FIELD_GROUPS[0].name], points[FIELD_GROUPS[1].name] = 0.07, -0.02
        base = self.risk - 0.05
        return {"encounter_id": encounters["encounter_id"].iloc[-1], "risk": self.risk, "base_risk": base,
                "groups": [{"group": g.name, "label": g.label, "points": points[g.name],
                            "sentence": f"LIVE-{g.name} ({'raises' if points[g.name] > 0 else 'lowers'} risk)"}
                           for g in FIELD_GROUPS]}

    def features_for(self, encounters):
        return pd.DataFrame([{}])


def _open_patient(encounter_id: str) -> AppTest:
    at = app().run()
    at.switch_page("pages/2_Patient.py")
    at.query_params["encounter"] = encounter_id
    return at.run()


def test_patient_page_shows_the_live_sampled_shapley_explanation(env, monkeypatch, demo_wh):
    folder = env / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    monkeypatch.setenv("READMIT_MODEL_DIR", str(folder))
    wh = Warehouse(str(demo_wh))
    stays = list(_patient_with_stays(wh)["encounter_id"])
    viewed = stays[-1]
    stored = float(wh.query("SELECT risk FROM predictions WHERE encounter_id = ?", [viewed])["risk"].iloc[0])
    service = _ExplainingService(stored, "fake-live-1")
    monkeypatch.setattr(ui.data, "scoring_service", lambda model_dir: service)
    at = _open_patient(viewed)
    assert not at.exception
    assert service.calls == [stays]                    # the patient's stays up to the viewed one, it last
    body = texts(at)
    assert "LIVE-" in body and "Main reasons for this score" in body
    assert any("computed now by the loaded model" in c.value for c in at.caption)
    assert not at.warning
    reasons = [m.value for m in at.markdown if "Main reasons" in m.value][0]
    assert reasons.index(f"LIVE-{FIELD_GROUPS[0].name}") < reasons.index(f"LIVE-{FIELD_GROUPS[1].name}")
    assert at.get("plotly_chart")
    # a different risk from the loaded model: the stored risk stays, with a warning
    service = _ExplainingService(stored + 0.01, "fake-live-2")
    monkeypatch.setattr(ui.data, "scoring_service", lambda model_dir: service)
    at = _open_patient(viewed)
    assert not at.exception
    assert any("not the stored" in w.value for w in at.warning)
    assert any(m.label == "Predicted 30-day readmission risk" for m in at.metric)


def test_patient_page_without_a_model_uses_the_stored_explanation(env, demo_wh):
    wh = Warehouse(str(demo_wh))
    top = _top(wh)
    at = _open_patient(top["encounter_id"])
    assert not at.exception
    assert any("no model is loaded" in c.value and "stored" in c.value for c in at.caption)
    assert "LIVE-" not in texts(at)


def test_hospital_benchmark_keeps_missing_values_missing(demo_wh):
    wh = Warehouse(str(demo_wh))
    options = hospitals_q.hospital_options(wh)
    frames = [hospitals_q.hospital_benchmark(wh, f) for f in options["facility_id"]]
    table = pd.concat(frames)
    assert {"ratio FY2025", "ratio FY2024", "state median", "national median", "change"} <= set(table.columns)
    missing = table[table["ratio FY2025"].isna()]
    assert len(missing) and set(missing["status"]) <= {hospitals_q.TOO_FEW, hospitals_q.NOT_AVAILABLE}
    assert set(missing[hospitals_q.reason_column("ratio FY2025")]) == set(missing["status"])
    assert hospitals_q.display_ratio(None) == hospitals_q.NOT_AVAILABLE   # a reason is never assumed
    assert hospitals_q.display_ratio(None, hospitals_q.TOO_FEW) == hospitals_q.TOO_FEW
    assert hospitals_q.hospital_benchmark(wh, "999999") is None


def test_csv_export_neutralizes_formulas():
    frame = pd.DataFrame({"=cmd": ["=HYPERLINK(\"x\")", "+1", "-2", "@SUM(A1)", "\tx", "safe", None],
                          "n": [1, 2, 3, 4, 5, 6, 7]})
    lines = spreadsheet.safe_csv(frame).decode().splitlines()
    assert lines[0].startswith("'=cmd")
    cells = [line.split(",")[0] for line in lines[1:]]
    assert all(c.startswith(("'", '"\'')) for c in cells[:5]) and cells[5] == "safe"


def test_audit_log_appends_json_lines(tmp_path):
    path = tmp_path / "a" / "audit.jsonl"
    audit.record_access("nurse@example.org", "view_patient", "P1", "E1", page="Patient", path=path)
    audit.record_access("nurse@example.org", "view_patient", "P2", "E2", page="Patient", path=path)
    records = list(audit.read_records(path))
    assert [r["patient_id"] for r in records] == ["P1", "P2"] and records[0]["user"] == "nurse@example.org"


# --- pages --------------------------------------------------------------------------------------

def test_home_shows_cohort_and_demo_banner(env):
    at = app().run()
    assert not at.exception
    labels = {m.label: m.value for m in at.metric}
    assert {"Discharges", "Eligible patients", "Eligible discharges scored"} <= set(labels)
    assert "Demo data" in texts(at)


def test_worklist_filters_and_opens_patient_with_audit(env):
    at = app().run()
    at.switch_page("pages/1_Worklist.py").run()
    assert not at.exception
    assert any("PPV" in m.value and "sensitivity" in m.value for m in at.markdown)
    table = at.dataframe[0].value
    assert table["risk_pct"].is_monotonic_decreasing and len(table) == 50
    at.multiselect(key="tier").select("Very high").run()
    assert set(at.dataframe[0].value["risk_tier"].str.contains("Very high")) == {True}
    at.number_input(key="calls").set_value(5).run()
    assert at.session_state[ui.data.VIEW_KEY]["calls"] == 5
    assert (at.dataframe[0].value["flagged"] == "Yes").sum() <= 5
    top = at.dataframe[0].value.iloc[0]
    at.button(key="wl_open").click().run()
    assert not at.exception
    body = texts(at)
    assert f"Patient {top['patient_id']}" in body and "Main reasons for this score" in body
    records = list(audit.read_records(env / "audit.jsonl"))
    assert records[-1]["patient_id"] == top["patient_id"] and records[-1]["action"] == "view_patient"
    assert records[-1]["user"] == "demo (not signed in)"


def test_patient_unknown_id_says_not_found(env):
    at = app()
    at.query_params["encounter"] = "E0000000-missing"
    at.run()
    at.switch_page("pages/2_Patient.py")
    at.query_params["encounter"] = "E0000000-missing"
    at.run()
    assert not at.exception
    assert any("Not found" in e.value for e in at.error)
    assert not [s for s in at.subheader if s.value.startswith("Patient ")]
    assert list(audit.read_records(env / "audit.jsonl"))[-1]["action"] == "patient_not_found"


def test_upload_lists_row_errors_and_scores_valid_rows(env, monkeypatch, champion):
    monkeypatch.setattr(ui.data, "scoring_service", lambda model_dir: champion)
    at = app().run()
    at.switch_page("pages/3_Upload.py").run()
    assert not at.exception and at.get("download_button")
    # AppTest has no file-upload element: exercise the page's core call with the real fixture file
    result = upload_q.score_upload(champion, (FIXTURES / "upload_one_bad_row.csv").read_bytes(),
                                    "mine.csv")
    assert result.errors[["row", "column"]].values.tolist() == [[3, "length_of_stay_days"]]
    assert len(result.predictions) == 4 and list(result.predictions["rank"]) == [1, 2, 3, 4]
    assert result.predictions["risk"].is_monotonic_decreasing


def test_upload_refusal_names_the_users_file_not_the_temp_copy(champion):
    with pytest.raises(UserError) as caught:
        upload_q.score_upload(champion, b"", "discharges.csv")
    assert "discharges.csv" in str(caught.value) and "readmit-upload-" not in str(caught.value)


def test_model_quality_and_hospitals_pages(env):
    at = app().run()
    at.switch_page("pages/4_Model_quality.py").run()
    assert not at.exception
    labels = {m.label for m in at.metric}
    assert {"AUROC, transformer", "AUROC, LACE index"} <= labels
    assert at.table  # confusion matrix
    at.switch_page("pages/5_Hospitals.py").run()
    assert not at.exception
    shown = at.dataframe[0].value
    assert "Too few to report" in shown.to_string() or at.selectbox(key="h_pick").options


# --- sign-in gate -------------------------------------------------------------------------------

def test_real_data_without_identity_provider_is_refused(env, monkeypatch, real_wh):
    monkeypatch.setenv("READMIT_WAREHOUSE", str(real_wh))
    at = app().run()
    assert not at.exception
    assert "Sign-in required" in texts(at) and "secrets.toml" in texts(at)
    assert not at.metric and not at.dataframe
    at.switch_page("pages/1_Worklist.py").run()
    assert not at.dataframe and "Sign-in required" in texts(at)


def test_identity_provider_configured_requires_login(env, monkeypatch, real_wh):
    monkeypatch.setenv("READMIT_WAREHOUSE", str(real_wh))
    at = app(secrets=AUTH_SECRETS, user={"is_logged_in": False})
    at.run()
    assert not at.exception
    assert at.button(key="sign_in") and not at.dataframe and not at.metric


def test_signed_in_user_sees_data_and_is_audited(env, monkeypatch, real_wh):
    monkeypatch.setenv("READMIT_WAREHOUSE", str(real_wh))
    at = app(secrets=AUTH_SECRETS, user={"is_logged_in": True, "email": "coordinator@example.org", "name": "C"})
    at.run()
    assert not at.exception and at.metric
    assert "Demo data" not in texts(at)
    assert any("coordinator@example.org" in c.value for c in at.sidebar.caption)
    at.switch_page("pages/1_Worklist.py").run()
    at.button(key="wl_open").click().run()
    assert list(audit.read_records(env / "audit.jsonl"))[-1]["user"] == "coordinator@example.org"


def test_idle_session_is_signed_out(env, monkeypatch, real_wh):
    monkeypatch.setenv("READMIT_WAREHOUSE", str(real_wh))
    at = app(secrets=AUTH_SECRETS, user={"is_logged_in": True, "email": "coordinator@example.org"})
    at.run()
    assert at.metric
    at.session_state[LAST_ACTIVITY] = time.time() - 16 * 60
    at.run()
    assert at.user.get("is_logged_in") is False
    at.run()
    assert at.button(key="sign_in") and not at.metric


# --- CLI ----------------------------------------------------------------------------------------

def test_cli_demo_reuses_a_scored_warehouse_and_refuses_an_unscored_one(demo_wh, tmp_path, capsys):
    assert main(["demo", "--warehouse", str(demo_wh), "--no-serve"]) == 0
    assert "using the existing warehouse" in capsys.readouterr().out
    assert main(["demo", "--warehouse", str(tmp_path / "empty"), "--no-serve"]) == 2
    assert "no scored patients" in capsys.readouterr().err


def test_cli_app_runs_streamlit_on_the_requested_port():
    command = streamlit_command(8599)
    assert command[1:4] == ["-m", "ui.launch", "run"] and str(APP) in command
    assert command[command.index("--server.port") + 1] == "8599"


def test_launch_preloads_every_module_the_pages_import():
    loaded = set(launch.preload())
    for script in launch.SCRIPTS:
        for name in launch.imported_names(script):
            assert name in loaded or name.rsplit(".", 1)[0] in loaded, (script.name, name)
    assert {"serving.figures", "serving.patient", "ui.data", "pandas"} <= loaded


def test_model_quality_shows_the_model_folder(env, monkeypatch):
    folder = env / "model"
    (folder / "figures").mkdir(parents=True)
    (folder / "metrics.json").write_text('{"comparison": [{"model": "transformer", "auroc": 0.68, "n": 100},'
                                         ' {"model": "lace", "auroc": 0.61, "n": 100},'
                                         ' {"model": "mllib_gbt", "auroc": 0.66, "n": 100}]}')
    (folder / "figures" / "roc.json").write_text(go.Figure(go.Scatter(x=[0, 1], y=[0, 1])).to_json())
    (folder / "README.md").write_text("# Model card\n\nIntended use: ranking recent discharges for a call.")
    monkeypatch.setenv("READMIT_MODEL_DIR", str(folder))
    at = app().run()
    at.switch_page("pages/4_Model_quality.py").run()
    assert not at.exception
    comparison = [d.value for d in at.dataframe if "model" in d.value.columns]
    assert comparison and set(comparison[0]["model"]) == {"transformer", "lace", "mllib_gbt"}
    assert "Intended use" in texts(at)
