"""Synthetic adapter: `core.synthetic.generate_chunk` run inside Spark, one chunk at a time.

`spark.range` enumerates chunk numbers across partitions; each task generates its chunks in turn,
so memory holds one chunk (`CHUNK_ROWS` encounters) per running task, whatever the total.
"""
from __future__ import annotations

import datetime as dt
from typing import Iterator, Optional

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession

from core.synthetic import DEFAULT_END, generate_chunk
from etl.spark_schema import encounter_struct
from etl.transform import ORDER_COLUMN, arrow_batches, with_order

CHUNK_ROWS = 51_200  # a multiple of core.synthetic.BLOCK_ROWS (32): no patient crosses a chunk edge


def chunk_bounds(chunk: int, rows: int, chunk_rows: int) -> tuple[int, int]:
    """(first row, number of rows) of one chunk."""
    start = chunk * chunk_rows
    return start, max(0, min(chunk_rows, rows - start))


def read(spark: SparkSession, rows: int, seed: int, end: Optional[dt.date] = None,
         chunk_rows: int = CHUNK_ROWS) -> DataFrame:
    """`rows` canonical encounters from the generator, with their row number as the input order.

    `end` is the last day of the generated discharges (the generator's fixed default when None,
    so a rerun with the same arguments gives identical data).
    """
    end = end or DEFAULT_END
    chunks = -(-rows // chunk_rows)
    schema = with_order(encounter_struct())

    def generate(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for chunk in batch.column("id").to_pylist():
                start, count = chunk_bounds(chunk, rows, chunk_rows)
                frame = generate_chunk(start, count, seed, end=end)
                frame[ORDER_COLUMN] = np.arange(start, start + len(frame), dtype=np.int64)
                yield from arrow_batches(frame, schema)
    partitions = max(1, min(chunks, spark.sparkContext.defaultParallelism * 4))
    return spark.range(0, chunks, numPartitions=partitions).mapInArrow(generate, schema)
