"""Ten million encounters, measured: the ETL, Spark scoring and the worklist queries at each size,
beside DuckDB's comparable SQL and LightGBM's scoring of the same rows, as ratios.

    .venv/bin/python benchmarks/scale.py --rows 1000000,10000000 --folder /tmp/readmit-scale
        [--master local[2]] [--driver-memory 2g] [--reasons-rows 1000000] [--scaling-rows 1000000]
        [--steps etl,score,reasons,worklist,scaling]

Per size, in its own process each (measured as `benchmarks/etl.py` measures: wall time, CPU-seconds and
peak resident memory of the process tree, JVM and Python workers included):
- etl: synthetic encounters (streamed from `core.synthetic` into Parquet, not timed) through the Spark
  job vs DuckDB's comparable SQL (`benchmarks/etl.py`, whose warehouse the next steps read);
- score: `etl.score` on Spark without reasons vs LightGBM scoring the same feature rows (read, encode
  with the warehouse's preprocessing, predict, write Parquet; trained beforehand on 200,000 training
  rows, not timed);
- reasons: `etl.score` with reasons (sizes up to --reasons-rows);
- worklist: DuckDB over the warehouse (`core.warehouse.Warehouse`): a ranked page (the 50 highest risks
  discharged in the data's last 7 days, with reasons) and a filter (top tier, most common payer,
  discharged home: count and first page); median of 5 runs after one warm-up;
- scaling: at --scaling-rows, the ETL and the scoring with reasons on local[1] against --master, as
  speed-ups (score-scaling: the scoring only).
One line per step as it completes; the JSON document last. Inputs and warehouses stay in --folder
(reused by later runs).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Iterator

# Run as a script, this file's folder comes first on the path and `etl` would name benchmarks/etl.py.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lightgbm
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from core.encoding import Preprocessing, encode
from core.warehouse import Warehouse, preprocessing_path
from etl.score import score_warehouse
from etl.spark import get_spark

HERE = Path(__file__).resolve().parent
CHAMPION = HERE.parent / "models" / "champion"
LIGHTGBM_TRAIN_ROWS = 200_000
READ_BATCH_ROWS = 100_000
RANKED_PAGE = """
WITH last AS (SELECT max(discharge_time) AS t FROM encounters)
SELECT e.encounter_id, e.patient_id, e.discharge_time, p.risk, p.risk_tier, p.reason_1, p.reason_2, p.reason_3
FROM predictions p JOIN encounters e USING (encounter_id), last
WHERE e.discharge_time >= last.t - INTERVAL 7 DAY AND p.risk IS NOT NULL
ORDER BY p.risk DESC, e.encounter_id LIMIT 50
"""
FILTERED = """
WITH top AS (SELECT risk_tier FROM predictions WHERE risk IS NOT NULL ORDER BY risk DESC LIMIT 1),
     payer AS (SELECT payer FROM encounters WHERE payer IS NOT NULL GROUP BY payer ORDER BY count(*) DESC LIMIT 1),
     hits AS (SELECT e.encounter_id, e.patient_id, e.payer, p.risk, p.reason_1
              FROM predictions p JOIN encounters e USING (encounter_id)
              WHERE p.risk_tier = (SELECT risk_tier FROM top) AND e.payer = (SELECT payer FROM payer)
                AND e.discharge_disposition = 'home')
SELECT (SELECT count(*) FROM hits) AS matches, * FROM hits ORDER BY risk DESC, encounter_id LIMIT 50
"""


def _bench_etl():
    """benchmarks/etl.py as a module (not importable by name: `etl` is the package)."""
    spec = importlib.util.spec_from_file_location("bench_etl", HERE / "etl.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- child processes ----------------------------------------------------------------------------

def spark_score(warehouse: str, master: str, driver_memory: str, explain: bool) -> int:
    spark = get_spark(master, driver_memory, app_name="readmit-score")
    try:
        return score_warehouse(spark, warehouse, str(CHAMPION), explain=explain)["rows"]
    finally:
        spark.stop()


def _features(warehouse: str) -> ds.Dataset:
    return ds.dataset(Warehouse(warehouse).table_path("features"), format="parquet")


def _matrix(frame, prep: Preprocessing) -> np.ndarray:
    batch = encode(frame, prep)
    return np.hstack([batch.numeric, batch.numeric_missing, batch.categorical]).astype(np.float32)


def _frames(dataset: ds.Dataset, **scan: Any) -> Iterator:
    for batch in dataset.to_batches(batch_size=READ_BATCH_ROWS, **scan):
        yield batch.to_pandas()


def lightgbm_train(warehouse: str, model_path: str) -> int:
    """A LightGBM peer trained on up to LIGHTGBM_TRAIN_ROWS labelled training rows (not timed)."""
    prep = Preprocessing.load(preprocessing_path(warehouse))
    parts, rows = [], 0
    for frame in _frames(_features(warehouse), filter=(ds.field("split") == "train")):
        frame = frame[frame["readmitted_30d"].notna()]
        parts.append(frame)
        rows += len(frame)
        if rows >= LIGHTGBM_TRAIN_ROWS:
            break
    train = pd.concat(parts).iloc[:LIGHTGBM_TRAIN_ROWS]
    x = _matrix(train, prep)
    categorical = list(range(2 * len(prep.numeric), x.shape[1]))
    model = lightgbm.LGBMClassifier(n_estimators=200, num_leaves=31, learning_rate=0.05, verbose=-1)
    model.fit(x, train["readmitted_30d"].astype(int).to_numpy(), categorical_feature=categorical)
    model.booster_.save_model(model_path)
    return len(train)


def lightgbm_score(warehouse: str, model_path: str, output: str, threads: int) -> int:
    """Read every feature row, encode it as the model was trained, predict, write (encounter_id, risk)."""
    booster = lightgbm.Booster(model_file=model_path)
    prep = Preprocessing.load(preprocessing_path(warehouse))
    rows = 0
    schema = pa.schema([("encounter_id", pa.string()), ("risk", pa.float64())])
    with pq.ParquetWriter(output, schema) as writer:
        for frame in _frames(_features(warehouse)):
            risk = booster.predict(_matrix(frame, prep), num_threads=threads)
            writer.write_table(pa.table({"encounter_id": frame["encounter_id"].astype(str), "risk": risk}, schema=schema))
            rows += len(frame)
    return rows


def worklist(warehouse: str) -> dict[str, Any]:
    """Median milliseconds of the ranked page and the filter (5 runs after one warm-up), rows read."""
    wh = Warehouse(warehouse)
    out: dict[str, Any] = {"encounters": int(wh.query("SELECT count(*) AS n FROM encounters")["n"][0])}
    for name, sql in (("ranked_page", RANKED_PAGE), ("filter", FILTERED)):
        wh.query(sql)
        times = []
        for _ in range(5):
            started = time.perf_counter()
            result = wh.query(sql)
            times.append(1000 * (time.perf_counter() - started))
        out[name] = {"median_ms": statistics.median(times), "rows_returned": len(result)}
        if name == "filter":
            out[name]["matches"] = int(result["matches"].iloc[0]) if len(result) else 0
    return out


def child(args: argparse.Namespace) -> None:
    """The --role this process plays; its result is its last stdout line."""
    if args.role == "spark-score":
        print(spark_score(args.warehouse, args.master, args.driver_memory, explain=args.explain))
    elif args.role == "lightgbm-train":
        print(lightgbm_train(args.warehouse, args.model))
    elif args.role == "lightgbm-score":
        print(lightgbm_score(args.warehouse, args.model, args.output, args.threads))
    elif args.role == "worklist":
        print(json.dumps(worklist(args.warehouse)))


# --- the steps ------------------------------------------------------------------------------------

def _with_rate(measured: dict, rows: int) -> dict:
    return {**measured, "rows": rows, "rows_per_s": rows / measured["seconds"],
            "rows_per_cpu_s": rows / max(measured["cpu_s"], 1e-9)}


def _line(step: str, rows: int, parts: dict[str, dict], ratio: str = "") -> None:
    text = " | ".join(f"{name} {m['seconds']:,.1f} s, {m['rows_per_s']:,.0f} rows/s, {m['cpu_s']:,.0f} CPU-s, "
                      f"peak {m['peak_mb']:,.0f} MB" for name, m in parts.items())
    load = max(m["load_avg_1m"] for m in parts.values())
    print(f"{rows:>11,} {step:<9} | {text}{' | ' + ratio if ratio else ''} | load {load:.1f}", flush=True)


def score_step(bench, me: list[str], warehouse: str, rows: int, args, folder: Path) -> dict:
    spark = bench.measure(me + ["--role", "spark-score", "--warehouse", warehouse, "--master", args.master,
                                "--driver-memory", args.driver_memory])
    model = str(folder / f"lightgbm_{rows}.txt")
    bench.measure(me + ["--role", "lightgbm-train", "--warehouse", warehouse, "--model", model])
    lightgbm = bench.measure(me + ["--role", "lightgbm-score", "--warehouse", warehouse, "--model", model,
                                   "--output", str(folder / f"lightgbm_{rows}.parquet"), "--threads",
                                   str(_cores(args.master))])
    spark, lightgbm = _with_rate(spark, int(spark["out"])), _with_rate(lightgbm, int(lightgbm["out"]))
    result = {"spark": spark, "lightgbm": lightgbm,
              "spark_over_lightgbm_time": spark["seconds"] / lightgbm["seconds"],
              "spark_over_lightgbm_peak_memory": spark["peak_mb"] / lightgbm["peak_mb"]}
    _line("score", rows, {"Spark": spark, "LightGBM": lightgbm},
          f"Spark/LightGBM time x{result['spark_over_lightgbm_time']:.1f}")
    return result


def reasons_step(bench, me: list[str], warehouse: str, rows: int, master: str, args) -> dict:
    spark = bench.measure(me + ["--role", "spark-score", "--warehouse", warehouse, "--master", master,
                                "--driver-memory", args.driver_memory, "--explain"])
    spark = _with_rate(spark, int(spark["out"]))
    _line(f"reasons {master}", rows, {"Spark": spark})
    return {"master": master, "spark": spark}


def scaling_step(bench, me: list[str], warehouse: str, rows: int, args, etl_args, folder: Path, size: dict,
                 etl: bool) -> dict:
    """local[1] against --master: the scoring with reasons (and, with `etl`, the ETL), as speed-ups of wall
    time, with CPU-seconds beside them (on a shared machine the wall time depends on the load)."""
    many = size.get("reasons") or reasons_step(bench, me, warehouse, rows, args.master, args)
    one = reasons_step(bench, me, warehouse, rows, "local[1]", args)
    result = {"reasons_master": many, "reasons_local_1": one,
              "reasons_speedup": one["spark"]["seconds"] / many["spark"]["seconds"],
              "reasons_cpu_ratio": many["spark"]["cpu_s"] / one["spark"]["cpu_s"]}
    text = f"reasons {args.master} x{result['reasons_speedup']:.2f} faster than local[1] " \
           f"(CPU-s {many['spark']['cpu_s']:,.0f} vs {one['spark']['cpu_s']:,.0f})"
    if etl:
        one_etl = bench.compare([rows], argparse.Namespace(**{**vars(etl_args), "master": "local[1]"}), folder)[0]
        many_etl = size.get("etl") or bench.compare([rows], etl_args, folder)[0]
        result.update({"etl_local_1": one_etl,
                       "etl_speedup": one_etl["spark"]["seconds"] / many_etl["spark"]["seconds"]})
        text += f"; ETL x{result['etl_speedup']:.2f}"
    print(f"{rows:>11,} scaling   | {text}", flush=True)
    return result


def worklist_step(bench, me: list[str], warehouse: str, rows: int) -> dict:
    measured = bench.measure(me + ["--role", "worklist", "--warehouse", warehouse])
    result = {**measured, **json.loads(measured.pop("out"))}
    print(f"{rows:>11,} worklist  | ranked page {result['ranked_page']['median_ms']:,.0f} ms, filter "
          f"{result['filter']['median_ms']:,.0f} ms ({result['filter']['matches']:,} matches), process peak "
          f"{result['peak_mb']:,.0f} MB | load {result['load_avg_1m']:.1f}", flush=True)
    return result


def _cores(master: str) -> int:
    inside = master[master.find("[") + 1:master.find("]")] if "[" in master else ""
    return os.cpu_count() or 1 if inside in ("*", "") else int(inside)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1000000,10000000")
    parser.add_argument("--folder", default="/tmp/readmit-scale")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--driver-memory", default="2g")
    parser.add_argument("--reasons-rows", type=int, default=1_000_000, help="explain sizes up to this many rows")
    parser.add_argument("--scaling-rows", type=int, default=1_000_000)
    parser.add_argument("--steps", default="etl,score,reasons,worklist,scaling")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--warehouse", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--explain", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        child(args)
        return
    bench, me, folder = _bench_etl(), [sys.executable, __file__], Path(args.folder)
    steps = set(args.steps.split(","))
    results: dict[str, Any] = {"master": args.master, "driver_memory": args.driver_memory, "sizes": []}
    etl_args = argparse.Namespace(seed=args.seed, master=args.master, driver_memory=args.driver_memory, event_log=None)
    for rows in (int(r) for r in args.rows.split(",")):
        warehouse = str(folder / f"wh_{rows}")
        size: dict[str, Any] = {"rows": rows}
        if "etl" in steps:
            size["etl"] = bench.compare([rows], etl_args, folder)[0]
        if "score" in steps:
            size["score"] = score_step(bench, me, warehouse, rows, args, folder)
        if "reasons" in steps and rows <= args.reasons_rows:
            size["reasons"] = reasons_step(bench, me, warehouse, rows, args.master, args)
        if "worklist" in steps:
            size["worklist"] = worklist_step(bench, me, warehouse, rows)
        if steps & {"scaling", "score-scaling"} and rows == args.scaling_rows:
            size["scaling"] = scaling_step(bench, me, warehouse, rows, args, etl_args, folder, size,
                                           etl="scaling" in steps)
        results["sizes"].append(size)
    print(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
