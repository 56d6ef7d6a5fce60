"""MIMIC-III (v1.4, or its open demo): a folder of CSV / CSV.gz tables -> canonical encounters.

Reads ADMISSIONS, PATIENTS, DIAGNOSES_ICD, PROCEDURES_ICD, PRESCRIPTIONS (required) and LABEVENTS,
SERVICES (used when present). File and column names may be upper- or lower-case. One encounter
per admission (hadm_id); age from DOB at admission. Mappings, labels and exclusions:
docs/sources.md.
"""
from __future__ import annotations

from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from core.errors import UserError
from etl.sources import _mimic as M
from etl.sources._csv import read_csv, require_table

SOURCE = "mimic3"
ICD_VERSION = 9

ADMISSION_COLUMNS = ("subject_id", "hadm_id", "admittime", "dischtime", "admission_type",
                     "admission_location", "discharge_location", "insurance", "ethnicity",
                     "hospital_expire_flag")
PATIENT_COLUMNS = ("subject_id", "gender", "dob", "dod")
DIAGNOSIS_COLUMNS = ("hadm_id", "seq_num", "icd9_code")


def _diagnoses(table: DataFrame) -> DataFrame:
    return M.diagnosis_lists(table.select("encounter_id", "seq_num", F.col("icd9_code").alias("code"),
                                          F.lit(ICD_VERSION).alias("version")))


# (table, required columns, per-admission summary, required?)
TABLES = (
    ("DIAGNOSES_ICD", DIAGNOSIS_COLUMNS, _diagnoses, True),
    ("PROCEDURES_ICD", ("hadm_id",), M.procedure_counts, True),
    ("PRESCRIPTIONS", ("hadm_id", "drug"), M.medication_summary, True),
    ("LABEVENTS", ("hadm_id", "itemid", "valuenum"), M.lab_summary, False),
    ("SERVICES", ("hadm_id", "transfertime", "curr_service"), M.first_service, False),
)


def _admissions(admissions: DataFrame, patients: DataFrame) -> DataFrame:
    """One row per admission with demographics, categories and the patient's date of death."""
    people = patients.select(M.ident("subject_id").alias("patient_id"), M.sex("gender").alias("sex"),
                             M.timestamp("dob").alias("dob"),
                             F.to_date(M.timestamp("dod")).alias("death_date"))
    adm = admissions.select("encounter_id", M.ident("subject_id").alias("patient_id"),
                            *M.admission_columns(), M.race("ethnicity").alias("race"))
    joined = adm.join(people, "patient_id", "left")
    age = F.floor(F.months_between("admit_time", "dob") / 12)
    return joined.withColumn("age_years", M.capped_age(age)).drop("dob")


def read(spark: SparkSession, path: str) -> DataFrame:
    """Canonical encounters (etl.spark_schema.encounter_struct) from a MIMIC-III folder."""
    folder = Path(path)
    if not folder.is_dir():
        raise UserError(f"{path}: not a folder of MIMIC-III tables")
    admissions = M.read_table(spark, folder, "ADMISSIONS", ADMISSION_COLUMNS, SOURCE)
    M.require_rows(admissions, require_table(folder, "ADMISSIONS", SOURCE))
    patients = read_csv(spark, require_table(folder, "PATIENTS", SOURCE), PATIENT_COLUMNS)
    parts = M.summaries(spark, folder, SOURCE, TABLES)
    return M.assemble(SOURCE, _admissions(admissions, patients), parts)
