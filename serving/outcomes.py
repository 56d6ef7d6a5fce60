"""Outcomes: what happened after each discharge, from an uploaded file or from later ETL loads.

    outcomes, errors = read_outcomes_file("outcomes.csv", engine)   # validated row by row
    write_outcomes(engine, outcomes, origin="upload")               # into the `outcome` table
    outcomes_from_warehouse(engine, "data/warehouse")               # labels of date-based sources

An outcomes file is a CSV with a header: `encounter_id` (required), `source` (optional) and, per row,
`readmitted_30d` (yes / no) or `readmission_date` (YYYY-MM-DD; the label then follows from the discharge
date when the prediction is matched). A row without a source takes the one source under which the
prediction log holds that encounter. Problems are reported by row and column, never with the value:
an identifier must not reach a terminal or a log. An uploaded outcome is never overwritten by the ETL.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

import pandas as pd
from sqlalchemy import Engine, Table, delete, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite

from core.errors import RowError, UserError
from core.warehouse import Warehouse, WarehouseError
from serving.db_tables import ID_LEN, SOURCE_LEN, Outcome, PredictionLog

COLUMNS = ("encounter_id", "source", "readmitted_30d", "readmission_date")
YES = frozenset({"yes", "y", "true", "t", "1"})
NO = frozenset({"no", "n", "false", "f", "0"})
ORIGINS = ("upload", "etl")
MAX_FILE_BYTES = 200_000_000
WRITE_CHUNK = 5_000
LOOKUP_CHUNK = 500
_SOURCE = re.compile(r"^[A-Za-z0-9_.-]+$")
_TABLE: Table = Outcome.__table__


@dataclass(frozen=True)
class OutcomeRows:
    """Valid outcomes ready to write, and how many rows of the file they came from."""
    frame: pd.DataFrame            # source, encounter_id, readmitted_30d (bool or None), readmission_date
    rows_read: int


# --- reading a file ---------------------------------------------------------------------------------

def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise UserError(f"{path}: larger than {MAX_FILE_BYTES // 1_000_000} MB; split it")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text (save it as CSV UTF-8)") from None
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as error:
        raise UserError(f"{path}: not a valid CSV file ({error})") from None
    if not rows or not any(cell.strip() for cell in rows[0]):
        raise UserError(f"{path}: empty file (expected a header: {', '.join(COLUMNS)})")
    header = [cell.strip().lower() for cell in rows[0]]
    unknown = [name for name in header if name not in COLUMNS]
    if unknown or "encounter_id" not in header or not {"readmitted_30d", "readmission_date"} & set(header):
        raise UserError(f"{path}: the header must hold encounter_id, optionally source, and readmitted_30d "
                        f"and/or readmission_date" + (f" (unknown: {', '.join(unknown[:5])})" if unknown else ""))
    body = [row + [""] * (len(header) - len(row)) for row in rows[1:] if any(cell.strip() for cell in row)]
    frame = pd.DataFrame([row[:len(header)] for row in body], columns=header, dtype=object)
    for name in COLUMNS:
        if name not in frame:
            frame[name] = ""
    frame = frame[list(COLUMNS)].apply(lambda column: column.str.strip())
    frame.attrs["too_wide"] = [i + 1 for i, row in enumerate(body) if len(row) > len(header)]
    return frame


def _check_row(row: dict[str, str], number: int) -> tuple[Optional[dict[str, Any]], list[RowError]]:
    problems = []
    encounter = row["encounter_id"]
    if not encounter:
        problems.append(RowError(number, "encounter_id", "missing"))
    elif len(encounter) > ID_LEN or not encounter.isprintable():
        problems.append(RowError(number, "encounter_id", f"not an identifier (printable, at most {ID_LEN} characters)"))
    source = row["source"] or None
    if source is not None and (len(source) > SOURCE_LEN or not _SOURCE.match(source)):
        problems.append(RowError(number, "source", f"letters, digits, '_', '.' or '-', at most {SOURCE_LEN}"))
    label = row["readmitted_30d"].lower()
    readmitted = True if label in YES else False if label in NO else None
    if label and readmitted is None:
        problems.append(RowError(number, "readmitted_30d", "must be yes or no"))
    date = None
    if row["readmission_date"]:
        try:
            date = dt.date.fromisoformat(row["readmission_date"])
        except ValueError:
            problems.append(RowError(number, "readmission_date", "not a date (YYYY-MM-DD)"))
    if not label and not row["readmission_date"]:
        problems.append(RowError(number, "readmitted_30d", "give readmitted_30d (yes / no) or readmission_date"))
    if problems:
        return None, problems
    return {"source": source, "encounter_id": encounter, "readmitted_30d": readmitted, "readmission_date": date}, []


def logged_sources(engine: Engine, encounter_ids: Iterable[str]) -> dict[str, set[str]]:
    """Encounter id -> the sources under which the prediction log holds it."""
    table = PredictionLog.__table__
    ids = sorted(set(encounter_ids))
    found: dict[str, set[str]] = {}
    with engine.connect() as connection:
        for start in range(0, len(ids), LOOKUP_CHUNK):
            statement = select(table.c.encounter_id, table.c.source).distinct().where(
                table.c.encounter_id.in_(ids[start:start + LOOKUP_CHUNK]), table.c.source.is_not(None))
            for encounter, source in connection.execute(statement):
                found.setdefault(encounter, set()).add(source)
    return found


def check_outcomes(raw: pd.DataFrame, engine: Optional[Engine] = None) -> tuple[OutcomeRows, list[RowError]]:
    """Validate every row (1-based data row numbers); a row without a source takes the one source of its
    encounter in the prediction log (`engine`), else it is an error."""
    valid, errors = [], [RowError(number, None, "more cells than the header has columns")
                         for number in raw.attrs.get("too_wide", [])]
    rejected = {error.row for error in errors}
    for number, row in enumerate(raw.to_dict("records"), start=1):
        record, problems = _check_row(row, number)
        errors += problems
        if record is not None and number not in rejected:
            valid.append((number, record))
    missing = [record["encounter_id"] for _, record in valid if record["source"] is None]
    sources = logged_sources(engine, missing) if missing and engine is not None else {}
    kept, seen = [], set()
    for number, record in valid:
        if record["source"] is None:
            options = sources.get(record["encounter_id"], set())
            if len(options) != 1:
                errors.append(RowError(number, "source", "missing, and the prediction log holds this encounter "
                                       + ("under several sources" if options else "under no source")))
                continue
            record["source"] = next(iter(options))
        key = (record["source"], record["encounter_id"])
        if key in seen:
            errors.append(RowError(number, "encounter_id", "repeated: an earlier row has the same encounter"))
            continue
        seen.add(key)
        kept.append(record)
    frame = pd.DataFrame(kept, columns=["source", "encounter_id", "readmitted_30d", "readmission_date"])
    return OutcomeRows(frame, len(raw)), sorted(errors, key=lambda e: (e.row or 0, e.column or ""))


def read_outcomes_file(path: str | Path, engine: Optional[Engine] = None) -> tuple[OutcomeRows, list[RowError]]:
    """Read and validate an outcomes CSV (the file as a whole refused with a UserError of one line)."""
    return check_outcomes(_read_csv(Path(path)), engine)


# --- writing ----------------------------------------------------------------------------------------

def _upsert(connection, rows: list[dict[str, Any]], origin: str) -> None:
    """Insert or replace outcomes; an ETL outcome never replaces an uploaded one."""
    dialect = connection.dialect.name
    if dialect in ("sqlite", "postgresql"):
        insert = (sqlite if dialect == "sqlite" else postgresql).insert(_TABLE)
        updated = {name: insert.excluded[name] for name in ("readmitted_30d", "readmission_date", "recorded_at",
                                                            "origin")}
        statement = insert.on_conflict_do_update(
            index_elements=["source", "encounter_id"], set_=updated,
            where=(_TABLE.c.origin != "upload") if origin == "etl" else None)
        connection.execute(statement, rows)
        return
    keys = [(row["source"], row["encounter_id"]) for row in rows]
    connection.execute(delete(_TABLE).where(tuple_(_TABLE.c.source, _TABLE.c.encounter_id).in_(keys)))
    connection.execute(_TABLE.insert(), rows)


def write_outcomes(engine: Engine, outcomes: pd.DataFrame, origin: str = "upload",
                   recorded_at: Optional[dt.datetime] = None, chunk: int = WRITE_CHUNK) -> int:
    """Write outcomes (columns source, encounter_id, readmitted_30d, readmission_date) in one transaction;
    returns the number of rows given."""
    if origin not in ORIGINS:
        raise ValueError(f"unknown origin {origin!r} (choose from {', '.join(ORIGINS)})")
    recorded_at = recorded_at or dt.datetime.now(dt.timezone.utc)
    frame = outcomes.reindex(columns=["source", "encounter_id", "readmitted_30d", "readmission_date"])
    labels = frame["readmitted_30d"].astype(object).where(frame["readmitted_30d"].notna(), None)
    dates = frame["readmission_date"].astype(object).where(frame["readmission_date"].notna(), None)
    rows = [{"source": str(source), "encounter_id": str(encounter), "readmitted_30d": None if label is None else bool(label),
             "readmission_date": date, "recorded_at": recorded_at, "origin": origin}
            for source, encounter, label, date in zip(frame["source"], frame["encounter_id"], labels, dates)]
    with engine.begin() as connection:
        for start in range(0, len(rows), chunk):
            _upsert(connection, rows[start:start + chunk], origin)
    return len(rows)


def outcomes_from_warehouse(engine: Engine, root: str, chunk: int = 200_000) -> int:
    """Copy the known 30-day labels of the warehouse's date-based encounters (a discharge time is what makes
    a label an observed outcome rather than a field of the source) into `outcome` as origin "etl"."""
    try:
        frame = Warehouse(root).query(
            "SELECT source, encounter_id, readmitted_30d FROM encounters "
            "WHERE readmitted_30d IS NOT NULL AND discharge_time IS NOT NULL AND eligible")
    except WarehouseError as error:
        raise UserError(str(error)) from None
    frame["readmission_date"] = None
    written = 0
    for start in range(0, len(frame), chunk):
        written += write_outcomes(engine, frame.iloc[start:start + chunk], origin="etl")
    return written
