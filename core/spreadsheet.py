"""Formula-safe spreadsheet output (OWASP CSV injection): one rule for every CSV the product writes.

A cell starting with `=`, `+`, `-`, `@`, a tab or a carriage return (or their full-width forms) is run
as a formula by spreadsheet programs; such cells get a leading single quote, identifiers included.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def neutralize_formula(value: Any) -> Any:
    """Prefix text a spreadsheet would run as a formula (=, +, -, @, tab, CR) with a single quote."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def safe_csv(frame: pd.DataFrame) -> bytes:
    """CSV bytes with every text cell and header neutralized against spreadsheet formula injection."""
    safe = frame.copy()
    safe.columns = [neutralize_formula(str(c)) for c in safe.columns]
    for column in safe.columns:
        if safe[column].dtype == object or pd.api.types.is_string_dtype(safe[column]):
            safe[column] = safe[column].map(neutralize_formula)
    return safe.to_csv(index=False).encode("utf-8")
