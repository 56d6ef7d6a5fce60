"""The discharges template (`readmit template`): parse, validate and map uploaded rows to canonical
encounters. Pure pandas, shared by the upload page, the scorer and the Spark ETL.

Labels from dates: where a row has no `readmitted_30d`, it is derived from the patient's next
unplanned (non-elective) admission in the data: no more than 30 calendar days after discharge ->
True (day 30 counts, day 31 does not), later -> False. With no later admission, the label is False
only if the data is observed for at least 30 days past that discharge (`observed_until`), else it
stays unknown (null): a current discharge is not a "no". Died / hospice: ineligible, label null.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

from core.errors import RowError
from core.labels import READMISSION_WINDOW_DAYS, apply_eligibility, is_readmission
from core.schema import ENCOUNTER_FIELDS, template_columns
from core.validation import check_header, parse_bool, parse_list, rules_from_fields, validate_frame

SOURCE = "discharges"
RULES = rules_from_fields(ENCOUNTER_FIELDS)
PLANNED_ADMISSION = "elective"


def _text(values: pd.Series) -> pd.Series:
    stripped = values.astype("string").str.strip()
    return stripped.astype(object).where(stripped.notna() & (stripped != ""), None)


def _typed(values: pd.Series, kind: str) -> pd.Series:
    text = _text(values)
    if kind == "int":
        return pd.to_numeric(text, errors="coerce").astype("Int64")
    if kind == "float":
        return pd.to_numeric(text, errors="coerce").astype("float64")
    if kind == "bool":
        return text.map(lambda v: None if v is None else parse_bool(v)).astype(object)
    if kind == "timestamp":
        return pd.to_datetime(text, errors="coerce", format="ISO8601")
    if kind == "string_list":
        return text.map(lambda v: None if v is None else _trim(parse_list(v))).astype(object)
    return text


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


def _next_unplanned_gap(admits: list, discharge, types: list, start: int) -> Optional[int]:
    for admit, kind in zip(admits[start:], types[start:]):
        if pd.isna(admit) or admit < discharge or kind == PLANNED_ADMISSION:
            continue
        return int((admit.normalize() - discharge.normalize()).days)
    return None


def derive_labels(encounters: pd.DataFrame, observed_until: Optional[pd.Timestamp] = None) -> pd.DataFrame:
    """Fill missing `readmitted_30d` from dates (see module doc); needs every encounter of each patient.

    `observed_until` is the last date the data covers (default: the latest date in `encounters`).
    """
    if encounters.empty:
        return encounters
    if observed_until is None:
        observed_until = pd.concat([encounters["admit_time"], encounters["discharge_time"]]).max()
    out = encounters.sort_values(["patient_id", "admit_time", "encounter_id"], kind="mergesort",
                                 na_position="last").copy()
    labels = out["readmitted_30d"].astype(object).tolist()
    for _, rows in out.groupby("patient_id", sort=False).indices.items():
        admits = out["admit_time"].iloc[rows].tolist()
        discharges = out["discharge_time"].iloc[rows].tolist()
        types = out["admission_type"].iloc[rows].tolist()
        for k, row in enumerate(rows):
            if labels[row] is not None and not pd.isna(labels[row]):
                continue
            if pd.isna(discharges[k]):
                labels[row] = None
                continue
            gap = _next_unplanned_gap(admits, discharges[k], types, k + 1)
            if gap is not None:
                labels[row] = is_readmission(gap)
            elif pd.notna(observed_until) and (observed_until - discharges[k]).days >= READMISSION_WINDOW_DAYS:
                labels[row] = False
            else:
                labels[row] = None
    out["readmitted_30d"] = pd.Series(labels, index=out.index, dtype=object)
    return apply_eligibility(out).loc[encounters.index]


def parse_discharges(raw: pd.DataFrame) -> tuple[pd.DataFrame, list[RowError]]:
    """Template rows (all text) -> (canonical encounters of the valid rows, problems found).

    A header problem (missing required or unknown column) returns no rows. Rows with a cell
    problem are left out and reported; the others are mapped and labelled from dates.
    """
    header_errors = check_header(list(raw.columns), RULES, known=template_columns())
    if header_errors:
        return rows_to_canonical(raw.iloc[0:0]), header_errors
    errors = validate_frame(raw, RULES, missing_tokens=("",), check_bounds=True, max_errors=len(raw) * 5 + 1)
    duplicates = raw["encounter_id"].astype("string").str.strip().duplicated(keep="first")
    errors += [RowError(i + 1, "encounter_id", f"duplicate encounter_id '{raw['encounter_id'].iloc[i]}'")
               for i in np.flatnonzero(duplicates.to_numpy())]
    bad_rows = {e.row - 1 for e in errors if e.row}
    valid = raw.iloc[[i for i in range(len(raw)) if i not in bad_rows]]
    canonical = derive_labels(rows_to_canonical(valid))
    return canonical.reset_index(drop=True), sorted(errors, key=lambda e: (e.row or 0, e.column or ""))
