"""MIMIC-IV hosp/ adapter on a hand-written fixture in the exact MIMIC-IV layout (invented values).

tests/fixtures/mimic4/hosp/ holds four patients:
- 1001: readmissions on calendar day 29 (true), 30 (true) and 31 (false, although only 30.56 days
  elapsed), then a last admission with an empty discharge_location whose window runs past the
  data (false); a mixed ICD-9/ICD-10 admission; labs, prescriptions and services on two stays.
- 1002: anchor_age 91 (de-identified, capped to 90); an elective readmission 10 days after
  discharge (planned: false), then an emergency one 16 days after that (true), then an
  in-hospital death (ineligible, null label) although dod is within 30 days of the second stay.
- 1003: died 15 days after discharge without readmission (ineligible 'died', null label).
- 1004: an ICD-10 admission discharged to hospice (ineligible 'hospice').
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from pyspark.testing import assertDataFrameEqual

from core.errors import UserError
from etl.sources import mimic4
from etl.spark_schema import encounter_struct

FIXTURE = Path(__file__).parent / "fixtures" / "mimic4"
HOURS = 1 / 24


def ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def encounter(**values) -> dict:
    row = {f.name: None for f in encounter_struct().fields}
    row.update(source="mimic4", **values)
    return row


def expected_rows() -> list[dict]:
    p1 = dict(patient_id="1001", age_years=60.0, age_band="[60-70)", sex="Female", payer="Medicare")
    p2 = dict(patient_id="1002", age_years=90.0, age_band="[90-100)", sex="Male", race="AfricanAmerican",
              payer="Medicare")
    return [
        encounter(**p1, encounter_id="20000001", admit_time=ts("2150-01-01 08:00"),
                  discharge_time=ts("2150-01-05 12:00"), encounter_seq=1, race="Caucasian",
                  admission_type="emergency", admission_source="emergency_room", discharge_disposition="home",
                  length_of_stay_days=4 + 4 * HOURS, diagnoses=["428.0", "250.00", "V45.81", "E879.0"],
                  icd_version=9, number_diagnoses=4, num_procedures=2, num_lab_procedures=4,
                  num_medications=3, diabetes_med=True, a1c_result=">8", glucose_result=">200",
                  prior_emergency_visits=0, prior_inpatient_visits=0, admitting_specialty="InternalMedicine",
                  readmitted_30d=True, eligible=True),
        encounter(**p1, encounter_id="20000002", admit_time=ts("2150-02-03 10:00"),
                  discharge_time=ts("2150-02-10 09:00"), encounter_seq=2, race="Caucasian",
                  admission_type="emergency", admission_source="emergency_room",
                  discharge_disposition="home_health", length_of_stay_days=6 + 23 * HOURS, diagnoses=["486"],
                  icd_version=9, number_diagnoses=1, num_procedures=0, num_lab_procedures=2,
                  num_medications=1, diabetes_med=False, a1c_result="Norm", glucose_result=">300",
                  prior_emergency_visits=1, prior_inpatient_visits=1, readmitted_30d=True, eligible=True,
                  days_since_last_discharge=28 + 22 * HOURS),
        encounter(**p1, encounter_id="20000003", admit_time=ts("2150-03-12 23:30"),
                  discharge_time=ts("2150-03-15 11:00"), encounter_seq=3, admission_type="urgent",
                  admission_source="transfer_hospital", discharge_disposition="snf_rehab",
                  length_of_stay_days=2 + 11.5 * HOURS, diagnoses=["401.9", "584.9"], icd_version=9,
                  number_diagnoses=2, num_procedures=0, prior_emergency_visits=2, prior_inpatient_visits=2,
                  readmitted_30d=False, eligible=True, days_since_last_discharge=30 + 14.5 * HOURS),
        encounter(**p1, encounter_id="20000004", admit_time=ts("2150-04-15 00:30"),
                  discharge_time=ts("2150-04-20 14:00"), encounter_seq=4, race="Caucasian",
                  admission_type="emergency", admission_source="emergency_room",
                  length_of_stay_days=5 + 13.5 * HOURS, diagnoses=["428.0", "I10"], icd_version=9,
                  number_diagnoses=2, num_procedures=0, prior_emergency_visits=2, prior_inpatient_visits=3,
                  readmitted_30d=False, eligible=True, days_since_last_discharge=30 + 13.5 * HOURS),
        encounter(**p2, encounter_id="20000011", admit_time=ts("2161-05-01 09:00"),
                  discharge_time=ts("2161-05-04 10:00"), encounter_seq=1, admission_type="emergency",
                  admission_source="emergency_room", discharge_disposition="home",
                  length_of_stay_days=3 + 1 * HOURS, diagnoses=["410.71"], icd_version=9, number_diagnoses=1,
                  num_procedures=0, prior_emergency_visits=0, prior_inpatient_visits=0,
                  readmitted_30d=False, eligible=True),
        encounter(**p2, encounter_id="20000012", admit_time=ts("2161-05-14 07:00"),
                  discharge_time=ts("2161-05-16 12:00"), encounter_seq=2, admission_type="elective",
                  admission_source="physician_referral", discharge_disposition="home",
                  length_of_stay_days=2 + 5 * HOURS, diagnoses=["V58.11"], icd_version=9, number_diagnoses=1,
                  num_procedures=0, prior_emergency_visits=1, prior_inpatient_visits=1,
                  readmitted_30d=True, eligible=True, days_since_last_discharge=9 + 21 * HOURS),
        encounter(**p2, encounter_id="20000013", admit_time=ts("2161-06-01 03:00"),
                  discharge_time=ts("2161-06-08 22:00"), encounter_seq=3, admission_type="emergency",
                  admission_source="emergency_room", discharge_disposition="expired",
                  length_of_stay_days=7 + 19 * HOURS, diagnoses=["038.9", "785.52"], icd_version=9,
                  number_diagnoses=2, num_procedures=1, prior_emergency_visits=1, prior_inpatient_visits=2,
                  readmitted_30d=None, eligible=False, ineligible_reason="died",
                  days_since_last_discharge=15 + 15 * HOURS),
        encounter(patient_id="1003", encounter_id="20000021", admit_time=ts("2170-03-01 14:00"),
                  discharge_time=ts("2170-03-05 16:00"), encounter_seq=1, age_years=45.0, age_band="[40-50)",
                  sex="Female", race="Hispanic", admission_type="urgent", admission_source="transfer_hospital",
                  discharge_disposition="snf_rehab", length_of_stay_days=4 + 2 * HOURS, diagnoses=["486"],
                  icd_version=9, number_diagnoses=1, num_procedures=0, prior_emergency_visits=0,
                  prior_inpatient_visits=0, payer="Medicaid", readmitted_30d=None, eligible=False,
                  ineligible_reason="died"),
        encounter(patient_id="1004", encounter_id="20000031", admit_time=ts("2180-02-01 12:00"),
                  discharge_time=ts("2180-02-03 12:00"), encounter_seq=1, age_years=70.0, age_band="[70-80)",
                  sex="Male", race="Asian", admission_type="emergency", admission_source="emergency_room",
                  discharge_disposition="hospice", length_of_stay_days=2.0,
                  diagnoses=["I50.9", "N18.3", "E11.9"], icd_version=10, number_diagnoses=3, num_procedures=0,
                  prior_emergency_visits=0, prior_inpatient_visits=0, payer="Other", readmitted_30d=None,
                  eligible=False, ineligible_reason="hospice"),
    ]


@pytest.fixture(scope="module")
def encounters(spark):
    return mimic4.read(spark, str(FIXTURE))


def test_fixture_gives_exactly_the_expected_encounters(spark, encounters):
    assert encounters.schema == encounter_struct()
    expected = spark.createDataFrame(expected_rows(), encounter_struct())
    assertDataFrameEqual(encounters, expected, atol=1e-6)


def test_labels_by_day_29_30_31(encounters):
    rows = encounters.select("encounter_id", "readmitted_30d").collect()
    labels = {r["encounter_id"]: r["readmitted_30d"] for r in rows}
    assert (labels["20000001"], labels["20000002"], labels["20000003"]) == (True, True, False)


def test_root_and_hosp_folder_resolve_to_the_same_tables():
    assert mimic4.hosp_folder(str(FIXTURE)) == FIXTURE / "hosp"
    assert mimic4.hosp_folder(str(FIXTURE / "hosp")) == FIXTURE / "hosp"


def test_optional_tables_absent_give_nulls_not_zeros(spark, tmp_path):
    for name in ("admissions", "patients", "diagnoses_icd"):
        (tmp_path / f"{name}.csv").write_text((FIXTURE / "hosp" / f"{name}.csv").read_text())
    row = mimic4.read(spark, str(tmp_path)).where("encounter_id = '20000001'").collect()[0]
    assert (row["num_procedures"], row["num_medications"], row["num_lab_procedures"],
            row["admitting_specialty"], row["readmitted_30d"]) == (None, None, None, None, True)


def test_missing_table_and_column_are_user_errors(spark, tmp_path):
    (tmp_path / "admissions.csv").write_text((FIXTURE / "hosp" / "admissions.csv").read_text())
    with pytest.raises(UserError, match="table 'patients' not found"):
        mimic4.read(spark, str(tmp_path))
    header, *rows = (FIXTURE / "hosp" / "admissions.csv").read_text().splitlines()
    (tmp_path / "admissions.csv").write_text(header.replace(",race,", ",") + "\n")
    with pytest.raises(UserError, match=r"admissions\.csv: missing required column 'race'"):
        mimic4.read(spark, str(tmp_path))
    (tmp_path / "admissions.csv").write_text(header.replace("insurance", "payer") + "\n")
    with pytest.raises(UserError, match=r"admissions\.csv: missing required column\(s\) 'insurance'"):
        mimic4.read(spark, str(tmp_path))
    (tmp_path / "admissions.csv").write_text(header + "\n")
    with pytest.raises(UserError, match="no admissions"):
        mimic4.read(spark, str(tmp_path))
