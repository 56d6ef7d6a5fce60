"""The one Spark session factory: local[*] on a laptop, a cluster URL in production."""
from __future__ import annotations

import os
import sys

from pyspark.sql import SparkSession


def get_spark(master: str = "local[*]", driver_memory: str = "4g", app_name: str = "readmit-etl",
              shuffle_partitions: int | None = None) -> SparkSession:
    """Create (or reuse) a session. Loopback networking, UTC, Arrow on, deterministic shuffles."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = (SparkSession.builder.master(master).appName(app_name)
               .config("spark.driver.memory", driver_memory)
               .config("spark.driver.host", "127.0.0.1")
               .config("spark.driver.bindAddress", "127.0.0.1")
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.sql.execution.arrow.pyspark.enabled", "true")
               .config("spark.sql.shuffle.partitions", str(shuffle_partitions or 8))
               .config("spark.ui.enabled", "false")
               .config("spark.sql.ansi.enabled", "false"))
    return builder.getOrCreate()
