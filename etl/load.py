"""Load: write each table to a brand-new version folder, then switch CURRENT.json in one step.

A run never touches the files the current pointer names. If it dies (SIGKILL included) anywhere
before the pointer switch, readers keep seeing the previous warehouse, whole; a half-written
version folder has no `_manifest.json` (written last, atomically), so it is incomplete, and
`prune_versions` removes it once no run holds the writer lock (`core.warehouse.writing`).

Local roots use `core.warehouse` (temp file + fsync + `os.replace`). For `hdfs://` and `s3a://`
roots the same steps go through Hadoop's FileSystem API (`spark._jvm`): on HDFS the final rename
is atomic; on S3 a rename is a copy, so a reader may briefly see the old file, never a partial one
(the object is replaced whole). Remote roots have no writer lock, so clean-up there removes old
complete versions only, never leftovers. The remote path is not tested here (no cluster storage on
this machine).
"""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any, Optional, Sequence

from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession

from core.encoding import PREPROCESSING_FILE, Preprocessing
from core.warehouse import (
    KEEP_VERSIONS,
    MANIFEST_FILE,
    POINTER_FILE,
    Storage,
    is_remote,
    local_path,
    new_version,
    prune,
    read_pointer,
    switch_tables,
    table_version_path,
    update_pointer,
    write_text_atomic,
)
from core.warehouse import prune_versions as prune_local_versions
from etl.encoding_fit import PIPELINE_DIR

ROWS_PER_FILE = 1_000_000


# --- files: local or through Hadoop's FileSystem ---------------------------------------------------

def _hadoop(spark: SparkSession, uri: str):
    jvm = spark._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    return path.getFileSystem(spark._jsc.hadoopConfiguration()), path


def write_text(spark: SparkSession, uri: str, text: str) -> None:
    """Write a file whole or not at all: a dot-prefixed temp file beside it, renamed over it."""
    if not is_remote(uri):
        write_text_atomic(local_path(uri), text)
        return
    folder, name = uri.rstrip("/").rsplit("/", 1)
    fs, temp = _hadoop(spark, f"{folder}/.{name}.{new_version()}")
    stream = fs.create(temp, True)
    try:
        stream.write(bytearray(text.encode("utf-8")))
    finally:
        stream.close()
    _, final = _hadoop(spark, uri)
    fs.delete(final, False)
    if not fs.rename(temp, final):
        raise OSError(f"could not write {uri}")


def _read_remote_text(spark: SparkSession, uri: str) -> Optional[str]:
    fs, path = _hadoop(spark, uri)
    if not fs.exists(path):
        return None
    return "\n".join(row.value for row in spark.read.text(uri, wholetext=True).collect())


def current_pointer(spark: SparkSession, root: str) -> dict[str, Any]:
    if not is_remote(root):
        return read_pointer(root)
    text = _read_remote_text(spark, f"{root.rstrip('/')}/{POINTER_FILE}")
    return json.loads(text) if text else {"tables": {}}


def _remote_storage(spark: SparkSession) -> Storage:
    """Clean-up's file operations through Hadoop's FileSystem."""
    def list_dirs(uri: str) -> list[str]:
        fs, path = _hadoop(spark, uri)
        if not fs.exists(path):
            return []
        return sorted(status.getPath().getName() for status in fs.listStatus(path) if status.isDirectory())

    def exists(uri: str) -> bool:
        fs, path = _hadoop(spark, uri)
        return bool(fs.exists(path))

    def delete(uri: str) -> None:
        fs, path = _hadoop(spark, uri)
        fs.delete(path, True)

    return Storage(list_dirs, exists, delete)


# --- tables -----------------------------------------------------------------------------------------

def write_table(df: DataFrame, root: str, table: str, version: str, sort_columns: Sequence[str], rows: int,
                manifest: dict[str, Any], spark: SparkSession) -> str:
    """Write one table version: Parquet sorted by `sort_columns`, one file per million rows, then
    its manifest (written last, so a folder with a manifest is complete)."""
    path = table_version_path(root, table, version)
    files = max(1, -(-rows // ROWS_PER_FILE))
    (df.repartitionByRange(files, *sort_columns).sortWithinPartitions(*sort_columns)
     .write.mode("errorifexists").parquet(path))
    write_text(spark, f"{path}/{MANIFEST_FILE}", json.dumps(manifest, indent=2, sort_keys=True, default=str))
    return path


def save_preprocessing(spark: SparkSession, root: str, version: str, prep: Preprocessing,
                       model: PipelineModel, manifest: dict[str, Any]) -> str:
    """preprocessing/<version>/preprocessing.json and pipeline_model/, then its manifest (last)."""
    folder = f"{str(root).rstrip('/')}/preprocessing/{version}"
    write_text(spark, f"{folder}/{PREPROCESSING_FILE}", json.dumps(prep.to_dict(), indent=1, sort_keys=True))
    model.write().save(f"{folder}/{PIPELINE_DIR}")
    write_text(spark, f"{folder}/{MANIFEST_FILE}", json.dumps(manifest, indent=2, sort_keys=True, default=str))
    return folder


def publish(spark: SparkSession, root: str, tables: dict[str, str], preprocessing: Optional[str] = None,
            run: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Point CURRENT.json at the new versions, keeping the other tables' pointers as they were; a new
    `encounters` version drops the `predictions` scored on the old one (`core.warehouse.switch_tables`)."""
    def change(pointer: dict[str, Any]) -> None:
        switch_tables(pointer, tables)
        if preprocessing:
            pointer["preprocessing"] = preprocessing
        pointer["updated_at"] = dt.datetime.now(dt.timezone.utc).isoformat()
        if run:
            pointer["last_run"] = run

    if not is_remote(root):
        return update_pointer(root, change)
    pointer = current_pointer(spark, root)
    change(pointer)
    write_text(spark, f"{root.rstrip('/')}/{POINTER_FILE}", json.dumps(pointer, indent=2, sort_keys=True))
    return pointer


def prune_versions(spark: SparkSession, root: str, keep: int = KEEP_VERSIONS) -> list[str]:
    """Clean up every table and the preprocessing states by `core.warehouse.versions_to_delete`.

    Call it after the run's `writing` block. Returns the folders deleted."""
    if not is_remote(root):
        return prune_local_versions(root, keep)
    return prune(root, current_pointer(spark, root), _remote_storage(spark), writers_idle=False, keep=keep)


def ensure_root(root: str) -> None:
    if not is_remote(root):
        Path(local_path(root)).mkdir(parents=True, exist_ok=True)
