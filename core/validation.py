"""Validation of raw input frames (all cells still text) before any mapping.

Every source adapter describes its columns as `ColumnRule`s; `check_header` and `validate_frame`
turn a raw frame into a list of `RowError`s that name the row and the column. The discharges
template derives its rules from `core.schema.ENCOUNTER_FIELDS` (`rules_from_fields`), so the
upload page, the scorer and the ETL reject the same rows for the same reasons.

Row numbers are 1-based data rows (the header is not counted), as `RowError` documents.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import pandas as pd

from core.errors import RowError
from core.schema import ENCOUNTER_FIELDS, LIST_SEPARATOR, Field, Kind

REPLACEMENT_CHAR = "\ufffd"  # what a non-UTF-8 byte becomes when text is decoded leniently
TRUE_TOKENS = frozenset({"true", "yes", "1", "y", "t"})
FALSE_TOKENS = frozenset({"false", "no", "0", "n", "f"})
_INTEGER = re.compile(r"^[+-]?\d+$")


@dataclass(frozen=True)
class ColumnRule:
    """What one raw column must look like.

    `required`: the column must be in the header; `nullable=False`: every row must have a value.
    `allowed` and `bounds` apply to present values only (missing is missing, never wrong).
    """
    name: str
    kind: Kind = "string"
    required: bool = False
    nullable: bool = True
    allowed: Optional[tuple[str, ...]] = None
    bounds: Optional[tuple[float, float]] = None


def rules_from_fields(fields: Iterable[Field] = ENCOUNTER_FIELDS) -> tuple[ColumnRule, ...]:
    """Rules for the canonical columns a user supplies (derived fields are computed, not read)."""
    return tuple(ColumnRule(f.name, f.kind, required=f.required, nullable=not f.required, allowed=f.allowed,
                            bounds=f.bounds) for f in fields if not f.derived)


def parse_bool(text: str) -> Optional[bool]:
    """A boolean cell; None when the text is not a recognised token."""
    token = text.strip().lower()
    return True if token in TRUE_TOKENS else False if token in FALSE_TOKENS else None


def parse_list(text: Optional[str]) -> Optional[list[str]]:
    """A ';'-separated list cell; empty items are kept as None so positions survive."""
    if text is None:
        return None
    return [item.strip() or None for item in str(text).split(LIST_SEPARATOR)]


def check_header(columns: Sequence[str], rules: Sequence[ColumnRule], known: Optional[Iterable[str]] = None
                 ) -> list[RowError]:
    """Missing required columns (and, if `known` is given, columns nobody understands)."""
    present = set(columns)
    errors = [RowError(None, rule.name, "required column is missing") for rule in rules
              if rule.required and rule.name not in present]
    if known is not None:
        known_set = set(known)
        errors += [RowError(None, name, "unknown column") for name in columns if name not in known_set]
    return errors


def missing_mask(values: pd.Series, missing_tokens: Sequence[str]) -> pd.Series:
    """True where a raw cell is absent: null, blank or one of the source's missing tokens."""
    stripped = values.astype("string").str.strip()
    return stripped.isna() | stripped.isin(list(missing_tokens) + [""])


def _bad_type(values: pd.Series, kind: Kind) -> pd.Series:
    """True where a present value cannot be read as `kind` (string and list cells are always readable)."""
    text = values.astype("string").str.strip()
    if kind == "int":
        return ~text.str.match(_INTEGER).fillna(False).astype(bool)
    if kind == "float":
        return pd.to_numeric(text, errors="coerce").isna()
    if kind == "bool":
        return text.map(lambda v: parse_bool(v) is None).astype(bool)
    if kind == "timestamp":
        return pd.to_datetime(text, errors="coerce", format="ISO8601").isna()
    return pd.Series(False, index=values.index)


def _problem_rows(mask: pd.Series, first_row: int) -> list[int]:
    positions = [i for i, bad in enumerate(mask.to_numpy()) if bad]
    return [first_row + i for i in positions]


def validate_frame(raw: pd.DataFrame, rules: Sequence[ColumnRule], missing_tokens: Sequence[str] = ("",),
                   check_bounds: bool = True, first_row: int = 1, max_errors: int = 100) -> list[RowError]:
    """Cell-level problems of a raw text frame, in row order, at most `max_errors` of them.

    Checks, for each rule whose column is present: required values, type, allowed values and (if
    `check_bounds`) numeric bounds; and, for every column, text that was not valid UTF-8.
    """
    errors: list[RowError] = []
    for column in raw.columns:
        text = raw[column].astype("string")
        broken = text.str.contains(REPLACEMENT_CHAR, regex=False).fillna(False).astype(bool)
        errors += [RowError(row, column, "text is not valid UTF-8") for row in _problem_rows(broken, first_row)]
    for rule in rules:
        if rule.name not in raw.columns:
            continue
        values = raw[rule.name]
        absent = missing_mask(values, missing_tokens)
        if not rule.nullable:
            errors += [RowError(row, rule.name, "a value is required")
                       for row in _problem_rows(absent, first_row)]
        present = values[~absent]
        bad_type = _bad_type(present, rule.kind)
        errors += [RowError(first_row + values.index.get_loc(i), rule.name,
                            f"'{present[i]}' is not a valid {_KIND_WORDS[rule.kind]}")
                   for i in present.index[bad_type.to_numpy()]]
        typed = present[~bad_type.to_numpy()]
        if rule.allowed is not None and rule.kind == "string":
            outside = ~typed.astype("string").str.strip().isin(rule.allowed)
            errors += [RowError(first_row + values.index.get_loc(i), rule.name,
                                f"'{typed[i]}' is not one of: {', '.join(rule.allowed)}")
                       for i in typed.index[outside.to_numpy()]]
        if check_bounds and rule.bounds is not None and rule.kind in ("int", "float"):
            low, high = rule.bounds
            numbers = pd.to_numeric(typed.astype("string").str.strip(), errors="coerce")
            outside = (numbers < low) | (numbers > high)
            errors += [RowError(first_row + values.index.get_loc(i), rule.name,
                                f"{typed[i]} is outside the plausible range {low:g} to {high:g}")
                       for i in typed.index[outside.to_numpy()]]
    errors.sort(key=lambda e: (e.row or 0, e.column or ""))
    return errors[:max_errors]


_KIND_WORDS = {"string": "text", "int": "whole number", "float": "number", "bool": "true/false value",
               "timestamp": "date-time (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS)", "string_list": "list"}
