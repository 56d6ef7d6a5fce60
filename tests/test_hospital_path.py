"""The documented path for a hospital's own data, walked end to end for every encounter source:
`readmit etl --source X --warehouse W` -> `readmit score --warehouse W` -> the Worklist page -> the Patient
page (Streamlit AppTest), on the real Diabetes 130 file, the real MIMIC-III demo, the MIMIC-IV fixture, a
discharges CSV (the synthetic generator's template file with blanked list cells and only the required
columns plus dates) and the synthetic source.

Every source leaves some list cells null (a discharges cell left blank, MIMIC without a diabetes medication
list) or empty (Diabetes 130 without a diabetes drug): the warehouse hands those back as pd.NA or empty numpy
arrays, and a null list must stay null ("Not recorded") and an empty one empty all the way to the page.
One Spark session (conftest) runs every ETL in-process; the shipped champion scores. About ten minutes on two
shared cores (slow): each source is an ETL and a scoring run."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from cli.main import main
from core import vocabulary
from core.errors import UserError
from core.intake import from_warehouse_frame, warehouse_list
from core.schema import ENCOUNTER_FIELDS
from core.warehouse import Warehouse
from serving import patient as patient_q
from serving import worklist

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from conftest import shared_file  # noqa: E402

CHAMPION = ROOT / "models" / "champion"
MIMIC4 = ROOT / "tests" / "fixtures" / "mimic4"
END = "2026-11-25"
ROWS = 300
WINDOW = 365
AUTH_SECRETS = {"auth": {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "x" * 32,
                         "client_id": "readmit", "client_secret": "secret",
                         "server_metadata_url": "http://127.0.0.1:9/.well-known/openid-configuration"}}
USER = {"is_logged_in": True, "email": "coordinator@example.org", "name": "C"}
SOURCES = ("discharges", "mimic3", "mimic4", "diabetes130", "synthetic")
# Sources whose warehouse must hold encounters with a null medication list ("not recorded"): blanked cells
# of the discharges file; MIMIC has no diabetes medication list at all.
NULL_MEDICATIONS = {"discharges", "mimic3", "mimic4"}
# Diabetes 130 has no dates: its encounters can be scored and opened, never listed for a follow-up day.
UNDATED = {"diabetes130"}
# The discharges file keeps the required columns and these; every other optional column is dropped, age and the
# diagnosis count included (features no row records: the encoding fit must still work).
KEEP_COLUMNS = {"admit_time", "discharge_time", "medication_changes"}


# --- one list cell as the warehouse returns it (no Spark) --------------------------------------------------

@pytest.mark.parametrize("cell, expected", [
    (None, None), (pd.NA, None), (float("nan"), None), (np.float64("nan"), None), (pd.NaT, None),
    (np.array([], dtype=object), []), ([], []), ((), []),
    (np.array(["insulin:up", "metformin:steady"], dtype=object), ["insulin:up", "metformin:steady"]),
    (np.array(["428.0", None], dtype=object), ["428.0", None]), (["250.02", pd.NA], ["250.02", None]),
    (pd.array(["a", pd.NA], dtype="string"), ["a", None]),
    ("428.0; 250.02", ["428.0", "250.02"]), ("", None),
])
def test_warehouse_list_keeps_null_null_and_empty_empty(cell, expected):
    assert warehouse_list(cell, "diagnoses") == expected


def test_warehouse_list_refuses_a_scalar_naming_the_column_not_the_value():
    with pytest.raises(UserError, match="'medication_changes' holds a int") as error:
        warehouse_list(4711, "medication_changes")
    assert "4711" not in str(error.value)


def test_from_warehouse_frame_reads_pd_na_and_numpy_lists():
    table = pd.DataFrame({"encounter_id": ["E1", "E2", "E3"], "patient_id": ["P1", "P1", "P2"],
                          "diagnoses": pd.Series([np.array(["428.0"], dtype=object), np.array(["486"], dtype=object),
                                                  np.array(["250.02", "401.9"], dtype=object)], dtype=object),
                          "medication_changes": pd.Series([pd.NA, np.array([], dtype=object),
                                                           np.array(["insulin:up"], dtype=object)], dtype=object)})
    out = from_warehouse_frame(table)
    assert out["medication_changes"].tolist() == [None, [], ["insulin:up"]]
    assert out["diagnoses"].tolist() == [["428.0"], ["486"], ["250.02", "401.9"]]


# --- the CLI path into a warehouse -------------------------------------------------------------------------

def _discharges_csv(folder: Path) -> Path:
    """`readmit synth` as a hospital's discharges file: every third medication cell blanked, the optional
    columns but KEEP_COLUMNS dropped."""
    path = folder / "discharges.csv"
    assert main(["synth", "--rows", str(ROWS), "--seed", "5", "--end", END, "--output", str(path)]) == 0
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.loc[frame.index % 3 == 0, "medication_changes"] = ""
    keep = [f.name for f in ENCOUNTER_FIELDS if f.name in frame.columns and (f.required or f.name in KEEP_COLUMNS)]
    assert len(keep) < len(frame.columns) - 10          # the optional columns really are gone
    frame[keep].to_csv(path, index=False)
    return path


def _diabetes_slice(folder: Path) -> Path:
    """The first ROWS rows of the real Diabetes 130 file (a missing file fails, never skips)."""
    source = shared_file("diabetes130", "diabetic_data_dev.csv")
    path = folder / "diabetic_data_slice.csv"
    with open(source, encoding="utf-8") as handle:
        path.write_text("".join(next(handle) for _ in range(ROWS + 1)), encoding="utf-8")
    return path


def _etl_args(source: str, folder: Path) -> list[str]:
    if source == "discharges":
        return ["--input", str(_discharges_csv(folder))]
    if source == "mimic3":
        return ["--input", str(shared_file("mimic3_demo"))]
    if source == "mimic4":
        return ["--input", str(MIMIC4), "--ratios", "1,0,0"]     # four patients: a hash split could empty train
    if source == "diabetes130":
        return ["--input", str(_diabetes_slice(folder))]
    return ["--rows", str(ROWS), "--seed", "3", "--end", END]


@pytest.fixture(scope="module", params=SOURCES)
def warehouse(request, spark, tmp_path_factory) -> tuple[str, Path]:
    """`readmit etl --source X` then `readmit score --warehouse W` (explanations on), in this process: the ETL
    reuses the test session's Spark."""
    source = request.param
    folder = tmp_path_factory.mktemp(f"hospital_{source}")
    root = folder / "warehouse"
    assert main(["etl", "--source", source, *_etl_args(source, folder), "--warehouse", str(root),
                 "--master", "local[2]", "--driver-memory", "1g"]) == 0
    assert main(["score", "--warehouse", str(root), "--model", str(CHAMPION)]) == 0
    return source, root


def _scored(root: Path) -> pd.DataFrame:
    return Warehouse(str(root)).query(
        "SELECT e.encounter_id, e.patient_id, e.discharge_time, e.medication_changes IS NULL AS meds_null, "
        "coalesce(len(e.medication_changes) = 0, false) AS meds_empty, e.eligible, p.risk, p.reason_1 "
        "FROM encounters e LEFT JOIN predictions p USING (encounter_id) ORDER BY e.encounter_id")


@pytest.mark.spark
@pytest.mark.slow
def test_every_eligible_encounter_is_scored_and_lists_read_back_as_stored(warehouse):
    source, root = warehouse
    scored = _scored(root)
    assert len(scored) > 0
    eligible = scored[scored["eligible"].astype(bool)]
    assert len(eligible) and eligible["risk"].notna().all() and eligible["risk"].between(0, 1).all()
    assert eligible["reason_1"].notna().all()
    assert scored.loc[~scored["eligible"].astype(bool), "risk"].isna().all()
    if source in NULL_MEDICATIONS:
        assert scored["meds_null"].any(), f"{source}: expected encounters without a medication list"
    frame = from_warehouse_frame(Warehouse(str(root)).query("SELECT * FROM encounters ORDER BY encounter_id"))
    meds = frame["medication_changes"]
    assert [m is None for m in meds] == scored["meds_null"].tolist()            # null stays null
    assert [m == [] for m in meds] == scored["meds_empty"].tolist()              # empty stays empty
    assert all(isinstance(d, list) and d for d in frame["diagnoses"])


# --- the pages ---------------------------------------------------------------------------------------------

@pytest.fixture()
def page_env(monkeypatch, tmp_path, warehouse):
    monkeypatch.setenv("READMIT_WAREHOUSE", str(warehouse[1]))
    monkeypatch.setenv("READMIT_MODEL_DIR", str(CHAMPION))
    monkeypatch.setenv("READMIT_AUDIT_LOG", str(tmp_path / "audit.jsonl"))
    monkeypatch.setenv("READMIT_DATABASE_URL", f"sqlite:///{tmp_path / 'ops.sqlite3'}")
    monkeypatch.delenv("READMIT_IDLE_MINUTES", raising=False)
    return warehouse


def _app() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.secrets = AUTH_SECRETS          # real sources ask for sign-in; a signed-in coordinator
    at.user = USER
    return at.run()


def _page_text(at: AppTest) -> str:
    return "\n".join(str(e.value) for e in [*at.markdown, *at.info, *at.warning, *at.error, *at.caption,
                                            *at.subheader, *at.title])


@pytest.mark.spark
@pytest.mark.slow
def test_worklist_lists_the_scored_encounters_with_their_risks(page_env):
    source, root = page_env
    scored = _scored(root)
    dated = scored[scored["risk"].notna() & scored["discharge_time"].notna()]
    at = _app()
    assert not at.exception
    at.switch_page("pages/1_Worklist.py")
    if source in UNDATED:
        assert dated.empty
        at.run()
        assert not at.exception
        assert "no open patients" in _page_text(at)
        patient = str(scored.loc[scored["risk"].notna(), "patient_id"].iloc[0])
        at = _app()                              # searched for: found, and said to have no discharge date
        at.switch_page("pages/1_Worklist.py")
        at.query_params["q"] = patient
        at.run()
        assert not at.exception
        assert f"Patient {patient} has no discharge on record" in _page_text(at)
        return
    as_of = pd.Timestamp(dated["discharge_time"].max()).date()     # the newest scored discharge is listed
    at.query_params["as_of"] = as_of.isoformat()
    at.query_params["window"] = str(WINDOW)
    at.query_params["calls"] = "5"
    at.run()
    assert not at.exception, at.exception
    index = worklist.WorklistIndex(Warehouse(str(root)))
    expected = worklist.build_day_list(worklist.window_rows(index, as_of, WINDOW), {}, as_of, WINDOW, 5)
    assert len(expected.open) > 0
    table = at.dataframe[0].value
    assert list(table["encounter_id"]) == list(expected.open["encounter_id"][:len(table)])
    stored = scored.set_index("encounter_id")["risk"]
    assert table["risk_pct"].notna().all()
    assert np.allclose(table["risk_pct"], (stored.loc[table["encounter_id"]] * 100).round(1).to_numpy())
    assert set(table["encounter_id"]) <= set(scored["encounter_id"])
    assert f"for {as_of:%Y-%m-%d}" in _page_text(at)


@pytest.mark.spark
@pytest.mark.slow
def test_patient_page_opens_a_stay_without_a_medication_list(page_env):
    source, root = page_env
    scored = _scored(root)
    shown = []
    for kind in ("meds_null", "meds_empty"):
        chosen = scored[scored[kind] & scored["risk"].notna()]
        if chosen.empty:
            continue
        row = chosen.iloc[0]
        at = _app()
        at.switch_page("pages/2_Patient.py")
        at.query_params["encounter"] = str(row["encounter_id"])
        at.run()
        assert not at.exception, at.exception
        assert any(s.value.startswith(f"Patient {row['patient_id']}") for s in at.subheader)
        assert any(m.label == "Predicted 30-day readmission risk" for m in at.metric)
        written = [str(m.value) for m in at.markdown]
        expected = f"{vocabulary.NOT_RECORDED}." if kind == "meds_null" else "No diabetes medication given."
        assert expected in written, (source, kind)
        cells = {str(v) for t in at.table for v in t.value.to_numpy().ravel()}
        assert not cells & {"None", "nan", "NaN", "<NA>", "NaT", ""}, (source, kind)
        assert vocabulary.NOT_RECORDED in cells or source == "synthetic"     # missing facts said as such
        history = patient_q.encounters_up_to(Warehouse(str(root)), str(row["encounter_id"]))
        assert history["encounter_id"].iloc[-1] == row["encounter_id"]
        assert (history["medication_changes"].iloc[-1] is None) == (kind == "meds_null")
        shown.append(kind)
    if source in NULL_MEDICATIONS:
        assert "meds_null" in shown
    assert shown, f"{source}: no scored stay without diabetes medications"
