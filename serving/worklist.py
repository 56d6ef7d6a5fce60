"""The Worklist page's queries: patients ranked by risk, filters, paging, export, and capacity.

Every query goes through `Warehouse.query` with bound parameters: user input (filters, search text,
ids) is never formatted into SQL.
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import duckdb
import numpy as np
import pandas as pd

from core.warehouse import Warehouse
from serving.quality import labelled_scores

RISK_TIERS = ("Very high", "High", "Medium", "Low")
TIER_MEANING = {
    "Very high": "Very high risk: call first",
    "High": "High risk: call",
    "Medium": "Medium risk: call if capacity allows",
    "Low": "Low risk",
}
DEFAULT_CAPACITY = 25
DEFAULT_PAGE_SIZE = 50


@dataclass(frozen=True)
class WorklistFilters:
    tiers: tuple[str, ...] = ()
    discharged_from: Optional[dt.date] = None
    discharged_to: Optional[dt.date] = None
    age_bands: tuple[str, ...] = ()
    sexes: tuple[str, ...] = ()
    races: tuple[str, ...] = ()
    diagnosis_groups: tuple[str, ...] = ()
    dispositions: tuple[str, ...] = ()
    payers: tuple[str, ...] = ()
    search: str = ""
    latest_stay_only: bool = True


FILTER_COLUMNS = {  # filter field -> (column expression in the worklist base, source table)
    "age_bands": ("age_band", "encounters"),
    "sexes": ("sex", "encounters"),
    "races": ("race", "encounters"),
    "dispositions": ("discharge_disposition", "encounters"),
    "payers": ("payer", "encounters"),
    "diagnosis_groups": ("principal_group", "features"),
}


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


def _worklist_base(wh: Warehouse) -> str:
    has_enc, has_feat = wh.has_table("encounters"), wh.has_table("features")
    enc = lambda column: f"e.{column}" if has_enc else "NULL"  # noqa: E731
    group = "f.principal_group" if has_feat else "NULL"
    joins = ""
    if has_enc:
        joins += " LEFT JOIN encounters e ON e.encounter_id = p.encounter_id"
    if has_feat:
        joins += " LEFT JOIN features f ON f.encounter_id = p.encounter_id"
    return f"""
        SELECT p.encounter_id, p.patient_id, p.risk, p.risk_tier, p.risk_percentile,
               p.reason_1, p.reason_2, p.reason_3,
               {enc('discharge_time')} AS discharge_time, {enc('age_band')} AS age_band, {enc('sex')} AS sex,
               {enc('race')} AS race, {enc('discharge_disposition')} AS discharge_disposition,
               {enc('payer')} AS payer, {enc('length_of_stay_days')} AS length_of_stay_days,
               {group} AS principal_group,
               row_number() OVER (PARTITION BY p.patient_id
                                  ORDER BY {enc('discharge_time')} DESC NULLS LAST,
                                           {enc('admit_time')} DESC NULLS LAST, p.encounter_id DESC) AS recency
        FROM predictions p{joins}
        WHERE p.risk IS NOT NULL"""


def _where(filters: WorklistFilters) -> tuple[str, list[Any]]:
    clauses, params = [], []
    if filters.latest_stay_only:
        clauses.append("recency = 1")
    if filters.tiers:
        clauses.append("risk_tier IN (SELECT unnest(?))")
        params.append(list(filters.tiers))
    for name, (column, _) in FILTER_COLUMNS.items():
        values = getattr(filters, name)
        if values:
            clauses.append(f"{column} IN (SELECT unnest(?))")
            params.append(list(values))
    if filters.discharged_from:
        clauses.append("discharge_time >= ?")
        params.append(pd.Timestamp(filters.discharged_from).to_pydatetime())
    if filters.discharged_to:
        clauses.append("discharge_time < ?")
        params.append((pd.Timestamp(filters.discharged_to) + pd.Timedelta(days=1)).to_pydatetime())
    search = filters.search.strip()
    if search:
        clauses.append("(starts_with(lower(patient_id), lower(?)) OR starts_with(lower(encounter_id), lower(?)))")
        params += [search, search]
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


@dataclass
class WorklistPage:
    rows: pd.DataFrame
    total: int
    page: int
    page_size: int

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.page_size))


WORKLIST_COLUMNS = ("rank", "patient_id", "encounter_id", "risk_pct", "risk_tier", "flagged", "reasons",
                    "discharge_date", "age_band", "sex", "race", "principal_group", "discharge_disposition",
                    "payer", "length_of_stay_days")


class WorklistIndex:
    """The worklist rows of one warehouse version, materialized once in an in-memory DuckDB table.

    Built in one query over the Parquet tables (about a second for 100,000 patients); every page,
    filter and count afterwards scans memory. Share one per warehouse version (the dashboard keeps
    it in `st.cache_resource`); each query uses its own cursor, so threads may share it.
    """

    def __init__(self, wh: Warehouse):
        rows = wh.query(_worklist_base(wh))
        self._con = duckdb.connect(":memory:")
        self._con.register("_rows", rows)
        self._con.execute("CREATE TABLE worklist AS SELECT * FROM _rows")
        self._con.unregister("_rows")
        self.rows = len(rows)

    def query(self, sql: str, params: Optional[Sequence[Any]] = None) -> pd.DataFrame:
        cursor = self._con.cursor()
        try:
            return cursor.execute(sql, list(params or [])).df()
        finally:
            cursor.close()


def _source(wh) -> str:
    """The worklist rows to select from: the materialized table, or the query over the warehouse."""
    return "worklist" if isinstance(wh, WorklistIndex) else f"({_worklist_base(wh)})"


def worklist(wh: "Warehouse | WorklistIndex", filters: WorklistFilters = WorklistFilters(), page: int = 1,
             page_size: int = DEFAULT_PAGE_SIZE, threshold: Optional[float] = None) -> WorklistPage:
    """One page of patients ranked by risk (highest first); only `page_size` rows leave DuckDB."""
    page_size = max(1, min(int(page_size), 500))
    page = max(1, int(page))
    where, params = _where(filters)
    sql = (f"SELECT *, count(*) OVER () AS total FROM {_source(wh)} AS base{where} "
           "ORDER BY risk DESC, encounter_id LIMIT ? OFFSET ?")
    rows = wh.query(sql, params + [page_size, (page - 1) * page_size])
    total = int(rows["total"].iloc[0]) if len(rows) else count_worklist(wh, filters)
    return WorklistPage(_worklist_view(rows, (page - 1) * page_size, threshold), total, page, page_size)


def count_worklist(wh: "Warehouse | WorklistIndex", filters: WorklistFilters = WorklistFilters()) -> int:
    where, params = _where(filters)
    return int(wh.query(f"SELECT count(*) AS n FROM {_source(wh)} AS base{where}", params)["n"].iloc[0])


def worklist_export(wh: "Warehouse | WorklistIndex", filters: WorklistFilters = WorklistFilters(),
                    limit: int = 100_000, threshold: Optional[float] = None) -> pd.DataFrame:
    """The whole filtered list (up to `limit` rows) for a CSV download."""
    where, params = _where(filters)
    rows = wh.query(f"SELECT * FROM {_source(wh)} AS base{where} ORDER BY risk DESC, encounter_id LIMIT ?",
                    params + [int(limit)])
    return _worklist_view(rows, 0, threshold)


def _worklist_view(rows: pd.DataFrame, offset: int, threshold: Optional[float]) -> pd.DataFrame:
    view = pd.DataFrame({
        "rank": np.arange(offset + 1, offset + 1 + len(rows)),
        "patient_id": rows["patient_id"].astype(str),
        "encounter_id": rows["encounter_id"].astype(str),
        "risk_pct": (rows["risk"].astype(float) * 100).round(1),
        "risk_tier": rows["risk_tier"],
        "flagged": (["Yes" if r >= threshold else "No" for r in rows["risk"]] if threshold is not None
                    else [""] * len(rows)),
        "reasons": [join_reasons(r) for r in rows[["reason_1", "reason_2", "reason_3"]].itertuples(index=False)],
        "discharge_date": pd.to_datetime(rows["discharge_time"]).dt.date,
        "age_band": rows["age_band"], "sex": rows["sex"], "race": rows["race"],
        "principal_group": rows["principal_group"], "discharge_disposition": rows["discharge_disposition"],
        "payer": rows["payer"], "length_of_stay_days": rows["length_of_stay_days"],
    })
    return view[list(WORKLIST_COLUMNS)]


def join_reasons(reasons: Sequence[Any]) -> str:
    return "; ".join(str(r) for r in reasons if r is not None and not (isinstance(r, float) and math.isnan(r)) and str(r))


@dataclass
class CapacityResult:
    calls_per_day: int
    daily_volume: Optional[float]      # eligible scored discharges per day, where dates exist
    flagged_fraction: float
    threshold: float
    ppv: float
    sensitivity: float
    labelled: int                      # encounters with a known outcome the PPV/sensitivity come from
    basis: str                         # one sentence: where the numbers come from


def suggested_capacity(wh: Warehouse, share: float = 0.10) -> int:
    """A starting capacity: 25 calls a day, or a tenth of the daily discharges when fewer than 250 a day."""
    result = capacity_tradeoff(wh, DEFAULT_CAPACITY, labelled=pd.DataFrame(columns=["y", "risk"]))
    if result.daily_volume and result.daily_volume * share < DEFAULT_CAPACITY:
        return max(1, int(round(result.daily_volume * share)))
    return DEFAULT_CAPACITY


def capacity_tradeoff(wh: Warehouse, calls_per_day: int, labelled: Optional[pd.DataFrame] = None) -> CapacityResult:
    """Turn "we can call N patients a day" into a risk threshold and the PPV / sensitivity it implies."""
    calls = max(1, int(calls_per_day))
    volume = None
    if wh.has_table("encounters"):
        span = wh.query(
            "SELECT count(*) AS n, min(e.discharge_time) AS lo, max(e.discharge_time) AS hi FROM predictions p "
            "JOIN encounters e ON e.encounter_id = p.encounter_id WHERE p.risk IS NOT NULL").iloc[0]
        if not pd.isna(span["lo"]):
            days = max(1.0, (pd.Timestamp(span["hi"]) - pd.Timestamp(span["lo"])).total_seconds() / 86400 + 1)
            volume = float(span["n"]) / days
    scored = int(wh.query("SELECT count(*) AS n FROM predictions WHERE risk IS NOT NULL")["n"].iloc[0])
    if volume:
        fraction = min(1.0, calls / volume)
        basis = (f"{volume:.1f} scored discharges a day on average, so {calls} calls a day reach the top "
                 f"{fraction:.1%}.")
    else:
        fraction = min(1.0, calls / max(1, scored))
        basis = f"No discharge dates: {calls} calls cover the top {calls} of {scored:,} scored patients."
    threshold = float(wh.query("SELECT quantile_cont(risk, ?) AS t FROM predictions WHERE risk IS NOT NULL",
                               [1.0 - fraction])["t"].iloc[0]) if scored else float("nan")
    labelled = labelled if labelled is not None else labelled_scores(wh)
    ppv = sensitivity = float("nan")
    if len(labelled):
        y, p = labelled["y"].to_numpy(dtype=float), labelled["risk"].to_numpy(dtype=float)
        flag = p >= threshold
        ppv = float(y[flag].mean()) if flag.any() else float("nan")
        sensitivity = float(y[flag].sum() / y.sum()) if y.sum() else float("nan")
        basis += f" PPV and sensitivity from {len(labelled):,} past discharges with a known outcome."
    else:
        basis += " No discharges with a known outcome: PPV and sensitivity cannot be estimated."
    return CapacityResult(calls, volume, fraction, threshold, ppv, sensitivity, len(labelled), basis)
