"""CMS Hospital Readmissions Reduction Program hospital files -> the `hospitals` table.

`path` is one FY_<year>_Hospital_Readmissions_Reduction_Program_Hospital.csv or a folder of them.
Columns and types come from `core.hospitals`. 'N/A' and 'Too Few to Report' become null (never
zero); `too_few_to_report` keeps the second in words. The fiscal year comes from the file name
(FY_2025_...), else from the measure period: end year + 2. Any other non-numeric value in a
numeric column is a UserError naming the file, column, facility and value.
"""
from __future__ import annotations

import re
from functools import reduce
from pathlib import Path
from typing import Optional

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema

from core import hospitals as H
from core.errors import UserError
from etl.sources._csv import conform, read_csv

SOURCE = "cms-hrrp"
DATE_FORMAT = "M/d/yyyy"  # FY 2024 writes 07/01/2019, FY 2025 writes 7/1/2020: both parse
_FISCAL_YEAR_IN_NAME = re.compile(r"FY[_ ]?(\d{4})", re.IGNORECASE)

# CMS header -> our column; numbers are (CMS header, column, Spark type).
TEXT_COLUMNS = {"Facility ID": "facility_id", "Facility Name": "facility_name", "State": "state",
                "Measure Name": "measure", "Footnote": "footnote"}
NUMBER_COLUMNS = (("Number of Discharges", "discharges", "long"),
                  ("Excess Readmission Ratio", "excess_readmission_ratio", "double"),
                  ("Predicted Readmission Rate", "predicted_rate", "double"),
                  ("Expected Readmission Rate", "expected_rate", "double"),
                  ("Number of Readmissions", "readmissions", "long"))
DATE_COLUMNS = {"Start Date": "start_date", "End Date": "end_date"}
REQUIRED_COLUMNS = tuple(TEXT_COLUMNS) + tuple(c for c, _, _ in NUMBER_COLUMNS) + tuple(DATE_COLUMNS)


def hospitals_struct():
    """The hospitals table as a Spark schema (derived from core.hospitals.arrow_schema)."""
    return from_arrow_schema(H.arrow_schema())


def hrrp_files(path: str) -> list[Path]:
    """The CSV file itself, or the HRRP CSV files of a folder (sorted)."""
    target = Path(path)
    if target.is_file():
        return [target]
    if not target.is_dir():
        raise UserError(f"{path}: no such file or folder")
    files = sorted(p for p in target.iterdir()
                   if p.is_file() and p.name.lower().endswith((".csv", ".csv.gz")))
    if not files:
        raise UserError(f"{path}: no CMS HRRP CSV files in this folder")
    return files


def fiscal_year_from_name(name: str) -> Optional[int]:
    """2025 for 'FY_2025_Hospital_Readmissions_...csv'; None when the name carries no year."""
    match = _FISCAL_YEAR_IN_NAME.search(name)
    return int(match.group(1)) if match else None


def _text(column: str) -> Column:
    value = F.trim(F.col(column))
    return F.when(value != "", value)


def _number(column: str, kind: str) -> Column:
    """Numeric value, null for N/A / Too Few to Report / blank (and for garbage: see `_bad_values`)."""
    value = F.trim(F.regexp_replace(F.col(column), ",", ""))
    return F.when(~F.coalesce(value, F.lit("")).isin(*H.NULL_TOKENS), value.cast("double").cast(kind))


def _bad_values(raw: DataFrame, path: Path) -> None:
    """UserError for a value that is neither a number nor a known CMS null token."""
    checks = []
    for header, _, _ in NUMBER_COLUMNS:
        value = F.trim(F.regexp_replace(F.col(header.lower()), ",", ""))
        bad = value.isNotNull() & ~value.isin(*H.NULL_TOKENS) & value.cast("double").isNull()
        checks.append(F.when(bad, F.concat_ws("", F.lit(f"column '{header}', facility "),
                                              F.col("facility id"), F.lit(": '"), value, F.lit("'"))))
    for header, _ in DATE_COLUMNS.items():
        value = F.trim(F.col(header.lower()))
        bad = value.isNotNull() & (value != "") & F.to_date(value, DATE_FORMAT).isNull()
        checks.append(F.when(bad, F.concat_ws("", F.lit(f"column '{header}', facility "),
                                              F.col("facility id"), F.lit(": '"), value, F.lit("'"))))
    problems = raw.select(F.coalesce(*checks).alias("problem")).where(F.col("problem").isNotNull())
    first = problems.limit(1).collect()
    if first:
        raise UserError(f"{path}: not a number or date in {first[0]['problem']}")


def read_file(spark: SparkSession, path: Path) -> DataFrame:
    """One HRRP file -> hospitals rows."""
    raw = read_csv(spark, path, REQUIRED_COLUMNS)
    _bad_values(raw, path)
    too_few = reduce(lambda a, b: a | b,
                     [F.coalesce(F.trim(F.col(c.lower())) == H.TOO_FEW_TO_REPORT, F.lit(False))
                      for c, _, _ in NUMBER_COLUMNS])
    columns = {name: _text(header.lower()) for header, name in TEXT_COLUMNS.items()}
    columns.update({name: _number(header.lower(), kind) for header, name, kind in NUMBER_COLUMNS})
    columns.update({name: F.to_date(F.trim(F.col(header.lower())), DATE_FORMAT)
                    for header, name in DATE_COLUMNS.items()})
    columns["too_few_to_report"] = too_few
    measure_labels = F.create_map(*[F.lit(x) for pair in H.MEASURE_LABELS.items() for x in pair])
    columns["measure_label"] = measure_labels[F.upper(F.trim(F.col("measure name")))]
    named_year = fiscal_year_from_name(path.name)
    columns["fiscal_year"] = (F.lit(named_year) if named_year is not None
                              else F.year(columns["end_date"]) + H.FISCAL_YEAR_OFFSET)
    return conform(raw.select([columns[f.name].alias(f.name) for f in hospitals_struct().fields]),
                   hospitals_struct())


def read(spark: SparkSession, path: str) -> DataFrame:
    """The hospitals table from one HRRP file or a folder of them (one row per hospital, measure, year)."""
    frames = [read_file(spark, p) for p in hrrp_files(path)]
    return reduce(DataFrame.unionByName, frames)
