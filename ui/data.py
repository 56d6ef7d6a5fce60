"""Cached access to core for the pages: `st.cache_resource` for connections and the model,
`st.cache_data` for query results. Cache keys include the warehouse pointer, so a new ETL or
scoring run is picked up without restarting the app."""
from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path
from typing import Optional
from zoneinfo import ZoneInfo

import pandas as pd
import streamlit as st
from sqlalchemy import Engine

from core import icd
from core.config import Settings
from core.warehouse import POINTER_FILE, Warehouse, local_path
from serving import database, home, outreach
from serving import hospitals as hospital_queries
from serving import monitoring as monitoring_queries
from serving import patient as patient_queries
from serving import quality as quality_queries
from serving import upload as upload_queries
from serving import worklist as worklist_queries
from serving.scoring import ScoringService

log = logging.getLogger("readmit.app")


def settings() -> Settings:
    """Read on every run (cheap): the environment is the configuration."""
    return Settings()


def warehouse_root() -> str:
    return settings().warehouse


def pointer_version(root: Optional[str] = None) -> str:
    """Changes whenever CURRENT.json is replaced (its mtime); part of every cache key."""
    path = local_path(root or warehouse_root()) / POINTER_FILE
    try:
        return str(os.stat(path).st_mtime_ns)
    except OSError:
        return "missing"


@st.cache_resource(show_spinner=False)
def _warehouse(root: str, version: str) -> Warehouse:
    return Warehouse(root)


def warehouse() -> Warehouse:
    root = warehouse_root()
    return _warehouse(root, pointer_version(root))


@st.cache_data(ttl=60, show_spinner=False)
def _status(root: str, version: str) -> home.DataStatus:
    return home.data_status(root)


def status() -> home.DataStatus:
    root = warehouse_root()
    return _status(root, pointer_version(root))


def _key() -> tuple[str, str]:
    root = warehouse_root()
    return root, pointer_version(root)


@st.cache_data(ttl=600, show_spinner=False)
def _summary(root: str, version: str) -> home.CohortSummary:
    return home.cohort_summary(Warehouse(root))


def summary() -> home.CohortSummary:
    return _summary(*_key())


@st.cache_data(ttl=600, show_spinner=False)
def _options(root: str, version: str) -> dict:
    return worklist_queries.filter_options(Warehouse(root))


def options() -> dict:
    return _options(*_key())


@st.cache_resource(show_spinner=False)
def _engine(url: str) -> Engine:
    engine = database.engine_for(url)
    database.migrate(engine)
    return engine


def database_url() -> str:
    return database.database_url(settings().database_url)


def engine() -> Engine:
    """The operational database (READMIT_DATABASE_URL), migrated once per process."""
    return _engine(database_url())


@st.cache_resource(show_spinner="Preparing the worklist…", max_entries=2)
def _index(root: str, version: str) -> worklist_queries.WorklistIndex:
    return worklist_queries.WorklistIndex(Warehouse(root))


def index() -> worklist_queries.WorklistIndex:
    return _index(*_key())


# The Worklist page saves its view (as-of date, window, capacity, filters, page) here on every run, so
# the other pages use the same numbers and a return to the Worklist restores it.
VIEW_KEY = "_worklist_view"


def saved_view() -> dict:
    return dict(st.session_state.get(VIEW_KEY) or {})


def default_as_of() -> dt.date:
    """Today in READMIT_TIME_ZONE; for synthetic demo data the newest discharge date."""
    return worklist_queries.default_as_of(index().latest_discharge, status().synthetic, settings().time_zone)


def as_of() -> dt.date:
    return saved_view().get("as_of") or default_as_of()


def follow_up_days() -> int:
    return int(saved_view().get("window") or settings().follow_up_days)


def calls_per_day() -> int:
    """The capacity this session works with: what the user set on the Worklist, else READMIT_CALLS_PER_DAY."""
    return int(saved_view().get("calls") or settings().calls_per_day)


def db_versions() -> tuple[int, int]:
    """(newest outreach event id, newest uploaded score id): cache keys that change with every write."""
    db = engine()
    return outreach.latest_event_id(db), upload_queries.latest_upload_id(db)


# The frames below are shared, never copied (st.cache_resource): a page or filter change must not pay for
# copying tens of thousands of rows. Nothing may modify them.
@st.cache_resource(ttl=3600, show_spinner=False, max_entries=4)
def _uploads(url: str, upload_version: int) -> pd.DataFrame:
    return upload_queries.uploaded_rows(_engine(url))


@st.cache_resource(ttl=3600, show_spinner=False, max_entries=20)
def _window(root: str, version: str, url: str, upload_version: int, as_of_date: dt.date,
            window: int) -> pd.DataFrame:
    return worklist_queries.window_rows(_index(root, version), as_of_date, window, _uploads(url, upload_version))


@st.cache_resource(ttl=3600, show_spinner=False, max_entries=20)
def _events(root: str, version: str, url: str, event_version: int, upload_version: int, as_of_date: dt.date,
            window: int) -> dict:
    """The outreach histories of the window's encounters, read again only when an event is recorded (not
    when the calls per day change)."""
    rows = _window(root, version, url, upload_version, as_of_date, window)
    return outreach.histories(_engine(url), worklist_queries.encounter_keys(rows))


@st.cache_resource(ttl=3600, show_spinner=False, max_entries=20)
def _day(root: str, version: str, url: str, event_version: int, upload_version: int, as_of_date: dt.date,
         window: int, calls: int) -> worklist_queries.DayList:
    rows = _window(root, version, url, upload_version, as_of_date, window)
    events = _events(root, version, url, event_version, upload_version, as_of_date, window)
    return worklist_queries.build_day_list(rows, events, as_of_date, window, calls)


def day_list(as_of_date: dt.date, window: int, calls: int) -> worklist_queries.DayList:
    """The day's list; recomputed when an outreach event is recorded or discharges are uploaded."""
    return _day(*_key(), database_url(), *db_versions(), as_of_date, int(window), int(calls))


def uploads() -> pd.DataFrame:
    return _uploads(database_url(), db_versions()[1])


@st.cache_resource(ttl=3600, show_spinner=False, max_entries=8)
def _replay(root: str, version: str, as_of_date: dt.date, window: int) -> tuple[list[dt.date], pd.DataFrame]:
    """The replay's days and discharges, read once per date and window whatever the calls per day."""
    index = _index(root, version)
    days = worklist_queries.replay_days(index, as_of_date)
    discharges = worklist_queries.replay_discharges(index, days[0], days[-1], window) if days else pd.DataFrame()
    return days, discharges


@st.cache_data(ttl=3600, show_spinner=False, max_entries=100)
def _capacity(root: str, version: str, as_of_date: dt.date, window: int,
              calls: int) -> worklist_queries.CapacityResult:
    days, discharges = _replay(root, version, as_of_date, window)
    return worklist_queries.capacity_result(discharges, days, window, calls)


def capacity(calls: int, as_of_date: Optional[dt.date] = None,
             window: Optional[int] = None) -> worklist_queries.CapacityResult:
    """Replayed PPV and sensitivity of `calls` a day (as of the session's date and window by default)."""
    return _capacity(*_key(), as_of_date or as_of(), int(window or follow_up_days()), int(calls))


def store_call_list(day: worklist_queries.DayList, by: str) -> None:
    """Keep the day's call list in the database once per change (this session remembers what it stored)."""
    signature = (day.as_of, day.capacity, tuple(worklist_queries.encounter_keys(day.call_list)))
    if st.session_state.get("_stored_call_list") == signature:
        return
    worklist_queries.store_call_list(engine(), day, by=by, model_version=index().model_version,
                                     time_zone=settings().time_zone)
    st.session_state["_stored_call_list"] = signature


def list_position(source: str, encounter_id: str) -> tuple[worklist_queries.DayList, Optional[dict]]:
    """The session's day list (its date, window and capacity) and where this encounter stands on it."""
    day = day_list(as_of(), follow_up_days(), calls_per_day())
    return day, worklist_queries.position(day, source, encounter_id)


def outreach_history(source: str, encounter_id: str, patient_id: str) -> list[outreach.OutreachRecord]:
    return outreach.history(engine(), source, encounter_id, patient_id)


def record_outreach(source: str, encounter_id: str, patient_id: str, status_code: str, note: str,
                    by: str) -> outreach.OutreachRecord:
    return outreach.record_event(engine(), source, encounter_id, patient_id, status_code, note, by=by)


def uploaded_detail(encounter_id: Optional[str] = None, patient_id: Optional[str] = None,
                    source: Optional[str] = None) -> Optional[patient_queries.PatientDetail]:
    return patient_queries.uploaded_detail(engine(), warehouse(), encounter_id, patient_id, source)


@st.cache_data(ttl=600, show_spinner=False)
def _quality(root: str, version: str, threshold: float):
    return quality_queries.quality_view(Warehouse(root), threshold)


def quality(threshold: float):
    return _quality(*_key(), float(threshold))


@st.cache_data(ttl=600, show_spinner=False)
def model_info(model_dir: str) -> quality_queries.ModelInfo:
    return quality_queries.model_info(model_dir)


@st.cache_data(ttl=600, show_spinner=False)
def _hospitals(root: str, version: str) -> pd.DataFrame:
    return hospital_queries.hospital_options(Warehouse(root))


def hospitals() -> pd.DataFrame:
    return _hospitals(*_key())


@st.cache_data(ttl=600, show_spinner=False)
def _benchmark(root: str, version: str, facility_id: str):
    return hospital_queries.hospital_benchmark(Warehouse(root), facility_id)


def benchmark(facility_id: str):
    return _benchmark(*_key(), facility_id)


@st.cache_resource(show_spinner="Loading the model…")
def scoring_service(model_dir: str):
    """The model, loaded once per process (never trained here)."""
    return ScoringService.load(model_dir)


def warm_up() -> None:
    """Load what a first Patient view would otherwise wait for: the model (`st.cache_resource`) and the
    ICD-9 code titles (`core.icd.titles`, cached per process). Cheap once done; the Home page calls it."""
    icd.titles(9)
    loaded_model()


def warm_warehouse() -> None:
    """Build what the first views of the current warehouse wait for, before anyone asks: its status, the
    cohort summary and filter options, the worklist index and today's list with the configured window
    and calls (each cached per warehouse version; on a million patients the first Patient view would
    otherwise build the whole day's list to show the patient's place on it). `ui.launch` calls it before
    the server opens its port. A warehouse that cannot be used is left to the pages, which say why."""
    if not status().usable:
        return
    try:
        summary()
        options()
        as_of_date = default_as_of()
        day_list(as_of_date, settings().follow_up_days, settings().calls_per_day)
    except Exception:  # the pages report the same problem in words; starting must not depend on it
        log.warning("warm-up of the warehouse failed; the pages will compute on first view", exc_info=True)


def loaded_model():
    """The configured model's cached ScoringService, or None when no model folder is configured
    (no config.json) or it cannot be loaded (logged, without patient data)."""
    model_dir = settings().model_dir
    if not (Path(model_dir) / "config.json").exists():
        return None
    try:
        return scoring_service(model_dir)
    except Exception:
        log.exception("model could not be loaded from %s", model_dir)
        return None


@st.cache_data(ttl=3600, show_spinner=False, max_entries=500)
def _live_explanation(root: str, version: str, model_dir: str, model_version: str, encounter_id: str,
                      _service) -> Optional[patient_queries.LiveExplanation]:
    return patient_queries.live_explanation(_service, Warehouse(root), encounter_id)


def live_explanation(encounter_id: str, service) -> Optional[patient_queries.LiveExplanation]:
    """The loaded model's explanation of one encounter (`ScoringService.explain_one`: the numbers `readmit
    score` would store), for encounters whose stored explanation is missing or from another model; cached
    per encounter, warehouse version and model version (the result depends on nothing else)."""
    return _live_explanation(*_key(), str(getattr(service, "model_dir", None) or settings().model_dir),
                             str(service.model_version), str(encounter_id), service)


@st.cache_data(ttl=300, show_spinner="Computing the monitoring report…", max_entries=20)
def _monitoring(url: str, state: str, as_of: dt.date, reference: str, period: str, model_dir: str,
                calls: int) -> dict:
    return monitoring_queries.monitoring_report(engine(), as_of=as_of, reference=reference, period=period,
                                                model_dir=model_dir, calls_per_day=calls)


def monitoring_report(reference: str = "model", period: str = "month") -> dict:
    """`serving.monitoring.monitoring_report` of the operational database as of today (the hospital's time
    zone), cached until a prediction, outcome or call list is recorded (or for five minutes)."""
    config = settings()
    today = dt.datetime.now(ZoneInfo(config.time_zone)).date()
    return _monitoring(database_url(), monitoring_queries.log_state(engine()), today, reference, period,
                       config.model_dir, config.calls_per_day)
