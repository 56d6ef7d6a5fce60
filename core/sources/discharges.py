"""The discharges template (`readmit template`): parse, validate and map uploaded rows to canonical
encounters. Pure pandas, shared by the upload page, the scorer and the Spark ETL.

Labels from dates: where a row has no `readmitted_30d`, it is derived by the one rule of
`core.labels.labels_from_dates` (the patient's next admission 0..30 calendar days after discharge,
planned ones excluded; unmatured windows null; died / hospice ineligible).
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import pandas as pd

from core.errors import RowError
from core.labels import apply_eligibility, labels_from_dates
from core.schema import ENCOUNTER_FIELDS, template_columns
from core.validation import (
    at_labels,
    by_distinct_text,
    check_header,
    duplicate_errors,
    frame_row_problems,
    naive_utc,
    parse_text,
    rules_from_fields,
    validate_frame,
)

SOURCE = "discharges"
RULES = rules_from_fields(ENCOUNTER_FIELDS)


def _read(kind: str, text: str) -> Any:
    """One cell as validation read it (`core.validation.parse_text`); None where it cannot be read (the
    ETL nulls such a cell only after `raise_first_invalid` let the file through; uploads drop the row)."""
    try:
        value = parse_text(kind, text)
    except ValueError:
        return None
    if kind == "timestamp":
        try:
            return naive_utc(value)
        except OverflowError:
            return None
    return _trim(value) if kind == "string_list" else value


def _typed(values: pd.Series, kind: str) -> pd.Series:
    """Text cells as values of `kind`, read once per distinct cell; blank cells are null."""
    cells = pd.Series(by_distinct_text(values, lambda text: _read(kind, text) if text else None), index=values.index,
                      dtype=object)
    if kind == "int":
        return pd.Series(pd.array(cells.tolist(), dtype="Int64"), index=values.index)
    if kind == "float":
        return pd.to_numeric(cells, errors="coerce").astype("float64")
    if kind == "timestamp":
        return pd.to_datetime(cells, errors="coerce")
    return cells.astype(object)


def _trim(codes: list) -> list:
    """Drop trailing empty list items (a trailing ';'); inner empty items keep their position."""
    while codes and codes[-1] is None:
        codes = codes[:-1]
    return codes


def rows_to_canonical(raw: pd.DataFrame) -> pd.DataFrame:
    """Validated template rows (text) to canonical encounters; row-local, so safe per batch."""
    out = pd.DataFrame(index=raw.index)
    for f in ENCOUNTER_FIELDS:
        if f.derived or f.name not in raw.columns:
            out[f.name] = _empty(f.kind, raw.index)
        else:
            out[f.name] = _typed(raw[f.name], f.kind)
    out["source"] = SOURCE
    stay = (out["discharge_time"] - out["admit_time"]).dt.total_seconds() / 86400.0
    out["length_of_stay_days"] = out["length_of_stay_days"].fillna(stay.where(stay >= 0))
    out["eligible"] = True
    out["ineligible_reason"] = None
    return apply_eligibility(out)


def _empty(kind: str, index: pd.Index) -> pd.Series:
    if kind == "timestamp":
        return pd.Series(pd.NaT, index=index, dtype="datetime64[ns]")
    if kind in ("float",):
        return pd.Series(np.nan, index=index, dtype="float64")
    if kind == "int":
        return pd.Series(pd.NA, index=index, dtype="Int64")
    return pd.Series(None, index=index, dtype=object)


def derive_labels(encounters: pd.DataFrame, observed_until: Optional[pd.Timestamp] = None) -> pd.DataFrame:
    """Fill missing `readmitted_30d` from dates by `core.labels.labels_from_dates` (supplied labels
    kept); needs every encounter of each patient. `observed_until`: the last date the data covers
    (default: the latest date in `encounters`)."""
    return labels_from_dates(encounters, observed_until)


def parse_discharges(raw: pd.DataFrame) -> tuple[pd.DataFrame, list[RowError]]:
    """Template rows (all text) -> (canonical encounters of the valid rows, problems found).

    A header problem (missing required or unknown column) returns no rows. Rows breaking a value
    rule (`validate_frame`), repeating an earlier encounter_id, or breaking a row rule
    (`frame_row_problems`) are left out and reported; the others are mapped and labelled from dates.
    Row numbers are the frame's index labels + 1, so a subset of a file keeps the file's numbers.
    """
    header_errors = check_header(list(raw.columns), RULES, known=template_columns())
    if header_errors:
        return rows_to_canonical(raw.iloc[0:0]), header_errors
    errors = at_labels(validate_frame(raw, RULES, missing_tokens=("",), check_bounds=True,
                                      max_errors=len(raw) * len(raw.columns) + 1), raw.index)
    errors += duplicate_errors(raw["encounter_id"])
    typed = rows_to_canonical(raw[~_labels(raw.index).isin({e.row for e in errors})])
    errors += [RowError(int(label) + 1, column, message) for label, column, message in frame_row_problems(typed)]
    canonical = derive_labels(typed[~_labels(typed.index).isin({e.row for e in errors})])
    return canonical.reset_index(drop=True), sorted(errors, key=lambda e: (e.row or 0, e.column or ""))


def _labels(index: pd.Index) -> pd.Index:
    """Row numbers of a frame's rows (index label + 1)."""
    return index.astype("int64") + 1
