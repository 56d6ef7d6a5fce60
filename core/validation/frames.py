"""Frame rules: a whole input file or DataFrame checked at once (header, every cell, duplicate ids), and
the ETL's nulling of implausible values."""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np
import pandas as pd

from core.errors import RowError
from core.validation.rows import frame_row_problems, python_values
from core.validation.rules import REQUIRED, ColumnRule, cell_problem, duplicate_message, missing_column_message, value_problem


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
