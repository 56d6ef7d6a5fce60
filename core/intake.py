"""Input intake: files and frames to validated canonical encounters, before any model sees them.

Shared by every door that takes encounter files (the scoring service behind `readmit score` and the
dashboard upload): a file is refused whole only when it cannot be read at all (empty, binary, not
UTF-8, a header of more than `MAX_COLUMNS` columns, an unknown format, a missing required column);
otherwise every invalid row, malformed CSV rows included, is reported by row and column and the
valid rows go on. The rules are `core.validation`'s, the same the API applies.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from core.errors import RowError, UserError
from core.schema import COLUMNS, ENCOUNTER_FIELDS, INELIGIBLE_DISPOSITIONS, LIST_SEPARATOR, template_columns
from core.sources import diabetes130
from core.sources.discharges import parse_discharges
from core.validation import (
    at_labels,
    bounds_message,
    duplicate_errors,
    missing_column_message,
    missing_columns,
    validate_frame,
)
from core.warehouse import Warehouse, WarehouseError

FORMATS = ("diabetes130", "discharges")
MAX_COLUMNS = 500              # a wider header is refused before it is parsed
MAX_HEADER_BYTES = 100_000
MALFORMED_ROWS = "malformed_rows"  # raw.attrs key: {row position: problem} of rows that are not valid CSV
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
    duplicates = duplicate_errors(frame["encounter_id"])
    if duplicates:
        raise UserError(f"encounter {duplicates[0].row} {duplicates[0].problem}")
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
    """Per row, the numbers outside the schema's plausible bounds, in `core.validation`'s words and
    without the value (None when all fine)."""
    problems: list[list[str]] = [[] for _ in range(len(frame))]
    for f in ENCOUNTER_FIELDS:
        if f.bounds is None or f.name not in frame.columns or f.name == "icd_version":
            continue
        values = pd.to_numeric(frame[f.name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        low, high = f.bounds
        for i in np.flatnonzero((values < low) | (values > high)):
            problems[i].append(f"{f.name} {bounds_message(f.bounds)}")
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


LIST_COLUMNS = tuple(f.name for f in ENCOUNTER_FIELDS if f.kind == "string_list")


def _is_null(value: object) -> bool:
    """None, pd.NA, NaN, NaT: a cell with no value (what DuckDB, Arrow and pandas each use for a null)."""
    return value is None or value is pd.NA or value is pd.NaT or (isinstance(value, (float, np.floating))
                                                                   and bool(np.isnan(value)))


def warehouse_list(value: object, column: str = "list") -> Optional[list]:
    """One list cell as read from the warehouse, as a python list of its items, or None when null.

    A null list (None, pd.NA, NaN: "not recorded") stays None and an empty list (`[]`, an empty numpy
    array: "recorded, nothing in it") stays `[]`; DuckDB gives numpy arrays, pandas nullable columns pd.NA.
    A null item inside a list becomes None. A text cell is read as in a CSV (`;`-separated, blank =
    null). Anything else is refused with the column's name (never the value)."""
    if _is_null(value):
        return None
    if isinstance(value, str):
        items = [item.strip() for item in value.split(LIST_SEPARATOR)]
        return [item for item in items if item] or None
    if isinstance(value, (list, tuple, np.ndarray, pd.Series, pd.api.extensions.ExtensionArray)):
        items = value.tolist() if hasattr(value, "tolist") else list(value)
        return [None if _is_null(item) else item for item in items]
    raise UserError(f"warehouse column {column!r} holds a {type(value).__name__} where a list of text is expected")


def from_warehouse_frame(table: pd.DataFrame) -> pd.DataFrame:
    """DuckDB's pandas output to canonical python values (lists, None for nulls)."""
    out = table.copy()
    for name in COLUMNS:
        if name not in out.columns:
            out[name] = None
    for name in LIST_COLUMNS:
        out[name] = pd.Series([warehouse_list(v, name) for v in out[name]], index=out.index, dtype=object)
    for f in ENCOUNTER_FIELDS:
        if f.kind in ("string", "bool") and out[f.name].dtype != object:
            out[f.name] = out[f.name].astype(object)
        if f.kind in ("string", "bool"):
            out[f.name] = out[f.name].where(out[f.name].notna(), None)
    return out[list(COLUMNS)]


# --- reading files ---------------------------------------------------------------------------

def read_input_file(path: str | Path, fmt: Optional[str] = None) -> tuple[pd.DataFrame, str]:
    """Read a CSV with every cell as text and decide its format; refuse unusable files with one line.

    The header's width is checked on its bytes before anything is parsed, so a header of a million
    columns is refused at once. Each data line is then read on its own by Python's csv module: a
    malformed row (bad quoting, a wrong number of cells, a cell over the csv module's size limit) is
    recorded in `raw.attrs[MALFORMED_ROWS]` (row position -> problem, reported by
    `to_canonical_rows`) and the other rows are still read. So a cell cannot hold a line break.
    """
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
    _check_header_size(path, data)
    if _looks_binary(data):
        raise UserError(f"{path} is not a CSV text file (it contains binary data)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise UserError(f"{path} is not UTF-8 text (first bad byte on line {line}); save it as UTF-8 CSV") from None
    header_line, *lines = text.split("\n")
    header = _header(path, header_line)
    rows, malformed = _read_rows(lines, len(header))
    detected = fmt or detect_format(header)
    if detected is None:
        raise UserError(f"{path}: unrecognised header: none of its {len(header)} columns is named as in the Diabetes "
                        "130 file (encounter_id, patient_nbr, ..., readmitted) or the discharges template (`readmit "
                        "template`); a file without a header row reads its first row as the header (not shown here: "
                        "it may hold patient data)")
    _check_unique_names(path, header)
    if not rows:
        raise UserError(f"{path} has a header but no data rows")
    raw = pd.DataFrame(rows, columns=header, dtype=object)
    raw.attrs[MALFORMED_ROWS] = malformed
    return raw, detected


def _check_header_size(path: Path, data: bytes) -> None:
    """Refuse a header wider than MAX_COLUMNS by counting its separators (an upper bound: a quoted
    comma counts too), before parsing a byte of it."""
    end = data.find(b"\n")
    first = data if end < 0 else data[:end]
    columns = first.count(b",") + 1
    if columns > MAX_COLUMNS:
        raise UserError(f"{path}: the header has {columns:,} columns; at most {MAX_COLUMNS} are read "
                        "(expected the discharges template or the Diabetes 130 columns)")
    if len(first) > MAX_HEADER_BYTES:
        raise UserError(f"{path}: the header line is longer than {MAX_HEADER_BYTES:,} bytes")


def _looks_binary(data: bytes) -> bool:
    """NUL bytes in the header, or in more than 1% of the first 64 KiB: a spreadsheet, an image, a
    zip. A NUL or two inside cells is a bad cell, reported on its row (`core.validation`)."""
    sample = data[:65536]
    end = sample.find(b"\n")
    return b"\x00" in sample[:end if end >= 0 else None] or sample.count(b"\x00") * 100 > len(sample)


def _header(path: Path, line: str) -> list[str]:
    try:
        header = [name.strip() for name in next(csv.reader((line.removesuffix("\r"),), strict=True))]
    except csv.Error as error:
        raise UserError(f"{path}: the header is not valid CSV ({error})") from None
    if len(header) < 2:
        raise UserError(f"{path} does not look like a CSV file: its header has {len(header)} column")
    return header


def _check_unique_names(path: Path, header: Sequence[str]) -> None:
    first: dict[str, int] = {}
    for position, name in enumerate(header, start=1):
        if name in first:
            raise UserError(f"{path}: columns {first[name]} and {position} of the header have the same name")
        first[name] = position


def _read_rows(lines: Sequence[str], width: int) -> tuple[list[list[str]], dict[int, str]]:
    """Non-blank lines as rows of `width` cells, and the problem of each malformed one by position
    (its cells are kept as far as they could be read, so its ids can still be shown)."""
    rows: list[list[str]] = []
    malformed: dict[int, str] = {}
    for line in lines:
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        cells, problem = _read_row(line, width)
        if problem is not None:
            malformed[len(rows)] = problem
        rows.append(cells)
    return rows, malformed


def _read_row(line: str, width: int) -> tuple[list[str], Optional[str]]:
    """One line's cells: split at commas when it has no quote (fast, and no cell size limit, so an
    over-long value meets its length rule), else Python's csv module, strict about quoting."""
    try:
        cells = line.split(",") if '"' not in line else next(csv.reader((line,), strict=True))
    except csv.Error as error:
        return [""] * width, f"the row is not valid CSV ({error})"
    if len(cells) != width:
        return (cells + [""] * width)[:width], f"the row has {len(cells)} cells; the header has {width}"
    return cells, None


def detect_format(columns: Sequence[str]) -> Optional[str]:
    """Diabetes 130 when its key columns are there; otherwise the format whose own columns (those
    the other format lacks) the header has more of, at least two, so that a file missing a required
    column is told which one rather than that its header is unrecognised."""
    if diabetes130.header_matches(columns):
        return "diabetes130"
    template, d130, present = set(template_columns()), set(diabetes130.REQUIRED_COLUMNS), set(columns)
    shared = {"diabetes130": len(present & (d130 - template)), "discharges": len(present & (template - d130))}
    best = max(shared, key=lambda name: shared[name])
    return best if shared[best] >= 2 else None


def to_canonical_rows(raw: pd.DataFrame, fmt: str) -> tuple[pd.DataFrame, list[RowError]]:
    """Raw text rows -> canonical encounters of the valid rows, plus every row error, malformed rows
    (`raw.attrs[MALFORMED_ROWS]`) included; rows keep their numbers in the file."""
    malformed = raw.attrs.get(MALFORMED_ROWS, {})
    readable = raw.drop(index=list(malformed)) if malformed else raw.copy(deep=False)
    readable.attrs = {}  # pandas deep-copies attrs into every frame derived from this one: seconds, with many
    canonical, errors = _diabetes_rows(readable) if fmt == "diabetes130" else parse_discharges(readable)
    errors = [*errors, *(RowError(position + 1, None, problem) for position, problem in malformed.items())]
    return canonical.reset_index(drop=True), sorted(errors, key=lambda e: (e.row or 0, e.column or ""))


def _diabetes_rows(raw: pd.DataFrame) -> tuple[pd.DataFrame, list[RowError]]:
    missing = missing_columns(list(raw.columns), diabetes130.RULES)
    if missing:
        raise UserError("; ".join(missing_column_message(name) for name in missing) + " (Diabetes 130 format)")
    errors = at_labels(validate_frame(raw, diabetes130.RULES, missing_tokens=(diabetes130.MISSING_TOKEN, ""),
                                      max_errors=_MAX_ROW_ERRORS), raw.index)
    errors += duplicate_errors(raw["encounter_id"])
    bad_rows = {e.row for e in errors if e.row}
    keep = ~(raw.index.astype("int64") + 1).isin(bad_rows)
    canonical = diabetes130.to_canonical(raw[keep]) if keep.any() else pd.DataFrame(columns=list(COLUMNS))
    return canonical, errors


def errors_frame(errors: Sequence[RowError]) -> pd.DataFrame:
    """Errors as a table: row, column, problem."""
    return pd.DataFrame({"row": pd.array([e.row for e in errors], dtype="Int64"),
                         "column": [e.column for e in errors], "problem": [e.problem for e in errors]})
