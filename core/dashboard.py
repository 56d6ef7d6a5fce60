"""Queries and view models behind the dashboard pages; framework-free (no streamlit here).

Every query goes through `Warehouse.query` with bound parameters: user input (filters, search text,
ids) is never formatted into SQL. Pages read their widgets, call one function here and draw what
it returns. A missing patient is `None`, never another patient.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

from core import icd
from core.errors import UserError
from core.features import FEATURE_LABELS
from core.schema import LIST_SEPARATOR, template_columns, template_example_row
from core.warehouse import Warehouse, WarehouseError, read_pointer

RISK_TIERS = ("Very high", "High", "Medium", "Low")
TIER_MEANING = {
    "Very high": "Very high risk: call first",
    "High": "High risk: call",
    "Medium": "Medium risk: call if capacity allows",
    "Low": "Low risk",
}
DEFAULT_CAPACITY = 25
DEFAULT_PAGE_SIZE = 50
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")


# --- warehouse status --------------------------------------------------------------------------------

@dataclass(frozen=True)
class DataStatus:
    """What the configured warehouse holds, and whether it is synthetic demo data."""
    root: str
    tables: tuple[str, ...]
    synthetic: bool
    sources: tuple[str, ...] = ()
    version: str = ""
    problem: Optional[str] = None   # a sentence for the user when the warehouse cannot be used

    @property
    def usable(self) -> bool:
        return self.problem is None


def data_status(root: str) -> DataStatus:
    """Inspect the warehouse at `root`. Synthetic only when every encounter says source='synthetic'
    (or, lacking an encounters table, when the predictions manifest says so); anything else counts
    as real patient data."""
    try:
        pointer = read_pointer(root)
    except (OSError, ValueError) as error:
        return DataStatus(str(root), (), False, problem=f"The warehouse pointer cannot be read: {error}")
    tables = tuple(sorted(pointer.get("tables", {})))
    version = json.dumps(pointer.get("tables", {}), sort_keys=True)
    if "predictions" not in tables:
        return DataStatus(str(root), tables, False, version=version,
                          problem=(f"No scored patients in the warehouse at {root}. Build one with "
                                   "`readmit demo` (synthetic) or `readmit etl` then `readmit score`, or "
                                   "point READMIT_WAREHOUSE at an existing warehouse."))
    wh = Warehouse(str(root))
    sources: tuple[str, ...] = ()
    synthetic = False
    if "encounters" in tables:
        counts = wh.query("SELECT coalesce(source, '(none)') AS source, count(*) AS n FROM encounters "
                          "GROUP BY ALL ORDER BY n DESC")
        sources = tuple(counts["source"].tolist())
        synthetic = sources == ("synthetic",)
    else:
        manifest = wh.manifest("predictions")
        synthetic = manifest.get("source") == "synthetic" or manifest.get("synthetic") is True
        sources = (str(manifest.get("source")),) if manifest.get("source") else ()
    return DataStatus(str(root), tables, synthetic, sources, version)


# --- cohort summary (Home) ---------------------------------------------------------------------------

@dataclass
class CohortSummary:
    encounters: int
    patients: int
    eligible: int
    scored: int
    tier_counts: dict[str, int]
    risk_histogram: pd.DataFrame          # columns: bin_start, bin_end, count
    first_discharge: Optional[pd.Timestamp]
    last_discharge: Optional[pd.Timestamp]
    scored_at: Optional[pd.Timestamp]
    model_versions: list[str]


def cohort_summary(wh: Warehouse, bins: int = 20) -> CohortSummary:
    has_enc = wh.has_table("encounters")
    stats = wh.query(
        "SELECT count(*) AS encounters, count(DISTINCT patient_id) FILTER (WHERE coalesce(eligible, true)) AS patients, "
        "count(*) FILTER (WHERE coalesce(eligible, true)) AS eligible, "
        "count(risk) AS scored, max(scored_at) AS scored_at FROM predictions").iloc[0]
    tiers = wh.query("SELECT risk_tier, count(*) AS n FROM predictions WHERE risk IS NOT NULL GROUP BY ALL")
    tier_counts = {tier: 0 for tier in RISK_TIERS} | dict(zip(tiers["risk_tier"], tiers["n"].astype(int)))
    hist = wh.query(
        "SELECT least(floor(risk * ?)::INTEGER, ? - 1) AS b, count(*) AS count FROM predictions "
        "WHERE risk IS NOT NULL GROUP BY ALL ORDER BY b", [bins, bins])
    hist = pd.DataFrame({"b": range(bins)}).merge(hist, on="b", how="left").fillna({"count": 0})
    hist["bin_start"], hist["bin_end"] = hist["b"] / bins, (hist["b"] + 1) / bins
    versions = wh.query("SELECT DISTINCT model_version FROM predictions WHERE model_version IS NOT NULL")
    first = last = None
    if has_enc:
        dates = wh.query("SELECT min(discharge_time) AS first, max(discharge_time) AS last FROM encounters").iloc[0]
        first, last = _ts(dates["first"]), _ts(dates["last"])
    return CohortSummary(int(stats["encounters"]), int(stats["patients"]), int(stats["eligible"]),
                         int(stats["scored"]), tier_counts, hist[["bin_start", "bin_end", "count"]],
                         first, last, _ts(stats["scored_at"]), sorted(versions["model_version"].astype(str)))


def _ts(value) -> Optional[pd.Timestamp]:
    return None if value is None or pd.isna(value) else pd.Timestamp(value)


# --- worklist ----------------------------------------------------------------------------------------

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
        import duckdb

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


# --- capacity -> threshold, PPV, sensitivity ---------------------------------------------------------

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


def labelled_scores(wh: Warehouse, test_only: bool = True) -> pd.DataFrame:
    """Scored eligible encounters with a known 30-day outcome (the test split when there is one)."""
    if not wh.has_table("encounters"):
        return pd.DataFrame(columns=["encounter_id", "patient_id", "risk", "y"])
    split_join, split_where = "", ""
    if test_only and wh.has_table("features"):
        has_split = "split" in wh.query("SELECT * FROM features LIMIT 0").columns
        if has_split and int(wh.query("SELECT count(*) AS n FROM features WHERE split = 'test'")["n"].iloc[0]):
            split_join = " JOIN features f ON f.encounter_id = p.encounter_id"
            split_where = " AND f.split = 'test'"
    return wh.query(
        "SELECT p.encounter_id, p.patient_id, p.risk, e.readmitted_30d::INTEGER AS y, e.race, e.sex, e.age_band "
        f"FROM predictions p JOIN encounters e ON e.encounter_id = p.encounter_id{split_join} "
        f"WHERE p.risk IS NOT NULL AND e.readmitted_30d IS NOT NULL AND coalesce(e.eligible, true){split_where}")


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


# --- patient ------------------------------------------------------------------------------------------

@dataclass
class PatientDetail:
    encounter: dict[str, Any]
    prediction: Optional[dict[str, Any]]
    features: Optional[dict[str, Any]]
    diagnoses: pd.DataFrame
    medications: pd.DataFrame
    other_encounters: pd.DataFrame
    contributions: pd.DataFrame      # feature, label, value, contribution (sorted by |contribution|)
    lace: Optional[dict[str, Any]]

    @property
    def patient_id(self) -> str:
        return str(self.encounter["patient_id"])

    @property
    def encounter_id(self) -> str:
        return str(self.encounter["encounter_id"])


def resolve_encounter(wh: Warehouse, encounter_id: Optional[str] = None,
                      patient_id: Optional[str] = None) -> Optional[str]:
    """The encounter to show: the given one if it exists, else the patient's latest; None if unknown."""
    table = "encounters" if wh.has_table("encounters") else "predictions"
    if encounter_id:
        found = wh.query(f"SELECT encounter_id FROM {table} WHERE encounter_id = ? LIMIT 1", [str(encounter_id)])
        return str(found["encounter_id"].iloc[0]) if len(found) else None
    if patient_id:
        order = "discharge_time DESC NULLS LAST, admit_time DESC NULLS LAST, " if table == "encounters" else ""
        found = wh.query(f"SELECT encounter_id FROM {table} WHERE patient_id = ? ORDER BY {order}encounter_id DESC "
                         "LIMIT 1", [str(patient_id)])
        return str(found["encounter_id"].iloc[0]) if len(found) else None
    return None


def _one(wh: Warehouse, table: str, encounter_id: str) -> Optional[dict[str, Any]]:
    if not wh.has_table(table):
        return None
    rows = wh.query(f"SELECT * FROM {table} WHERE encounter_id = ? LIMIT 1", [encounter_id])
    return None if rows.empty else rows.iloc[0].to_dict()


MEDICATION_CHANGE_WORDS = {"steady": "given, dose unchanged", "up": "dose increased", "down": "dose decreased"}


def patient_detail(wh: Warehouse, encounter_id: str) -> Optional[PatientDetail]:
    """Everything the Patient page shows for one encounter, or None when the encounter is unknown."""
    encounter = _one(wh, "encounters", encounter_id)
    prediction = _one(wh, "predictions", encounter_id)
    if encounter is None and prediction is None:
        return None
    if encounter is None:  # predictions without the encounters table: show what we have
        encounter = {"encounter_id": prediction["encounter_id"], "patient_id": prediction["patient_id"]}
    features = _one(wh, "features", encounter_id)
    version = int(encounter.get("icd_version") or 9) if not pd.isna(encounter.get("icd_version") or 9) else 9
    codes = _as_list(encounter.get("diagnoses"))
    diagnoses = pd.DataFrame([{"position": i + 1, "code": icd.normalize_code(c, version) or c,
                               "description": diagnosis_description(icd.normalize_code(c, version), version)}
                              for i, c in enumerate(codes) if c])
    meds = []
    for item in _as_list(encounter.get("medication_changes")):
        if item and ":" in str(item):
            drug, status = str(item).split(":", 1)
            meds.append({"medication": drug, "at discharge": MEDICATION_CHANGE_WORDS.get(status, status)})
    others = pd.DataFrame()
    if wh.has_table("encounters"):
        pred_cols = ", p.risk, p.risk_tier" if wh.has_table("predictions") else ""
        pred_join = " LEFT JOIN predictions p ON p.encounter_id = e.encounter_id" if pred_cols else ""
        others = wh.query(
            f"SELECT e.encounter_id, e.admit_time, e.discharge_time, e.length_of_stay_days, e.admission_type, "
            f"e.discharge_disposition, e.readmitted_30d{pred_cols} FROM encounters e{pred_join} "
            "WHERE e.patient_id = ? AND e.encounter_id <> ? ORDER BY e.admit_time NULLS LAST, e.encounter_id",
            [str(encounter["patient_id"]), encounter_id])
    return PatientDetail(encounter, prediction, features, diagnoses, pd.DataFrame(meds), others,
                         contributions(prediction, features), lace_for(encounter, features))


def _as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(LIST_SEPARATOR)]
    try:
        return [v for v in list(value)]
    except TypeError:
        return []


def diagnosis_description(code: Optional[str], version: int = 9) -> str:
    """Plain words for a code: its clinical group and ICD chapter (no licensed code titles are shipped)."""
    if not code:
        return "unknown code"
    group, chapter = icd.clinical_group(code, version), icd.chapter(code, version)
    if group == "diabetes":
        return "diabetes mellitus"
    parts = [f"{chapter} conditions" if chapter else "unrecognised code"]
    if group and group not in ("other", chapter):
        parts.insert(0, group)
    return ", ".join(parts)


def contributions(prediction: Optional[dict[str, Any]], features: Optional[dict[str, Any]]) -> pd.DataFrame:
    """Per-feature contributions to this patient's risk from the stored attributions, biggest first."""
    empty = pd.DataFrame(columns=["feature", "label", "value", "text", "contribution"])
    if not prediction or prediction.get("attributions") in (None, ""):
        return empty
    raw = prediction["attributions"]
    try:
        parsed = json.loads(raw) if isinstance(raw, str) else dict(raw)
    except (TypeError, ValueError):
        return empty
    try:
        from core.explain import GROUP_LABELS
        from core.reasons import describe
    except ImportError:  # pragma: no cover - the explanation module ships with the scorer
        GROUP_LABELS, describe = {}, None
    rows = []
    for name, value in parsed.items():
        try:
            amount = float(value)
        except (TypeError, ValueError):
            continue
        shown = ""
        if name in GROUP_LABELS and features and describe is not None:
            try:
                shown = describe(name, features)
            except Exception:  # noqa: BLE001 - a description is a nicety, never a failure
                shown = ""
        elif features and features.get(name) is not None and not (
                isinstance(features.get(name), float) and math.isnan(features.get(name))):
            shown = str(features.get(name))
        label = GROUP_LABELS.get(name) or FEATURE_LABELS.get(name, name.replace("_", " "))
        text = shown if name in GROUP_LABELS and shown else (f"{label} = {shown}" if shown else label)
        rows.append({"feature": name, "label": label, "value": shown, "text": text, "contribution": amount})
    if not rows:
        return empty
    out = pd.DataFrame(rows)
    return out.reindex(out["contribution"].abs().sort_values(ascending=False).index).reset_index(drop=True)


def waterfall_figure(detail: PatientDetail, top: int = 10):
    """Plotly waterfall of the stored attributions: base risk, the `top` biggest, the rest, the patient."""
    base = (detail.prediction or {}).get("base_risk")
    return contributions_figure(detail.contributions, base, top)


def contributions_figure(contrib: pd.DataFrame, base_risk: Optional[float], top: int = 10):
    """Plotly waterfall: base risk, the `top` biggest contributions, the rest, the patient's risk."""
    import plotly.graph_objects as go

    base = float(base_risk) if base_risk is not None and not pd.isna(base_risk) else 0.0
    shown, rest = contrib.head(top), contrib.iloc[top:]
    labels = ["average patient"] + [r.text for r in shown.itertuples()]
    values = [base] + shown["contribution"].tolist()
    measures = ["absolute"] + ["relative"] * len(shown)
    if len(rest):
        labels.append(f"{len(rest)} other factors")
        values.append(float(rest["contribution"].sum()))
        measures.append("relative")
    labels.append("this patient")
    values.append(0.0)
    measures.append("total")
    fig = go.Figure(go.Waterfall(
        orientation="h", y=labels, x=values, measure=measures,
        increasing={"marker": {"color": "#D55E00"}}, decreasing={"marker": {"color": "#0072B2"}},
        totals={"marker": {"color": "#555555"}},
        text=[f"{v:+.3f}" if m == "relative" else "" for v, m in zip(values, measures)], textposition="outside"))
    fig.update_layout(title="What moved this patient's risk (orange raises it, blue lowers it)",
                      yaxis={"autorange": "reversed"}, height=120 + 32 * len(labels),
                      margin={"l": 10, "r": 10, "t": 50, "b": 10}, showlegend=False,
                      xaxis_title="contribution to predicted risk")
    return fig


# --- live explanation (sampled Shapley) ----------------------------------------------------------------

RISK_AGREEMENT = 1e-6   # live and stored risk of the same model agree far closer than this


@dataclass(frozen=True)
class LiveExplanation:
    """`ScoringService.explain_one` for one encounter: base_risk + sum(points) == risk."""
    encounter_id: str
    risk: float
    base_risk: float
    points: dict[str, float]         # every field group's attribution (calibrated-risk units)
    contributions: pd.DataFrame      # as `contributions()`: feature, label, value, text, contribution
    reasons: tuple[str, ...]         # the top three sentences, as the batch scorer words them
    model_version: str
    samples: int

    def agrees_with(self, stored_risk: Any) -> bool:
        return stored_risk is not None and not pd.isna(stored_risk) and \
            abs(float(stored_risk) - self.risk) <= RISK_AGREEMENT


def encounters_up_to(wh: Warehouse, encounter_id: str) -> pd.DataFrame:
    """The patient's encounters up to and including this one (canonical columns), in the history order
    of `core.features.sort_for_history`, this one last; empty when the encounter is unknown. Later stays
    are left out: they never enter this encounter's features and would only cost explanation time."""
    from core.features import sort_for_history
    from core.scoring import from_warehouse_frame

    if not wh.has_table("encounters"):
        return pd.DataFrame()
    rows = wh.query("SELECT * FROM encounters WHERE patient_id = "
                    "(SELECT patient_id FROM encounters WHERE encounter_id = ? LIMIT 1)", [str(encounter_id)])
    if rows.empty:
        return pd.DataFrame()
    ordered = sort_for_history(from_warehouse_frame(rows)).reset_index(drop=True)
    at = np.flatnonzero(ordered["encounter_id"].astype(str).to_numpy() == str(encounter_id))
    return ordered.iloc[: int(at[0]) + 1].reset_index(drop=True) if len(at) else pd.DataFrame()


def live_explanation(service, wh: Warehouse, encounter_id: str, top: int = 3,
                     min_points: float = 0.0005) -> Optional[LiveExplanation]:
    """Sampled Shapley explanation of one encounter, computed now by `service.explain_one` over the
    patient's encounters up to this one. None when the encounter is unknown or not scored (ineligible,
    impossible values)."""
    from core import reasons as reason_text

    history = encounters_up_to(wh, encounter_id)
    if history.empty:
        return None
    result = service.explain_one(history)
    risk, base = result.get("risk"), result.get("base_risk")
    if risk is None or pd.isna(risk) or base is None or pd.isna(base):
        return None
    points = {g["group"]: float(g["points"]) for g in result["groups"] if g.get("points") is not None}
    features = service.features_for(history).iloc[-1].to_dict()
    contrib = contributions({"attributions": json.dumps(points)}, features)
    ranked = sorted((g for g in result["groups"] if g.get("points") is not None and abs(g["points"]) >= min_points),
                    key=lambda g: -abs(g["points"]))   # stable: ties keep the field order, as the scorer
    reasons = tuple(g["sentence"] for g in ranked[:top]) or (reason_text.near_average(float(base)),)
    return LiveExplanation(str(result["encounter_id"]), float(risk), float(base), points, contrib, reasons,
                           str(getattr(service, "model_version", "unknown")),
                           int(getattr(service, "single_samples", 32)))


# --- LACE ----------------------------------------------------------------------------------------------

def lace_for(encounter: dict[str, Any], features: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """LACE points for one encounter through `core.lace` (the same code the evaluation uses)."""
    from core import lace

    charlson = (features or {}).get("charlson_index")
    if charlson is None:
        codes = [icd.normalize_code(c, 9) for c in _as_list(encounter.get("diagnoses"))]
        charlson = icd.charlson_index(icd.charlson_conditions(codes, 9))
    record = pd.DataFrame([{"length_of_stay_days": encounter.get("length_of_stay_days"),
                            "admission_type": encounter.get("admission_type"),
                            "admission_source": encounter.get("admission_source"),
                            "charlson_index": charlson,
                            "prior_emergency_visits": encounter.get("prior_emergency_visits")}])
    row = lace.lace_components(record).iloc[0]
    points = {k: int(row[k]) for k in ("L", "A", "C", "E")}
    points["total"] = int(row["lace"])
    points["band"] = "high (10 or more)" if points["total"] >= 10 else (
        "moderate (5 to 9)" if points["total"] >= 5 else "low (under 5)")
    return points


def lace_series(frame: pd.DataFrame) -> np.ndarray:
    """LACE totals for frames with length_of_stay_days, admission_type, charlson_index, prior_emergency_visits."""
    from core import lace
    return lace.lace_score(frame).astype(float)


# --- model quality -------------------------------------------------------------------------------------

@dataclass
class ModelInfo:
    folder: str
    metrics: dict[str, Any]
    thresholds: dict[str, Any]
    card: str
    figures: dict[str, str]          # name -> plotly JSON text
    problem: Optional[str] = None


def model_info(model_dir: str) -> ModelInfo:
    folder = Path(model_dir)
    if not folder.is_dir():
        return ModelInfo(str(folder), {}, {}, "", {},
                         problem=f"No model folder at {folder}: train one with `readmit train` or set READMIT_MODEL_DIR.")

    def load(name):
        path = folder / name
        try:
            return json.loads(path.read_text()) if path.exists() else {}
        except ValueError:
            return {}
    card = (folder / "README.md").read_text() if (folder / "README.md").exists() else ""
    figures = {p.stem: p.read_text() for p in sorted((folder / "figures").glob("*.json"))} \
        if (folder / "figures").is_dir() else {}
    return ModelInfo(str(folder), load("metrics.json"), load("thresholds.json"), card, figures)


@dataclass
class QualityView:
    n: int
    positives: int
    auroc: float
    lace_auroc: float
    capacity_curve: pd.DataFrame      # fraction, n_flagged, cutoff, ppv, sensitivity
    confusion: dict[str, Any]         # at the capacity threshold
    subgroups: pd.DataFrame           # grouping, level, n, positives, auroc, flagged, ppv, sensitivity, gap
    roc: dict[str, list[float]] = field(default_factory=dict)
    lace_roc: dict[str, list[float]] = field(default_factory=dict)


def quality_view(wh: Warehouse, threshold: float, gap_tolerance: float = 0.05) -> Optional[QualityView]:
    """Discrimination, capacity trade-off, confusion and subgroup table on the labelled (test) encounters."""
    from core import metrics

    labelled = labelled_scores(wh)
    if labelled.empty or labelled["y"].nunique() < 2:
        return None
    y, p = labelled["y"].to_numpy(dtype=float), labelled["risk"].to_numpy(dtype=float)
    lace_auc, lace_roc = float("nan"), {}
    if wh.has_table("features"):
        extra = wh.query(
            "SELECT e.encounter_id, e.length_of_stay_days, e.admission_type, e.admission_source, e.prior_emergency_visits, "
            "f.charlson_index FROM encounters e JOIN features f ON f.encounter_id = e.encounter_id "
            "WHERE e.encounter_id IN (SELECT unnest(?))", [labelled["encounter_id"].tolist()])
        merged = labelled[["encounter_id"]].merge(extra, on="encounter_id", how="left")
        lace = lace_series(merged)
        lace_auc, lace_roc = metrics.auroc(y, lace), metrics.roc_points(y, lace)
    curve = pd.DataFrame(metrics.capacity_curve(y, p))
    confusion = metrics.threshold_metrics(y, p, threshold)
    rows = []
    overall_sens = confusion["recall"]
    for grouping in ("race", "sex", "age_band"):
        for level, part in labelled.groupby(labelled[grouping].fillna("(missing)")):
            yy, pp = part["y"].to_numpy(dtype=float), part["risk"].to_numpy(dtype=float)
            tm = metrics.threshold_metrics(yy, pp, threshold)
            auc = metrics.auroc(yy, pp) if 0 < yy.sum() < len(yy) else float("nan")
            gap = tm["recall"] - overall_sens if not math.isnan(tm["recall"]) else float("nan")
            small = len(yy) < 100 or yy.sum() < 10
            rows.append({"grouping": grouping, "level": level, "n": len(yy), "positives": int(yy.sum()),
                         "auroc": auc, "flagged": tm["flagged_fraction"], "ppv": tm["precision"],
                         "sensitivity": tm["recall"], "sensitivity gap": gap,
                         "note": ("too few to judge" if small else
                                  "GAP: sensitivity differs by more than "
                                  f"{gap_tolerance:.0%}" if not math.isnan(gap) and abs(gap) > gap_tolerance else "")})
    return QualityView(len(y), int(y.sum()), metrics.auroc(y, p), lace_auc, curve, confusion, pd.DataFrame(rows),
                       metrics.roc_points(y, p), lace_roc)


# --- hospitals -----------------------------------------------------------------------------------------

TOO_FEW = "Too few to report"
NOT_AVAILABLE = "Not available"


def hospital_options(wh: Warehouse) -> pd.DataFrame:
    return wh.query("SELECT facility_id, any_value(facility_name) AS facility_name, any_value(state) AS state "
                    "FROM hospitals GROUP BY facility_id ORDER BY facility_name, facility_id")


def hospital_benchmark(wh: Warehouse, facility_id: str) -> Optional[pd.DataFrame]:
    """Per measure: this hospital's excess readmission ratio (latest and previous fiscal year), the change,
    its state's and the nation's median, and whether it is above 1.0. Missing values stay missing."""
    rows = wh.query(
        """WITH h AS (SELECT * FROM hospitals WHERE facility_id = ?),
                st AS (SELECT measure, fiscal_year, median(excess_readmission_ratio) AS state_median
                       FROM hospitals WHERE state = (SELECT any_value(state) FROM h) GROUP BY ALL),
                nat AS (SELECT measure, fiscal_year, median(excess_readmission_ratio) AS national_median
                        FROM hospitals GROUP BY ALL)
           SELECT h.measure, h.measure_label, h.fiscal_year, h.excess_readmission_ratio AS err, h.discharges,
                  h.readmissions, h.too_few_to_report, h.footnote, st.state_median, nat.national_median
           FROM h LEFT JOIN st USING (measure, fiscal_year) LEFT JOIN nat USING (measure, fiscal_year)
           ORDER BY h.measure, h.fiscal_year""", [str(facility_id)])
    if rows.empty:
        return None
    years = sorted(rows["fiscal_year"].dropna().astype(int).unique())
    latest = years[-1]
    previous = years[-2] if len(years) > 1 else None
    out = []
    for measure, part in rows.groupby("measure", sort=True):
        now = part[part["fiscal_year"] == latest]
        before = part[part["fiscal_year"] == previous] if previous else part.iloc[0:0]
        err_now = _value(now, "err")
        err_before = _value(before, "err")
        too_few_now = bool(now["too_few_to_report"].fillna(False).any()) if len(now) else False
        out.append({
            "measure": measure,
            "measure_label": part["measure_label"].dropna().iloc[0] if part["measure_label"].notna().any() else measure,
            f"ratio FY{latest}": err_now,
            f"ratio FY{previous}" if previous else "ratio (previous)": err_before,
            "change": (err_now - err_before) if err_now is not None and err_before is not None else None,
            "state median": _value(now, "state_median"),
            "national median": _value(now, "national_median"),
            "discharges": _value(now, "discharges"),
            "status": (("Above 1.0: more readmissions than expected" if err_now > 1 else "At or below 1.0")
                       if err_now is not None else (TOO_FEW if too_few_now or _footnote_too_few(now)
                                                     else NOT_AVAILABLE)),
        })
    frame = pd.DataFrame(out)
    frame.attrs["latest_year"] = int(latest)
    frame.attrs["previous_year"] = int(previous) if previous is not None else None
    return frame


def _value(part: pd.DataFrame, column: str):
    if part.empty or part[column].isna().all():
        return None
    value = part[column].dropna().iloc[0]
    return float(value) if column != "discharges" else int(value)


def _footnote_too_few(part: pd.DataFrame) -> bool:
    return any("1" in str(f).replace(" ", "").split(",") for f in part["footnote"].dropna())


def display_ratio(value) -> str:
    """A ratio as text; a missing one says so in words (never 0)."""
    return TOO_FEW if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


# --- upload --------------------------------------------------------------------------------------------

@dataclass
class UploadResult:
    rows: int
    predictions: pd.DataFrame
    errors: pd.DataFrame             # row, column, problem


def template_csv() -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=template_columns(), lineterminator="\n")
    writer.writeheader()
    writer.writerow(template_example_row())
    return buffer.getvalue().encode()


def score_upload(service, data: bytes, filename: str = "upload.csv", warehouse: Optional[str] = None) -> UploadResult:
    """Score an uploaded file with a loaded `core.scoring.ScoringService`. The bytes live in a private
    temporary file only while they are read, and are deleted afterwards: nothing is stored."""
    suffix = Path(filename).suffix.lower() or ".csv"
    fd, path = tempfile.mkstemp(prefix="readmit-upload-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        kwargs = {"warehouse": warehouse} if warehouse else {}
        try:
            predictions, errors = service.score_file(path, **kwargs)
        except UserError as error:  # name the user's file, not our temporary copy
            raise UserError(str(error).replace(path, Path(filename).name)) from None
    finally:
        os.unlink(path)
    error_rows = [{"row": getattr(e, "row", None), "column": getattr(e, "column", None),
                   "problem": getattr(e, "problem", str(e))} for e in (errors or [])]
    errors_df = pd.DataFrame(error_rows, columns=["row", "column", "problem"])
    predictions = predictions if predictions is not None else pd.DataFrame()
    if "risk" in predictions.columns:
        predictions = predictions.sort_values("risk", ascending=False, na_position="last").reset_index(drop=True)
        predictions.insert(0, "rank", np.arange(1, len(predictions) + 1))
    total = len(predictions) + len({e["row"] for e in error_rows if e["row"] is not None})
    return UploadResult(total, predictions, errors_df)


# --- export --------------------------------------------------------------------------------------------

def neutralize_formula(value: Any) -> Any:
    """Prefix text a spreadsheet would run as a formula (=, +, -, @, tab, CR) with a single quote."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def safe_csv(frame: pd.DataFrame) -> bytes:
    """CSV bytes with every text cell and header neutralized against spreadsheet formula injection."""
    safe = frame.copy()
    safe.columns = [neutralize_formula(str(c)) for c in safe.columns]
    for column in safe.columns:
        if safe[column].dtype == object or pd.api.types.is_string_dtype(safe[column]):
            safe[column] = safe[column].map(neutralize_formula)
    return safe.to_csv(index=False).encode("utf-8")


__all__ = [name for name in dir() if not name.startswith("_")] + ["WarehouseError"]
