"""The daily worklist: today's list (window, one row per patient, handled reasons), capacity and ties, the
replayed PPV, outreach and uploads in the operational database (SQLite and PostgreSQL), the Worklist page
with query parameters, and `readmit worklist` / `readmit outreach`."""
from __future__ import annotations

import csv
import datetime as dt
import io
import sys
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from cli.main import main
from core.config import get_settings
from core.synthetic import write_template_csv
from core.warehouse import Warehouse
from serving import outreach, upload, worklist
from serving.database import engine_for, migrate, session_scope
from serving.db_tables import CallList, CallListEntry, UploadedDischarge, UploadedScore
from serving.outreach import OutreachRecord
from serving.patient import uploaded_detail
from serving.scoring import ScoringService
from serving.worklist import WorklistFilters, build_day_list, replay_policy, window_rows
from ui.format import days_since

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "fixtures" / "app"))
import make_warehouse  # noqa: E402

D = dt.date(2026, 11, 28)          # the hand-made warehouse's "today"
NOON = dt.time(12, 0)


def at(days_before: int, time: dt.time = NOON) -> dt.datetime:
    return dt.datetime.combine(D - dt.timedelta(days=days_before), time)


def stay(patient: str, encounter: str, discharged: int | None, risk: float | None = None, admitted: int | None = None,
         disposition: str = "home", **extra) -> dict:
    """A stay discharged `discharged` days before D (None: still in hospital), admitted `admitted` days before."""
    admitted = admitted if admitted is not None else (discharged or 0) + 3
    return {"patient_id": patient, "encounter_id": encounter, "admit_time": at(admitted, dt.time(8)),
            "discharge_time": at(discharged) if discharged is not None else None, "risk": risk,
            "risk_tier": "High" if risk and risk >= 0.4 else "Medium", "reason_1": f"reason of {encounter}",
            "sex": "Female", "age_band": "[60-70)", "discharge_disposition": disposition, **extra}


STAYS = [
    stay("P01", "E01", 2, 0.50),
    stay("P02", "E02", 5, 0.50),                            # same risk as E01, discharged earlier: ranked after
    stay("P03", "E03", 10, 0.40), stay("P03", "E00", 40, 0.99),   # E00 is outside the window
    stay("P04", "E04a", 20, 0.90), stay("P04", "E04b", 3, 0.30),  # one row per patient: the latest, E04b
    stay("P05", "E05", 8, 0.80), stay("P05", "E05r", None, admitted=2),   # readmitted 2 days before D
    stay("P06", "E06", 12, 0.70), stay("P06", "E06d", 1, admitted=4, disposition="expired"),  # died
    stay("P07", "E07", 30, 0.95),                           # 30 days before D: outside a 30-day window
    stay("P08", "E08", 29, 0.20),                           # 29 days before D: inside
    stay("P09", "E09", 0, 0.10, sex="Male"),                # discharged on D
    stay("P10", "E10", -1, 0.97),                           # after D
    stay("P11", "E11", 4, None),                            # eligible, not scored
    stay("P12", "E12", 6, None, disposition="hospice"),
    stay("P13", "E13", 6, 0.45), stay("P14", "E14", 6, 0.45),   # a tie on risk and time: encounter id decides
]


@pytest.fixture(scope="module")
def hand_index(tmp_path_factory) -> worklist.WorklistIndex:
    root = make_warehouse.build_from(tmp_path_factory.mktemp("wh_hand"), STAYS)
    return worklist.WorklistIndex(Warehouse(str(root)))


def event(encounter: str, status: str, minute: int, patient: str | None = None, mismatch: bool = False,
          note: str | None = None) -> OutreachRecord:
    return OutreachRecord(id=minute, source="synthetic", encounter_id=encounter, patient_id=patient or "P" + encounter[1:3],
                          status=status, note=note, recorded_by="anna",
                          recorded_at=dt.datetime(2026, 11, 28, 9, minute, tzinfo=dt.timezone.utc),
                          patient_mismatch=mismatch)


# --- today's list (pure) ------------------------------------------------------------------------------------

def test_today_list_window_one_row_per_patient_ranked_with_ties(hand_index):
    day = build_day_list(window_rows(hand_index, D, 30), {}, D, 30, capacity=3)
    assert list(day.open["encounter_id"]) == ["E01", "E02", "E13", "E14", "E03", "E04b", "E08", "E09"]
    assert list(day.open["rank"]) == list(range(1, 9))
    assert list(day.call_list["encounter_id"]) == ["E01", "E02", "E13"]          # exactly the capacity
    assert day.open["patient_id"].is_unique and day.patients == len(set(day.open["patient_id"]) |
                                                                    set(day.handled["patient_id"]))
    assert set(day.open["days_since_discharge"]) <= set(range(30))
    assert dict(zip(day.open["encounter_id"], day.open["days_since_discharge"]))["E08"] == 29
    reasons = dict(zip(day.handled["patient_id"], day.handled["reason"]))
    assert reasons == {"P05": f"Readmitted on {D - dt.timedelta(days=2):%Y-%m-%d}", "P06": "Died in hospital",
                       "P11": "Not scored", "P12": "Discharged to hospice"}
    assert not {"P07", "P10", "E00", "E04a"} & (set(day.open["patient_id"]) | set(day.open["encounter_id"]))
    for capacity in (1, 8, 50):
        assert len(build_day_list(window_rows(hand_index, D, 30), {}, D, 30, capacity).call_list) == min(capacity, 8)


def test_look_back_counts_only_admissions_up_to_the_as_of_date(hand_index):
    day = build_day_list(window_rows(hand_index, D - dt.timedelta(days=3), 30), {}, D - dt.timedelta(days=3), 30, 5)
    assert "E05" in set(day.open["encounter_id"])                  # readmitted only 2 days before D
    reasons = dict(zip(day.handled["patient_id"], day.handled["reason"]))
    assert reasons["P06"] == f"Readmitted on {D - dt.timedelta(days=4):%Y-%m-%d}"   # died later, in that stay
    assert not {"E09", "E01"} & set(day.open["encounter_id"])       # discharged after the date
    assert dict(zip(day.open["encounter_id"], day.open["days_since_discharge"]))["E04b"] == 0
    narrow = build_day_list(window_rows(hand_index, D, 7), {}, D, 7, 5)
    assert set(narrow.open["encounter_id"]) == {"E01", "E02", "E13", "E14", "E04b", "E09"}


def test_closing_outreach_leaves_the_open_list_no_answer_keeps_it(hand_index):
    events = {("synthetic", "E13"): [event("E13", "no_answer", 1), event("E13", "follow_up_booked", 2, note="GP Fri")],
              ("synthetic", "E14"): [event("E14", "no_answer", 3)],
              ("synthetic", "E01"): [event("E01", "declined", 4, patient="P99", mismatch=True)]}
    day = build_day_list(window_rows(hand_index, D, 30), events, D, 30, capacity=3)
    handled = day.handled.set_index("encounter_id")
    assert handled.loc["E13", "reason"] == "Follow-up booked" and handled.index[0] == "E13"   # latest outreach first
    assert handled.loc["E13", "history"] == ("2026-11-28 09:01 UTC No answer, by anna; "
                                             "2026-11-28 09:02 UTC Follow-up booked, by anna: GP Fri")
    open_rows = day.open.set_index("encounter_id")
    assert open_rows.loc["E14", "status_label"] == "No answer" and open_rows.loc["E14", "attempts"] == 1
    assert open_rows.loc["E01", "status"] == "not_contacted"             # an event of another patient never counts
    assert "recorded under another patient id" in open_rows.loc["E01", "history"]
    assert list(day.call_list["encounter_id"]) == ["E01", "E02", "E14"]  # the next one moves up


def test_filters_search_and_the_filter_that_hides_a_match(hand_index):
    day = build_day_list(window_rows(hand_index, D, 30), {}, D, 30, capacity=3)
    males = WorklistFilters(sexes=("Male",))
    assert list(worklist.page_of(day.open, males).rows["encounter_id"]) == ["E09"]
    assert worklist.page_of(day.open, WorklistFilters(call_list_only=True)).total == 3
    paged = worklist.page_of(day.open, WorklistFilters(), page=2, page_size=3)
    assert list(paged.rows["rank"]) == [4, 5, 6] and paged.pages == 3
    assert worklist.page_of(day.open, WorklistFilters(), page=99, page_size=3).page == 3
    found = worklist.search(day, hand_index, "p01", males)
    assert list(found.open["encounter_id"]) == ["E01"] and found.hidden_by == {"E01": ["Sex: Male"]}
    assert list(worklist.search(day, hand_index, "E06", males).handled["patient_id"]) == ["P06"]
    outside = worklist.search(day, hand_index, "P07", males)
    assert outside.open.empty and list(outside.outside["encounter_id"]) == ["E07"]
    assert not worklist.search(day, hand_index, "' OR 1=1 --").found
    assert worklist.id_examples(day) == ("P01", "E01")


def test_call_list_csv_columns_dates_percent_and_formula_safety():
    rows = pd.DataFrame([{**stay("=HYPERLINK(\"x\")", "E1", 1, 0.31234), "source": "discharges",
                          "readmitted_at": pd.NaT, "ineligible_reason": None, "problem": None,
                          "reason_2": "+1 calls", "reason_3": None, "uploaded_by": None, "uploaded_at": None}])
    day = build_day_list(rows, {}, D, 30, capacity=5)
    lines = list(csv.reader(io.StringIO(worklist.call_list_csv(day).decode())))
    assert lines[0][:11] == list(worklist.CALL_LIST_COLUMNS)
    record = dict(zip(lines[0], lines[1]))
    assert record["patient_id"].startswith("'=") and record["reason_2"] == "'+1 calls"
    assert record["discharge_date"] == f"{D - dt.timedelta(days=1):%Y-%m-%d}" and record["days_since_discharge"] == "1"
    assert record["risk"] == "31.2%" and record["status"] == "Not contacted" and record["reason_3"] == ""


def test_words_and_plurals():
    assert worklist.count_words(1, "call") == "1 call" and worklist.count_words(2, "call") == "2 calls"
    assert worklist.count_words(1_204, "patient") == "1,204 patients"
    assert worklist.count_words(1, "match", "matches") == "1 match"
    assert days_since(1) == "1 day since discharge" and days_since(0) == "discharged today"
    assert worklist.percent(0.0456) == "4.6%"


def test_default_as_of_is_the_latest_discharge_for_demo_data_else_today_in_the_time_zone():
    assert worklist.default_as_of(D, True, "UTC") == D
    assert worklist.default_as_of(D, False, "Pacific/Kiritimati") == worklist.today_in("Pacific/Kiritimati")
    assert worklist.default_as_of(None, True, "UTC") == worklist.today_in("UTC")


# --- the replay ---------------------------------------------------------------------------------------------

def test_replay_policy_on_a_hand_made_example():
    d1, d2, d3 = dt.date(2026, 3, 1), dt.date(2026, 3, 2), dt.date(2026, 3, 3)
    noon = lambda day: dt.datetime.combine(day, NOON)  # noqa: E731
    discharges = pd.DataFrame([
        ("A", noon(d1), pd.NaT, 0.90, 1.0, True),
        ("B", noon(d1), pd.NaT, 0.80, 0.0, True),
        ("C", noon(d2), dt.datetime.combine(d3, dt.time(8)), 0.70, 1.0, True),   # readmitted on d3: open on d2 only
        ("D", noon(d2), pd.NaT, 0.60, 1.0, True),
        ("E", noon(d3), pd.NaT, 0.95, 0.0, False),          # not in the test split: called, never counted
        ("F", noon(d1), pd.NaT, float("nan"), 1.0, True),   # not scored: never listed
        ("G", noon(d1), pd.NaT, 0.50, float("nan"), True),  # outcome unknown: listed, never counted
    ], columns=["encounter_id", "discharge_time", "readmitted_at", "risk", "y", "counted"])
    # capacity 1: d1 calls A; d2 calls B (A left the list); d3: C readmitted, E (0.95) beats D.
    one = replay_policy(discharges, [d1, d2, d3], capacity=1, window_days=3)
    assert (one.called, one.called_readmitted, one.outcomes, one.readmitted) == (2, 1, 4, 3)
    assert one.ppv == pytest.approx(1 / 2) and one.sensitivity == pytest.approx(1 / 3)
    assert one.days == 3 and one.first_day == d1 and one.last_day == d3
    assert "3 past days (2026-03-01 to 2026-03-03)" in one.basis and "1 highest-risk open patient was called" in \
        one.basis and "4 discharges with a known 30-day outcome" in one.basis
    two = replay_policy(discharges, [d3, d1, d2], capacity=2, window_days=3)   # days in any order
    assert (two.called, two.called_readmitted) == (4, 3) and two.ppv == pytest.approx(0.75)
    assert two.sensitivity == pytest.approx(1.0)
    # a one-day window: each discharge is open on its own day only: d1 calls A, d2 calls C (D waits in vain)
    short = replay_policy(discharges, [d1, d2, d3], capacity=1, window_days=1)
    assert (short.called, short.called_readmitted, short.readmitted) == (2, 2, 3)
    assert short.ppv == pytest.approx(1.0) and short.sensitivity == pytest.approx(2 / 3)
    assert replay_policy(discharges, [], 2, 3).ppv != replay_policy(discharges, [], 2, 3).ppv   # nan: nothing replayed


def test_capacity_tradeoff_replays_the_past_days(hand_index):
    small = worklist.capacity_tradeoff(hand_index, D + dt.timedelta(days=60), 30, 1)
    assert small.replay.days and small.replay.last_day == D + dt.timedelta(days=60 - worklist.OUTCOME_DAYS)
    nothing = worklist.capacity_tradeoff(hand_index, D - dt.timedelta(days=20), 30, 1)   # no past day to replay
    assert nothing.replay.days == 0 and "cannot be estimated" in nothing.basis


# --- the operational database: SQLite and PostgreSQL --------------------------------------------------------

@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'ops.sqlite3'}" if request.param == "sqlite" else \
        request.getfixturevalue("postgres_database")
    migrated = engine_for(url)
    migrate(migrated)
    yield migrated
    migrated.dispose()


def test_recorded_outreach_closes_the_case_on_the_list(engine, hand_index):
    before = outreach.latest_event_id(engine)
    outreach.record_event(engine, "synthetic", "E13", "P13", "reached", by="anna")
    outreach.record_event(engine, "synthetic", "E13", "P13", "follow_up_booked", "GP on Friday", by="anna")
    outreach.record_event(engine, "synthetic", "E14", "P14", "no_answer", by="ben")
    assert outreach.latest_event_id(engine) > before
    rows = window_rows(hand_index, D, 30)
    events = outreach.histories(engine, worklist.encounter_keys(rows))
    assert [e.status for e in events[("synthetic", "E13")]] == ["reached", "follow_up_booked"]
    day = build_day_list(rows, events, D, 30, capacity=3)
    assert "E13" in set(day.handled["encounter_id"]) and "E14" in set(day.open["encounter_id"])
    assert worklist.position(day, "synthetic", "E13") == {"open": False, "reason": "Follow-up booked"}
    assert worklist.position(day, "synthetic", "E14") == {"open": True, "rank": 3, "flagged": True}


def test_call_list_is_stored_with_date_and_capacity_once_per_change(engine, hand_index):
    rows = window_rows(hand_index, D, 30)
    day = build_day_list(rows, {}, D, 30, capacity=3)
    first = worklist.store_call_list(engine, day, by="anna", model_version="m1")
    again = worklist.store_call_list(engine, day, by="ben", model_version="m1")
    assert first.created and not again.created and again.id == first.id
    bigger = worklist.store_call_list(engine, build_day_list(rows, {}, D, 30, capacity=5), by="anna",
                                      model_version="m1")
    assert bigger.created
    stored = worklist.stored_call_lists(engine, D)
    assert [(c.capacity, len(entries)) for c, entries in stored] == [(3, 3), (5, 5)]
    call_list, entries = stored[0]
    assert call_list.list_date == D and call_list.built_by == "anna"
    assert [(e.rank, e.encounter_id) for e in entries] == [(1, "E01"), (2, "E02"), (3, "E13")]


@pytest.fixture(scope="module")
def champion():
    return ScoringService.load(ROOT / "models" / "champion")


@pytest.fixture(scope="module")
def discharges_2000(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("upload") / "discharges.csv"
    assert write_template_csv(path, 2000, seed=5) == 2000
    return path.read_bytes()


def test_uploading_the_same_file_twice_stores_it_once_and_it_joins_the_list(engine, champion, discharges_2000,
                                                                            hand_index):
    first = upload.add_to_worklist(engine, champion, discharges_2000, "discharges.csv", by="anna")
    second = upload.add_to_worklist(engine, champion, discharges_2000, "discharges.csv", by="ben")
    assert (first.added, first.already, len(first.errors)) == (2000, 0, 0)
    assert (second.added, second.already) == (0, 2000)
    with session_scope(engine) as session:
        assert session.query(UploadedDischarge).count() == 2000 and session.query(UploadedScore).count() == 2000
    rows = upload.uploaded_rows(engine)
    assert len(rows) == 2000 and set(rows["uploaded_by"]) == {"anna"} and rows["risk"].notna().mean() > 0.9
    newest = pd.Timestamp(rows["discharge_time"].max()).date()
    day = build_day_list(window_rows(hand_index, newest, 30, rows), {}, newest, 30, capacity=10)
    uploaded = day.open[day.open["source"] == "discharges"]
    assert len(uploaded) > 10 and uploaded["uploaded_by"].eq("anna").all()
    top = uploaded.iloc[0]
    warehouse = Warehouse(hand_index.root)
    detail = uploaded_detail(engine, warehouse, top["encounter_id"])
    assert detail is not None and detail.patient_id == top["patient_id"]
    assert detail.prediction["risk"] == pytest.approx(top["risk"]) and detail.prediction["reason_1"] == top["reason_1"]
    assert detail.uploaded["uploaded_by"] == "anna" and not detail.contributions.empty
    assert uploaded_detail(engine, warehouse, None, top["patient_id"]).patient_id == top["patient_id"]
    assert uploaded_detail(engine, warehouse, "NOPE") is None


def test_invalid_rows_are_listed_and_never_stored(engine, champion):
    bad = (ROOT / "tests" / "fixtures" / "app" / "upload_one_bad_row.csv").read_bytes()
    result = upload.add_to_worklist(engine, champion, bad, "mine.csv", by="anna")
    invalid = set(result.errors["row"].dropna().astype(int))
    assert 3 in invalid and result.added == 5 - len(invalid)
    stored = set(upload.uploaded_rows(engine)["encounter_id"])
    assert not {f"UE00000{r}" for r in invalid} & stored


# --- the Worklist page (AppTest) ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def demo_wh(tmp_path_factory) -> Path:
    return make_warehouse.build(tmp_path_factory.mktemp("wh_demo_wl"), patients=400, seed=3)


@pytest.fixture()
def page_env(monkeypatch, tmp_path, demo_wh):
    monkeypatch.setenv("READMIT_WAREHOUSE", str(demo_wh))
    monkeypatch.setenv("READMIT_MODEL_DIR", str(tmp_path / "no-model"))
    monkeypatch.setenv("READMIT_AUDIT_LOG", str(tmp_path / "audit.jsonl"))
    monkeypatch.setenv("READMIT_DATABASE_URL", f"sqlite:///{tmp_path / 'ops.sqlite3'}")
    return tmp_path


def worklist_page(**params) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90)
    at.run()
    at.switch_page("pages/1_Worklist.py")
    for key, value in params.items():
        at.query_params[key] = value
    return at.run()


def page_text(at: AppTest) -> str:
    return "\n".join(str(e.value) for e in [*at.markdown, *at.info, *at.warning, *at.caption])


def test_worklist_page_builds_the_view_from_the_query_parameters(page_env, demo_wh):
    at = worklist_page(calls="7", view="open")
    assert not at.exception
    index = worklist.WorklistIndex(Warehouse(str(demo_wh)))
    as_of = index.latest_discharge
    expected = build_day_list(window_rows(index, as_of, 30), {}, as_of, 30, 7)
    body = page_text(at)
    assert f"Today's call list for {as_of:%Y-%m-%d}: 7 patients" in body
    assert f"{len(expected.open)} open patients" in body and "Page 1 of" in body
    table = at.dataframe[0].value
    assert list(table["patient_id"]) == list(expected.open["patient_id"][:50])
    assert (table["flagged"] == "Yes").sum() == 7 and list(table["rank"][:3]) == [1, 2, 3]
    assert "PPV" in body and "Replayed over" in body
    assert at.text_input(key="q").placeholder == f"e.g. {expected.open['patient_id'].iloc[0]} or " \
                                                 f"{expected.open['encounter_id'].iloc[0]}"
    with session_scope(engine_for(f"sqlite:///{page_env / 'ops.sqlite3'}")) as session:   # the list was stored
        assert [(c.list_date, c.capacity) for c in session.query(CallList)] == [(as_of, 7)]
        assert session.query(CallListEntry).count() == 7

    second = worklist_page(calls="7", page="2", sex="Female")
    assert not second.exception
    table = second.dataframe[0].value
    females = expected.open[expected.open["sex"] == "Female"]
    assert set(table["sex"]) == {"Female"} and list(table["patient_id"]) == list(females["patient_id"][50:100])
    assert f"Page 2 of {-(-len(females) // 50)} · {len(females)} patients match the filters" in page_text(second)
    banded = worklist_page(tier=["High", "Very high"])
    assert set(banded.dataframe[0].value["risk_tier"]) == {"▲ High", "▲▲ Very high"}

    hidden = expected.open[expected.open["sex"] == "Male"].iloc[0]
    found = worklist_page(q=hidden["patient_id"], sex="Female")
    assert not found.exception
    assert any("hidden by the filter Sex: Female" in w.value for w in found.warning)
    assert found.dataframe[0].value["patient_id"].iloc[0] == hidden["patient_id"]

    missing = worklist_page(q="ZZ-no-such-id")
    assert any("No patient or encounter id starts with 'ZZ-no-such-id'" in i.value for i in missing.info)

    handled = worklist_page(view="handled")
    assert not handled.exception
    assert set(handled.dataframe[0].value["reason"]) <= {"Died in hospital", "Discharged to hospice"} | {
        r for r in expected.handled["reason"]}


def test_worklist_page_records_a_call_and_the_patient_leaves_the_open_list(page_env, demo_wh):
    at = worklist_page(calls="5")
    top = at.dataframe[0].value.iloc[0]
    [s for s in at.selectbox if s.label == "Result"][0].select("follow_up_booked")
    [t for t in at.text_input if t.label == "Note (optional)"][0].input("Booked with the GP")
    [b for b in at.button if b.label == "Save"][0].click()
    at.run()
    assert not at.exception
    assert top["patient_id"] not in list(at.dataframe[0].value["patient_id"])
    handled = worklist_page(view="handled")
    row = handled.dataframe[0].value.iloc[0]
    assert row["patient_id"] == top["patient_id"] and row["reason"] == "Follow-up booked"
    assert "Follow-up booked, by demo (not signed in): Booked with the GP" in row["history"]


def test_patient_page_opens_an_uploaded_discharge_with_who_added_it(page_env, champion):
    engine = engine_for(f"sqlite:///{page_env / 'ops.sqlite3'}")
    migrate(engine)
    data = (ROOT / "tests" / "fixtures" / "app" / "upload_one_bad_row.csv").read_bytes()
    added = upload.add_to_worklist(engine, champion, data, "ward7.csv", by="anna")
    encounter = upload.uploaded_rows(engine)["encounter_id"].iloc[0]
    assert added.added >= 1
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90)
    at.run()
    at.switch_page("pages/2_Patient.py")
    at.query_params["encounter"] = encounter
    at.query_params["source"] = "discharges"
    at.run()
    assert not at.exception
    assert any(s.value.startswith("Patient U0000") and encounter in s.value for s in at.subheader)
    assert any("Uploaded by anna" in c.value and "ward7.csv" in c.value for c in at.caption)
    assert any(m.label == "Predicted 30-day readmission risk" for m in at.metric)
    assert any("Record a call" in m.value for m in at.markdown)


# --- the command line ---------------------------------------------------------------------------------------

@pytest.fixture()
def cli_db(monkeypatch, tmp_path):
    url = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    monkeypatch.setenv("READMIT_DATABASE_URL", url)
    get_settings.cache_clear()
    yield engine_for(url)
    get_settings.cache_clear()


def test_cli_worklist_prints_exactly_the_capacity_within_the_window(cli_db, demo_wh, capsys):
    assert main(["worklist", "--warehouse", str(demo_wh), "--capacity", "5"]) == 0
    out, err = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(out)))
    as_of = worklist.WorklistIndex(Warehouse(str(demo_wh))).latest_discharge
    assert len(rows) == 5 and [int(r["rank"]) for r in rows] == [1, 2, 3, 4, 5]
    assert list(rows[0])[:11] == list(worklist.CALL_LIST_COLUMNS)
    for row in rows:
        discharged = dt.date.fromisoformat(row["discharge_date"])
        assert as_of - dt.timedelta(days=29) <= discharged <= as_of
        assert int(row["days_since_discharge"]) == (as_of - discharged).days and row["risk"].endswith("%")
        assert row["status"] == "Not contacted"
    risks = [float(r["risk"].rstrip("%")) for r in rows]
    assert risks == sorted(risks, reverse=True)
    assert f"call list for {as_of:%Y-%m-%d}: 5 of" in err
    with session_scope(cli_db) as session:
        assert [(c.list_date, c.capacity) for c in session.query(CallList)] == [(as_of, 5)]

    assert main(["outreach", "--warehouse", str(demo_wh), "--encounter", rows[0]["encounter_id"],
                 "--status", "follow_up_booked", "--note", "GP Friday", "--by", "anna"]) == 0
    assert "the case is closed" in capsys.readouterr().out
    output = Path(cli_db.url.database).parent / "list.csv"
    assert main(["worklist", "--warehouse", str(demo_wh), "--capacity", "5", "--output", str(output)]) == 0
    again = list(csv.DictReader(io.StringIO(output.read_text())))
    assert len(again) == 5 and rows[0]["encounter_id"] not in {r["encounter_id"] for r in again}
    assert again[0]["encounter_id"] == rows[1]["encounter_id"]


def test_cli_outreach_refuses_an_ambiguous_or_unknown_id(cli_db, demo_wh, capsys):
    migrate(cli_db)
    encounter = Warehouse(str(demo_wh)).query("SELECT encounter_id, patient_id FROM encounters LIMIT 1").iloc[0]
    with session_scope(cli_db) as session:   # the same encounter id, uploaded from another source
        discharge = UploadedDischarge(source="discharges", encounter_id=encounter["encounter_id"], patient_id="X1",
                                      record={"discharge_time": None}, uploaded_by="anna", upload_name="x.csv")
        session.add(discharge)
        session.flush()
        session.add(UploadedScore(uploaded_discharge_id=discharge.id, model_version="m", risk=0.2, risk_tier="Low",
                                  reasons=[], contributions={}))
    args = ["outreach", "--warehouse", str(demo_wh), "--encounter", encounter["encounter_id"], "--status", "reached"]
    assert main(args) == 2
    assert "exists in several sources (discharges, synthetic): say which with --source" in capsys.readouterr().err
    assert main(args + ["--source", "synthetic"]) == 0
    assert main(["outreach", "--warehouse", str(demo_wh), "--encounter", "NOPE", "--status", "reached"]) == 2
    assert "no encounter NOPE" in capsys.readouterr().err
    assert main(args + ["--source", "synthetic", "--status", "phoned"]) == 2
    assert "unknown status 'phoned'" in capsys.readouterr().err
