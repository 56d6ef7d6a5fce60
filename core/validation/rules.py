"""Value rules: one column's rule (`ColumnRule`, from `core.schema` fields or a source adapter), the
parsing of text cells, every value check (`value_problem`, `cell_problem`) and the messages they give."""
from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Sequence

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from core.schema import Field, Kind

LIST_SEPARATOR = ";"
REPLACEMENT_CHAR = "\ufffd"  # what a non-UTF-8 byte becomes when text is decoded leniently
TRUE_TOKENS = frozenset({"true", "yes", "1", "y", "t"})
FALSE_TOKENS = frozenset({"false", "no", "0", "n", "f"})
EARLIEST_DATE = dt.date(1900, 1, 1)
_INTEGER = re.compile(r"^[+-]?\d{1,18}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SURROGATE = re.compile("[\ud800-\udfff]")
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
