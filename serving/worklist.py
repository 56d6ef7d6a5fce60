"""Today's worklist: the open follow-up work as of a date, today's call list, and the replayed PPV.

The day's list (`window_rows`, then `build_day_list`) for an as-of date D and a follow-up window of W days:
- candidates: every discharge (warehouse encounters and uploaded discharges) on D or the W - 1 days
  before it, one row per patient: the patient's latest such discharge;
- handled, with the reason: died in hospital, discharged to hospice, readmitted (an admission after the
  discharge, up to the end of D), outreach closed (the latest event has a closing status), not scored;
- open: the rest, ranked by risk, highest first (ties: the later discharge, then the encounter id);
- today's call list: the first `capacity` open patients. "Flagged" means exactly that, on every screen.

Outreach statuses are the latest recorded, whatever D (a look-back shows today's statuses).

PPV and sensitivity for a capacity come from replaying the same policy day by day over past discharges
(`replay_policy`, pure): each day, the top N of that day's open list are called and leave the list.

Every query goes through DuckDB with bound parameters: user input (filters, search text, ids) is never
formatted into SQL.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import math
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Optional, Sequence
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
from sqlalchemy import Engine, select

from core.spreadsheet import safe_csv
from core.warehouse import Warehouse
from serving.database import session_scope
from serving.db_tables import CallList, CallListEntry
from serving.outreach import CLOSING, STATUS_LABELS, EncounterKey, OutreachRecord

RISK_TIERS = ("Very high", "High", "Medium", "Low")
DEFAULT_PAGE_SIZE = 50
REPLAY_DAYS = 180
# The replay ends this many days before the as-of date, so that every discharge it ranks has had its
# 30 days: its outcome is known.
OUTCOME_DAYS = 31
CALL_LIST_COLUMNS = ("rank", "patient_id", "encounter_id", "discharge_date", "days_since_discharge", "risk",
                     "risk_tier", "reason_1", "reason_2", "reason_3", "status")

# The columns every worklist row has, from the warehouse (`WorklistIndex`) or from uploads
# (`serving.upload.uploaded_rows`), with their DuckDB types.
ROW_COLUMNS = {
    "source": "VARCHAR", "encounter_id": "VARCHAR", "patient_id": "VARCHAR", "admit_time": "TIMESTAMP",
    "discharge_time": "TIMESTAMP", "risk": "DOUBLE", "risk_tier": "VARCHAR", "risk_percentile": "DOUBLE",
    "reason_1": "VARCHAR", "reason_2": "VARCHAR", "reason_3": "VARCHAR", "eligible": "BOOLEAN",
    "ineligible_reason": "VARCHAR", "problem": "VARCHAR", "age_band": "VARCHAR", "sex": "VARCHAR",
    "race": "VARCHAR", "principal_group": "VARCHAR", "discharge_disposition": "VARCHAR", "payer": "VARCHAR",
    "length_of_stay_days": "DOUBLE", "readmitted_30d": "BOOLEAN", "split": "VARCHAR", "model_version": "VARCHAR",
    "uploaded_by": "VARCHAR", "uploaded_at": "TIMESTAMP", "upload_name": "VARCHAR",
}

FILTER_COLUMNS = {  # filter field -> (worklist column, source table)
    "age_bands": ("age_band", "encounters"),
    "sexes": ("sex", "encounters"),
    "races": ("race", "encounters"),
    "diagnosis_groups": ("principal_group", "features"),
    "dispositions": ("discharge_disposition", "encounters"),
    "payers": ("payer", "encounters"),
}
FILTER_LABELS = {"tiers": "Risk band", "age_bands": "Age band", "sexes": "Sex", "races": "Race",
                 "diagnosis_groups": "Diagnosis group", "dispositions": "Discharged to", "payers": "Payer",
                 "call_list_only": "Today's call list only"}


def count_words(n: int, singular: str, plural: Optional[str] = None) -> str:
    """'1 call', '2 calls', '1,204 patients': the number and the noun in the right number."""
    return f"{n:,} {singular if n == 1 else (plural or singular + 's')}"


def today_in(time_zone: str) -> dt.date:
    """Today's date in the hospital's time zone (an IANA name, e.g. 'America/Chicago')."""
    return dt.datetime.now(ZoneInfo(time_zone)).date()


def default_as_of(latest_discharge: Optional[dt.date], synthetic: bool, time_zone: str) -> dt.date:
    """The list's "today": the date in the hospital's time zone; for synthetic demo data, whose dates do not
    follow the calendar, the newest discharge date in the warehouse."""
    if synthetic and latest_discharge is not None:
        return latest_discharge
    return today_in(time_zone)


@dataclass(frozen=True)
class WorklistFilters:
    tiers: tuple[str, ...] = ()
    age_bands: tuple[str, ...] = ()
    sexes: tuple[str, ...] = ()
    races: tuple[str, ...] = ()
    diagnosis_groups: tuple[str, ...] = ()
    dispositions: tuple[str, ...] = ()
    payers: tuple[str, ...] = ()
    call_list_only: bool = False

    def active(self) -> dict[str, Any]:
        """The filters that narrow the list, by field name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}


def filter_options(wh: Warehouse) -> dict[str, Any]:
    """Distinct values for each filter (sorted, nulls dropped) and the discharge date range."""
    options: dict[str, Any] = {"tiers": list(RISK_TIERS)}
    for name, (column, table) in FILTER_COLUMNS.items():
        if wh.has_table(table):
            values = wh.query(f"SELECT DISTINCT {column} AS v FROM {table} WHERE {column} IS NOT NULL ORDER BY v")
            options[name] = values["v"].astype(str).tolist()
        else:
            options[name] = []
    options["date_range"] = None
    if wh.has_table("encounters"):
        dates = wh.query("SELECT min(discharge_time)::DATE AS lo, max(discharge_time)::DATE AS hi FROM encounters").iloc[0]
        if not pd.isna(dates["lo"]):
            options["date_range"] = (pd.Timestamp(dates["lo"]).date(), pd.Timestamp(dates["hi"]).date())
    return options


def _columns(wh: Warehouse, table: str) -> set[str]:
    return set(wh.query(f"SELECT * FROM {table} LIMIT 0").columns) if wh.has_table(table) else set()


def _index_sql(wh: Warehouse) -> str:
    """Every warehouse encounter (scored or not) with its prediction and diagnosis group, in ROW_COLUMNS."""
    enc, pred, feat = _columns(wh, "encounters"), _columns(wh, "predictions"), _columns(wh, "features")
    pick = {"e": enc, "p": pred, "f": feat}

    def first(column: str, *tables: str) -> str:
        found = [f"{t}.{column}" for t in tables if column in pick[t]]
        typed = ROW_COLUMNS[column]
        if not found:
            return f"NULL::{typed} AS {column}"
        return f"CAST({found[0] if len(found) == 1 else 'coalesce(' + ', '.join(found) + ')'} AS {typed}) AS {column}"

    select_list = [
        "coalesce(CAST(e.source AS VARCHAR), 'warehouse') AS source" if "source" in enc else "'warehouse' AS source",
        f"CAST({'e' if enc else 'p'}.encounter_id AS VARCHAR) AS encounter_id",
        f"CAST({'e' if enc else 'p'}.patient_id AS VARCHAR) AS patient_id",
        first("admit_time", "e"), first("discharge_time", "e"), first("risk", "p"), first("risk_tier", "p"),
        first("risk_percentile", "p"), first("reason_1", "p"), first("reason_2", "p"), first("reason_3", "p"),
        f"coalesce({'p.eligible, ' if 'eligible' in pred else ''}{'e.eligible, ' if 'eligible' in enc else ''}true)"
        " AS eligible",
        first("ineligible_reason", "p", "e"), first("problem", "p"), first("age_band", "e"), first("sex", "e"),
        first("race", "e"), first("principal_group", "f"), first("discharge_disposition", "e"), first("payer", "e"),
        first("length_of_stay_days", "e"), first("readmitted_30d", "e"), first("split", "f"),
        first("model_version", "p"), "NULL::VARCHAR AS uploaded_by", "NULL::TIMESTAMP AS uploaded_at",
        "NULL::VARCHAR AS upload_name",
    ]
    if not enc:
        return f"SELECT {', '.join(select_list)} FROM predictions p"
    joins = " LEFT JOIN predictions p ON p.encounter_id = e.encounter_id" if pred else ""
    joins += " LEFT JOIN features f ON f.encounter_id = e.encounter_id" if feat else ""
    return f"SELECT {', '.join(select_list)} FROM encounters e{joins}"


_PANDAS_TYPES = {"VARCHAR": object, "TIMESTAMP": "datetime64[us]", "DOUBLE": "float64", "BOOLEAN": object}


def empty_rows() -> pd.DataFrame:
    """A frame with the worklist row columns and no rows (what an empty upload table gives)."""
    return pd.DataFrame({name: pd.Series(dtype=_PANDAS_TYPES[kind]) for name, kind in ROW_COLUMNS.items()})


def _keys_sql(wh: Warehouse) -> str:
    """The (source, encounter id) of every warehouse row, as `_index_sql` gives them, read from one table:
    what an uploaded discharge is checked against without joining the predictions and features."""
    enc = _columns(wh, "encounters")
    if not enc:
        return "SELECT 'warehouse' AS source, CAST(encounter_id AS VARCHAR) AS encounter_id FROM predictions"
    source = "coalesce(CAST(source AS VARCHAR), 'warehouse')" if "source" in enc else "'warehouse'"
    return f"SELECT {source} AS source, CAST(encounter_id AS VARCHAR) AS encounter_id FROM encounters"


def _first_value(wh: Warehouse, sql: str) -> Any:
    value = wh.query(sql).iloc[0, 0]
    return None if value is None or pd.isna(value) else value


class WorklistIndex:
    """The worklist rows of one warehouse version: the view `worklist` over its Parquet tables.

    Nothing is copied at start (a copy of every row took 26 s and 640 MB at a million patients): each
    query reads only the rows it needs, and the day's list (`window_rows`) first narrows the rows to its
    window, then joins. Share one per warehouse version (the dashboard keeps it in `st.cache_resource`);
    each query uses its own cursor, so threads may share it.
    """

    def __init__(self, wh: Warehouse):
        wh = wh.pinned()   # the views, columns and figures below from one reading of the pointer
        self.root = wh.root
        self._stack = contextlib.ExitStack()   # holds the connection open for the index's lifetime
        self._con = self._stack.enter_context(wh.connect())
        self._con.execute(f"CREATE VIEW worklist AS {_index_sql(wh)}")
        self._con.execute(f"CREATE VIEW worklist_keys AS {_keys_sql(wh)}")
        self.rows = int(_first_value(wh, f"SELECT count(*) FROM ({_keys_sql(wh)})") or 0)
        versions = wh.query("SELECT DISTINCT CAST(model_version AS VARCHAR) AS v FROM predictions WHERE model_version "
                            "IS NOT NULL")["v"] if "model_version" in _columns(wh, "predictions") else []
        self.model_version = ", ".join(sorted(versions)) or "unknown"
        dated = "discharge_time" in _columns(wh, "encounters")
        first = _first_value(wh, "SELECT min(discharge_time) FROM encounters") if dated else None
        latest = _first_value(wh, "SELECT max(discharge_time) FROM encounters") if dated else None
        self.first_discharge: Optional[dt.date] = pd.Timestamp(first).date() if first is not None else None
        self.latest_discharge: Optional[dt.date] = pd.Timestamp(latest).date() if latest is not None else None

    def query(self, sql: str, params: Optional[Sequence[Any]] = None,
              uploads: Optional[pd.DataFrame] = None) -> pd.DataFrame:
        """Run `sql` on a fresh cursor. With `uploads` (rows in ROW_COLUMNS), the relation `all_rows` is the
        warehouse rows plus the uploaded rows whose (source, encounter id) the warehouse does not hold."""
        cursor = self._con.cursor()
        try:
            if uploads is None or uploads.empty:
                cursor.execute("CREATE TEMP VIEW all_rows AS SELECT * FROM worklist")
            else:
                cursor.register("_uploads", uploads)
                cursor.execute(
                    "CREATE TEMP TABLE new_uploads AS SELECT "
                    f"{', '.join(f'CAST({c} AS {t}) AS {c}' for c, t in ROW_COLUMNS.items())} FROM _uploads u "
                    "WHERE NOT EXISTS (SELECT 1 FROM worklist_keys w WHERE w.source = u.source "
                    "AND w.encounter_id = u.encounter_id)")
                cursor.execute("CREATE TEMP VIEW all_rows AS SELECT * FROM worklist UNION ALL BY NAME "
                               "SELECT * FROM new_uploads")
            return cursor.execute(sql, list(params or [])).df()
        finally:
            cursor.close()


def _day_bounds(as_of: dt.date, window_days: int) -> tuple[dt.datetime, dt.datetime]:
    """[start of the first day of the window, start of the day after as_of)."""
    end = dt.datetime.combine(as_of + dt.timedelta(days=1), dt.time())
    return end - dt.timedelta(days=int(window_days)), end


def window_rows(index: WorklistIndex, as_of: dt.date, window_days: int,
                uploads: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """One row per patient discharged in the window ending on `as_of`: the patient's latest discharge, with
    `readmitted_at`, the first admission after it up to the end of `as_of` (NaT when none). The rows that
    touch the window are read from the Parquet tables once (a materialized CTE), then ranked and joined."""
    lo, hi = _day_bounds(as_of, window_days)
    return index.query(
        "WITH span AS MATERIALIZED (SELECT * FROM all_rows WHERE (discharge_time >= ? AND discharge_time < ?) "
        "OR (admit_time >= ? AND admit_time < ?)), "
        "recent AS (SELECT *, row_number() OVER (PARTITION BY patient_id ORDER BY discharge_time DESC, "
        "admit_time DESC NULLS LAST, encounter_id DESC, source) AS recency "
        "FROM span WHERE discharge_time >= ? AND discharge_time < ?), "
        "later AS (SELECT patient_id, admit_time FROM span WHERE admit_time >= ? AND admit_time < ?) "
        "SELECT r.* EXCLUDE (recency), (SELECT min(l.admit_time) FROM later l WHERE l.patient_id = r.patient_id "
        "AND l.admit_time > r.discharge_time) AS readmitted_at FROM recent r WHERE recency = 1",
        [lo, hi, lo, hi, lo, hi, lo, hi], uploads=uploads)


def encounter_keys(rows: pd.DataFrame) -> list[EncounterKey]:
    return [EncounterKey(str(s), str(e), str(p))
            for s, e, p in zip(rows["source"], rows["encounter_id"], rows["patient_id"])]


@dataclass
class DayList:
    """One day's worklist: `open` ranked (rank 1 = highest risk) with `flagged` = on today's call list,
    and `handled` with the reason each patient left the open list."""
    as_of: dt.date
    window_days: int
    capacity: int
    open: pd.DataFrame
    handled: pd.DataFrame

    @property
    def call_list(self) -> pd.DataFrame:
        return self.open[self.open["flagged"]]

    @property
    def patients(self) -> int:
        return len(self.open) + len(self.handled)


def handled_reasons(frame: pd.DataFrame) -> pd.Series:
    """Why each patient is no longer open work, in words; None while open. Facts about the patient first
    (death, hospice, readmission), then a closing outreach status (`status`), then a missing score."""
    reason = pd.Series(None, index=frame.index, dtype=object)
    problem = frame["problem"].fillna("").astype(str)
    unscored = frame["risk"].isna()
    reason[unscored] = np.where(problem[unscored] != "", "Not scored: " + problem[unscored], "Not scored")
    closing = frame["status"].isin(CLOSING)
    reason[closing] = frame.loc[closing, "status"].map(STATUS_LABELS)
    readmitted = frame["readmitted_at"].notna()
    reason[readmitted] = "Readmitted on " + pd.to_datetime(frame.loc[readmitted, "readmitted_at"]).dt.strftime("%Y-%m-%d")
    reason[frame["ineligible_reason"] == "hospice"] = "Discharged to hospice"
    reason[frame["ineligible_reason"] == "died"] = "Died in hospital"
    return reason


def current_of(events: Sequence[OutreachRecord]) -> Optional[OutreachRecord]:
    """The current status: the latest event recorded under this patient (mismatched events never count)."""
    own = [e for e in events if not e.patient_mismatch]
    return own[-1] if own else None


def history_text(events: Sequence[OutreachRecord]) -> str:
    """'2026-11-28 14:02 UTC No answer, by anna; 2026-11-29 09:10 UTC Follow-up booked, by anna: GP on Friday'."""
    parts = []
    for event in events:
        text = f"{event.recorded_at:%Y-%m-%d %H:%M} UTC {event.label}, by {event.recorded_by}"
        if event.note:
            text += f": {event.note}"
        if event.patient_mismatch:
            text += " [recorded under another patient id]"
        parts.append(text)
    return "; ".join(parts)


def build_day_list(rows: pd.DataFrame, events: Mapping[tuple[str, str], Sequence[OutreachRecord]],
                   as_of: dt.date, window_days: int, capacity: int) -> DayList:
    """Split `window_rows` into open (ranked, top `capacity` flagged) and handled (with the reason; the latest
    outreach first, then the latest discharge). Pure."""
    frame = rows.copy().reset_index(drop=True)
    discharged = pd.to_datetime(frame["discharge_time"]).to_numpy(dtype="datetime64[D]")
    frame["days_since_discharge"] = (np.datetime64(as_of, "D") - discharged).astype(int)
    n = len(frame)
    status, by, at = np.full(n, "not_contacted", dtype=object), np.full(n, "", dtype=object), np.full(n, None)
    attempts, history = np.zeros(n, dtype=int), np.full(n, "", dtype=object)
    keys = zip(frame["source"].astype(str), frame["encounter_id"].astype(str))
    for i, key in ((i, key) for i, key in enumerate(keys) if key in events):   # only patients with outreach
        current = current_of(events[key])
        attempts[i] = sum(1 for e in events[key] if not e.patient_mismatch)
        history[i] = history_text(events[key])
        if current is not None:
            status[i], by[i], at[i] = current.status, current.recorded_by, current.recorded_at
    frame["status"], frame["status_by"], frame["status_at"], frame["attempts"], frame["history"] = \
        status, by, at, attempts, history
    frame["status_label"] = frame["status"].map(STATUS_LABELS)
    frame["reason"] = handled_reasons(frame)
    is_open = frame["reason"].isna()
    ranked = frame[is_open].sort_values(["risk", "discharge_time", "encounter_id", "source"],
                                        ascending=[False, False, True, True], kind="mergesort")
    ranked = ranked.reset_index(drop=True)
    ranked.insert(0, "rank", np.arange(1, len(ranked) + 1))
    ranked["flagged"] = ranked["rank"] <= int(capacity)
    handled = frame[~is_open].assign(_at=pd.to_datetime(frame["status_at"], utc=True))
    handled = handled.sort_values(["_at", "discharge_time", "encounter_id"], ascending=[False, False, True],
                                  na_position="last", kind="mergesort").drop(columns="_at").reset_index(drop=True)
    handled["rank"] = pd.array([pd.NA] * len(handled), dtype="Int64")
    handled["flagged"] = False
    return DayList(as_of, int(window_days), int(capacity), ranked, handled)


# --- viewing: filters, pages, search ----------------------------------------------------------------------

def apply_filters(rows: pd.DataFrame, filters: WorklistFilters) -> pd.DataFrame:
    mask = pd.Series(True, index=rows.index)
    if filters.tiers:
        mask &= rows["risk_tier"].isin(filters.tiers)
    for name, (column, _) in FILTER_COLUMNS.items():
        values = getattr(filters, name)
        if values:
            mask &= rows[column].astype(str).isin(values)
    if filters.call_list_only:
        mask &= rows["flagged"].astype(bool)
    return rows[mask]


def hiding_filters(row: Mapping[str, Any], filters: WorklistFilters) -> list[str]:
    """The filters (as 'Risk band: High') that a row does not pass."""
    hidden = []
    for name, values in filters.active().items():
        if name == "call_list_only":
            if not row.get("flagged"):
                hidden.append(FILTER_LABELS[name])
            continue
        column = "risk_tier" if name == "tiers" else FILTER_COLUMNS[name][0]
        if str(row.get(column)) not in values:
            hidden.append(f"{FILTER_LABELS[name]}: {', '.join(values)}")
    return hidden


@dataclass
class WorklistPage:
    rows: pd.DataFrame          # the page's rows, all columns of the day list
    total: int                  # rows matching the filters
    page: int
    page_size: int

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.page_size))


def page_of(rows: pd.DataFrame, filters: WorklistFilters = WorklistFilters(), page: int = 1,
            page_size: int = DEFAULT_PAGE_SIZE) -> WorklistPage:
    """One page of the filtered rows; a page past the end shows the last one."""
    page_size = max(1, min(int(page_size), 500))
    kept = apply_filters(rows, filters)
    pages = max(1, math.ceil(len(kept) / page_size))
    page = min(max(1, int(page)), pages)
    return WorklistPage(kept.iloc[(page - 1) * page_size: page * page_size], len(kept), page, page_size)


@dataclass
class SearchResult:
    text: str
    open: pd.DataFrame                    # matching open rows (whatever the filters)
    handled: pd.DataFrame                 # matching handled rows
    hidden_by: dict[str, list[str]] = field(default_factory=dict)   # encounter id -> filters that hide it
    outside: pd.DataFrame = field(default_factory=pd.DataFrame)     # matches with no discharge in the window

    @property
    def found(self) -> bool:
        return bool(len(self.open) or len(self.handled) or len(self.outside))


def _matches(rows: pd.DataFrame, text: str) -> pd.Series:
    needle = text.strip().lower()
    return rows["patient_id"].astype(str).str.lower().str.startswith(needle) | \
        rows["encounter_id"].astype(str).str.lower().str.startswith(needle)


def search(day: DayList, index: WorklistIndex, text: str, filters: WorklistFilters = WorklistFilters(),
           uploads: Optional[pd.DataFrame] = None, limit: int = 50) -> SearchResult:
    """Patients whose patient or encounter id starts with `text` (case-insensitive), on the open list or
    handled whatever the filters, with the filters that would hide each; else their latest discharge
    outside the window (from the warehouse and uploads)."""
    text = text.strip()
    open_rows = day.open[_matches(day.open, text)].head(limit)
    handled = day.handled[_matches(day.handled, text)].head(limit)
    hidden = {str(r["encounter_id"]): hiding_filters(r, filters) for r in open_rows.to_dict("records")}
    outside = pd.DataFrame()
    if open_rows.empty and handled.empty:
        outside = index.query(
            "SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY patient_id ORDER BY discharge_time DESC "
            "NULLS LAST, encounter_id DESC) AS recency FROM all_rows WHERE starts_with(lower(patient_id), lower(?)) "
            "OR starts_with(lower(encounter_id), lower(?))) WHERE recency = 1 ORDER BY patient_id LIMIT ?",
            [text, text, int(limit)], uploads=uploads)
    return SearchResult(text, open_rows, handled, {k: v for k, v in hidden.items() if v}, outside)


def id_examples(day: DayList) -> tuple[str, str]:
    """A real patient id and encounter id from the list (for the search box's hint), or ('', '')."""
    rows = day.open if len(day.open) else day.handled
    if rows.empty:
        return "", ""
    return str(rows["patient_id"].iloc[0]), str(rows["encounter_id"].iloc[0])


# --- the call list: CSV and storage -----------------------------------------------------------------------

def call_list_frame(day: DayList) -> pd.DataFrame:
    """Today's call list with CALL_LIST_COLUMNS first (risk in percent, dates as YYYY-MM-DD), then source."""
    rows = day.call_list
    return pd.DataFrame({
        "rank": rows["rank"].astype(int),
        "patient_id": rows["patient_id"].astype(str),
        "encounter_id": rows["encounter_id"].astype(str),
        "discharge_date": [f"{pd.Timestamp(t):%Y-%m-%d}" for t in rows["discharge_time"]],
        "days_since_discharge": rows["days_since_discharge"].astype(int),
        "risk": [percent(r) for r in rows["risk"]],
        "risk_tier": rows["risk_tier"].fillna("").astype(str),
        "reason_1": rows["reason_1"].fillna("").astype(str),
        "reason_2": rows["reason_2"].fillna("").astype(str),
        "reason_3": rows["reason_3"].fillna("").astype(str),
        "status": rows["status_label"].astype(str),
        "source": rows["source"].astype(str),
    })


def call_list_csv(day: DayList) -> bytes:
    """Today's call list as formula-safe CSV (a neutralised cell starts with a single quote)."""
    return safe_csv(call_list_frame(day))


def percent(risk: Any, digits: int = 1) -> str:
    if risk is None or (isinstance(risk, float) and math.isnan(risk)):
        return "not scored"
    return f"{float(risk) * 100:.{digits}f}%"


@dataclass(frozen=True)
class StoredCallList:
    id: int
    created: bool      # False: the same list (date, capacity, patients in order) was stored already


def store_call_list(engine: Engine, day: DayList, *, by: str, model_version: str,
                    time_zone: str = "UTC") -> StoredCallList:
    """Keep the day's call list (call_list + call_list_entry). Building the same list again (same date,
    capacity and patients in the same order) stores nothing; any change stores a new list."""
    entries = [(int(r["rank"]), str(r["source"]), str(r["encounter_id"]), str(r["patient_id"]), float(r["risk"]),
                str(r["risk_tier"] or "")) for r in day.call_list.to_dict("records")]
    end_of_day = dt.datetime.combine(day.as_of + dt.timedelta(days=1), dt.time(), ZoneInfo(time_zone))
    with session_scope(engine) as session:
        latest = session.scalars(select(CallList).where(CallList.list_date == day.as_of)
                                 .order_by(CallList.id.desc()).limit(1)).first()
        if latest is not None and latest.capacity == day.capacity:
            stored = session.execute(select(CallListEntry.rank, CallListEntry.source, CallListEntry.encounter_id)
                                     .where(CallListEntry.call_list_id == latest.id)
                                     .order_by(CallListEntry.rank)).all()
            if [tuple(row) for row in stored] == [entry[:3] for entry in entries]:
                return StoredCallList(latest.id, False)
        call_list = CallList(list_date=day.as_of, capacity=day.capacity, built_by=by[:256],
                             model_version=model_version[:128], as_of=end_of_day)
        session.add(call_list)
        session.flush()
        session.add_all(CallListEntry(call_list_id=call_list.id, rank=rank, source=source, encounter_id=encounter,
                                      patient_id=patient, risk=risk, risk_tier=tier)
                        for rank, source, encounter, patient, risk, tier in entries)
    return StoredCallList(call_list.id, True)


def stored_call_lists(engine: Engine, list_date: dt.date) -> list[tuple[CallList, list[CallListEntry]]]:
    """The call lists stored for a date, oldest first, each with its entries in rank order."""
    with session_scope(engine) as session:
        lists = session.scalars(select(CallList).where(CallList.list_date == list_date).order_by(CallList.id)).all()
        return [(c, list(session.scalars(select(CallListEntry).where(CallListEntry.call_list_id == c.id)
                                         .order_by(CallListEntry.rank)))) for c in lists]


# --- PPV and sensitivity by replaying the policy ---------------------------------------------------------

@dataclass(frozen=True)
class ReplayResult:
    capacity: int
    window_days: int
    first_day: Optional[dt.date]
    last_day: Optional[dt.date]
    days: int
    called: int                 # called discharges with a known outcome (counted ones)
    called_readmitted: int
    outcomes: int               # discharges on the open list on some replayed day, with a known outcome
    readmitted: int
    test_split_only: bool = False

    @property
    def ppv(self) -> float:
        return self.called_readmitted / self.called if self.called else float("nan")

    @property
    def sensitivity(self) -> float:
        return self.called_readmitted / self.readmitted if self.readmitted else float("nan")

    @property
    def basis(self) -> str:
        """Where the numbers come from, in one or two sentences."""
        if not self.days:
            return "No past days to replay: PPV and sensitivity cannot be estimated yet."
        split = " (test split)" if self.test_split_only else ""
        verb = "was" if self.capacity == 1 else "were"
        return (f"Replayed over {count_words(self.days, 'past day')} ({self.first_day:%Y-%m-%d} to "
                f"{self.last_day:%Y-%m-%d}): each day the {count_words(self.capacity, 'highest-risk open patient')} "
                f"{verb} called and left the list. Outcomes used: {count_words(self.outcomes, 'discharge')} with a "
                f"known 30-day outcome{split}, {self.readmitted:,} of them readmitted; {self.called:,} called.")


def replay_policy(discharges: pd.DataFrame, days: Sequence[dt.date], capacity: int, window_days: int,
                  test_split_only: bool = False) -> ReplayResult:
    """Replay "call the top `capacity` open patients each day" over `days`. Pure.

    `discharges`: one row per discharge with `encounter_id`, `discharge_time`, `readmitted_at` (the next
    admission, NaT if none), `risk` (NaN: not scored, never listed), `y` (1 readmitted within 30 days,
    0 not, NaN unknown) and `counted` (True: its outcome enters the figures).
    Each day D, a discharge is open when discharged on D or the `window_days - 1` days before, not
    readmitted by the end of D, scored, and not called on an earlier day; the `capacity` open ones with the
    highest risk (ties: the later discharge, then the encounter id) are called. PPV: the share of called
    discharges readmitted within 30 days; sensitivity: the share of readmitted discharges (that were open
    on some replayed day) that were called.
    """
    capacity = max(1, int(capacity))
    days = sorted(days)
    if not days or discharges.empty:
        return ReplayResult(capacity, window_days, days[0] if days else None, days[-1] if days else None,
                            len(days), 0, 0, 0, 0, test_split_only)
    ordered = discharges.sort_values(["risk", "discharge_time", "encounter_id"], ascending=[False, False, True],
                                     kind="mergesort")
    day_number = np.datetime64("1970-01-01", "D")
    discharged = (pd.to_datetime(ordered["discharge_time"]).to_numpy(dtype="datetime64[D]") - day_number).astype(int)
    readmitted_at = pd.to_datetime(ordered["readmitted_at"]).to_numpy(dtype="datetime64[D]")
    never = np.iinfo(np.int64).max
    readmitted_day = np.where(np.isnat(readmitted_at), never, (readmitted_at - day_number).astype(np.int64))
    scored = ordered["risk"].notna().to_numpy()
    called = np.zeros(len(ordered), dtype=bool)
    listed = np.zeros(len(ordered), dtype=bool)
    for day in days:
        d = (np.datetime64(day, "D") - day_number).astype(int)
        open_now = scored & (discharged <= d) & (discharged > d - window_days) & (readmitted_day > d)
        listed |= open_now
        chosen = np.flatnonzero(open_now & ~called)[:capacity]
        called[chosen] = True
    y = ordered["y"].to_numpy(dtype=float)
    counted = ordered["counted"].to_numpy(dtype=bool) & ~np.isnan(y) & listed
    return ReplayResult(capacity, int(window_days), days[0], days[-1], len(days),
                        called=int((called & counted).sum()),
                        called_readmitted=int((called & counted & (y == 1)).sum()),
                        outcomes=int(counted.sum()), readmitted=int((counted & (y == 1)).sum()),
                        test_split_only=test_split_only)


def replay_days(index: WorklistIndex, as_of: dt.date, days: int = REPLAY_DAYS) -> list[dt.date]:
    """The past days to replay: up to `days` days ending OUTCOME_DAYS before `as_of`, none before the first
    discharge."""
    last = as_of - dt.timedelta(days=OUTCOME_DAYS)
    first = last - dt.timedelta(days=int(days) - 1)
    if index.first_discharge is not None:
        first = max(first, index.first_discharge)
    if index.first_discharge is None or last < first:
        return []
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def replay_discharges(index: WorklistIndex, first_day: dt.date, last_day: dt.date, window_days: int) -> pd.DataFrame:
    """The warehouse discharges a replay over [first_day, last_day] can list, in `replay_policy`'s columns.
    Counted: the test split when the features have one, else every discharge. `readmitted_at` counts only
    admissions up to the end of `last_day` (a later one cannot take a discharge off a replayed day's list),
    so that only the replayed span is read, not all history."""
    lo = dt.datetime.combine(first_day, dt.time()) - dt.timedelta(days=int(window_days))
    hi = dt.datetime.combine(last_day + dt.timedelta(days=1), dt.time())
    rows = index.query(
        "WITH span AS MATERIALIZED (SELECT patient_id, encounter_id, admit_time, discharge_time, risk, "
        "readmitted_30d, split, eligible FROM worklist WHERE (discharge_time >= ? AND discharge_time < ?) "
        "OR (admit_time >= ? AND admit_time < ?)) "
        "SELECT w.encounter_id, w.discharge_time, w.risk, w.readmitted_30d::DOUBLE AS y, w.split, "
        "(SELECT min(a.admit_time) FROM span a WHERE a.patient_id = w.patient_id AND a.admit_time >= ? "
        "AND a.admit_time < ? AND a.admit_time > w.discharge_time) AS readmitted_at "
        "FROM span w WHERE w.discharge_time >= ? AND w.discharge_time < ? AND w.eligible", [lo, hi] * 4)
    test_only = bool((rows["split"] == "test").any())
    rows["counted"] = (rows["split"] == "test") if test_only else True
    rows.attrs["test_split_only"] = test_only
    return rows


@dataclass(frozen=True)
class CapacityResult:
    """A capacity's replayed PPV and sensitivity, and the single risk cut-off that would call the same share
    of those past discharges (for threshold-based views such as the Model quality page)."""
    calls_per_day: int
    replay: ReplayResult
    threshold: float
    flagged_fraction: float

    @property
    def ppv(self) -> float:
        return self.replay.ppv

    @property
    def sensitivity(self) -> float:
        return self.replay.sensitivity

    @property
    def basis(self) -> str:
        if self.threshold != self.threshold:  # nan: nothing replayed
            return self.replay.basis
        return (f"{self.replay.basis} That is {self.flagged_fraction:.1%} of those discharges, the share a single "
                f"risk cut-off of {percent(self.threshold)} would call.")


def capacity_tradeoff(index: WorklistIndex, as_of: dt.date, window_days: int, capacity: int,
                      days: int = REPLAY_DAYS) -> CapacityResult:
    """PPV and sensitivity of calling `capacity` patients a day, replayed over the past days before `as_of`,
    with the equivalent single risk cut-off."""
    chosen = replay_days(index, as_of, days)
    discharges = replay_discharges(index, chosen[0], chosen[-1], window_days) if chosen else pd.DataFrame()
    return capacity_result(discharges, chosen, window_days, capacity)


def capacity_result(discharges: pd.DataFrame, days: Sequence[dt.date], window_days: int,
                    capacity: int) -> CapacityResult:
    """`capacity_tradeoff` from the replay's discharges (`replay_discharges`) and days (`replay_days`), so
    that a caller trying several capacities reads the discharges once. Pure."""
    if not days:
        return CapacityResult(int(capacity), replay_policy(pd.DataFrame(), [], capacity, window_days),
                              float("nan"), float("nan"))
    replay = replay_policy(discharges, days, capacity, window_days, discharges.attrs["test_split_only"])
    fraction = replay.called / replay.outcomes if replay.outcomes else float("nan")
    risks = discharges.loc[discharges["counted"] & discharges["y"].notna(), "risk"].dropna()
    threshold = float(risks.quantile(1 - fraction)) if len(risks) and fraction == fraction else float("nan")
    return CapacityResult(int(capacity), replay, threshold, fraction)


def position(day: DayList, source: str, encounter_id: str) -> Optional[dict[str, Any]]:
    """Where an encounter stands on the day's list: {"open": True, "rank", "flagged"} or
    {"open": False, "reason"}; None when it is not the patient's row in the window."""
    for frame, is_open in ((day.open, True), (day.handled, False)):
        hit = frame[(frame["source"].astype(str) == str(source)) & (frame["encounter_id"].astype(str) == str(encounter_id))]
        if len(hit):
            row = hit.iloc[0]
            return {"open": True, "rank": int(row["rank"]), "flagged": bool(row["flagged"])} if is_open \
                else {"open": False, "reason": str(row["reason"])}
    return None
