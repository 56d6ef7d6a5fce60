"""One day's list (`build_day_list`: open ranked, today's call list flagged, handled with the reason) and
viewing it: filters, pages, search, where an encounter stands."""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Optional, Sequence
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from serving.outreach import CLOSING, STATUS_LABELS, OutreachRecord
from serving.worklist.index import FILTER_COLUMNS, WorklistIndex

DEFAULT_PAGE_SIZE = 50
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


def percent(risk: Any, digits: int = 1) -> str:
    if risk is None or (isinstance(risk, float) and math.isnan(risk)):
        return "not scored"
    return f"{float(risk) * 100:.{digits}f}%"


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
