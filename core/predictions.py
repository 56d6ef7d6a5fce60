"""The warehouse `predictions` table, written without Spark.

Each run writes a brand-new version folder `tables/predictions/<version>/` (Parquet + `_manifest.json`,
staged under a dot-prefixed name and renamed whole) while holding the warehouse's writer lock, then
switches `CURRENT.json` with `core.warehouse.update_pointer` (locked, one atomic rename), keeping every
other table's pointer as it is. The manifest records the `encounters` version the predictions were
computed from, and the pointer is switched only while it still names that version. A run killed
mid-write leaves the previous predictions in place.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.warehouse import (
    KEEP_VERSIONS,
    MANIFEST_FILE,
    is_remote,
    local_path,
    new_version,
    prune_versions,
    require_encounters,
    switch_tables,
    table_version_path,
    update_pointer,
    writing,
)

TABLE = "predictions"

PREDICTIONS_SCHEMA = pa.schema([
    pa.field("encounter_id", pa.string(), nullable=False),
    pa.field("patient_id", pa.string(), nullable=False),
    pa.field("risk", pa.float64()),
    pa.field("risk_tier", pa.string()),
    pa.field("risk_percentile", pa.float64()),
    pa.field("reason_1", pa.string()),
    pa.field("reason_2", pa.string()),
    pa.field("reason_3", pa.string()),
    pa.field("attributions", pa.string()),   # JSON {field group: calibrated-risk points}
    pa.field("base_risk", pa.float64()),
    pa.field("model_version", pa.string()),
    pa.field("eligible", pa.bool_()),
    pa.field("ineligible_reason", pa.string()),
    pa.field("problem", pa.string()),
    pa.field("scored_at", pa.timestamp("us", tz="UTC")),
])
PREDICTION_COLUMNS = tuple(name for name in PREDICTIONS_SCHEMA.names if name != "scored_at")
"""A prediction row as every scoring path returns it, before it is written (`scored_at` is the write's)."""


def to_arrow(predictions: pd.DataFrame, scored_at: dt.datetime) -> pa.Table:
    frame = predictions.copy()
    frame["scored_at"] = pd.Timestamp(scored_at)
    for column in PREDICTIONS_SCHEMA.names:
        if column not in frame.columns:
            frame[column] = None
    frame = frame[PREDICTIONS_SCHEMA.names]
    for field in PREDICTIONS_SCHEMA:
        if pa.types.is_string(field.type):
            values = frame[field.name].astype(object)
            frame[field.name] = values.where(values.notna() & (values != ""), None)
    frame["eligible"] = frame["eligible"].astype(object).where(frame["eligible"].notna(), None)
    return pa.Table.from_pandas(frame, schema=PREDICTIONS_SCHEMA, preserve_index=False)


def write_predictions(root: str | Path, predictions: pd.DataFrame, manifest: Optional[dict[str, Any]] = None,
                      scored_at: Optional[dt.datetime] = None, encounters_version: Optional[str] = None) -> str:
    """Write predictions as a new version of the `predictions` table and switch the pointer to it.

    `encounters_version` is the `encounters` version the predictions were computed from: query the
    encounters through `Warehouse(root).pinned()` and pass its `current_tables()["encounters"]`. It is
    recorded in the manifest, and if the pointer names another encounters version by the time of the
    switch (an ETL run published meanwhile), WarehouseError and the pointer is left as it was. None:
    not computed from this warehouse's encounters (nothing recorded, nothing checked), unless `manifest`
    itself carries an "encounters_version".

    Returns the version name. Other tables in CURRENT.json keep their versions.
    """
    if is_remote(str(root)):
        raise ValueError("core.predictions writes local warehouses only")
    scored_at = scored_at or dt.datetime.now(dt.timezone.utc)
    table = to_arrow(predictions, scored_at)
    record = {"table": TABLE, "scored_at": scored_at.isoformat(), "writer": "core.predictions", **(manifest or {})}
    if encounters_version is not None:
        record["encounters_version"] = encounters_version

    def write(staging: Path) -> None:
        staging.mkdir(parents=True, exist_ok=False)
        pq.write_table(table, staging / "part-00000.parquet", compression="zstd")

    return publish_version(root, new_version(scored_at), record, write)["version"]


def publish_version(root: str | Path, version: str, record: dict[str, Any],
                    write: Callable[[Path], None]) -> dict[str, Any]:
    """Publish one new version of the `predictions` table, whoever computed it (this module, `etl.score`).

    Under the warehouse's writer lock: `write(staging)` creates the dot-prefixed staging folder and its
    Parquet files (nothing else), the manifest (`record` plus "version" and "rows", counted from the files)
    is added, every file is fsynced, the folder is renamed whole into place and `CURRENT.json` is switched
    (while it still names `record["encounters_version"]`, when the record has one: else WarehouseError and
    the pointer is left as it was). Old versions are pruned afterwards. Returns the manifest.
    """
    folder = Path(table_version_path(local_path(root), TABLE, version))

    def publish(pointer: dict[str, Any]) -> None:
        if "encounters_version" in record:
            require_encounters(pointer, record["encounters_version"], root)
        switch_tables(pointer, {TABLE: version})

    with writing(root):
        staging = folder.parent / f".{version}.{uuid.uuid4().hex[:8]}.tmp"
        write(staging)
        rows = sum(pq.ParquetFile(path).metadata.num_rows for path in staging.glob("*.parquet"))
        record = {**record, "version": version, "rows": rows}
        (staging / MANIFEST_FILE).write_text(json.dumps(record, indent=1, sort_keys=True, default=str))
        for path in staging.iterdir():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(staging, folder)  # a version folder appears whole or not at all
        update_pointer(root, publish)
    prune_versions(root, keep=KEEP_VERSIONS, tables=(TABLE,))
    return record
