"""The ETL job: extract -> dedup -> clean -> patient history -> features -> split -> fit encoding on
train -> load (new versions, then one pointer switch).

Every step's rows in and out, with drop reasons, go into each table's `_manifest.json`. Nothing is
written before the input has been validated, so a bad file leaves the previous warehouse as it was.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import importlib
import logging
import math
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable, Optional

import pyspark
from pyspark import StorageLevel
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from core.errors import UserError
from core.features import FEATURE_SPEC_VERSION
from core.schema import ENCOUNTER_FIELDS, SCHEMA_VERSION
from core.warehouse import new_version, table_version_path, writing
from etl import load
from etl.encoding_fit import fit_encoding
from etl.spark import get_spark
from etl.transform import (
    COPIES_COLUMN,
    DEFAULT_RATIOS,
    DEFAULT_SALT,
    FEATURE_PREFIX,
    FIRST_COLUMN,
    SPLITS,
    drop_duplicate_encounters,
    encounters_of,
    features_of,
    local_path,
    null_out_of_bounds,
    nulled_counts,
    patient_pass,
    with_split,
)

log = logging.getLogger(__name__)
HOSPITAL_ORDER = ("fiscal_year", "facility_id", "measure")  # columns of core.hospitals

ENCOUNTER_SOURCES = ("diabetes130", "mimic3", "mimic4", "discharges", "synthetic")
SOURCES = ENCOUNTER_SOURCES + ("cms-hrrp",)
# Adapters live in etl.sources.<module>, imported only when their source runs.
_ADAPTER_MODULES = {"diabetes130": "diabetes130", "mimic3": "mimic3", "mimic4": "mimic4",
                    "discharges": "discharges", "synthetic": "synthetic", "cms-hrrp": "cms_hrrp"}


@dataclass
class EtlOptions:
    source: str
    input: Optional[str]
    warehouse: str
    master: str = "local[*]"
    driver_memory: str = "4g"
    rows: Optional[int] = None       # synthetic only
    seed: int = 0                    # synthetic only
    synthetic_end: Optional[dt.date] = None  # synthetic only: last discharge day (generator default if None)
    split_by: str = "patient"
    ratios: tuple[float, float, float] = DEFAULT_RATIOS
    salt: str = DEFAULT_SALT


def adapter(source: str):
    """The adapter module of a source (a clear error for an unknown or not yet available one)."""
    if source not in SOURCES:
        raise UserError(f"unknown source '{source}' (choose from: {', '.join(SOURCES)})")
    return importlib.import_module(f"etl.sources.{_ADAPTER_MODULES[source]}")


ROWS_PER_PARTITION = 250_000   # shuffle partitions scale with the input (`shuffle_partitions`)
BYTES_PER_INPUT_ROW = 300      # about a Diabetes 130 or template CSV row: the estimate for files


def estimated_rows(options: EtlOptions) -> int:
    """About how many encounters the input holds: `rows` for synthetic, else from the local file size
    (0 when unknown, e.g. a remote input)."""
    if options.rows:
        return options.rows
    local = local_path(options.input) if options.input else None
    if local is None or not local.exists():
        return 0
    files = [local] if local.is_file() else [p for p in local.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) // BYTES_PER_INPUT_ROW


def shuffle_partitions(rows: int) -> int:
    """About `ROWS_PER_PARTITION` encounters per shuffle partition, at least 8: a task's sort and its
    Python batches stay the same size as the input grows."""
    return max(8, math.ceil(rows / ROWS_PER_PARTITION))


def input_sha256(path: Optional[str]) -> Optional[str]:
    """sha256 of a local input file, or of a folder's files (names and contents, sorted); None if remote."""
    local = local_path(path) if path else None
    if local is None or not local.exists():
        return None
    files = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for file in files:
        if local.is_dir():
            digest.update(str(file.relative_to(local)).encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def extract(spark: SparkSession, options: EtlOptions) -> DataFrame:
    module = adapter(options.source)
    if options.source == "synthetic":
        if not options.rows or options.rows <= 0:
            raise UserError("--source synthetic needs --rows N (N > 0)")
        return module.read(spark, rows=options.rows, seed=options.seed, end=options.synthetic_end)
    if not options.input:
        raise UserError(f"--source {options.source} needs --input PATH")
    return module.read(spark, options.input)


def _step(name: str, rows_in: Optional[int], rows_out: int, **details: Any) -> dict[str, Any]:
    return {"step": name, "rows_in": rows_in, "rows_out": rows_out, **details}


def _base_manifest(spark: SparkSession, options: EtlOptions, version: str) -> dict[str, Any]:
    return {"version": version, "source": options.source, "input": options.input,
            "input_sha256": input_sha256(options.input),
            "generator": ({"rows": options.rows, "seed": options.seed,
                           "end": options.synthetic_end.isoformat() if options.synthetic_end else None}
                          if options.source == "synthetic" else None),
            "feature_spec_version": FEATURE_SPEC_VERSION, "schema_version": SCHEMA_VERSION,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
            "spark": {"master": spark.sparkContext.master, "version": pyspark.__version__}}


def run_etl(options: EtlOptions, spark: Optional[SparkSession] = None) -> dict[str, Any]:
    """Run the whole job; returns the summary that is also written as the manifests."""
    adapter(options.source)  # unknown source: fail before starting Spark
    spark = spark or get_spark(options.master, options.driver_memory,
                               shuffle_partitions=shuffle_partitions(estimated_rows(options)))
    load.ensure_root(options.warehouse)
    version = new_version()
    manifest = _base_manifest(spark, options, version)
    load_tables = _load_hospitals if options.source == "cms-hrrp" else _load_encounters
    with writing(options.warehouse):
        summary = load_tables(spark, options, version, manifest)
    load.prune_versions(spark, options.warehouse)  # outside `writing`: this run's lock would count as a writer
    return summary


def _load_hospitals(spark: SparkSession, options: EtlOptions, version: str, manifest: dict) -> dict[str, Any]:
    hospitals = extract(spark, options).persist()
    try:
        rows = hospitals.count()
        if rows == 0:
            raise UserError(f"{options.input}: no hospital rows found")
        manifest["steps"] = [_step("extract", None, rows)]
        load.write_table(hospitals, options.warehouse, "hospitals", version, HOSPITAL_ORDER, rows,
                         {**manifest, "table": "hospitals", "rows": rows}, spark)
        load.publish(spark, options.warehouse, {"hospitals": version})
    finally:
        hospitals.unpersist()
    return {**manifest, "tables": {"hospitals": rows}}


def _count_rows(labelled: DataFrame) -> list[Row]:
    """Every count of the manifest in one aggregation over the persisted pass: per (split, eligible,
    ineligible reason), encounters, input rows (duplicates included), patients (each one's first
    eligible encounter, flagged by the pass), labels, and the nulled cells per column."""
    eligible = F.col(FEATURE_PREFIX + "eligible")
    label = F.col(FEATURE_PREFIX + "readmitted_30d")
    return (labelled.groupBy("split", eligible.alias("eligible"), "ineligible_reason")
            .agg(F.count(F.lit(1)).alias("encounters"), F.sum(COPIES_COLUMN).alias("extracted"),
                 F.sum(FIRST_COLUMN).alias("patients"), F.sum(label.cast("int")).alias("positives"),
                 F.count(label).alias("labelled"), *nulled_counts())
            .collect())


def _steps(rows: list[Row]) -> tuple[list[dict[str, Any]], dict[str, dict[str, int]]]:
    """The manifest's steps and split counts from `_count_rows`."""
    n_extracted = sum(int(r["extracted"]) for r in rows)
    n_unique = sum(int(r["encounters"]) for r in rows)
    flagged = {f.name: sum(int(r[f"nulled:{f.name}"] or 0) for r in rows) for f in ENCOUNTER_FIELDS}
    ineligible: dict[str, int] = {}
    for r in rows:
        if r["ineligible_reason"] is not None:
            key = f"ineligible: {r['ineligible_reason']}"
            ineligible[key] = ineligible.get(key, 0) + int(r["encounters"])
    splits: dict[str, dict[str, int]] = {}
    for r in (r for r in rows if r["eligible"]):
        counts = splits.setdefault(r["split"], {"encounters": 0, "patients": 0, "labelled": 0, "positives": 0})
        for key in counts:
            counts[key] += int(r[key] or 0)
    n_features = sum(counts["encounters"] for counts in splits.values())
    steps = [_step("extract", None, n_extracted),
             _step("deduplicate", n_extracted, n_unique, dropped={"duplicate encounter_id": n_extracted - n_unique}),
             _step("clean", n_unique, n_unique, flagged_out_of_bounds_set_null={k: v for k, v in flagged.items() if v}),
             _step("history", n_unique, n_unique),
             _step("features", n_unique, n_features, dropped=ineligible)]
    return steps, splits


def concurrently(*steps: Callable[[], Any]) -> list[Any]:
    """Run each step in its own thread (Spark schedules their jobs side by side); wait for all of them,
    then raise the first failure. Nothing is published before every step has finished."""
    with ThreadPoolExecutor(max_workers=len(steps), thread_name_prefix="etl-write") as pool:
        futures = [pool.submit(step) for step in steps]
        wait(futures)
    return [future.result() for future in futures]


def _load_encounters(spark: SparkSession, options: EtlOptions, version: str, manifest: dict) -> dict[str, Any]:
    """Extract and dedup stream into one shuffle by patient (`patient_pass`: clean, history and
    features), persisted to disk; the counts, the encoding fit and both writes read that copy."""
    partitions = int(spark.conf.get("spark.sql.shuffle.partitions"))
    patient_step = getattr(adapter(options.source), "patient_step", None)  # e.g. labels from dates
    cached: list[DataFrame] = []

    def keep(df: DataFrame) -> DataFrame:
        cached.append(df.persist(StorageLevel.DISK_ONLY))
        return cached[-1]

    try:
        deduplicated = drop_duplicate_encounters(extract(spark, options))
        patient_fn = patient_step(null_out_of_bounds(deduplicated)) if patient_step else None
        passed = patient_pass(deduplicated, partitions, patient_fn)
        if options.split_by == "patient":  # a column of the persisted copy: hashed once, not once per reader
            passed = labelled = keep(with_split(passed, options.split_by, options.ratios, options.salt))
        else:  # a join over the persisted pass, itself persisted: computed once, not once per reader
            passed = keep(passed)
            labelled = keep(with_split(passed, options.split_by, options.ratios, options.salt))
        steps, split_counts = _steps(_count_rows(labelled))
        n_encounters, n_features = steps[-1]["rows_in"], steps[-1]["rows_out"]
        if steps[0]["rows_out"] == 0:
            raise UserError(f"{options.input}: no encounters found")
        if not split_counts.get(SPLITS[0], {}).get("encounters"):
            raise UserError("the training split is empty: the input has too few patients for these --ratios")
        features = features_of(labelled.filter(F.col(FEATURE_PREFIX + "eligible")), "split")
        prep, model = fit_encoding(features.filter(F.col("split") == SPLITS[0]))

        split = {"by": options.split_by, "ratios": list(options.ratios), "salt": options.salt,
                 "counts": split_counts}
        run = {**manifest, "steps": steps, "split": split}
        # Three independent writes as concurrent Spark jobs: each table's sorted write ends in a few
        # single-file tasks, and the encoding's many tiny metadata jobs fill the cores they leave idle.
        concurrently(
            lambda: load.write_table(encounters_of(passed), options.warehouse, "encounters", version,
                                     ["encounter_id"], n_encounters,
                                     {**run, "table": "encounters", "rows": n_encounters}, spark),
            lambda: load.write_table(features, options.warehouse, "features", version, ["encounter_id"], n_features,
                                     {**run, "table": "features", "rows": n_features, "encounters_version": version,
                                      "preprocessing_version": version}, spark),
            lambda: load.save_preprocessing(spark, options.warehouse, version, prep, model,
                                            {**run, "kind": "preprocessing",
                                             "fitted_on": {"table": "features", "version": version,
                                                           "split": SPLITS[0]}}))
        load.publish(spark, options.warehouse, {"encounters": version, "features": version}, preprocessing=version,
                     run={"version": version, "source": options.source})
        log.info("ETL %s: %d encounters, %d feature rows -> %s", options.source, n_encounters, n_features,
                 table_version_path(options.warehouse, "features", version))
        return {**run, "tables": {"encounters": n_encounters, "features": n_features}}
    finally:
        for df in cached:
            df.unpersist()
