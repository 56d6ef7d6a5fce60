"""Spark ETL vs DuckDB alone on synthetic encounters: rows/s and peak memory, printed as ratios.

For each size, synthetic canonical encounters are first written to Parquet (not timed). Then, each
in its own subprocess so peak memory is measured per engine (resident memory of the process tree,
JVM and Python workers included, sampled every 50 ms):
- spark: the real job (`etl.pipeline` steps: dedup, clean, history, `core.features.build_features`
  per patient, split, fit encoding on train, versioned write),
- duckdb: one SQL statement computing the comparable features (history windows, code category
  and chapter, medication counts, prior-visit total, hash split) and writing Parquet.

The DuckDB side is a *peer* for scale, not a replacement: it computes a subset of the features
(no Charlson, no clinical groups) and fits no encoding.

    .venv/bin/python benchmarks/etl.py --rows 100000,1000000 [--master local[2]]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import duckdb
import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from core.schema import arrow_schema
from core.synthetic import generate_chunk
from etl import pipeline
from etl.spark import get_spark

REPO = Path(__file__).resolve().parent.parent

DUCKDB_FEATURES = """
COPY (
  WITH e AS (
    SELECT *, TRY_CAST(encounter_id AS BIGINT) AS id_number FROM read_parquet($input)
  ), dedup AS (
    SELECT * EXCLUDE (rn) FROM (
      SELECT *, row_number() OVER (PARTITION BY encounter_id ORDER BY _row) AS rn FROM e) WHERE rn = 1
  ), h AS (
    SELECT *,
      row_number() OVER w AS encounter_seq,
      coalesce(sum(coalesce(length_of_stay_days, 0)) OVER w_prev, 0) AS prior_stays_los_days,
      coalesce(sum(CASE WHEN readmitted_30d THEN 1 ELSE 0 END) OVER w_prev, 0) AS prior_readmissions_30d,
      date_diff('second', lag(discharge_time) OVER w, admit_time) / 86400.0 AS gap_days
    FROM dedup
    WINDOW w AS (PARTITION BY patient_id ORDER BY admit_time NULLS LAST, id_number NULLS LAST, encounter_id),
           w_prev AS (PARTITION BY patient_id ORDER BY admit_time NULLS LAST, id_number NULLS LAST, encounter_id
                      ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
  ), f AS (
    SELECT encounter_id, patient_id, source, readmitted_30d, eligible,
      coalesce(age_years, TRY_CAST(regexp_extract(age_band, '\\[(\\d+)-', 1) AS DOUBLE) + 5) AS age_years_est,
      length_of_stay_days, num_lab_procedures, num_procedures, num_medications, number_diagnoses,
      prior_outpatient_visits, prior_emergency_visits, prior_inpatient_visits,
      prior_outpatient_visits + prior_emergency_visits + prior_inpatient_visits AS prior_visits_total,
      len(medication_changes) AS diabetes_meds_given,
      len(list_filter(medication_changes, lambda x: NOT x LIKE '%:steady')) AS diabetes_meds_changed,
      encounter_seq, prior_stays_los_days, prior_readmissions_30d,
      CASE WHEN gap_days >= 0 THEN gap_days END AS days_since_last_discharge,
      sex, race, age_band, admission_type, admission_source, discharge_disposition, payer,
      admitting_specialty, a1c_result, glucose_result,
      diagnoses[1] AS dx_1, diagnoses[2] AS dx_2, diagnoses[3] AS dx_3,
      split_part(diagnoses[1], '.', 1) AS dx_1_category,
      CASE WHEN diagnoses[1] LIKE 'V%' THEN 'supplementary' WHEN diagnoses[1] LIKE 'E%' THEN 'external'
           WHEN TRY_CAST(left(diagnoses[1], 3) AS INT) BETWEEN 390 AND 459 THEN 'circulatory'
           WHEN TRY_CAST(left(diagnoses[1], 3) AS INT) BETWEEN 460 AND 519 THEN 'respiratory'
           WHEN TRY_CAST(left(diagnoses[1], 3) AS INT) BETWEEN 240 AND 279 THEN 'endocrine'
           ELSE 'other' END AS dx_1_chapter,
      dayname(discharge_time) AS discharge_weekday,
      CASE WHEN (hash($salt || patient_id) % 1000) / 1000.0 < 0.7 THEN 'train'
           WHEN (hash($salt || patient_id) % 1000) / 1000.0 < 0.85 THEN 'validation' ELSE 'test' END AS split
    FROM h WHERE eligible
  )
  SELECT * FROM f ORDER BY encounter_id
) TO '{output}' (FORMAT parquet)
"""


def make_input(rows: int, seed: int, folder: Path) -> Path:
    """Synthetic canonical encounters as Parquet, with a row order column (not timed)."""

    path = folder / f"synthetic_{rows}.parquet"
    schema = arrow_schema().append(pa.field("_row", pa.int64()))
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, 51_200):
            frame = generate_chunk(start, min(51_200, rows - start), seed)
            frame["_row"] = np.arange(start, start + len(frame), dtype=np.int64)
            writer.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False))
    return path


def run_spark(input_path: str, warehouse: str, master: str) -> int:
    """The ETL job on a Parquet of canonical encounters (the extract step swapped for a read)."""

    spark = get_spark(master, "4g", shuffle_partitions=8)

    class ParquetAdapter:
        @staticmethod
        def read(spark_, path):
            return spark_.read.parquet(path)

    pipeline.adapter = lambda source: ParquetAdapter  # the benchmark's own extract step
    options = pipeline.EtlOptions(source="synthetic-parquet", input=input_path, warehouse=warehouse, master=master)
    summary = pipeline._load_encounters(spark, options, pipeline.load.new_version(),
                                        pipeline._base_manifest(spark, options, "bench"))
    spark.stop()
    return summary["tables"]["features"]


def run_duckdb(input_path: str, output: str) -> int:

    con = duckdb.connect()
    con.execute(DUCKDB_FEATURES.format(output=output.replace("'", "''")), {"input": input_path, "salt": "s"})
    return con.execute("SELECT count(*) FROM read_parquet($path)", {"path": output}).fetchall()[0][0]


def measure(command: list[str]) -> dict:
    """Run a child process; wall time and peak resident memory of its whole process tree."""
    peak = 0
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "OMP_NUM_THREADS": "1"})
    watched = psutil.Process(process.pid)
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            try:
                tree = [watched] + watched.children(recursive=True)
                peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.05)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = process.communicate()
    done.set()
    sampler.join()
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(f"{command[2:4]} failed:\n{err[-3000:]}")
    return {"seconds": seconds, "peak_mb": peak / 2**20, "rows_out": int(out.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="100000,1000000")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--master", default="local[*]")
    parser.add_argument("--engine", choices=["spark", "duckdb"], help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine == "spark":
        print(run_spark(args.input, args.output, args.master))
        return
    if args.engine == "duckdb":
        print(run_duckdb(args.input, args.output))
        return
    me = [sys.executable, __file__]
    results = []
    with tempfile.TemporaryDirectory(prefix="readmit-bench-") as tmp:
        for rows in (int(r) for r in args.rows.split(",")):
            data = make_input(rows, args.seed, Path(tmp))
            spark = measure(me + ["--engine", "spark", "--input", str(data), "--output", f"{tmp}/wh_{rows}",
                                  "--master", args.master])
            duck = measure(me + ["--engine", "duckdb", "--input", str(data), "--output", f"{tmp}/duck_{rows}.parquet"])
            result = {"rows": rows, "master": args.master,
                      "spark": {**spark, "rows_per_s": rows / spark["seconds"]},
                      "duckdb": {**duck, "rows_per_s": rows / duck["seconds"]},
                      "spark_over_duckdb_time": spark["seconds"] / duck["seconds"],
                      "spark_over_duckdb_peak_memory": spark["peak_mb"] / duck["peak_mb"]}
            results.append(result)
            print(f"{rows:>9,} encounters | Spark ETL {result['spark']['rows_per_s']:>9,.0f} rows/s, "
                  f"peak {spark['peak_mb']:>6,.0f} MB | DuckDB {result['duckdb']['rows_per_s']:>9,.0f} rows/s, "
                  f"peak {duck['peak_mb']:>6,.0f} MB | Spark/DuckDB time x{result['spark_over_duckdb_time']:.1f}, "
                  f"memory x{result['spark_over_duckdb_peak_memory']:.1f}", flush=True)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
