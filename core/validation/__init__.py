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

The package: `rules` (value rules and messages), `rows` (row rules), `frames` (whole files and frames).
Import from `core.validation`.
"""
from __future__ import annotations

from core.validation.frames import (
    at_labels,
    by_distinct_text,
    check_header,
    duplicate_errors,
    missing_columns,
    null_invalid_values,
    validate_frame,
)
from core.validation.rows import (
    OPEN_ENDED_AGE_BAND,
    ROW_RULE_FIELDS,
    STAY_TOLERANCE_DAYS,
    frame_row_problems,
    icd_shape_version,
    python_values,
    row_problems,
)
from core.validation.rules import (
    CONTROL_CHARACTERS,
    EARLIEST_DATE,
    FALSE_TOKENS,
    KIND_PROBLEMS,
    LIST_SEPARATOR,
    LONE_SURROGATE,
    NOT_FINITE,
    NOT_UTF8,
    PRINCIPAL_REQUIRED,
    REPLACEMENT_CHAR,
    REQUIRED,
    TRUE_TOKENS,
    ColumnRule,
    allowed_message,
    bounds_message,
    cell_problem,
    date_message,
    duplicate_message,
    items_message,
    latest_date,
    length_message,
    missing_column_message,
    naive_utc,
    parse_bool,
    parse_list,
    parse_text,
    rules_from_fields,
    text_problem,
    value_problem,
)

__all__ = [
    "LIST_SEPARATOR",
    "REPLACEMENT_CHAR",
    "TRUE_TOKENS",
    "FALSE_TOKENS",
    "EARLIEST_DATE",
    "REQUIRED",
    "PRINCIPAL_REQUIRED",
    "NOT_FINITE",
    "CONTROL_CHARACTERS",
    "LONE_SURROGATE",
    "NOT_UTF8",
    "KIND_PROBLEMS",
    "bounds_message",
    "allowed_message",
    "length_message",
    "items_message",
    "date_message",
    "missing_column_message",
    "duplicate_message",
    "ColumnRule",
    "rules_from_fields",
    "latest_date",
    "naive_utc",
    "parse_bool",
    "parse_list",
    "parse_text",
    "text_problem",
    "value_problem",
    "cell_problem",
    "OPEN_ENDED_AGE_BAND",
    "STAY_TOLERANCE_DAYS",
    "ROW_RULE_FIELDS",
    "icd_shape_version",
    "row_problems",
    "python_values",
    "frame_row_problems",
    "check_header",
    "missing_columns",
    "by_distinct_text",
    "validate_frame",
    "at_labels",
    "duplicate_errors",
    "null_invalid_values",
]
