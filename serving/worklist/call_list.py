"""Today's call list: as formula-safe CSV, and kept in the operational database (call_list +
call_list_entry)."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import pandas as pd
from sqlalchemy import Engine, select

from core.spreadsheet import safe_csv
from serving.database import session_scope
from serving.db_tables import CallList, CallListEntry
from serving.worklist.day import DayList, percent

CALL_LIST_COLUMNS = ("rank", "patient_id", "encounter_id", "discharge_date", "days_since_discharge", "risk",
                     "risk_tier", "reason_1", "reason_2", "reason_3", "status")


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
