"""MIMIC-IV (v1.0-v3.x) `hosp` module: CSV / CSV.gz tables -> canonical encounters.

`path` is the MIMIC-IV root (holding hosp/) or the hosp/ folder itself. Reads admissions, patients
and diagnoses_icd (required), procedures_icd, prescriptions, labevents and services (when present).
Age = anchor_age + (year of admission - anchor_year). Diagnoses carry ICD-9 or ICD-10 per code;
`icd_version` is that of the principal code (see docs/sources.md for mixed admissions).
"""
from __future__ import annotations

from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from core.errors import UserError
from etl.sources import _mimic as M
from etl.sources._csv import read_csv, require_table

SOURCE = "mimic4"

ADMISSION_COLUMNS = ("subject_id", "hadm_id", "admittime", "dischtime", "admission_type",
                     "admission_location", "discharge_location", "insurance", "hospital_expire_flag")
RACE_COLUMNS = ("race", "ethnicity")  # `race` since v2.0, `ethnicity` in v1.0
PATIENT_COLUMNS = ("subject_id", "gender", "anchor_age", "anchor_year", "dod")
DIAGNOSIS_COLUMNS = ("hadm_id", "seq_num", "icd_code", "icd_version")


def _diagnoses(table: DataFrame) -> DataFrame:
    return M.diagnosis_lists(table.select("encounter_id", "seq_num", F.col("icd_code").alias("code"),
                                          F.col("icd_version").cast("double").cast("int").alias("version")))


# (table, required columns, per-admission summary, required?)
TABLES = (
    ("diagnoses_icd", DIAGNOSIS_COLUMNS, _diagnoses, True),
    ("procedures_icd", ("hadm_id",), M.procedure_counts, False),
    ("prescriptions", ("hadm_id", "drug"), M.medication_summary, False),
    ("labevents", ("hadm_id", "itemid", "valuenum"), M.lab_summary, False),
    ("services", ("hadm_id", "transfertime", "curr_service"), M.first_service, False),
)


def hosp_folder(path: str) -> Path:
    """The hosp/ folder of a MIMIC-IV root, or `path` itself when it holds the tables."""
    root = Path(path)
    if not root.is_dir():
        raise UserError(f"{path}: not a MIMIC-IV folder (expected the root holding hosp/, or hosp/ itself)")
    hosp = root / "hosp"
    return hosp if hosp.is_dir() else root


def _admissions(admissions: DataFrame, patients: DataFrame, race_column: str) -> DataFrame:
    """One row per admission with demographics, categories and the patient's date of death."""
    people = patients.select(M.ident("subject_id").alias("patient_id"), M.sex("gender").alias("sex"),
                             F.col("anchor_age").cast("double").alias("anchor_age"),
                             F.col("anchor_year").cast("double").cast("int").alias("anchor_year"),
                             F.to_date(M.timestamp("dod")).alias("death_date"))
    adm = admissions.select("encounter_id", M.ident("subject_id").alias("patient_id"),
                            *M.admission_columns(), M.race(race_column).alias("race"))
    joined = adm.join(people, "patient_id", "left")
    age = F.col("anchor_age") + (F.year("admit_time") - F.col("anchor_year"))
    return joined.withColumn("age_years", M.capped_age(age)).drop("anchor_age", "anchor_year")


def read(spark: SparkSession, path: str) -> DataFrame:
    """Canonical encounters (etl.spark_schema.encounter_struct) from a MIMIC-IV root or hosp/ folder."""
    folder = hosp_folder(path)
    admissions_file = require_table(folder, "admissions", SOURCE)
    admissions = M.read_table(spark, folder, "admissions", ADMISSION_COLUMNS, SOURCE)
    race_column = next((c for c in RACE_COLUMNS if c in admissions.columns), None)
    if race_column is None:
        raise UserError(f"{admissions_file}: missing required column 'race' ('ethnicity' in MIMIC-IV v1.0)")
    M.require_rows(admissions, admissions_file)
    patients = read_csv(spark, require_table(folder, "patients", SOURCE), PATIENT_COLUMNS)
    parts = M.summaries(spark, folder, SOURCE, TABLES)
    return M.assemble(SOURCE, _admissions(admissions, patients, race_column), parts)
