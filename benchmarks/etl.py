"""Spark ETL vs DuckDB alone on synthetic encounters: rows/s and peak memory, printed as ratios.

For each size, synthetic canonical encounters are first written to Parquet (not timed). Then, each
in its own subprocess so peak memory is measured per engine (resident memory of the process tree,
JVM and Python workers included, sampled every 50 ms; CPU-seconds: each process's own user + system
time, summed over the tree, so a loaded machine shows in wall time but hardly in CPU-seconds):
- spark: the real job (`etl.pipeline` steps: dedup, clean, history and `core.features.build_features`
  per patient in one pass, split, fit encoding on train, versioned write), with the settings
  `etl.pipeline.run_etl` uses (shuffle partitions scaled with the input, `--driver-memory`),
- duckdb: one SQL statement computing the comparable features (history windows, code category
  and chapter, medication counts, prior-visit total, hash split) and writing Parquet.

The DuckDB side is a *peer* for scale, not a replacement: it computes a subset of the features
(no Charlson, no clinical groups) and fits no encoding.

    .venv/bin/python benchmarks/etl.py --rows 100000,1000000 [--master local[2]] [--driver-memory 2g]
                                       [--keep DIR] [--event-log DIR] [--runs N]

--keep DIR keeps the inputs (and reuses them) and the warehouses (DIR/wh_<rows>); --event-log DIR
writes Spark's event log there (stage times: see docs/scale.md). The JSON document is printed last.
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

# Run as a script, this file's folder comes first on the path and `etl` would name this file.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import duckdb
import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from core.schema import arrow_schema
from core.synthetic import generate_chunk
from etl import pipeline
from etl.spark import get_spark

SAMPLE_SECONDS = 0.05
THREAD_SAMPLE_EVERY = 20       # JVM threads are read every 20th sample (1 s): ~100 threads, two files each
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
JVM_THREAD_KINDS = (("Executor task", "tasks"), ("C1 Compiler", "JIT compiler"), ("C2 Compiler", "JIT compiler"),
                    ("VM Thread", "VM thread (serial GC, safepoints)"))

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

    path = folder / f"synthetic_{rows}_{seed}.parquet"
    if path.exists():
        return path
    partial = path.with_name(f".{path.name}.partial")
    schema = arrow_schema().append(pa.field("_row", pa.int64()))
    with pq.ParquetWriter(partial, schema) as writer:
        for start in range(0, rows, 51_200):
            frame = generate_chunk(start, min(51_200, rows - start), seed)
            frame["_row"] = np.arange(start, start + len(frame), dtype=np.int64)
            writer.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False))
    partial.rename(path)
    return path


def tree_cpu_s() -> float:
    """CPU-seconds so far of this process and its living descendants (the JVM, the Python workers)."""
    total = 0.0
    for process in [psutil.Process()] + psutil.Process().children(recursive=True):
        try:
            total += _own_cpu(process)
        except psutil.Error:
            pass
    return total


def run_spark(input_path: str, warehouse: str, master: str, driver_memory: str = "2g",
              java_options: str | None = None, runs: int = 1) -> int:
    """The ETL job on a Parquet of canonical encounters (the extract step swapped for a read), `runs` times
    in one session: each run after the first finds the JVM warm (classes loaded, generated code compiled),
    and prints its own wall time and CPU-seconds as a JSON line."""
    rows = pq.ParquetFile(input_path).metadata.num_rows
    spark = get_spark(master, driver_memory, shuffle_partitions=pipeline.shuffle_partitions(rows),
                      java_options=java_options)

    class ParquetAdapter:
        @staticmethod
        def read(spark_, path):
            return spark_.read.parquet(path)

    pipeline.adapter = lambda source: ParquetAdapter  # the benchmark's own extract step
    options = pipeline.EtlOptions(source="synthetic-parquet", input=input_path, warehouse=warehouse, master=master)
    for run in range(1, runs + 1):
        started, cpu = time.perf_counter(), tree_cpu_s()
        summary = pipeline._load_encounters(spark, options, pipeline.load.new_version(),
                                            pipeline._base_manifest(spark, options, "bench"))
        print(json.dumps({"run": run, "seconds": time.perf_counter() - started, "cpu_s": tree_cpu_s() - cpu}),
              flush=True)
    spark.stop()
    return summary["tables"]["features"]


def run_duckdb(input_path: str, output: str) -> int:

    con = duckdb.connect()
    con.execute(DUCKDB_FEATURES.format(output=output.replace("'", "''")), {"input": input_path, "salt": "s"})
    return con.execute("SELECT count(*) FROM read_parquet($path)", {"path": output}).fetchall()[0][0]


def _own_cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def jvm_thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """CPU-seconds so far of each thread of a JVM, by kind (`JVM_THREAD_KINDS`, else "other"), from /proc:
    how much of the JVM's time is the job's tasks and how much the JIT compilers and the collector."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:  # the JVM has exited
        return out
    for tid in tids:
        try:
            name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        kind = next((kind for prefix, kind in JVM_THREAD_KINDS if name.startswith(prefix)), "other")
        out[int(tid)] = (kind, (int(fields[11]) + int(fields[12])) / CLOCK_TICKS)
    return out


def measure(command: list[str], env: dict | None = None) -> dict:
    """Run a child process: wall time, CPU-seconds and peak resident memory of its whole process tree.

    CPU-seconds sum each process's own user + system time at its last sample (a process's last
    `SAMPLE_SECONDS` before it exits are missed); the peak is the largest sum of resident memory of
    the tree at one sample (pages shared between forked workers count once per process; a JVM's
    short-lived forks that exec a helper such as `chmod` are left out: they would count the JVM's memory
    twice), split by process name at that sample in "peak_mb_by_process"; the JVMs' CPU-seconds by thread kind
    in "jvm_cpu_s_by_thread" (`jvm_thread_cpu`, read every `THREAD_SAMPLE_EVERY` samples). The child's last
    stdout line is "out"."""
    peak, peak_parts, cpu, threads = 0, {}, {}, {}
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "OMP_NUM_THREADS": "1", **(env or {})})
    watched = psutil.Process(process.pid)
    done = threading.Event()

    def sample():
        nonlocal peak, peak_parts
        samples = 0
        while not done.is_set():
            samples += 1
            try:
                tree = [watched] + watched.children(recursive=True)
            except psutil.Error:
                tree = []
            parts: dict[str, int] = {}
            java = {}
            for p in tree:
                try:
                    name = p.name() if p.pid != watched.pid else "main"
                    if name == "java":
                        java[p.pid] = p.cmdline()
                        if samples % THREAD_SAMPLE_EVERY == 1:
                            threads.update({(p.pid, tid): seen for tid, seen in jvm_thread_cpu(p.pid).items()})
                    elif p.ppid() in java and p.cmdline() == java[p.ppid()]:
                        continue  # the JVM forked to exec a helper (chmod, rm): its pages are the JVM's own
                    parts[name] = parts.get(name, 0) + p.memory_info().rss
                    cpu[(p.pid, p.create_time())] = (name, _own_cpu(p))
                except psutil.Error:
                    pass
            if sum(parts.values()) > peak:
                peak, peak_parts = sum(parts.values()), parts
            time.sleep(SAMPLE_SECONDS)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = process.communicate()
    done.set()
    sampler.join()
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(f"{command[2:5]} failed:\n{err[-3000:]}")
    cpu_by_process: dict[str, float] = {}
    for name, seconds_ in cpu.values():
        cpu_by_process[name] = cpu_by_process.get(name, 0.0) + seconds_
    cpu_by_thread: dict[str, float] = {}
    for kind, seconds_ in threads.values():
        cpu_by_thread[kind] = cpu_by_thread.get(kind, 0.0) + seconds_
    return {"seconds": seconds, "cpu_s": sum(cpu_by_process.values()), "cpu_s_by_process": cpu_by_process,
            "jvm_cpu_s_by_thread": cpu_by_thread,
            "peak_mb": peak / 2**20,
            "peak_mb_by_process": {name: rss / 2**20 for name, rss in peak_parts.items()},
            "load_avg_1m": os.getloadavg()[0], "out": out.strip().splitlines()[-1],
            "lines": out.strip().splitlines()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="100000,1000000")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--master", default="local[*]")
    parser.add_argument("--driver-memory", default="2g")
    parser.add_argument("--keep", help="keep inputs and warehouses in this folder (inputs are reused)")
    parser.add_argument("--event-log", help="write Spark's event log to this folder")
    parser.add_argument("--runs", type=int, default=1,
                        help="run the Spark job this many times in one session (runs after the first find the JVM "
                             "warm: JIT-compiled code, loaded classes); each run's time is reported")
    parser.add_argument("--java-options", help="the local JVM's options instead of etl.spark.LOCAL_JAVA_OPTIONS "
                                               "('' for the JVM's defaults)")
    parser.add_argument("--engine", choices=["spark", "duckdb"], help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine == "spark":
        print(run_spark(args.input, args.output, args.master, args.driver_memory, args.java_options, args.runs))
        return
    if args.engine == "duckdb":
        print(run_duckdb(args.input, args.output))
        return
    with tempfile.TemporaryDirectory(prefix="readmit-bench-") as tmp:
        results = compare([int(r) for r in args.rows.split(",")], args, Path(args.keep or tmp))
    print(json.dumps(results, indent=1))


def spark_env(event_log: str | None) -> dict:
    """PYSPARK_SUBMIT_ARGS that turn Spark's event log on (uncompressed JSON lines), or nothing."""
    if not event_log:
        return {}
    Path(event_log).mkdir(parents=True, exist_ok=True)
    return {"PYSPARK_SUBMIT_ARGS": f"--conf spark.eventLog.enabled=true --conf spark.eventLog.dir=file://{event_log} "
                                   "--conf spark.eventLog.compress=false pyspark-shell"}


def stage_times(event_log: str) -> list[dict]:
    """Per completed stage of the newest application in `event_log` (Spark's uncompressed JSON lines): its
    job, name (the call site), tasks, wall seconds, summed task run time, JVM CPU time (task threads only:
    Python workers' time shows in run time, not here), GC, records read and shuffle bytes written."""
    apps = sorted(Path(event_log).glob("*"), key=lambda p: p.stat().st_mtime)
    if not apps:
        return []
    files = sorted(apps[-1].glob("events_*")) if apps[-1].is_dir() else [apps[-1]]
    job_of, stages = {}, []
    for line in (line for file in files for line in open(file)):
        event = json.loads(line)
        if event["Event"] == "SparkListenerJobStart":
            job_of.update({stage: event["Job ID"] for stage in event["Stage IDs"]})
        elif event["Event"] == "SparkListenerStageCompleted":
            info = event["Stage Info"]
            metric = {a["Name"]: float(a.get("Value") or 0) for a in info.get("Accumulables", [])
                      if str(a.get("Value", "")).lstrip("-").replace(".", "", 1).isdigit()}
            stages.append({"job": job_of.get(info["Stage ID"]), "stage": info["Stage ID"],
                           "name": info["Stage Name"].split(" at ")[0] + " at " + info["Stage Name"].split("/")[-1],
                           "tasks": info["Number of Tasks"],
                           "wall_s": (info.get("Completion Time", 0) - info.get("Submission Time", 0)) / 1000,
                           "task_run_s": metric.get("internal.metrics.executorRunTime", 0) / 1000,
                           "jvm_cpu_s": metric.get("internal.metrics.executorCpuTime", 0) / 1e9,
                           "gc_s": metric.get("internal.metrics.jvmGCTime", 0) / 1000,
                           "records_read": int(metric.get("internal.metrics.input.recordsRead", 0)
                                               + metric.get("internal.metrics.shuffle.read.recordsRead", 0)),
                           "shuffle_write_mb": metric.get("internal.metrics.shuffle.write.bytesWritten", 0) / 2**20})
    return stages


def print_stage_times(stages: list[dict]) -> None:
    for s in stages:
        print(f"  job {s['job']:>3} stage {s['stage']:>3} {s['name'][:58]:<58} {s['tasks']:>3} tasks "
              f"{s['wall_s']:7.1f} s wall {s['task_run_s']:7.1f} s run {s['jvm_cpu_s']:6.1f} s JVM CPU "
              f"{s['records_read']:>10,} read {s['shuffle_write_mb']:7.1f} MB shuffled", flush=True)


def compare(sizes: list[int], args: argparse.Namespace, folder: Path) -> list[dict]:
    """Spark's ETL and DuckDB's SQL on each size; one line per size as it completes."""
    me = [sys.executable, __file__]
    folder.mkdir(parents=True, exist_ok=True)
    results = []
    for rows in sizes:
        data = make_input(rows, args.seed, folder)
        warehouse = folder / f"wh_{rows}"
        java = [] if getattr(args, "java_options", None) is None else [f"--java-options={args.java_options}"]
        runs = getattr(args, "runs", 1)
        spark = measure(me + ["--engine", "spark", "--input", str(data), "--output", str(warehouse),
                              "--master", args.master, "--driver-memory", args.driver_memory, *java,
                              f"--runs={runs}"], env=spark_env(args.event_log))
        spark["runs"] = [json.loads(line) for line in spark.pop("lines") if line.startswith('{"run"')]
        duck = measure(me + ["--engine", "duckdb", "--input", str(data), "--output", f"{folder}/duck_{rows}.parquet"])
        duck.pop("lines")
        result = {"rows": rows, "master": args.master, "driver_memory": args.driver_memory,
                  "shuffle_partitions": pipeline.shuffle_partitions(rows), "warehouse": str(warehouse),
                  "spark": {**spark, "rows_per_s": rows / spark["seconds"]},
                  "duckdb": {**duck, "rows_per_s": rows / duck["seconds"]},
                  "spark_over_duckdb_time": spark["seconds"] / duck["seconds"],
                  "spark_over_duckdb_cpu": spark["cpu_s"] / duck["cpu_s"],
                  "spark_over_duckdb_peak_memory": spark["peak_mb"] / duck["peak_mb"]}
        if runs > 1:
            warm = spark["runs"][-1]
            result["spark_warm_over_duckdb_time"] = warm["seconds"] / duck["seconds"]
            print("  runs in one session: " + ", ".join(f"run {r['run']} {r['seconds']:.1f} s ({r['cpu_s']:.0f} CPU-s)"
                                                          for r in spark["runs"])
                  + f" | last run / DuckDB time x{result['spark_warm_over_duckdb_time']:.1f}", flush=True)
        if args.event_log:
            result["stages"] = stage_times(args.event_log)
            print_stage_times(result["stages"])
        results.append(result)
        print(f"{rows:>9,} encounters | Spark ETL {result['spark']['rows_per_s']:>9,.0f} rows/s, "
              f"{spark['cpu_s']:,.0f} CPU-s, peak {spark['peak_mb']:>6,.0f} MB | DuckDB "
              f"{result['duckdb']['rows_per_s']:>9,.0f} rows/s, {duck['cpu_s']:,.0f} CPU-s, peak {duck['peak_mb']:>6,.0f} MB"
              f" | Spark/DuckDB time x{result['spark_over_duckdb_time']:.1f}, CPU x{result['spark_over_duckdb_cpu']:.1f}, "
              f"memory x{result['spark_over_duckdb_peak_memory']:.1f} | load {spark['load_avg_1m']:.1f} | JVM CPU-s: "
              + ", ".join(f"{kind} {s:,.0f}" for kind, s in sorted(spark["jvm_cpu_s_by_thread"].items())), flush=True)
    return results


if __name__ == "__main__":
    main()
