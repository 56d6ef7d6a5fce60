"""The one Spark session factory: local[*] on a laptop, a cluster URL in production; and the switch that
profiles the Python side of every `mapInArrow` step.

Memory is set here, not by the input: the JVM heap (`driver_memory`; in local mode the executor is the
driver), the Arrow batch that each Python worker holds (`arrow_batch_rows`, plus at most one patient
carried over, see `etl.transform.whole_patient_frames`) and the shuffle partitions. Data reused by
several jobs is persisted to disk only, so it never competes with the heap.
"""
from __future__ import annotations

import cProfile
import functools
import os
import sys
import uuid
from typing import Callable, Iterator

from pyspark.sql import SparkSession

ARROW_BATCH_ROWS = 10_000
PROFILE_ENV = "READMIT_PYTHON_PROFILE"
LOCAL_JAVA_OPTIONS = "-XX:+UseSerialGC"
"""JVM options of a local session (driver and executor in one JVM): the serial collector. On the
1M-encounter ETL (local[2], 2 GB heap, benchmarks/etl.py) it took 178 CPU-s and peaked at 2.7 GB, against
202 CPU-s and 3.3 GB with the JVM's default G1 (docs/scale.md). C1 only (`-XX:TieredStopAtLevel=1`) saved
a third of the CPU at 20,000 rows but cost 10 % more at 1M, where the JVM's own work dominates. Set
`java_options` to replace them (empty: the JVM's defaults); cluster executors keep their own."""


def get_spark(master: str = "local[*]", driver_memory: str = "4g", app_name: str = "readmit-etl",
              shuffle_partitions: int | None = None, arrow_batch_rows: int = ARROW_BATCH_ROWS,
              java_options: str | None = None) -> SparkSession:
    """Create (or reuse) a session. Loopback networking, UTC, Arrow on, deterministic shuffles; a local
    master's JVM gets `LOCAL_JAVA_OPTIONS` unless `java_options` says otherwise (only a new JVM reads them)."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = (SparkSession.builder.master(master).appName(app_name)
               .config("spark.driver.memory", driver_memory)
               .config("spark.driver.host", "127.0.0.1")
               .config("spark.driver.bindAddress", "127.0.0.1")
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.sql.execution.arrow.pyspark.enabled", "true")
               .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(arrow_batch_rows))
               .config("spark.sql.shuffle.partitions", str(shuffle_partitions or 8))
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.ansi.enabled", "false"))
    options = java_options if java_options is not None else (LOCAL_JAVA_OPTIONS if master.startswith("local") else "")
    if options:
        builder = builder.config("spark.driver.extraJavaOptions", options)
    return builder.getOrCreate()


def profiled(fn: Callable[[Iterator], Iterator]) -> Callable[[Iterator], Iterator]:
    """`fn` (a `mapInArrow` function) that, when the Python worker's environment has
    READMIT_PYTHON_PROFILE=DIR, writes a cProfile of each task to DIR/<fn>-<pid>-<id>.prof (read it
    with `pstats`). Local mode inherits the driver's environment; on a cluster set
    `spark.executorEnv.READMIT_PYTHON_PROFILE`. Reading the next Arrow batch counts as the task's own
    time, so waiting for the JVM shows up too (as socket reads)."""
    @functools.wraps(fn)
    def run(batches: Iterator) -> Iterator:
        folder = os.environ.get(PROFILE_ENV)
        if not folder:
            yield from fn(batches)
            return
        profile = cProfile.Profile()
        results = fn(batches)
        while True:
            profile.enable()
            try:
                item = next(results, None)
            finally:
                profile.disable()
            if item is None:
                break
            yield item
        os.makedirs(folder, exist_ok=True)
        profile.dump_stats(os.path.join(folder, f"{fn.__name__}-{os.getpid()}-{uuid.uuid4().hex[:8]}.prof"))
    return run
