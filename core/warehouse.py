"""The Parquet warehouse: versioned tables behind one atomically switched pointer, read through DuckDB.

Layout under a warehouse root:

    tables/<table>/<version>/part-*.parquet   each run writes a brand-new version folder
    tables/<table>/<version>/_manifest.json   what produced it (written by the ETL)
    preprocessing/<version>/...               fitted encoding state (JSON + Spark PipelineModel)
    CURRENT.json                              {"tables": {table: version}, "preprocessing": version, ...}

A reader only ever follows CURRENT.json, which is replaced in one `os.replace`; a run killed
mid-write leaves the previous pointer, and so the previous warehouse, whole. Queries go through
DuckDB with bound parameters only.
"""
from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import duckdb
import pandas as pd

POINTER_FILE = "CURRENT.json"
TABLES = ("encounters", "features", "hospitals", "predictions")


class WarehouseError(RuntimeError):
    """The warehouse is missing, empty or lacks a table."""


def is_remote(root: str) -> bool:
    return "://" in str(root) and not str(root).startswith("file://")


def local_path(root: str | Path) -> Path:
    text = str(root)
    return Path(text[len("file://"):] if text.startswith("file://") else text)


def read_pointer(root: str | Path) -> dict[str, Any]:
    """The current pointer, or an empty one for a warehouse never written."""
    path = local_path(root) / POINTER_FILE
    if not path.exists():
        return {"tables": {}}
    return json.loads(path.read_text())


def write_pointer(root: str | Path, pointer: dict[str, Any]) -> None:
    """Replace the pointer atomically (write a temp file in the same folder, fsync, rename)."""
    folder = local_path(root)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".CURRENT.", dir=folder)
    with os.fdopen(fd, "w") as handle:
        json.dump(pointer, handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, folder / POINTER_FILE)


def update_pointer(root: str | Path, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Read, change and atomically replace the pointer under an exclusive lock.

    Two jobs finishing at once (an ETL run and a scoring run, say) would otherwise each write back
    the pointer they read and silently drop the other's new table version.
    """
    folder = local_path(root)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".CURRENT.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        pointer = read_pointer(root)
        pointer.setdefault("tables", {})
        change(pointer)
        pointer["updated_at"] = dt.datetime.now(dt.timezone.utc).isoformat()
        write_pointer(root, pointer)
        return pointer


def table_version_path(root: str | Path, table: str, version: str) -> str:
    return f"{str(root).rstrip('/')}/tables/{table}/{version}"


def preprocessing_path(root: str | Path, version: Optional[str] = None) -> Path:
    """Folder of the fitted preprocessing state the current features were encoded with."""
    version = version or read_pointer(root).get("preprocessing")
    if not version:
        raise WarehouseError(f"warehouse {root} has no preprocessing state: run `readmit etl` first")
    return local_path(root) / "preprocessing" / version


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True)
class Warehouse:
    """Read-only view of a warehouse through DuckDB; each table is a view over its current version."""
    root: str

    def current_tables(self) -> dict[str, str]:
        return dict(read_pointer(self.root).get("tables", {}))

    def has_table(self, table: str) -> bool:
        return table in self.current_tables()

    def table_path(self, table: str) -> str:
        tables = self.current_tables()
        if table not in tables:
            raise WarehouseError(f"warehouse {self.root} has no table '{table}' "
                                 f"(it has: {', '.join(sorted(tables)) or 'none'})")
        return table_version_path(self.root, table, tables[table])

    def manifest(self, table: str) -> dict[str, Any]:
        path = local_path(self.table_path(table)) / "_manifest.json"
        return json.loads(path.read_text()) if path.exists() else {}

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A fresh in-memory DuckDB connection with one view per current table."""
        con = duckdb.connect(":memory:")
        con.execute("SET enable_progress_bar = false")  # keep server logs clean
        try:
            for table in self.current_tables():
                glob = f"{self.table_path(table)}/*.parquet"
                # DuckDB cannot bind parameters in DDL: the table name is checked against TABLES
                # and the path is quoted as a SQL string literal.
                if table not in TABLES:
                    continue
                con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet({_sql_literal(glob)})")
            yield con
        finally:
            con.close()

    def query(self, sql: str, params: Optional[Sequence[Any]] = None) -> pd.DataFrame:
        """Run one parameterized query over the current tables."""
        with self.connect() as con:
            return con.execute(sql, list(params or [])).df()
