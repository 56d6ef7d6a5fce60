"""Errors a user can fix: shown as one clear line, never as a traceback."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


class UserError(Exception):
    """Bad input or configuration: the message says what is wrong and where."""


@dataclass(frozen=True)
class RowError:
    """One problem in one cell of an input file (row numbers are 1-based data rows, header excluded)."""
    row: Optional[int]
    column: Optional[str]
    problem: str

    def as_text(self, file: str = "") -> str:
        where = ", ".join(part for part in (file, f"row {self.row}" if self.row else "",
                                             f"column '{self.column}'" if self.column else "") if part)
        return f"{where}: {self.problem}" if where else self.problem
