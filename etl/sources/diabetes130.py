"""Diabetes 130 adapter: the UCI CSV (or the official zip) read as text, validated, then mapped to
canonical encounters by `core.sources.diabetes130.to_canonical` inside Spark."""
from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from core.errors import UserError
from core.sources import diabetes130 as mapping
from etl.transform import local_path, map_rows_to_canonical, raise_first_invalid, read_text_csv

CSV_MEMBER = "diabetic_data.csv"
MISSING_TOKENS = (mapping.MISSING_TOKEN,)


def csv_path(path: str) -> str:
    """The CSV to read: `path` itself, or the data file extracted from the official zip."""
    local = local_path(path)
    if local is None or local.suffix.lower() != ".zip":
        return path
    try:
        with zipfile.ZipFile(local) as archive:
            member = next((n for n in archive.namelist() if n.endswith(CSV_MEMBER)), None)
            if member is None:
                raise UserError(f"{path}: the zip has no {CSV_MEMBER}")
            target = Path(tempfile.mkdtemp(prefix="readmit-d130-"))
            return str(archive.extract(member, target))
    except zipfile.BadZipFile:
        raise UserError(f"{path}: not a valid zip archive") from None


def read(spark: SparkSession, path: str) -> DataFrame:
    """Canonical encounters (plus the input order column) from a Diabetes 130 CSV or zip."""
    source = csv_path(path)
    raw = read_text_csv(spark, source, mapping.RULES, "Diabetes 130 CSV")
    # Ranges are checked later, on the canonical values (`etl.transform.null_out_of_bounds`), so an
    # implausible count is nulled and counted rather than stopping the load.
    raise_first_invalid(raw, source, mapping.RULES, MISSING_TOKENS, check_bounds=False)
    return map_rows_to_canonical(raw, mapping.to_canonical)
