"""What MIMIC-III and MIMIC-IV share: category maps, per-admission aggregates, the final projection.

The two adapters only read their tables and name their columns; everything else is here, so the
two sources map values, count and label identically (see docs/sources.md for the tables).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from core.errors import UserError
from core.icd import normalize_code
from core.schema import AGE_BANDS
from etl.sources._admissions import add_history_and_labels, days_between
from etl.sources._csv import find_table, read_csv, require_table

# Raw values (upper-case, trimmed) -> canonical category. MIMIC-III and MIMIC-IV spellings together.
# A value missing from a map becomes "other"; values in UNKNOWN_VALUES become null.
ADMISSION_TYPES = {
    "EMERGENCY": "emergency", "EW EMER.": "emergency", "DIRECT EMER.": "emergency",
    "EU OBSERVATION": "emergency",
    "URGENT": "urgent",
    "ELECTIVE": "elective", "SURGICAL SAME DAY ADMISSION": "elective",
    "NEWBORN": "newborn",
    "AMBULATORY OBSERVATION": "other", "DIRECT OBSERVATION": "other", "OBSERVATION ADMIT": "other",
}
ADMISSION_SOURCES = {
    "EMERGENCY ROOM ADMIT": "emergency_room", "EMERGENCY ROOM": "emergency_room",
    "PHYS REFERRAL/NORMAL DELI": "physician_referral", "PHYSICIAN REFERRAL": "physician_referral",
    "HMO REFERRAL/SICK": "physician_referral",
    "CLINIC REFERRAL/PREMATURE": "clinic_referral", "CLINIC REFERRAL": "clinic_referral",
    "TRANSFER FROM HOSP/EXTRAM": "transfer_hospital", "TRANSFER FROM HOSPITAL": "transfer_hospital",
    "TRANSFER FROM SKILLED NUR": "transfer_facility", "TRANSFER FROM OTHER HEALT": "transfer_facility",
    "TRANSFER FROM SKILLED NURSING FACILITY": "transfer_facility",
}
DISCHARGE_DISPOSITIONS = {
    "DEAD/EXPIRED": "expired", "DIED": "expired",
    "HOSPICE-HOME": "hospice", "HOSPICE-MEDICAL FACILITY": "hospice", "HOSPICE": "hospice",
    "HOME": "home",
    "HOME HEALTH CARE": "home_health", "HOME WITH HOME IV PROVIDR": "home_health",
    "SNF": "snf_rehab", "SNF-MEDICAID ONLY CERTIF": "snf_rehab", "REHAB/DISTINCT PART HOSP": "snf_rehab",
    "LONG TERM CARE HOSPITAL": "snf_rehab", "ICF": "snf_rehab", "SKILLED NURSING FACILITY": "snf_rehab",
    "REHAB": "snf_rehab", "CHRONIC/LONG TERM ACUTE CARE": "snf_rehab",
    "SHORT TERM HOSPITAL": "transfer_hospital", "DISCH-TRAN TO PSYCH HOSP": "transfer_hospital",
    "DISC-TRAN CANCER/CHLDRN H": "transfer_hospital", "DISC-TRAN TO FEDERAL HC": "transfer_hospital",
    "ACUTE HOSPITAL": "transfer_hospital", "PSYCH FACILITY": "transfer_hospital",
    "LEFT AGAINST MEDICAL ADVI": "against_advice", "AGAINST ADVICE": "against_advice",
}
UNKNOWN_VALUES = ("", "** INFO NOT AVAILABLE **", "INFORMATION NOT AVAILABLE", "UNKNOWN",
                  "UNKNOWN/NOT SPECIFIED", "UNABLE TO OBTAIN", "PATIENT DECLINED TO ANSWER")
# Ethnicity / race by prefix, first match wins; anything else known is "Other".
RACE_PREFIXES = (("WHITE", "Caucasian"), ("PORTUGUESE", "Caucasian"),
                 ("BLACK", "AfricanAmerican"),
                 ("HISPANIC", "Hispanic"), ("SOUTH AMERICAN", "Hispanic"),
                 ("ASIAN", "Asian"))
SEX = {"F": "Female", "M": "Male"}
# SERVICES.curr_service -> Diabetes 130 style specialty names.
SPECIALTIES = {
    "MED": "InternalMedicine", "CMED": "Cardiology", "OMED": "Hematology/Oncology", "NMED": "Neurology",
    "SURG": "Surgery-General", "TRAUM": "Surgery-General", "CSURG": "Surgery-Cardiovascular/Thoracic",
    "TSURG": "Surgery-Cardiovascular/Thoracic", "VSURG": "Surgery-Vascular", "NSURG": "Surgery-Neuro",
    "PSURG": "Surgery-Plastic", "ORTHO": "Orthopedics", "GU": "Urology", "GYN": "ObstetricsandGynecology",
    "OBS": "ObstetricsandGynecology", "ENT": "Otolaryngology", "PSYCH": "Psychiatry",
    "NB": "Pediatrics-Neonatology", "NBB": "Pediatrics-Neonatology", "DENT": "Dentistry",
}
# Ages above 89 are shifted (MIMIC-III: about 300 at admission; MIMIC-IV: anchor_age 91): all
# such ages become AGE_CAP, which therefore means "90 or older".
AGE_CAP = 90.0
# Lab itemids (d_labitems, identical in MIMIC-III and MIMIC-IV): HbA1c and serum glucose.
A1C_ITEMID = 50852
GLUCOSE_ITEMID = 50931
DIABETES_DRUGS = ("insulin", "metformin", "glipizide", "glyburide", "glimepiride", "chlorpropamide",
                  "tolbutamide", "tolazamide", "acetohexamide", "repaglinide", "nateglinide",
                  "pioglitazone", "rosiglitazone", "troglitazone", "acarbose", "miglitol", "sitagliptin",
                  "saxagliptin", "linagliptin", "alogliptin", "exenatide", "liraglutide", "dulaglutide",
                  "semaglutide", "canagliflozin", "dapagliflozin", "empagliflozin", "pramlintide")


def clean(column: str) -> Column:
    """Upper-cased, trimmed text; null for blanks and 'unknown' placeholders."""
    value = F.upper(F.trim(F.col(column)))
    return F.when(~value.isin(*UNKNOWN_VALUES), value)


def mapped(column: str, mapping: dict[str, str], default: Optional[str] = "other") -> Column:
    """Map raw values through `mapping`; unlisted known values -> `default`, unknown -> null."""
    value = clean(column)
    lookup = F.create_map(*[F.lit(x) for pair in mapping.items() for x in pair])
    return F.when(value.isNotNull(), F.coalesce(lookup[value], F.lit(default)))


def race(column: str) -> Column:
    """Ethnicity / race text -> core.schema.RACE_VALUES (unknown -> null, unlisted -> Other)."""
    value = clean(column)
    out = F.lit("Other")
    for prefix, label in reversed(RACE_PREFIXES):
        out = F.when(value.startswith(prefix), F.lit(label)).otherwise(out)
    return F.when(value.isNotNull(), out)


def ident(column: str) -> Column:
    """Integer MIMIC id as a string ('142345', also from '142345.0')."""
    return F.col(column).cast("double").cast("long").cast("string")


def sex(column: str) -> Column:
    """'F' / 'M' -> Female / Male; anything else null."""
    return mapped(column, SEX, default=None)


def timestamp(column: str) -> Column:
    return F.to_timestamp(F.trim(F.col(column)))


def capped_age(age: Column) -> Column:
    """Age in years, de-identified ages above 89 set to AGE_CAP; negative -> null."""
    return F.when(age >= 0, F.least(age, F.lit(AGE_CAP))).cast("double")


def age_band(age: Column) -> Column:
    """'[60-70)' style band of a capped age."""
    low = (F.floor(age / 10) * 10).cast("int")
    band = F.concat(F.lit("["), low.cast("string"), F.lit("-"), (low + 10).cast("string"), F.lit(")"))
    return F.when(band.isin(*AGE_BANDS), band)


def _normalize_udf():
    @F.pandas_udf("string")
    def normalize(codes: pd.Series, versions: pd.Series) -> pd.Series:
        return pd.Series([normalize_code(c, int(v) if pd.notna(v) else 9) for c, v in zip(codes, versions)],
                         dtype="object")
    return normalize


def diagnosis_lists(diagnoses: DataFrame) -> DataFrame:
    """(encounter_id, seq_num, code, version) rows -> encounter_id, diagnoses (principal first),
    icd_version (of the principal code), number_diagnoses. Codes normalized per their own version."""
    normalize = _normalize_udf()
    rows = (diagnoses
            .withColumn("code", normalize(F.col("code"), F.col("version")))
            .where(F.col("code").isNotNull())
            .withColumn("seq", F.coalesce(F.col("seq_num").cast("double").cast("long"), F.lit(1 << 40))))
    ordered = F.array_sort(F.collect_list(F.struct("seq", "code", "version")))
    return (rows.groupBy("encounter_id").agg(ordered.alias("_dx"))
            .select("encounter_id",
                    F.transform("_dx", lambda d: d["code"]).alias("diagnoses"),
                    F.col("_dx")[0]["version"].cast("long").alias("icd_version"),
                    F.size("_dx").cast("long").alias("number_diagnoses")))


def procedure_counts(procedures: DataFrame) -> DataFrame:
    """encounter_id, num_procedures (ICD procedure rows of the stay)."""
    return procedures.groupBy("encounter_id").agg(F.count(F.lit(1)).cast("long").alias("num_procedures"))


def medication_summary(prescriptions: DataFrame) -> DataFrame:
    """encounter_id, num_medications (distinct drug names), diabetes_med (any diabetes drug)."""
    drug = F.lower(F.trim(F.col("drug")))
    pattern = r"\b(" + "|".join(DIABETES_DRUGS) + r")\b"
    return (prescriptions.where(drug.isNotNull() & (drug != ""))
            .groupBy("encounter_id")
            .agg(F.countDistinct(drug).cast("long").alias("num_medications"),
                 F.max(drug.rlike(pattern)).alias("diabetes_med")))


def lab_summary(labs: DataFrame) -> DataFrame:
    """encounter_id, num_lab_procedures, a1c_result (max HbA1c: >8, >7, Norm), glucose_result (max
    serum glucose: >300, >200, Norm), as in Strack et al. 2014; null when not measured."""
    value = F.col("valuenum").cast("double")
    itemid = F.col("itemid").cast("double").cast("long")
    summary = labs.groupBy("encounter_id").agg(
        F.count(F.lit(1)).cast("long").alias("num_lab_procedures"),
        F.max(F.when(itemid == A1C_ITEMID, value)).alias("_a1c"),
        F.max(F.when(itemid == GLUCOSE_ITEMID, value)).alias("_glucose"))
    a1c, glucose = F.col("_a1c"), F.col("_glucose")
    return summary.select(
        "encounter_id", "num_lab_procedures",
        F.when(a1c > 8, ">8").when(a1c > 7, ">7").when(a1c.isNotNull(), "Norm").alias("a1c_result"),
        F.when(glucose > 300, ">300").when(glucose > 200, ">200").when(glucose.isNotNull(), "Norm")
        .alias("glucose_result"))


def first_service(services: DataFrame) -> DataFrame:
    """encounter_id, admitting_specialty (first service of the stay, Diabetes 130 style names)."""
    order = Window.partitionBy("encounter_id").orderBy(timestamp("transfertime").asc_nulls_last())
    return (services.withColumn("_n", F.row_number().over(order)).where(F.col("_n") == 1)
            .select("encounter_id",
                    mapped("curr_service", SPECIALTIES, default="Other").alias("admitting_specialty")))


def admission_columns() -> list[Column]:
    """Admission columns named alike in MIMIC-III and MIMIC-IV, mapped to canonical ones."""
    return [timestamp("admittime").alias("admit_time"), timestamp("dischtime").alias("discharge_time"),
            mapped("admission_type", ADMISSION_TYPES).alias("admission_type"),
            mapped("admission_location", ADMISSION_SOURCES).alias("admission_source"),
            disposition("discharge_location", "hospital_expire_flag").alias("discharge_disposition"),
            F.when(clean("insurance").isNotNull(), F.trim("insurance")).alias("payer")]


def disposition(location: str, expire_flag: str) -> Column:
    """Canonical discharge disposition; hospital_expire_flag = 1 always means expired."""
    died = F.trim(F.col(expire_flag)) == "1"
    return F.when(died, F.lit("expired")).otherwise(mapped(location, DISCHARGE_DISPOSITIONS))


# (table name, required columns, per-admission summary of the table, required?)
Summary = tuple[str, tuple[str, ...], Callable[[DataFrame], DataFrame], bool]


def read_table(spark: SparkSession, folder: Path, name: str, columns: tuple[str, ...], source: str,
               optional: bool = False) -> Optional[DataFrame]:
    """A MIMIC table keyed by `encounter_id` (= hadm_id); rows without one dropped. None when an
    optional table is absent."""
    path = find_table(folder, name) if optional else require_table(folder, name, source)
    if path is None:
        return None
    df = read_csv(spark, path, columns)
    return df.withColumn("encounter_id", ident("hadm_id")).where(F.col("encounter_id").isNotNull())


def summaries(spark: SparkSession, folder: Path, source: str, tables: tuple[Summary, ...]) -> list[DataFrame]:
    """Per-admission summaries of the listed tables; a missing required table is a UserError."""
    parts = []
    for name, columns, summarize, required in tables:
        table = read_table(spark, folder, name, columns, source, optional=not required)
        if table is not None:
            parts.append(summarize(table))
    return parts


def require_rows(admissions: DataFrame, path) -> None:
    """UserError when the admissions table has no data rows."""
    if admissions.limit(1).count() == 0:
        raise UserError(f"{path}: no admissions (the file is empty or has only a header)")


def assemble(source: str, base: DataFrame, parts: list[DataFrame],
             zero_when_absent: tuple[str, ...] = ("num_procedures",)) -> DataFrame:
    """Join per-admission aggregates onto the admissions, derive history and labels, and project
    onto the canonical encounter. Columns in `zero_when_absent` are 0 for an admission that has
    no row in a table that was read (null when the table is absent); every other missing value
    stays null. Labels, eligibility and history: `etl.sources._admissions`."""
    out = base
    for part in parts:
        out = out.join(part, "encounter_id", "left")
    for column in zero_when_absent:
        if column in out.columns:
            out = out.withColumn(column, F.coalesce(F.col(column), F.lit(0).cast("long")))
    out = (out.withColumn("source", F.lit(source))
           .withColumn("length_of_stay_days", days_between("admit_time", "discharge_time"))
           .withColumn("age_band", age_band(F.col("age_years"))))
    return add_history_and_labels(out)

