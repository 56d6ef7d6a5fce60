"""The Parquet warehouse: versioned tables behind one atomically switched pointer, read through DuckDB.

Layout under a warehouse root:

    tables/<table>/<version>/part-*.parquet   each run writes a brand-new version folder
    tables/<table>/<version>/_manifest.json   what produced it; written last, atomically
    preprocessing/<version>/...               fitted encoding state (JSON + Spark PipelineModel + manifest)
    CURRENT.json                              {"tables": {table: version}, "preprocessing": version, ...}
    .writers.lock                             held shared by every run while it writes

A version folder is complete exactly when its `_manifest.json` exists (`is_complete`); readers, the
pointer and clean-up go by that one rule. A reader only ever follows CURRENT.json, which is replaced in
one `os.replace`; a run killed mid-write leaves the previous pointer, and so the previous warehouse,
whole. Derived tables record the `encounters` version they were computed from: a new `encounters`
version drops `predictions` from the pointer, and a `predictions` table that does not match the current
encounters is never served. Queries go through DuckDB with bound parameters only.
"""
from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Collection, Iterator, Mapping, Optional, Sequence

import duckdb
import pandas as pd

POINTER_FILE = "CURRENT.json"
MANIFEST_FILE = "_manifest.json"
WRITERS_LOCK = ".writers.lock"
KEEP_VERSIONS = 3
TABLES = ("encounters", "features", "hospitals", "predictions")


class WarehouseError(RuntimeError):
    """The warehouse is missing, empty or lacks a table, or a table does not match the others."""


def is_remote(root: str) -> bool:
    return "://" in str(root) and not str(root).startswith("file://")


def local_path(root: str | Path) -> Path:
    text = str(root)
    return Path(text[len("file://"):] if text.startswith("file://") else text)


def new_version(now: Optional[dt.datetime] = None) -> str:
    """A sortable version name: UTC time to the microsecond (the start of an ETL run, a scoring time)."""
    return (now or dt.datetime.now(dt.timezone.utc)).strftime("%Y%m%dT%H%M%S%fZ")


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write a local file whole or not at all: a dot-prefixed temp file in the same folder, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_pointer(root: str | Path) -> dict[str, Any]:
    """The current pointer, or an empty one for a warehouse never written."""
    path = local_path(root) / POINTER_FILE
    if not path.exists():
        return {"tables": {}}
    return json.loads(path.read_text())


def write_pointer(root: str | Path, pointer: dict[str, Any]) -> None:
    """Replace the pointer atomically."""
    write_text_atomic(local_path(root) / POINTER_FILE, json.dumps(pointer, indent=2, sort_keys=True))


def update_pointer(root: str | Path, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Read, change and atomically replace the pointer under an exclusive lock.

    Two jobs finishing at once (an ETL run and a scoring run, say) would otherwise each write back
    the pointer they read and silently drop the other's new table version. If `change` raises, the
    pointer is left as it was.
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


def is_complete(folder: str | Path, exists: Callable[[str], bool] = os.path.exists) -> bool:
    """A version folder is complete when its manifest exists: every writer writes it last, atomically.

    `exists` checks one path (Hadoop's FileSystem for remote roots)."""
    return exists(f"{str(folder).rstrip('/')}/{MANIFEST_FILE}")


# --- writers and clean-up -------------------------------------------------------------------------------

@contextmanager
def writing(root: str | Path) -> Iterator[None]:
    """Hold the warehouse's writer lock, shared, while writing version folders and switching the pointer.

    Writers never wait for each other; the lock tells clean-up that a folder without a manifest may be
    one being written right now. The kernel drops the lock when the process dies (SIGKILL included).
    Remote roots have no local lock file: nothing is held, and clean-up there never removes leftovers.
    """
    if is_remote(str(root)):
        yield
        return
    folder = local_path(root)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / WRITERS_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)
        yield


@contextmanager
def writers_idle(root: str | Path) -> Iterator[bool]:
    """True, holding the writer lock exclusively for the block, when no writer is running; else False."""
    folder = local_path(root)
    if is_remote(str(root)) or not folder.is_dir():
        yield False
        return
    with open(folder / WRITERS_LOCK, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            idle = True
        except BlockingIOError:
            idle = False
        yield idle


def versions_to_delete(versions: Collection[str], pointer_version: Optional[str], complete: Collection[str],
                       keep: int = KEEP_VERSIONS, writers_idle: bool = False) -> list[str]:
    """The entries of one table's folder that clean-up deletes (sorted).

    Complete versions: all but the `keep` newest, never the one the pointer names nor the newest one
    (a run may have written it and not yet switched the pointer). Incomplete versions (no manifest)
    and dot-prefixed staging folders only when `writers_idle`: otherwise they may be a live run's
    output. A dot-prefixed folder is never complete, whatever it holds.
    """
    finished = sorted(v for v in versions if v in complete and not v.startswith("."))
    protected = set(finished[-max(keep, 1):]) | {pointer_version}
    doomed = [v for v in finished if v not in protected]
    if writers_idle:
        doomed += [v for v in versions if (v.startswith(".") or v not in complete) and v != pointer_version]
    return sorted(doomed)


@dataclass(frozen=True)
class Storage:
    """The file operations clean-up needs: local here, Hadoop's FileSystem in `etl.load`."""
    list_dirs: Callable[[str], list[str]]
    exists: Callable[[str], bool]
    delete: Callable[[str], None]


def _local_dirs(uri: str) -> list[str]:
    folder = local_path(uri)
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def _local_delete(uri: str) -> None:
    """Rename to a dot-prefixed name first: a deletion cut short leaves a leftover, never a version that
    still has its manifest but lost some of its Parquet files."""
    folder = local_path(uri)
    doomed = folder if folder.name.startswith(".") else folder.with_name(f".{folder.name}.deleting")
    if doomed != folder:
        try:
            os.replace(folder, doomed)
        except FileNotFoundError:  # another run's clean-up took it first
            return
    shutil.rmtree(doomed, ignore_errors=True)


LOCAL_STORAGE = Storage(_local_dirs, lambda uri: local_path(uri).exists(), _local_delete)


def prune(root: str, pointer: Mapping[str, Any], storage: Storage, writers_idle: bool, keep: int = KEEP_VERSIONS,
          tables: Optional[Sequence[str]] = None) -> list[str]:
    """Apply `versions_to_delete` to each table folder (or just `tables`) and, for all tables, to the
    preprocessing states. Returns the folders deleted."""
    base = str(root).rstrip("/")
    names = tables if tables is not None else storage.list_dirs(f"{base}/tables")
    folders = {f"{base}/tables/{t}": pointer.get("tables", {}).get(t) for t in names if not t.startswith(".")}
    if tables is None:
        folders[f"{base}/preprocessing"] = pointer.get("preprocessing")
    deleted = []
    for folder, current in folders.items():
        entries = storage.list_dirs(folder)
        complete = {e for e in entries if is_complete(f"{folder}/{e}", storage.exists)}
        for entry in versions_to_delete(entries, current, complete, keep, writers_idle):
            storage.delete(f"{folder}/{entry}")
            deleted.append(f"{folder}/{entry}")
    return deleted


def prune_versions(root: str | Path, keep: int = KEEP_VERSIONS, tables: Optional[Sequence[str]] = None) -> list[str]:
    """Clean up a local warehouse (see `versions_to_delete`); leftovers only while no writer runs.

    Call it after leaving `writing`: a run's own shared lock would count as a writer."""
    with writers_idle(root) as idle:
        return prune(str(local_path(root)), read_pointer(root), LOCAL_STORAGE, idle, keep, tables)


# --- derived tables and their encounters --------------------------------------------------------------

def switch_tables(pointer: dict[str, Any], tables: Mapping[str, str]) -> None:
    """Point `tables` at their new versions (changes `pointer` in place, no I/O).

    A new `encounters` version invalidates the current `predictions`: scored on the old encounters and
    joined by encounter_id, they would show other patients' risks. Their entry is dropped and kept under
    "invalidated", so readers can say the scores are out of date rather than that there are none.
    """
    current = pointer.setdefault("tables", {})
    invalidated = pointer.setdefault("invalidated", {})
    new_encounters = tables.get("encounters", current.get("encounters")) != current.get("encounters")
    if new_encounters and "predictions" in current and "predictions" not in tables:
        invalidated["predictions"] = current.pop("predictions")
    current.update(tables)
    if "predictions" in tables:
        invalidated.pop("predictions", None)
    if not invalidated:
        pointer.pop("invalidated")


def require_encounters(pointer: Mapping[str, Any], encounters_version: Optional[str], root: str | Path) -> None:
    """Refuse to publish predictions scored on other encounters than those the pointer names now."""
    current = pointer.get("tables", {}).get("encounters")
    if current != encounters_version:
        raise WarehouseError(f"the encounters of warehouse {root} changed while scoring (scored version "
                             f"{encounters_version}, now {current}): run `readmit score --warehouse {root}` again")


def scores_problem(pointer: Mapping[str, Any], predictions_manifest: Mapping[str, Any],
                   root: str | Path) -> Optional[str]:
    """Why the warehouse's scores cannot be shown with its encounters, as a sentence; None when they can.

    A manifest without an `encounters_version` key (written before versions were recorded, or scored
    from outside the warehouse) is not judged.
    """
    tables = pointer.get("tables", {})
    run = f"run `readmit score --warehouse {root}`"
    if "predictions" not in tables:
        if "predictions" in pointer.get("invalidated", {}):
            return f"Scores are out of date: the encounters changed (version {tables.get('encounters')}): {run}."
        return None
    if "encounters" not in tables or "encounters_version" not in predictions_manifest:
        return None
    scored_on = predictions_manifest["encounters_version"]
    if scored_on == tables["encounters"]:
        return None
    return (f"Scores are out of date: they were computed from encounters version {scored_on}, the warehouse "
            f"now holds version {tables['encounters']}: {run}.")


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _read_manifest(folder: str | Path) -> dict[str, Any]:
    path = local_path(folder) / MANIFEST_FILE
    return json.loads(path.read_text()) if path.exists() else {}


@dataclass(frozen=True)
class Warehouse:
    """Read-only view of a warehouse through DuckDB; each table is a view over its current version.

    It follows CURRENT.json on every call unless pinned (`pinned()`): a job that reads a table and
    records which version it read (scoring) pins it so both are the same.
    """
    root: str
    pinned_pointer: Optional[str] = None   # JSON of the pointer read once, or None to follow CURRENT.json

    def pointer(self) -> dict[str, Any]:
        return json.loads(self.pinned_pointer) if self.pinned_pointer else read_pointer(self.root)

    def pinned(self) -> Warehouse:
        """This warehouse fixed at the pointer as it is now."""
        return Warehouse(self.root, json.dumps(self.pointer(), sort_keys=True))

    def current_tables(self) -> dict[str, str]:
        return dict(self.pointer().get("tables", {}))

    def has_table(self, table: str) -> bool:
        return table in self.current_tables()

    def _path(self, pointer: Mapping[str, Any], table: str) -> str:
        tables = pointer.get("tables", {})
        if table not in tables:
            raise WarehouseError(f"warehouse {self.root} has no table '{table}' "
                                 f"(it has: {', '.join(sorted(tables)) or 'none'})")
        return table_version_path(self.root, table, tables[table])

    def _scores_problem(self, pointer: Mapping[str, Any]) -> Optional[str]:
        scored = "predictions" in pointer.get("tables", {})
        manifest = _read_manifest(self._path(pointer, "predictions")) if scored else {}
        return scores_problem(pointer, manifest, self.root)

    @property
    def predictions_problem(self) -> Optional[str]:
        """'Scores are out of date: ... run `readmit score --warehouse W`.', or None when they are not."""
        return self._scores_problem(self.pointer())

    @property
    def predictions_stale(self) -> bool:
        return self.predictions_problem is not None

    def table_path(self, table: str) -> str:
        """Folder of the table's current version; refuses predictions that do not match the encounters."""
        pointer = self.pointer()
        if table == "predictions" and (problem := self._scores_problem(pointer)):
            raise WarehouseError(problem)
        return self._path(pointer, table)

    def manifest(self, table: str) -> dict[str, Any]:
        return _read_manifest(self._path(self.pointer(), table))

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A fresh in-memory DuckDB connection with one view per table of one reading of the pointer.

        Predictions that do not match the encounters get a view that fails with the reason as soon as
        a row is read: queries of the other tables still work (scoring reads the encounters to fix it),
        no query returns a stale risk.
        """
        pointer = self.pointer()
        problem = self._scores_problem(pointer)
        con = duckdb.connect(":memory:")
        con.execute("SET enable_progress_bar = false")  # keep server logs clean
        try:
            for table in pointer.get("tables", {}):
                # DuckDB cannot bind parameters in DDL: the table name is checked against TABLES
                # and the path and reason are quoted as SQL string literals.
                if table not in TABLES:
                    continue
                glob = _sql_literal(f"{self._path(pointer, table)}/*.parquet")
                guard = f" WHERE error({_sql_literal(problem)})" if table == "predictions" and problem else ""
                con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet({glob}){guard}")
            yield con
        finally:
            con.close()

    def query(self, sql: str, params: Optional[Sequence[Any]] = None) -> pd.DataFrame:
        """Run one parameterized query over the current tables (WarehouseError for stale predictions)."""
        warehouse = self.pinned()  # the views and the reason below from one reading of the pointer
        with warehouse.connect() as con:
            try:
                return con.execute(sql, list(params or [])).df()
            except duckdb.InvalidInputException as error:
                problem = warehouse.predictions_problem
                if problem and problem in str(error):
                    raise WarehouseError(problem) from None
                raise
