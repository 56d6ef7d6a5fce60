"""The worklist rows of one warehouse version (`WorklistIndex`: a DuckDB view over its Parquet tables), the
filter options, and the rows of one follow-up window (`window_rows`)."""
from __future__ import annotations

import contextlib
import datetime as dt
from typing import Any, Optional, Sequence

import pandas as pd

from core.warehouse import Warehouse
from serving.outreach import EncounterKey

RISK_TIERS = ("Very high", "High", "Medium", "Low")
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
