"""Load: write each table to a brand-new version folder, then switch CURRENT.json in one step.

A run never touches the files the current pointer names. If it dies (SIGKILL included) anywhere
before the pointer switch, readers keep seeing the previous warehouse, whole; a half-written
version folder is just an orphan that `prune_versions` later removes.

Local roots use `core.warehouse.write_pointer` (temp file + fsync + `os.replace`). For `hdfs://`
and `s3a://` roots the same steps go through Hadoop's FileSystem API (`spark._jvm`): on HDFS the
final rename is atomic; on S3 a rename is a copy, so a reader may briefly see the old pointer,
never a partial one (the object is replaced whole). The remote path is not tested here (no
cluster storage on this machine).
"""
from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any, Optional, Sequence

from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession

from core.encoding import PREPROCESSING_FILE, Preprocessing
from core.warehouse import (
    POINTER_FILE,
    is_remote,
    local_path,
    read_pointer,
    table_version_path,
    update_pointer,
    write_pointer,
)
from etl.encoding_fit import PIPELINE_DIR

MANIFEST_FILE = "_manifest.json"
KEEP_VERSIONS = 3
ROWS_PER_FILE = 1_000_000


def new_version(now: Optional[dt.datetime] = None) -> str:
    """A sortable version name: the UTC start time of the run, to the microsecond."""
    return (now or dt.datetime.now(dt.timezone.utc)).strftime("%Y%m%dT%H%M%S%fZ")


# --- files: local or through Hadoop's FileSystem ---------------------------------------------------

def _hadoop(spark: SparkSession, uri: str):
    jvm = spark._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    return path.getFileSystem(spark._jsc.hadoopConfiguration()), path


def write_text(spark: SparkSession, uri: str, text: str) -> None:
    if not is_remote(uri):
        path = local_path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return
    fs, path = _hadoop(spark, uri)
    stream = fs.create(path, True)
    try:
        stream.write(bytearray(text.encode("utf-8")))
    finally:
        stream.close()


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


def switch_pointer(spark: SparkSession, root: str, pointer: dict[str, Any]) -> None:
    """Replace CURRENT.json atomically (local: os.replace; remote: Hadoop rename of a temp file)."""
    if not is_remote(root):
        write_pointer(root, pointer)
        return
    final = f"{root.rstrip('/')}/{POINTER_FILE}"
    temp = f"{root.rstrip('/')}/.{POINTER_FILE}.{new_version()}"
    write_text(spark, temp, json.dumps(pointer, indent=2, sort_keys=True))
    fs, final_path = _hadoop(spark, final)
    _, temp_path = _hadoop(spark, temp)
    fs.delete(final_path, False)
    if not fs.rename(temp_path, final_path):
        raise OSError(f"could not switch {final}")


def _list_versions(spark: SparkSession, folder: str) -> list[str]:
    if not is_remote(folder):
        local = local_path(folder)
        return sorted(p.name for p in local.iterdir() if p.is_dir()) if local.exists() else []
    fs, path = _hadoop(spark, folder)
    if not fs.exists(path):
        return []
    return sorted(status.getPath().getName() for status in fs.listStatus(path) if status.isDirectory())


def _delete(spark: SparkSession, uri: str) -> None:
    if not is_remote(uri):
        shutil.rmtree(local_path(uri), ignore_errors=True)
        return
    fs, path = _hadoop(spark, uri)
    fs.delete(path, True)


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
                       model: PipelineModel) -> str:
    """preprocessing/<version>/preprocessing.json and pipeline_model/."""
    folder = f"{str(root).rstrip('/')}/preprocessing/{version}"
    write_text(spark, f"{folder}/{PREPROCESSING_FILE}", json.dumps(prep.to_dict(), indent=1, sort_keys=True))
    model.write().save(f"{folder}/{PIPELINE_DIR}")
    return folder


def publish(spark: SparkSession, root: str, tables: dict[str, str], preprocessing: Optional[str] = None,
            run: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Point CURRENT.json at the new versions, keeping the other tables' pointers as they were."""
    def change(pointer: dict[str, Any]) -> None:
        pointer.setdefault("tables", {}).update(tables)
        if preprocessing:
            pointer["preprocessing"] = preprocessing
        pointer["updated_at"] = dt.datetime.now(dt.timezone.utc).isoformat()
        if run:
            pointer["last_run"] = run

    if not is_remote(root):
        return update_pointer(root, change)
    pointer = current_pointer(spark, root)
    change(pointer)
    switch_pointer(spark, root, pointer)
    return pointer


def prune_versions(spark: SparkSession, root: str, keep: int = KEEP_VERSIONS) -> list[str]:
    """Delete all but the newest `keep` versions of each table and of the preprocessing state,
    never one the pointer names. Returns what was deleted."""
    pointer = current_pointer(spark, root)
    base = str(root).rstrip("/")
    folders = {f"{base}/tables/{table}": pointer.get("tables", {}).get(table)
               for table in _list_versions(spark, f"{base}/tables")}
    folders[f"{base}/preprocessing"] = pointer.get("preprocessing")
    deleted = []
    for folder, current in folders.items():
        versions = _list_versions(spark, folder)
        for version in versions[:-keep] if len(versions) > keep else []:
            if version != current:
                _delete(spark, f"{folder}/{version}")
                deleted.append(f"{folder}/{version}")
    return deleted


def ensure_root(root: str) -> None:
    if not is_remote(root):
        Path(local_path(root)).mkdir(parents=True, exist_ok=True)
