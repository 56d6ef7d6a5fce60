"""Discharges adapter: the documented template CSV (`readmit template`) read as text in Spark,
validated and mapped by the same pure functions the upload page and the scorer use
(`core.sources.discharges`, `core.validation`).

The ETL keeps every encounter it can read: a cell that cannot be read (a wrong type, a value outside
a closed category list, control characters), and a required value (ids, sex, disposition,
diagnoses) that breaks any rule, stop it with one line naming the row and column; an implausible
optional value (a number out of range, a date outside 1900-01-01..tomorrow, text too long, a value
a row rule blames) is set to null and counted by `etl.transform.null_out_of_bounds`."""
from __future__ import annotations

from typing import Callable

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from core.errors import UserError
from core.schema import template_columns
from core.sources import discharges as mapping
from core.validation import check_header
from etl.transform import ORDER_COLUMN, map_rows_to_canonical, raise_first_invalid, read_text_csv

REQUIRED_RULES = tuple(rule for rule in mapping.RULES if not rule.nullable)  # cannot be nulled: checked in full


def read(spark: SparkSession, path: str) -> DataFrame:
    """Canonical encounters (labels not yet derived: see `patient_step`) from a template CSV."""
    raw = read_text_csv(spark, path, mapping.RULES, "discharges template")
    unknown = check_header([c for c in raw.columns if c != ORDER_COLUMN], (), known=template_columns())
    if unknown:
        raise UserError(f"{path}: {unknown[0].problem}: it is not in the discharges template (see `readmit template`)")
    raise_first_invalid(raw, path, mapping.RULES, ("",), check_bounds=False)
    raise_first_invalid(raw, path, REQUIRED_RULES, ("",), check_bounds=True)
    return map_rows_to_canonical(raw, mapping.rows_to_canonical)


def patient_step(encounters: DataFrame) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """The per-patient step of this source: labels from dates, observed up to the data's last date."""
    last = encounters.agg(F.greatest(F.max("admit_time"), F.max("discharge_time")).alias("last")).collect()[0]
    observed_until = pd.Timestamp(last["last"]) if last["last"] is not None else None

    def label(frame: pd.DataFrame) -> pd.DataFrame:
        return mapping.derive_labels(frame, observed_until=observed_until)
    return label
