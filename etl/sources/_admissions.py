"""Date-derived patient history and 30-day labels for sources with real admission dates.

Input: one row per admission with `patient_id`, `encounter_id`, `admit_time`, `discharge_time`,
canonical `admission_type` and `discharge_disposition`, and `death_date` (date of death, null if
unknown). Output adds `encounter_seq`, `days_since_last_discharge`, `prior_inpatient_visits`,
`prior_emergency_visits`, `readmitted_30d`, `eligible`, `ineligible_reason`.

Rules (see docs/sources.md):
- Admissions of a patient are ordered by admit time, then numeric encounter id.
- `readmitted_30d` looks at the patient's *next* admission (CMS convention: when the first
  readmission is planned, later ones do not count for this stay). True when it starts 0..30
  calendar days after this discharge (day 30 counts, day 31 does not) and is not elective; false
  otherwise, including the patient's last admission, whose window may run past the end of the
  data (labelled from what is there). Unknown type of a next admission inside the window: null.
- Ineligible, label null: disposition expired (`died`) or hospice (`hospice`), as in
  `core.labels.apply_eligibility`; and a death 0..30 days after discharge without a 30-day
  readmission (`died`): the window was cut short, so "not readmitted" would be false certainty.
- `prior_*_visits`: the patient's admissions starting in the 365 days before this admit time
  (only what the source records), emergency ones counted apart.
- `days_since_last_discharge`: this admit minus the previous discharge, in fractional days; null
  for a first admission or when the stays overlap (as in `core.features.add_patient_history`).
"""
from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from core.labels import READMISSION_WINDOW_DAYS
from core.schema import INELIGIBLE_DISPOSITIONS

PLANNED_ADMISSION_TYPES = ("elective",)
EMERGENCY_ADMISSION_TYPE = "emergency"
PRIOR_DAYS = 365
_SECONDS_PER_DAY = 86400.0


def _seconds(column: str | Column) -> Column:
    col = F.col(column) if isinstance(column, str) else column
    return col.cast("double")


def days_between(start: str | Column, end: str | Column) -> Column:
    """Fractional days from `start` to `end` (timestamps)."""
    return (_seconds(end) - _seconds(start)) / _SECONDS_PER_DAY


def _patient_order() -> Window:
    return Window.partitionBy("patient_id").orderBy(
        F.col("admit_time").asc_nulls_last(), F.col("encounter_id").cast("long").asc_nulls_last(),
        F.col("encounter_id"))


def readmission_label(days_to_next: Column, next_type: Column, has_next: Column,
                      discharged: Column) -> Column:
    """True for a next non-elective admission 0..30 calendar days after discharge."""
    in_window = days_to_next.between(0, READMISSION_WINDOW_DAYS)
    return (F.when(~discharged, F.lit(None).cast("boolean"))
            .when(~has_next | ~in_window, F.lit(False))
            .when(next_type.isNull(), F.lit(None).cast("boolean"))
            .otherwise(~next_type.isin(*PLANNED_ADMISSION_TYPES)))


def ineligibility(disposition: Column, died_after_discharge: Column, label: Column) -> Column:
    """`died` / `hospice` reason, or null for an eligible admission."""
    reason = F.lit(None).cast("string")
    for value, why in INELIGIBLE_DISPOSITIONS.items():
        reason = F.when(disposition == value, F.lit(why)).otherwise(reason)
    return F.coalesce(reason, F.when(died_after_discharge & ~F.coalesce(label, F.lit(False)), F.lit("died")))


def add_history_and_labels(admissions: DataFrame) -> DataFrame:
    """Add encounter order, prior-year counts, days since last discharge, label and eligibility."""
    order = _patient_order()
    prior_year = (Window.partitionBy("patient_id").orderBy(F.col("admit_time").cast("long"))
                  .rangeBetween(-PRIOR_DAYS * 86400, -1))
    discharge_date = F.to_date("discharge_time")
    days_to_next = F.datediff(F.to_date(F.lead("admit_time").over(order)), discharge_date)
    gap = days_between(F.lag("discharge_time").over(order), F.col("admit_time"))
    died_after = F.coalesce(F.datediff("death_date", discharge_date)
                            .between(0, READMISSION_WINDOW_DAYS), F.lit(False))
    out = (admissions
           .withColumn("encounter_seq", F.row_number().over(order).cast("long"))
           .withColumn("days_since_last_discharge", F.when(gap >= 0, gap))
           .withColumn("prior_inpatient_visits", F.count(F.lit(1)).over(prior_year).cast("long"))
           .withColumn("prior_emergency_visits",
                       F.sum((F.col("admission_type") == EMERGENCY_ADMISSION_TYPE).cast("long"))
                       .over(prior_year))
           .withColumn("prior_emergency_visits", F.coalesce("prior_emergency_visits", F.lit(0)).cast("long"))
           .withColumn("_label", readmission_label(days_to_next, F.lead("admission_type").over(order),
                                                   F.lead("encounter_id").over(order).isNotNull(),
                                                   F.col("discharge_time").isNotNull()))
           .withColumn("ineligible_reason", ineligibility(F.col("discharge_disposition"), died_after,
                                                          F.col("_label")))
           .withColumn("eligible", F.col("ineligible_reason").isNull())
           .withColumn("readmitted_30d", F.when(F.col("eligible"), F.col("_label")))
           .drop("_label"))
    return out
