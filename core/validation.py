"""Validation: the one set of rules every door that takes encounters applies.

The rules derive from `core.schema.ENCOUNTER_FIELDS` (through `rules_from_fields`) or from a source
adapter's `ColumnRule`s:

- value rules (`value_problem`): type, finite numbers, plausible bounds, allowed categories, text
  length, clean text (no control characters such as NUL, no lone surrogates, no U+FFFD left by a
  byte that was not UTF-8), dates from 1900-01-01 to tomorrow, list size;
- row rules (`row_problems`): discharge not before admission, length of stay within a day of the
  dates, age within its age band, ICD version matching the shape of the codes.

Every door calls these functions: the API through `core.schema.EncounterIn`; uploads and `readmit
score` through `validate_frame` and `frame_row_problems` (`core.sources.discharges`); the ETL through
`validate_frame` (unreadable cells stop it) and `null_invalid_values` (implausible values are nulled
and counted). A value that breaks a rule gets the same message everywhere. Messages name the rule,
never the value: they reach stderr and logs, and a value may be a patient's identifier.

Row numbers are 1-based data rows (the header is not counted), as `RowError` documents.
"""
from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from core.errors import RowError

if TYPE_CHECKING:
    from core.schema import Field, Kind

LIST_SEPARATOR = ";"
REPLACEMENT_CHAR = "\ufffd"  # what a non-UTF-8 byte becomes when text is decoded leniently
TRUE_TOKENS = frozenset({"true", "yes", "1", "y", "t"})
FALSE_TOKENS = frozenset({"false", "no", "0", "n", "f"})
EARLIEST_DATE = dt.date(1900, 1, 1)
OPEN_ENDED_AGE_BAND = 90        # the last band, [90-100), also holds the few patients aged 100 or more
STAY_TOLERANCE_DAYS = 1.0       # a stay length may differ from its dates by rounding, up to a day

_INTEGER = re.compile(r"^[+-]?\d{1,18}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_AGE_BAND = re.compile(r"^\[(\d+)-(\d+)\)$")
_ICD9_SHAPE = re.compile(r"^(\d{3}(\.?\d{1,2})?|V\d{2}(\.?\d{1,2})?|E\d{3}(\.?\d)?)$")
_ICD10_SHAPE = re.compile(r"^[A-Z]\d[0-9A-Z](\.?[0-9A-Z]{1,4})?$")

# --- messages: the same words at every door, never a value ----------------------------------------

REQUIRED = "a value is required"
PRINCIPAL_REQUIRED = "the first item (the principal diagnosis) is required"
NOT_FINITE = "must be a finite number"
CONTROL_CHARACTERS = "must not contain control characters (such as NUL or a line break)"
LONE_SURROGATE = "must be valid unicode text (it contains a lone surrogate)"
NOT_UTF8 = "must be valid UTF-8 text"
KIND_PROBLEMS = {"string": "must be text", "int": "must be a whole number", "float": "must be a number",
                 "bool": "must be true or false",
                 "timestamp": "must be a date-time (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS)",
                 "string_list": "must be a list of texts"}


def bounds_message(bounds: tuple[float, float]) -> str:
    return f"must be between {bounds[0]:g} and {bounds[1]:g}"


def allowed_message(allowed: Sequence[str]) -> str:
    return "must be one of: " + ", ".join(allowed)


def length_message(limit: int) -> str:
    return f"must be at most {limit} characters"


def items_message(limit: int) -> str:
    return f"must have at most {limit} items"


def date_message() -> str:
    return f"must be a date from {EARLIEST_DATE.isoformat()} to tomorrow"


def missing_column_message(name: str) -> str:
    return f"required column '{name}' is missing"


def duplicate_message(first_row: int, column: str = "encounter_id") -> str:
    return f"repeats the {column} of row {first_row}"


# --- rules -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ColumnRule:
    """What one column must hold.

    `required`: the column must be in the header; `nullable=False`: every row must have a value.
    `allowed`, `bounds` and the lengths apply to present values only (missing is missing, never
    wrong). `max_length` bounds a text value, or each item of a list; `max_items` a list's size.
    """
    name: str
    kind: Kind = "string"
    required: bool = False
    nullable: bool = True
    allowed: Optional[tuple[str, ...]] = None
    bounds: Optional[tuple[float, float]] = None
    max_length: Optional[int] = None
    max_items: Optional[int] = None


def rules_from_fields(fields: Iterable[Field]) -> tuple[ColumnRule, ...]:
    """Rules for the canonical columns a user supplies (derived fields are computed, not read)."""
    return tuple(ColumnRule(f.name, f.kind, required=f.required, nullable=not f.required, allowed=f.allowed,
                            bounds=f.bounds, max_length=f.max_length, max_items=f.max_items)
                 for f in fields if not f.derived)


def latest_date() -> dt.date:
    """The latest plausible date: tomorrow (a discharge may be entered from another time zone)."""
    return dt.date.today() + dt.timedelta(days=1)


def naive_utc(value: dt.datetime) -> dt.datetime:
    """A date-time as naive UTC; raises OverflowError when the conversion leaves years 1..9999."""
    if value.tzinfo is not None:
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value


# --- text cells to values --------------------------------------------------------------------------

def parse_bool(text: str) -> Optional[bool]:
    """A boolean cell; None when the text is not a recognised token."""
    token = text.strip().lower()
    return True if token in TRUE_TOKENS else False if token in FALSE_TOKENS else None


def parse_list(text: Optional[str]) -> Optional[list[Optional[str]]]:
    """A ';'-separated list cell; empty items are kept as None so positions survive."""
    if text is None:
        return None
    return [item.strip() or None for item in str(text).split(LIST_SEPARATOR)]


def _parse_int(text: str) -> Optional[int]:
    return int(text) if _INTEGER.match(text) else None


_PARSERS: dict[str, Callable[[str], Any]] = {
    "string": str, "int": _parse_int, "float": float, "bool": parse_bool,
    "timestamp": dt.datetime.fromisoformat, "string_list": parse_list}


def parse_text(kind: Kind, text: str) -> Any:
    """A present text cell as a Python value of `kind`; ValueError (the rule's message) when it is not one.

    Numbers may be non-finite here ("nan", "inf", "1e309"): `value_problem` says so, as for JSON."""
    try:
        value = _PARSERS[kind](text)
    except (ValueError, OverflowError):
        value = None
    if value is None:
        raise ValueError(KIND_PROBLEMS[kind])
    return value


# --- value rules -----------------------------------------------------------------------------------

def text_problem(text: str) -> Optional[str]:
    """Text no door accepts: control characters (NUL, line breaks), lone surrogates, U+FFFD."""
    if _CONTROL.search(text):
        return CONTROL_CHARACTERS
    if _SURROGATE.search(text):
        return LONE_SURROGATE
    if REPLACEMENT_CHAR in text:
        return NOT_UTF8
    return None


def _is_missing(value: Any) -> bool:
    return value is None or value is pd.NaT or value is pd.NA


def _string_problem(rule: ColumnRule, value: Any, plausible: bool) -> Optional[str]:
    if not isinstance(value, str):
        return KIND_PROBLEMS["string"]
    problem = text_problem(value)
    if problem is None and not rule.nullable and not value.strip():
        problem = REQUIRED
    if problem is None and rule.allowed is not None and value.strip() not in rule.allowed:
        problem = allowed_message(rule.allowed)
    if problem is None and plausible and rule.max_length is not None and len(value) > rule.max_length:
        problem = length_message(rule.max_length)
    return problem


def _number_problem(rule: ColumnRule, value: Any, plausible: bool) -> Optional[str]:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        return KIND_PROBLEMS[rule.kind]
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            return NOT_FINITE
        if rule.kind == "int" and not float(value).is_integer():
            return KIND_PROBLEMS["int"]
    if plausible and rule.bounds is not None and not rule.bounds[0] <= value <= rule.bounds[1]:
        return bounds_message(rule.bounds)
    return None


def _bool_problem(rule: ColumnRule, value: Any, plausible: bool) -> Optional[str]:
    return None if isinstance(value, (bool, np.bool_)) else KIND_PROBLEMS["bool"]


def _date_problem(rule: ColumnRule, value: Any, plausible: bool) -> Optional[str]:
    if not isinstance(value, dt.datetime):
        return KIND_PROBLEMS["timestamp"]
    if not plausible:
        return None
    try:
        day = naive_utc(value).date()
    except OverflowError:
        return date_message()
    return None if EARLIEST_DATE <= day <= latest_date() else date_message()


def _item_problem(rule: ColumnRule, item: Any, plausible: bool) -> Optional[str]:
    if not isinstance(item, str):
        return KIND_PROBLEMS["string"]
    if plausible and rule.max_length is not None and len(item) > rule.max_length:
        return length_message(rule.max_length)
    return text_problem(item)


def _list_problem(rule: ColumnRule, value: Any, plausible: bool) -> Optional[str]:
    if not isinstance(value, (list, tuple)):
        return KIND_PROBLEMS["string_list"]
    if not rule.nullable and (not value or _is_missing(value[0]) or not str(value[0]).strip()):
        return PRINCIPAL_REQUIRED
    if plausible and rule.max_items is not None and len(value) > rule.max_items:
        return items_message(rule.max_items)
    for number, item in enumerate(value, start=1):
        problem = None if _is_missing(item) else _item_problem(rule, item, plausible)
        if problem is not None:
            return f"item {number} {problem}"
    return None


_VALUE_CHECKS = {"string": _string_problem, "int": _number_problem, "float": _number_problem,
                 "bool": _bool_problem, "timestamp": _date_problem, "string_list": _list_problem}


def value_problem(rule: ColumnRule, value: Any, plausible: bool = True) -> Optional[str]:
    """What is wrong with one typed value under `rule` (None: nothing).

    A missing value is wrong only where the rule is not nullable. `plausible=False` leaves out the
    plausibility rules (bounds, date range, lengths, list size), which the ETL enforces by nulling
    (`null_invalid_values`) rather than by refusing the file. NaN is a value here (not finite): frame
    callers turn missing cells into None first (`python_values`).
    """
    if _is_missing(value):
        return None if rule.nullable else REQUIRED
    return _VALUE_CHECKS[rule.kind](rule, value, plausible)


def cell_problem(rule: ColumnRule, text: str, plausible: bool = True) -> Optional[str]:
    """What is wrong with one present text cell (stripped, not a missing token) under `rule`."""
    problem = text_problem(text)
    if problem is not None:
        return problem
    try:
        value = parse_text(rule.kind, text)
    except ValueError as error:
        return str(error)
    return value_problem(rule, value, plausible)


# --- row rules -------------------------------------------------------------------------------------

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


# --- frames ------------------------------------------------------------------------------------------

def check_header(columns: Sequence[str], rules: Sequence[ColumnRule], known: Optional[Iterable[str]] = None
                 ) -> list[RowError]:
    """Missing required columns (and, if `known` is given, columns nobody understands), each named."""
    errors = [RowError(None, None, missing_column_message(name)) for name in missing_columns(columns, rules)]
    if known is not None:
        known_set = set(known)
        errors += [RowError(None, None, f"unknown column '{name}'") for name in columns if name not in known_set]
    return errors


def missing_columns(columns: Sequence[str], rules: Sequence[ColumnRule]) -> list[str]:
    present = set(columns)
    return [rule.name for rule in rules if rule.required and rule.name not in present]


def by_distinct_text(values: pd.Series, read: Callable[[Optional[str]], Any]) -> np.ndarray:
    """`read(stripped text or None)` of every cell, computed once per distinct cell: columns repeat
    their values, and a quarter of a million rows take a fraction of a second."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    found = np.empty(len(uniques) + 1, dtype=object)  # the last slot: null cells (code -1)
    for i, cell in enumerate([*uniques, None]):
        found[i] = read(None if cell is None else str(cell).strip())
    return found[codes]


def _column_problems(rule: ColumnRule, values: pd.Series, missing_tokens: Sequence[str], plausible: bool) -> np.ndarray:
    """The problem of each text cell of a column (None: fine); missing tokens and blanks are missing."""
    missing = {*missing_tokens, ""}

    def problem(text: Optional[str]) -> Optional[str]:
        if text is None or text in missing:
            return None if rule.nullable else REQUIRED
        return cell_problem(rule, text, plausible)
    return by_distinct_text(values, problem)


def validate_frame(raw: pd.DataFrame, rules: Sequence[ColumnRule], missing_tokens: Sequence[str] = ("",),
                   check_bounds: bool = True, first_row: int = 1, max_errors: int = 100) -> list[RowError]:
    """Cell-level problems of a raw text frame, in row order, at most `max_errors` of them.

    For each rule whose column is present: required values, then `cell_problem` (clean text, type,
    allowed values and, if `check_bounds`, the plausibility rules); any other column: clean text.
    Rows are numbered by position, from `first_row`.
    """
    by_name = {rule.name: rule for rule in rules}
    errors: list[RowError] = []
    for column in raw.columns:
        problems = _column_problems(by_name.get(column, ColumnRule(column)), raw[column], missing_tokens, check_bounds)
        errors += [RowError(first_row + int(p), column, problems[p]) for p in np.flatnonzero(pd.notna(problems))]
    errors.sort(key=lambda e: (e.row or 0, e.column or ""))
    return errors[:max_errors]


def at_labels(errors: Iterable[RowError], index: pd.Index) -> list[RowError]:
    """Errors numbered by position (from 1) renumbered as the frame's index label + 1, so the rows of
    a subset keep the row numbers of the whole file."""
    return [replace(e, row=int(index[e.row - 1]) + 1) if e.row else e for e in errors]


def duplicate_errors(ids: pd.Series, column: str = "encounter_id") -> list[RowError]:
    """Rows that repeat an earlier row's id (blank ids aside), naming that row (index label + 1),
    never the id."""
    text = ids.astype("string").str.strip()
    present = (text.notna() & (text != "")).to_numpy(dtype=bool)
    first: dict[str, int] = {}
    errors = []
    for label, value in zip(ids.index[present], text[present]):
        if value in first:
            errors.append(RowError(int(label) + 1, column, duplicate_message(first[value], column)))
        else:
            first[value] = int(label) + 1
    return errors


def null_invalid_values(frame: pd.DataFrame, rules: Sequence[ColumnRule], row_rules: bool = True
                        ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ETL's way with implausible values: a copy of a typed frame with every value that breaks a
    value rule, then (if `row_rules`) every value a row rule blames, set to null; and the boolean
    frame of the cells it nulled (to count them). The encounter itself is kept. Required columns
    (ids, diagnoses) cannot be nulled: the ETL refuses a file whose required values break a rule."""
    out = frame.copy()
    nullable = [rule for rule in rules if rule.nullable and rule.name in frame.columns]
    nulled = pd.DataFrame(False, index=frame.index, columns=[rule.name for rule in nullable])
    for rule in nullable:
        values = pd.Series(python_values(out[rule.name]), index=out.index, dtype=object)
        present = values.notna().to_numpy(dtype=bool)
        nulled.loc[present, rule.name] = _value_problems(rule, values[present]).notna().to_numpy(dtype=bool)
        out[rule.name] = out[rule.name].where(~nulled[rule.name], None)
    for label, column, _ in frame_row_problems(out) if row_rules else ():
        if column in nulled.columns:
            nulled.loc[label, column] = True
    for column in nulled.columns:
        out[column] = out[column].where(~nulled[column], None)
    return out, nulled


def _value_problems(rule: ColumnRule, values: pd.Series) -> pd.Series:
    """`value_problem` of each present typed value, once per distinct value where values are hashable."""
    if rule.kind == "string_list":
        return values.map(lambda value: value_problem(rule, value))
    found = {value: value_problem(rule, value) for value in pd.unique(values)}
    return values.map(found)
