"""Row rules: checks across the fields of one encounter (discharge not before admission, length of stay
within a day of the dates, age within its age band, ICD version matching the codes), for a record or a frame."""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Mapping, Optional

import pandas as pd

from core.validation.rules import naive_utc

OPEN_ENDED_AGE_BAND = 90        # the last band, [90-100), also holds the few patients aged 100 or more
STAY_TOLERANCE_DAYS = 1.0       # a stay length may differ from its dates by rounding, up to a day
_AGE_BAND = re.compile(r"^\[(\d+)-(\d+)\)$")
_ICD9_SHAPE = re.compile(r"^(\d{3}(\.?\d{1,2})?|V\d{2}(\.?\d{1,2})?|E\d{3}(\.?\d)?)$")
_ICD10_SHAPE = re.compile(r"^[A-Z]\d[0-9A-Z](\.?[0-9A-Z]{1,4})?$")
ROW_RULE_FIELDS = ("admit_time", "discharge_time", "length_of_stay_days", "age_years", "age_band", "icd_version",
                   "diagnoses")


def _discharge_after_admission(row: Mapping[str, Any]) -> Optional[tuple[str, str]]:
    admit, discharge = row.get("admit_time"), row.get("discharge_time")
    if admit is not None and discharge is not None and naive_utc(discharge) < naive_utc(admit):
        return "discharge_time", "must not be before admit_time"
    return None


def _stay_matches_dates(row: Mapping[str, Any]) -> Optional[tuple[str, str]]:
    admit, discharge = row.get("admit_time"), row.get("discharge_time")
    stay = row.get("length_of_stay_days")
    if admit is None or discharge is None or stay is None:
        return None
    span = (naive_utc(discharge) - naive_utc(admit)).total_seconds() / 86400
    if span >= 0 and abs(float(stay) - span) > STAY_TOLERANCE_DAYS:
        return "length_of_stay_days", "must match admit_time to discharge_time within a day"
    return None


def _age_in_band(row: Mapping[str, Any]) -> Optional[tuple[str, str]]:
    age, band = row.get("age_years"), row.get("age_band")
    match = _AGE_BAND.match(band) if isinstance(band, str) and age is not None else None
    if match is None:
        return None
    low, high = int(match.group(1)), int(match.group(2))
    if age < low or (age >= high and low < OPEN_ENDED_AGE_BAND):
        return "age_band", "must include age_years"
    return None


@lru_cache(maxsize=65536)
def icd_shape_version(code: str) -> Optional[int]:
    """9 or 10 when a code has the shape of that ICD version only; None when either or neither fits
    (V45.81 is both; free text is neither)."""
    code = code.strip().upper()
    nine, ten = bool(_ICD9_SHAPE.match(code)), bool(_ICD10_SHAPE.match(code))
    return 9 if nine and not ten else 10 if ten and not nine else None


def _icd_version_matches_codes(row: Mapping[str, Any]) -> Optional[tuple[str, str]]:
    version, codes = row.get("icd_version"), row.get("diagnoses")
    if version not in (9, 10) or not isinstance(codes, (list, tuple)):
        return None
    for number, code in enumerate(codes, start=1):
        shape = icd_shape_version(code) if isinstance(code, str) else None
        if shape is not None and shape != version:
            return "icd_version", f"must match the diagnosis codes (item {number} is an ICD-{shape} code)"
    return None


_ROW_CHECKS = (_discharge_after_admission, _stay_matches_dates, _age_in_band, _icd_version_matches_codes)


def row_problems(row: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Problems between the fields of one encounter whose values each passed the value rules, as
    (field to blame, message). A rule whose fields are missing (None) does not apply."""
    return [problem for check in _ROW_CHECKS if (problem := check(row)) is not None]


def python_values(values: pd.Series) -> list[Any]:
    """A column's cells as Python values (date-times as `datetime`, much faster to compare than
    pandas' Timestamp), missing ones (NaN, NaT, NA) as None."""
    present = values.notna().to_numpy(dtype=bool)
    dates = pd.api.types.is_datetime64_any_dtype(values)
    cells = values.to_numpy(dtype="datetime64[us]").astype(object) if dates else values.to_numpy(dtype=object)
    return [cell if keep else None for cell, keep in zip(cells.tolist(), present)]


def frame_row_problems(frame: pd.DataFrame) -> list[tuple[Any, str, str]]:
    """`row_problems` of every row of a typed (canonical) frame, as (index label, field, message)."""
    present = [name for name in ROW_RULE_FIELDS if name in frame.columns]
    columns = [python_values(frame[name]) for name in present]
    return [(label, column, message) for label, values in zip(frame.index, zip(*columns))
            for column, message in row_problems(dict(zip(present, values)))]
