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
from dataclasses import dataclass
from typing import Any, Optional

import pyspark
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from core.errors import UserError
from core.features import FEATURE_SPEC_VERSION
from core.schema import SCHEMA_VERSION
from core.warehouse import new_version, table_version_path, writing
from etl import load
from etl.encoding_fit import fit_encoding
from etl.spark import get_spark
from etl.spark_schema import feature_struct
from etl.transform import (
    DEFAULT_RATIOS,
    DEFAULT_SALT,
    SPLITS,
    drop_duplicate_encounters,
    ensure_order,
    features_of,
    local_path,
    null_out_of_bounds,
    patient_splits,
    with_history,
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
    spark = spark or get_spark(options.master, options.driver_memory)
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


def _eligibility_counts(encounters: DataFrame) -> tuple[int, dict[str, int]]:
    """(all encounters, ineligible ones per reason) in one pass."""
    rows = encounters.groupBy("ineligible_reason").count().collect()
    total = sum(int(r["count"]) for r in rows)
    return total, {f"ineligible: {r['ineligible_reason']}": int(r["count"])
                   for r in rows if r["ineligible_reason"] is not None}


def _split_counts(features: DataFrame) -> dict[str, dict[str, int]]:
    rows = (features.groupBy("split").agg(F.count("*").alias("encounters"),
                                          F.countDistinct("patient_id").alias("patients"),
                                          F.sum(F.col("readmitted_30d").cast("int")).alias("positives"),
                                          F.count("readmitted_30d").alias("labelled")).collect())
    return {r["split"]: {"encounters": int(r["encounters"]), "patients": int(r["patients"]),
                         "labelled": int(r["labelled"]), "positives": int(r["positives"] or 0)} for r in rows}


def _load_encounters(spark: SparkSession, options: EtlOptions, version: str, manifest: dict) -> dict[str, Any]:
    partitions = int(spark.conf.get("spark.sql.shuffle.partitions"))
    patient_step = getattr(adapter(options.source), "patient_step", None)  # e.g. labels from dates
    cached: list[DataFrame] = []

    def keep(df: DataFrame) -> DataFrame:
        cached.append(df.persist())
        return cached[-1]

    try:
        extracted = keep(ensure_order(extract(spark, options)))
        n_extracted = extracted.count()
        if n_extracted == 0:
            raise UserError(f"{options.input}: no encounters found")
        deduplicated = keep(drop_duplicate_encounters(extracted))
        cleaned, n_unique, flagged = null_out_of_bounds(deduplicated)
        patient_fn = patient_step(cleaned) if patient_step else None
        encounters = keep(with_history(cleaned, partitions, patient_fn))
        n_encounters, ineligible = _eligibility_counts(encounters)
        splits = patient_splits(encounters, options.split_by, options.ratios, options.salt)
        features = keep(features_of(encounters, partitions).filter(F.col("eligible"))
                        .join(splits, "patient_id").select(*feature_struct().fieldNames(), "split"))
        split_counts = _split_counts(features)
        n_features = sum(counts["encounters"] for counts in split_counts.values())
        train = features.filter(F.col("split") == SPLITS[0])
        if not split_counts.get(SPLITS[0], {}).get("encounters"):
            raise UserError("the training split is empty: the input has too few patients for these --ratios")
        prep, model = fit_encoding(train)

        steps = [_step("extract", None, n_extracted),
                 _step("deduplicate", n_extracted, n_unique,
                       dropped={"duplicate encounter_id": n_extracted - n_unique}),
                 _step("clean", n_unique, n_unique, flagged_out_of_bounds_set_null=flagged),
                 _step("history", n_unique, n_encounters),
                 _step("features", n_encounters, n_features, dropped=ineligible)]
        split = {"by": options.split_by, "ratios": list(options.ratios), "salt": options.salt,
                 "counts": split_counts}
        run = {**manifest, "steps": steps, "split": split}
        load.write_table(encounters, options.warehouse, "encounters", version, ["encounter_id"], n_encounters,
                         {**run, "table": "encounters", "rows": n_encounters}, spark)
        load.write_table(features, options.warehouse, "features", version, ["encounter_id"], n_features,
                         {**run, "table": "features", "rows": n_features, "encounters_version": version,
                          "preprocessing_version": version}, spark)
        load.save_preprocessing(spark, options.warehouse, version, prep, model,
                                {**run, "kind": "preprocessing",
                                 "fitted_on": {"table": "features", "version": version, "split": SPLITS[0]}})
        load.publish(spark, options.warehouse, {"encounters": version, "features": version}, preprocessing=version,
                     run={"version": version, "source": options.source})
        log.info("ETL %s: %d encounters, %d feature rows -> %s", options.source, n_encounters, n_features,
                 table_version_path(options.warehouse, "features", version))
        return {**run, "tables": {"encounters": n_encounters, "features": n_features}}
    finally:
        for df in cached:
            df.unpersist()
