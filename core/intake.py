"""Input intake: files and frames to validated canonical encounters, before any model sees them.

Shared by every door that takes encounters (the scoring service behind `readmit score`, the API and
dashboard uploads): a file is refused whole only when it cannot be read at all; otherwise every
invalid row is reported by row and column and the valid rows go on.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from core.errors import RowError, UserError
from core.schema import COLUMNS, ENCOUNTER_FIELDS, INELIGIBLE_DISPOSITIONS
from core.sources import diabetes130
from core.sources.discharges import parse_discharges
from core.validation import check_header, validate_frame
from core.warehouse import Warehouse, WarehouseError

FORMATS = ("diabetes130", "discharges")
_MAX_ROW_ERRORS = 10 ** 9


def canonical_frame(encounters: pd.DataFrame) -> pd.DataFrame:
    """A copy with every canonical column (absent optional ones null), unique encounter ids, and the
    eligibility derived from the disposition when the caller did not supply it."""
    missing_required = [f.name for f in ENCOUNTER_FIELDS if f.required and f.name not in encounters.columns]
    if missing_required:
        raise UserError(f"encounters lack required columns: {', '.join(missing_required)}")
    frame = encounters.reset_index(drop=True).copy()
    for name in COLUMNS:
        if name not in frame.columns:
            frame[name] = None
    frame["encounter_id"] = frame["encounter_id"].astype(str)
    frame["patient_id"] = frame["patient_id"].astype(str)
    duplicated = frame["encounter_id"].duplicated()
    if duplicated.any():
        raise UserError(f"encounter id {frame['encounter_id'][duplicated].iloc[0]} appears more than once")
    if frame["source"].isna().all():
        frame["source"] = "discharges"
    reason = frame["discharge_disposition"].map(INELIGIBLE_DISPOSITIONS)
    derived_eligible = reason.isna()
    frame["eligible"] = frame["eligible"].where(frame["eligible"].notna(), derived_eligible).astype(bool)
    frame["eligible"] = frame["eligible"] & derived_eligible
    frame["ineligible_reason"] = frame["ineligible_reason"].where(frame["ineligible_reason"].notna(), reason)
    frame["ineligible_reason"] = frame["ineligible_reason"].astype(object).where(~frame["eligible"], None)
    frame["readmitted_30d"] = frame["readmitted_30d"].astype(object).where(frame["eligible"], None)
    return frame


def impossible_values(frame: pd.DataFrame) -> list[Optional[str]]:
    """Per row, a description of values outside the schema's plausible bounds (None when all fine)."""
    problems: list[list[str]] = [[] for _ in range(len(frame))]
    for f in ENCOUNTER_FIELDS:
        if f.bounds is None or f.name not in frame.columns or f.name == "icd_version":
            continue
        values = pd.to_numeric(frame[f.name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        low, high = f.bounds
        for i in np.flatnonzero((values < low) | (values > high)):
            problems[i].append(f"{f.name} {values[i]:g} is outside the plausible range {low:g} to {high:g}")
    return ["; ".join(p) if p else None for p in problems]


def warehouse_history(root: str, frame: pd.DataFrame) -> pd.DataFrame:
    """The input patients' other encounters from the warehouse (never the input's own encounters)."""
    warehouse = Warehouse(str(root))
    if not warehouse.has_table("encounters"):
        raise UserError(f"warehouse {root} has no 'encounters' table: run `readmit etl` first")
    patients = sorted(set(frame["patient_id"].astype(str)))
    try:
        history = warehouse.query(
            "SELECT * FROM encounters WHERE CAST(patient_id AS VARCHAR) IN (SELECT UNNEST(?::VARCHAR[])) "
            "AND CAST(encounter_id AS VARCHAR) NOT IN (SELECT UNNEST(?::VARCHAR[]))",
            [patients, frame["encounter_id"].astype(str).tolist()])
    except WarehouseError as error:
        raise UserError(str(error)) from error
    return from_warehouse_frame(history)


def from_warehouse_frame(table: pd.DataFrame) -> pd.DataFrame:
    """DuckDB's pandas output to canonical python values (lists, None for nulls)."""
    out = table.copy()
    for name in COLUMNS:
        if name not in out.columns:
            out[name] = None
    for name in ("diagnoses", "medication_changes"):
        out[name] = [None if v is None or (isinstance(v, float) and np.isnan(v)) else list(v) for v in out[name]]
    for f in ENCOUNTER_FIELDS:
        if f.kind in ("string", "bool") and out[f.name].dtype != object:
            out[f.name] = out[f.name].astype(object)
        if f.kind in ("string", "bool"):
            out[f.name] = out[f.name].where(out[f.name].notna(), None)
    return out[list(COLUMNS)]


# --- reading files ---------------------------------------------------------------------------

def read_input_file(path: str | Path, fmt: Optional[str] = None) -> tuple[pd.DataFrame, str]:
    """Read a CSV with every cell as text and decide its format; refuse unusable files with one line."""
    path = Path(path)
    if fmt is not None and fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}: choose {' or '.join(FORMATS)}")
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path} is a folder, not a CSV file")
    data = path.read_bytes()
    if not data.strip():
        raise UserError(f"{path} is empty")
    if b"\x00" in data[:65536]:
        raise UserError(f"{path} is not a CSV text file (it contains binary data)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise UserError(f"{path} is not UTF-8 text (first bad byte on line {line}); save it as UTF-8 CSV") from None
    try:
        raw = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_filter=False,
                          skip_blank_lines=True, quoting=csv.QUOTE_MINIMAL)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, csv.Error) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else "unreadable"
        raise UserError(f"{path} is not a valid CSV file ({first})") from None
    raw.columns = [str(c).strip() for c in raw.columns]
    if len(raw.columns) < 2:
        raise UserError(f"{path} does not look like a CSV file: its header has {len(raw.columns)} column")
    detected = fmt or detect_format(raw.columns)
    if detected is None:
        shown = ", ".join(list(raw.columns)[:6]) + (", ..." if len(raw.columns) > 6 else "")
        raise UserError(f"{path}: unrecognised header ({shown}); expected the Diabetes 130 columns "
                        "(encounter_id, patient_nbr, ..., readmitted) or the discharges template "
                        "(`readmit template`)")
    if raw.empty:
        raise UserError(f"{path} has a header but no data rows")
    return raw, detected


def detect_format(columns: Sequence[str]) -> Optional[str]:
    if diabetes130.header_matches(columns):
        return "diabetes130"
    required = {f.name for f in ENCOUNTER_FIELDS if f.required}
    if required.issubset(set(columns)):
        return "discharges"
    return None


def to_canonical_rows(raw: pd.DataFrame, fmt: str) -> tuple[pd.DataFrame, list[RowError]]:
    """Validated raw text rows -> canonical encounters of the valid rows, plus every row error."""
    if fmt == "diabetes130":
        return _diabetes_rows(raw)
    canonical, errors = parse_discharges(raw)
    return canonical.reset_index(drop=True), list(errors)


def _diabetes_rows(raw: pd.DataFrame) -> tuple[pd.DataFrame, list[RowError]]:
    missing = check_header(list(raw.columns), diabetes130.RULES)
    if missing:
        raise UserError("the Diabetes 130 file lacks columns: " + ", ".join(e.column for e in missing))
    errors = validate_frame(raw, diabetes130.RULES, missing_tokens=(diabetes130.MISSING_TOKEN, ""),
                            max_errors=_MAX_ROW_ERRORS)
    ids = raw["encounter_id"].astype(str).str.strip()
    duplicated = ids.duplicated() & (ids != "")
    errors += [RowError(int(i) + 1, "encounter_id", f"encounter id {ids[i]} appears earlier in the file")
               for i in np.flatnonzero(duplicated.to_numpy())]
    errors.sort(key=lambda e: (e.row or 0, e.column or ""))
    bad_rows = {e.row for e in errors if e.row}
    keep = np.array([(i + 1) not in bad_rows for i in range(len(raw))])
    canonical = diabetes130.to_canonical(raw.loc[keep]) if keep.any() else pd.DataFrame(columns=list(COLUMNS))
    return canonical.reset_index(drop=True), errors


def errors_frame(errors: Sequence[RowError]) -> pd.DataFrame:
    """Errors as a table: row, column, problem."""
    return pd.DataFrame({"row": pd.array([e.row for e in errors], dtype="Int64"),
                         "column": [e.column for e in errors], "problem": [e.problem for e in errors]})
