"""Raw CSV tables in, typed frames out: finding, reading and conforming for the source adapters.

Every column is read as a string and cast explicitly afterwards (no type inference, so identifiers
such as CCNs keep their leading zeros). Column names are stripped and lower-cased. Problems are one
clear UserError naming the file (and the table or columns).
"""
from __future__ import annotations

import csv
import gzip
from pathlib import Path
from typing import Iterable, Optional

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from core.errors import UserError

CSV_SUFFIXES = (".csv", ".csv.gz")


def find_table(folder: str | Path, name: str) -> Optional[Path]:
    """The file of table `name` in `folder` (NAME.csv, name.csv.gz, ... any case), or None."""
    wanted = {f"{name}{suffix}".lower() for suffix in CSV_SUFFIXES}
    matches = sorted(p for p in Path(folder).iterdir() if p.is_file() and p.name.lower() in wanted)
    return matches[0] if matches else None


def require_table(folder: str | Path, name: str, source: str) -> Path:
    """Like `find_table`, but a missing table is a UserError naming the folder and table."""
    path = find_table(folder, name)
    if path is None:
        raise UserError(f"{folder}: {source} table '{name}' not found (expected {name}.csv or "
                        f"{name}.csv.gz, any letter case)")
    return path


def header(path: str | Path) -> list[str]:
    """The stripped, lower-cased column names of a CSV (plain or gzip), read without Spark."""
    opener = gzip.open if str(path).lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:
            first = next(csv.reader(handle), None)
    except (UnicodeDecodeError, OSError, csv.Error) as exc:
        raise UserError(f"{path}: not a readable UTF-8 CSV file ({exc.__class__.__name__})") from None
    if not first:
        raise UserError(f"{path}: empty file (no header)")
    return [name.strip().lower() for name in first]


def read_csv(spark: SparkSession, path: str | Path, required: Iterable[str]) -> DataFrame:
    """Read one CSV file (plain or gzip) as strings under its lower-cased header, after checking
    the required columns. The header is read here, so Spark runs no inference job."""
    columns = header(path)
    check_columns(columns, required, path)
    schema = T.StructType([T.StructField(name, T.StringType()) for name in columns])
    return (spark.read.option("header", True).option("enforceSchema", True).option("mode", "PERMISSIVE")
            .option("multiLine", False).option("escape", '"').schema(schema).csv(str(path)))


def check_columns(columns: Iterable[str], required: Iterable[str], path: str | Path) -> None:
    """UserError naming the file and every missing column (compared case-insensitively)."""
    present = {c.strip().lower() for c in columns}
    missing = [c for c in required if c.lower() not in present]
    if missing:
        raise UserError(f"{path}: missing required column(s) {', '.join(repr(c) for c in missing)}")


def conform(df: DataFrame, schema: T.StructType) -> DataFrame:
    """Exactly `schema`: its columns in order, cast, absent ones null, every column nullable."""
    def column(field: T.StructField) -> Column:
        if field.name not in df.columns:
            return F.lit(None).cast(field.dataType)
        value = F.col(field.name).cast(field.dataType)
        return F.when(value.isNotNull(), value)  # a CASE without ELSE is nullable, as the schema says
    return df.select([column(f).alias(f.name) for f in schema.fields])
