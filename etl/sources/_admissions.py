"""Date-derived patient history and 30-day labels for sources with real admission dates.

Input: one row per admission with the canonical encounter columns the adapter knows (at least
`patient_id`, `encounter_id`, `admit_time`, `discharge_time`, canonical `admission_type` and
`discharge_disposition`, `length_of_stay_days`) and `death_date` (date of death, null if unknown).
Output: canonical encounters (`etl.spark_schema.encounter_struct()`).

No rule is rewritten here (see docs/sources.md):
- `readmitted_30d`, `eligible`, `ineligible_reason`: `core.labels.labels_from_dates`, the one label
  rule, run on whole patients in Spark (`etl.transform.map_patients`) with the data observed up to
  the latest admit or discharge time of all admissions.
- `encounter_seq`, `days_since_last_discharge`: `etl.transform.fill_history` in the same pass.
- `prior_*_visits` (only here): the patient's admissions starting in the 365 days before this admit
  time (only what the source records), emergency ones counted apart.
"""
from __future__ import annotations

from typing import Optional

import pandas as pd
import pyarrow as pa
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from core.labels import labels_from_dates
from etl.sources._csv import conform
from etl.spark_schema import encounter_struct
from etl.transform import arrow_table, fill_history, map_patients

EMERGENCY_ADMISSION_TYPE = "emergency"
PRIOR_DAYS = 365
_SECONDS_PER_DAY = 86400.0


def _seconds(column: str | Column) -> Column:
    col = F.col(column) if isinstance(column, str) else column
    return col.cast("double")


def days_between(start: str | Column, end: str | Column) -> Column:
    """Fractional days from `start` to `end` (timestamps)."""
    return (_seconds(end) - _seconds(start)) / _SECONDS_PER_DAY


def add_prior_visits(admissions: DataFrame) -> DataFrame:
    """`prior_inpatient_visits` and `prior_emergency_visits` in the 365 days before each admit time."""
    prior_year = (Window.partitionBy("patient_id").orderBy(F.col("admit_time").cast("long"))
                  .rangeBetween(-PRIOR_DAYS * 86400, -1))
    emergency = (F.col("admission_type") == EMERGENCY_ADMISSION_TYPE).cast("long")
    return (admissions
            .withColumn("prior_inpatient_visits", F.count(F.lit(1)).over(prior_year).cast("long"))
            .withColumn("prior_emergency_visits",
                        F.coalesce(F.sum(emergency).over(prior_year), F.lit(0)).cast("long")))


def observed_until(admissions: DataFrame) -> Optional[pd.Timestamp]:
    """The latest admit or discharge time of all admissions: how far the data is observed."""
    last = admissions.agg(F.greatest(F.max("admit_time"), F.max("discharge_time")).alias("last")).collect()[0]
    return pd.Timestamp(last["last"]) if last["last"] is not None else None


def add_history_and_labels(admissions: DataFrame) -> DataFrame:
    """Canonical encounters: prior-year counts, then labels, eligibility, encounter order and days
    since the last discharge computed per patient by the shared pandas functions."""
    until = observed_until(admissions)
    partitions = int(admissions.sparkSession.conf.get("spark.sql.shuffle.partitions"))
    with_death = T.StructType(encounter_struct().fields + [T.StructField("death_date", T.DateType())])

    schema = encounter_struct()

    def complete(patients: pd.DataFrame) -> pa.Table:
        return arrow_table(fill_history(labels_from_dates(patients, until)), schema)
    return map_patients(conform(add_prior_visits(admissions), with_death), complete, schema, partitions)
