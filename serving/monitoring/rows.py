"""The rows a report reads: the prediction log matched to outcomes (each encounter's latest prediction),
periods of discharge dates, and who was on the call list.
"""
from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np
import pandas as pd
from pandas.api.types import union_categoricals
from sqlalchemy import Engine, LargeBinary, Text, and_, cast, func, select

from core.errors import UserError
from serving.db_tables import CallList, CallListEntry, Outcome, PredictionLog
from serving.prediction_log import parse_features

if TYPE_CHECKING:
    pass

from serving.monitoring.constants import MATURITY_DAYS, MONITORED, PERIODS

# --- the log, matched to outcomes ------------------------------------------------------------------------

def load_monitoring_rows(engine: Engine, as_of: dt.date, model_version: Optional[str] = None,
                         names: Sequence[str] = MONITORED, chunk: int = 50_000) -> pd.DataFrame:
    """Each logged encounter's latest prediction (of `model_version` when given) with its outcome, one row
    per encounter discharged on or before `as_of`, and the columns the report needs:

    discharge (day), channel, model_version, source, encounter_id, patient_id, risk, scored, eligible,
    invalid, label (1 / 0 / NaN), status ("known", "unmatured" or "unknown") and the monitored inputs."""
    log, outcome = PredictionLog.__table__, Outcome.__table__
    latest = select(func.max(log.c.id)).group_by(log.c.source, log.c.encounter_id)
    # times and the JSON are read as text and parsed in bulk below: per-row conversion would dominate; on
    # SQLite the JSON comes as its stored UTF-8 bytes (a BLOB), which Arrow parses without a decode/encode
    raw_json = LargeBinary if engine.dialect.name == "sqlite" else Text
    statement = (select(cast(log.c.logged_at, Text).label("logged_at"), log.c.channel, log.c.model_version,
                        log.c.source, log.c.encounter_id, log.c.patient_id, log.c.risk,
                        cast(log.c.features, raw_json).label("features"),
                        outcome.c.readmitted_30d, outcome.c.readmission_date)
                 .select_from(log.outerjoin(outcome, and_(outcome.c.source == log.c.source,
                                                          outcome.c.encounter_id == log.c.encounter_id))))
    if model_version:
        latest = latest.where(log.c.model_version == model_version)
        statement = statement.where(log.c.model_version == model_version)
    statement = statement.where(log.c.id.in_(latest) | log.c.encounter_id.is_(None))
    def convert(part: list) -> pd.DataFrame:
        frame = pd.DataFrame(part, columns=_LOG_READ)
        parsed = parse_features(frame["features"].tolist(), names, categorical=True)
        return _monitoring_frame(frame, parsed, as_of)

    # The driver's fetch and the JSON parse (Arrow, which releases the GIL) overlap: one chunk is parsed on a
    # second thread while the next is fetched. At most two chunks are in memory besides the results.
    futures = []
    with engine.connect() as connection, ThreadPoolExecutor(1, thread_name_prefix="monitor-parse") as pool:
        cursor = connection.execute(statement).cursor   # raw DBAPI rows: converted in bulk, not row by row
        while part := cursor.fetchmany(chunk):
            if len(futures) >= 2:
                futures[-2].result()  # back-pressure: never more than one chunk waiting for the parser
            futures.append(pool.submit(convert, part))
        parts = [future.result() for future in futures]
    if not parts:
        return _monitoring_frame(pd.DataFrame(columns=_LOG_READ), parse_features([], names, categorical=True), as_of)
    return _concat(parts)


def _concat(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Chunks into one frame; categorical columns keep a categorical dtype (the union of their categories)
    where `pd.concat` would fall back to millions of Python strings."""
    categorical = [name for name, dtype in parts[0].dtypes.items() if isinstance(dtype, pd.CategoricalDtype)]
    out = pd.concat([part.drop(columns=categorical) for part in parts], ignore_index=True)
    for name in categorical:
        out[name] = union_categoricals([part[name] for part in parts], ignore_order=True)
    return out


_LOG_READ = ["logged_at", "channel", "model_version", "source", "encounter_id", "patient_id", "risk", "features",
             "readmitted_30d", "readmission_date"]


def _monitoring_frame(frame: pd.DataFrame, parsed: pd.DataFrame, as_of: dt.date) -> pd.DataFrame:
    logged_day = pd.to_datetime(frame["logged_at"], utc=True, format="ISO8601").dt.tz_localize(None).dt.normalize()
    discharge = pd.to_datetime(parsed["_discharge_time"], errors="coerce").dt.normalize()
    discharge = discharge.fillna(logged_day).to_numpy()
    risk = pd.to_numeric(frame["risk"], errors="coerce").to_numpy(dtype=np.float64)
    # booleans, or 0 / 1 from a driver without booleans (SQLite): 1.0, 0.0 or NaN
    label = pd.array(frame["readmitted_30d"].to_numpy(dtype=object), dtype="boolean").to_numpy(
        dtype=np.float64, na_value=np.nan)
    readmission = pd.to_datetime(frame["readmission_date"], errors="coerce").to_numpy()
    days_to = (readmission - discharge) / np.timedelta64(1, "D")
    from_date = np.where(np.isnan(days_to) | (days_to < 0), np.nan, (days_to <= MATURITY_DAYS).astype(np.float64))
    label = np.where(np.isnan(label), from_date, label)
    as_of_day = np.datetime64(as_of, "D")
    matured = discharge + np.timedelta64(MATURITY_DAYS, "D") <= as_of_day
    out = pd.DataFrame({
        "discharge": discharge, "channel": frame["channel"].to_numpy(), "model_version": frame["model_version"].to_numpy(),
        "source": frame["source"].to_numpy(), "encounter_id": frame["encounter_id"].to_numpy(),
        "patient_id": frame["patient_id"].astype(object).fillna("").astype(str).to_numpy(), "risk": risk,
        "scored": np.isfinite(risk), "eligible": parsed["_eligible"].fillna(True).to_numpy(dtype=bool),
        "invalid": parsed["_invalid"].fillna(False).to_numpy(dtype=bool), "label": np.where(matured, label, np.nan),
        "status": np.where(~matured, "unmatured", np.where(np.isnan(label), "unknown", "known")),
    })
    out = pd.concat([out, parsed.drop(columns=["_discharge_time", "_eligible", "_invalid"]).reset_index(drop=True)],
                    axis=1)
    return out[out["discharge"] <= as_of_day].reset_index(drop=True)


# --- periods ------------------------------------------------------------------------------------------

def _scored(rows: pd.DataFrame) -> np.ndarray:
    return (rows["scored"] & rows["eligible"] & ~rows["invalid"]).to_numpy(dtype=bool)


def assign_periods(discharge: np.ndarray, period: str) -> tuple[np.ndarray, list[pd.Period]]:
    """Each row's period number and the periods in order (weeks start on Monday)."""
    if period not in PERIODS:
        raise UserError(f"--period must be one of {', '.join(PERIODS)}")
    if len(discharge) == 0:
        return np.zeros(0, dtype=np.int64), []
    keys = pd.PeriodIndex(pd.DatetimeIndex(discharge), freq="M" if period == "month" else "W-SUN")
    codes, uniques = pd.factorize(keys, sort=True)
    return codes.astype(np.int64), list(uniques)


def period_id(p: pd.Period) -> str:
    return p.strftime("%Y-%m") if p.freqstr.startswith("M") else p.start_time.strftime("%G-W%V")


def period_label(p: pd.Period) -> str:
    if p.freqstr.startswith("M"):
        return p.strftime("%B %Y")
    start = p.start_time
    return f"the week of {start.day} {start.strftime('%b %Y')}"


def _period_bounds(p: pd.Period) -> tuple[dt.date, dt.date]:
    return p.start_time.date(), p.end_time.date()


# --- call lists -------------------------------------------------------------------------------------

def load_call_lists(engine: Engine) -> pd.DataFrame:
    """Every stored call-list entry with its list's date (empty when no list was ever built)."""
    entry, lists = CallListEntry.__table__, CallList.__table__
    statement = select(entry.c.source, entry.c.encounter_id, lists.c.list_date).join(
        lists, lists.c.id == entry.c.call_list_id)
    with engine.connect() as connection:
        return pd.DataFrame(connection.execute(statement).all(), columns=["source", "encounter_id", "list_date"])


def flagged_encounters(rows: pd.DataFrame, call_lists: pd.DataFrame, calls_per_day: int,
                       follow_up_days: int) -> tuple[np.ndarray, np.ndarray]:
    """Who was on a call list, and whether that came from the stored lists (True) or a replay.

    Discharges within the stored lists' reach (from the first list date minus `follow_up_days` to the
    last list date) are on a list when an entry names them. Others are replayed: the `calls_per_day`
    highest risks of each discharge day, as the worklist would have ranked them."""
    n = len(rows)
    order = np.lexsort((-np.nan_to_num(rows["risk"].to_numpy(dtype=np.float64), nan=-1.0), rows["discharge"].to_numpy()))
    rank = np.empty(n, dtype=np.int64)
    day = rows["discharge"].to_numpy()[order]
    starts = np.r_[True, day[1:] != day[:-1]] if n else np.zeros(0, dtype=bool)
    position = np.arange(n) - np.maximum.accumulate(np.where(starts, np.arange(n), 0)) if n else np.zeros(0, dtype=np.int64)
    rank[order] = position
    flagged = rank < max(1, int(calls_per_day))
    stored = np.zeros(n, dtype=bool)
    if len(call_lists):
        dates = pd.to_datetime(call_lists["list_date"])
        low = np.datetime64(dates.min() - pd.Timedelta(days=follow_up_days))
        high = np.datetime64(dates.max())
        stored = (rows["discharge"].to_numpy() >= low) & (rows["discharge"].to_numpy() <= high)
        named = pd.MultiIndex.from_frame(call_lists[["source", "encounter_id"]].astype(str))
        on_list = pd.MultiIndex.from_arrays([rows["source"].astype(str), rows["encounter_id"].astype(str)]).isin(named)
        flagged = np.where(stored, on_list, flagged)
    return flagged, stored


