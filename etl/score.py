"""Score the warehouse on Spark: `readmit score --warehouse W --master M` (and above `SPARK_SCORING_ROWS`
encounters without --master).

The ETL has already computed every eligible encounter's features with its whole patient history
(`core.features.build_features` in `etl.transform.patient_pass`), so the job reads the `features`
table, hash-partitions it by patient and runs `models.batch_scoring.BatchScorer.score` (encode ->
risk -> tier and percentile -> attributions -> reasons: the code the single-process service runs)
inside `mapInArrow`. The model is loaded once per Python worker (`worker_scorer`, a module-level
cache keyed by model folder, manifest version and explain). Ineligible encounters (died, hospice)
come from the `encounters` table with their reason and no risk. No warehouse encounter has an
impossible value (the ETL set every out-of-range number to null), so `problem` is always null.

The predictions are one new version of the `predictions` table, as `core.predictions` writes it:
Parquet staged in a dot-prefixed folder and renamed whole under the writer lock, a manifest recording
the `encounters` version read (pinned at the start), and the pointer switched only while it still
names that version. Local warehouses only (like `core.predictions`); the model folder must be at the
same path on every executor.
"""
from __future__ import annotations

import datetime as dt
import math
import os
from pathlib import Path
from typing import Any, Iterator, Optional

import pandas as pd
import pyarrow as pa
import pyspark
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema

from core.errors import UserError
from core.predictions import PREDICTIONS_SCHEMA, TABLE, publish_version, to_arrow
from core.warehouse import Warehouse, WarehouseError, is_remote, new_version
from etl.spark import profiled
from etl.transform import batch_frame
from models.batch_scoring import EXPLANATION_METHOD, BatchScorer, not_scored_reason
from models.manifest import verify_manifest

SPARK_SCORING_ROWS = 200_000
"""`readmit score --warehouse` without --master scores on Spark (local[*]) above this many encounters:
the single-process path holds every encounter in memory at once."""
ROWS_PER_PARTITION = 100_000  # scoring tasks: enough of them to keep every core busy, each a few batches

_SCORERS: dict[tuple[str, str, bool], BatchScorer] = {}


def worker_scorer(model_dir: str, model_version: str, explain: bool) -> BatchScorer:
    """The worker's scorer, loaded on first use (one torch thread: Spark runs one worker per core)."""
    key = (model_dir, model_version, explain)
    if key not in _SCORERS:
        scorer = BatchScorer.load(model_dir, explain=explain, threads=1)
        if not scorer.model_version.endswith(f"@{model_version}"):
            raise UserError(f"{model_dir} changed while scoring (expected manifest version {model_version}, "
                            f"found {scorer.model_version})")
        _SCORERS.clear()  # one model per worker at a time
        _SCORERS[key] = scorer
    return _SCORERS[key]


def _scored(features: pd.DataFrame, scorer: BatchScorer, explain: bool, scored_at: dt.datetime) -> pa.Table:
    out = scorer.score(features, explain=explain)
    out.insert(0, "encounter_id", features["encounter_id"].astype(str).to_numpy())
    out.insert(1, "patient_id", features["patient_id"].astype(str).to_numpy())
    out["model_version"] = scorer.model_version
    out["eligible"] = True
    return to_arrow(out.reset_index(drop=True), scored_at)


def _not_scored(encounters: pd.DataFrame, scorer: BatchScorer, scored_at: dt.datetime) -> pa.Table:
    """Ineligible encounters: their reason, no risk; the base risk as the single-process path gives it."""
    out = pd.DataFrame({"encounter_id": encounters["encounter_id"].astype(str).to_numpy(),
                        "patient_id": encounters["patient_id"].astype(str).to_numpy(),
                        "eligible": False,
                        "ineligible_reason": encounters["ineligible_reason"].to_numpy(),
                        "model_version": scorer.model_version, "base_risk": scorer.base_risk})
    out["reason_1"] = [not_scored_reason(False, reason, None) for reason in out["ineligible_reason"]]
    return to_arrow(out, scored_at)


def score_tables(features: DataFrame, ineligible: DataFrame, model_dir: str, explain: bool,
                 partitions: int, scored_at: dt.datetime) -> DataFrame:
    """Prediction rows (`core.predictions.PREDICTIONS_SCHEMA`) of the eligible features and the
    ineligible encounters."""
    model_dir = str(Path(model_dir).resolve())
    version = verify_manifest(model_dir)
    schema = from_arrow_schema(PREDICTIONS_SCHEMA)

    def score(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        scorer = worker_scorer(model_dir, version, explain)
        for batch in batches:
            yield from _scored(batch_frame(batch), scorer, explain, scored_at).to_batches()

    def not_scored(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        scorer = worker_scorer(model_dir, version, explain)
        for batch in batches:
            yield from _not_scored(batch_frame(batch), scorer, scored_at).to_batches()

    scored = features.repartition(partitions, "patient_id").mapInArrow(profiled(score), schema)
    return scored.unionByName(ineligible.mapInArrow(profiled(not_scored), schema))


def scoring_partitions(spark: SparkSession, rows: int) -> int:
    """At least two tasks per core, and about `ROWS_PER_PARTITION` rows each."""
    return max(2 * spark.sparkContext.defaultParallelism, math.ceil(rows / ROWS_PER_PARTITION))


def score_warehouse(spark: SparkSession, root: str, model_dir: str, explain: bool = True) -> dict[str, Any]:
    """Score the warehouse's current encounters into a new `predictions` version; returns its manifest."""
    if is_remote(root):
        raise UserError("Spark scoring writes local warehouses only (as core.predictions does)")
    warehouse = Warehouse(root).pinned()
    try:
        tables = warehouse.current_tables()
        features_path, encounters_path = warehouse.table_path("features"), warehouse.table_path("encounters")
    except WarehouseError as error:
        raise UserError(f"{error}: run `readmit etl` first") from error
    encounters_version = tables["encounters"]
    built_from = warehouse.manifest("features").get("encounters_version")
    if built_from != encounters_version:
        raise UserError(f"warehouse {root}: the features (from encounters {built_from}) do not match the "
                        f"encounters ({encounters_version}): run `readmit etl` again")
    rows = int(warehouse.manifest("encounters").get("rows") or 0)
    scorer = BatchScorer.load(model_dir, explain=explain)  # fail before the job; its version and background are recorded
    scored_at = dt.datetime.now(dt.timezone.utc)
    features = spark.read.parquet(features_path).drop("split")
    ineligible = (spark.read.parquet(encounters_path).filter(~F.coalesce(F.col("eligible"), F.lit(False)))
                  .select("encounter_id", "patient_id", "ineligible_reason"))
    predictions = score_tables(features, ineligible, model_dir, explain, scoring_partitions(spark, rows), scored_at)
    record = {"table": TABLE, "scored_at": scored_at.isoformat(), "writer": "etl.score",
              "model_version": scorer.model_version, "model_dir": str(model_dir), "explained": explain,
              "explanation_background": scorer.background_source, "explanation_method": EXPLANATION_METHOD,
              "encounters_version": encounters_version,
              "spark": {"master": spark.sparkContext.master, "version": pyspark.__version__}}
    return write_predictions(spark, root, predictions, record, scored_at)


def write_predictions(spark: SparkSession, root: str, predictions: DataFrame, record: dict[str, Any],
                      scored_at: dt.datetime) -> dict[str, Any]:
    """`core.predictions.publish_version` with a Spark writer: staged, renamed whole, then the pointer
    switched while it still names `record["encounters_version"]`."""
    def write(staging: Path) -> None:
        predictions.write.mode("errorifexists").option("compression", "zstd").parquet(str(staging))
        for name in os.listdir(staging):
            if name.startswith(("_", ".")):  # Spark's _SUCCESS and .crc files
                os.remove(staging / name)

    try:
        return publish_version(root, new_version(scored_at), record, write)
    except WarehouseError as error:
        raise UserError(str(error)) from error


def spark_scoring(rows: int, master: Optional[str]) -> bool:
    """Whether `readmit score --warehouse` runs on Spark: a master was given, or the warehouse is large."""
    return master is not None or rows > SPARK_SCORING_ROWS
