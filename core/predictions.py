"""The warehouse `predictions` table, written without Spark.

Each run writes a brand-new version folder `tables/predictions/<version>/` (Parquet + `_manifest.json`),
then switches `CURRENT.json` with `core.warehouse.update_pointer` (locked, one atomic rename), keeping every
other table's pointer as it is. A run killed mid-write leaves the previous predictions in place.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from pathlib import Path
from typing import Any, Optional

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.warehouse import is_remote, local_path, read_pointer, table_version_path, update_pointer

TABLE = "predictions"
MANIFEST_FILE = "_manifest.json"
KEEP_VERSIONS = 3

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


def new_version(now: Optional[dt.datetime] = None) -> str:
    """Sortable version name (UTC time to the microsecond, as the ETL names its versions)."""
    return (now or dt.datetime.now(dt.timezone.utc)).strftime("%Y%m%dT%H%M%S%fZ")


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
                      scored_at: Optional[dt.datetime] = None) -> str:
    """Write predictions as a new version of the `predictions` table and switch the pointer to it.

    Returns the version name. Other tables in CURRENT.json keep their versions.
    """
    if is_remote(str(root)):
        raise ValueError("core.predictions writes local warehouses only")
    scored_at = scored_at or dt.datetime.now(dt.timezone.utc)
    version = new_version(scored_at)
    folder = Path(table_version_path(local_path(root), TABLE, version))
    staging = folder.parent / f".{version}.{uuid.uuid4().hex[:8]}.tmp"
    staging.mkdir(parents=True, exist_ok=False)
    table = to_arrow(predictions, scored_at)
    pq.write_table(table, staging / "part-00000.parquet", compression="zstd")
    (staging / MANIFEST_FILE).write_text(json.dumps({
        "table": TABLE, "version": version, "rows": table.num_rows, "scored_at": scored_at.isoformat(),
        "writer": "core.predictions", **(manifest or {})}, indent=1, sort_keys=True, default=str))
    for path in staging.iterdir():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
    os.replace(staging, folder)  # a version folder appears whole or not at all
    update_pointer(root, lambda pointer: pointer["tables"].__setitem__(TABLE, version))
    prune_versions(root, keep=KEEP_VERSIONS)
    return version


def prune_versions(root: str | Path, keep: int = KEEP_VERSIONS) -> list[str]:
    """Delete all but the `keep` newest prediction versions, never the current one; returns those deleted."""
    import shutil
    folder = Path(table_version_path(local_path(root), TABLE, "x")).parent
    current = read_pointer(root).get("tables", {}).get(TABLE)
    versions = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    doomed = [v for v in versions[:-keep] if v != current] if keep > 0 else []
    for version in doomed:
        shutil.rmtree(folder / version, ignore_errors=True)
    return doomed
