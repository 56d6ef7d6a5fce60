"""MIMIC-III adapter on the real open demo (../shared/data/mimic3_demo), checked against an
independent plain-pandas computation from the same CSVs, plus header, case, gzip and LABEVENTS
variants built in tmp_path (the demo files are never copied into the repository)."""
from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest
from pyspark.testing import assertDataFrameEqual

from core.errors import UserError
from etl.sources import mimic3
from etl.spark_schema import encounter_struct

TABLES = ("ADMISSIONS", "PATIENTS", "DIAGNOSES_ICD", "PROCEDURES_ICD", "PRESCRIPTIONS")


@pytest.fixture(scope="module")
def demo(spark, mimic3_dir):
    df = mimic3.read(spark, str(mimic3_dir))
    return df, df.toPandas().set_index("encounter_id")


def _days(a: pd.Timestamp, b: pd.Timestamp) -> int:
    return (b.normalize() - a.normalize()).days


def pandas_reference(folder: Path) -> pd.DataFrame:
    """Labels and history recomputed with plain pandas, admission by admission."""
    adm = pd.read_csv(folder / "ADMISSIONS.csv", parse_dates=["admittime", "dischtime"])
    observed_until = max(adm.admittime.max(), adm.dischtime.max())
    dod = pd.read_csv(folder / "PATIENTS.csv", parse_dates=["dod"]).set_index("subject_id")["dod"]
    dx = pd.read_csv(folder / "DIAGNOSES_ICD.csv", dtype={"icd9_code": str})
    px = pd.read_csv(folder / "PROCEDURES_ICD.csv")
    rx = pd.read_csv(folder / "PRESCRIPTIONS.csv")
    rows = []
    for subject, stays in adm.sort_values(["subject_id", "admittime", "hadm_id"]).groupby("subject_id"):
        stays = stays.reset_index(drop=True)
        for i, stay in stays.iterrows():
            after = stays.iloc[i + 1:]
            after = after[after.admittime.dt.normalize() >= stay.dischtime.normalize()]
            nxt = after.iloc[0] if len(after) else None
            prev = stays.iloc[i - 1] if i > 0 else None
            if nxt is not None:
                label = 0 <= _days(stay.dischtime, nxt.admittime) <= 30 and nxt.admission_type != "ELECTIVE"
            else:  # unmatured window at the end of the data: unknown, not false
                label = False if _days(stay.dischtime, observed_until) >= 30 else None
            death = dod.get(subject)
            reason = None
            if stay.hospital_expire_flag == 1 or stay.discharge_location == "DEAD/EXPIRED":
                reason = "died"
            elif str(stay.discharge_location).startswith("HOSPICE"):
                reason = "hospice"
            elif pd.notna(death) and 0 <= _days(stay.dischtime, death) <= 30 and not label:
                reason = "died"
            earlier = stays[(stays.admittime < stay.admittime)
                            & (stays.admittime >= stay.admittime - pd.Timedelta(days=365))]
            gap = (stay.admittime - prev.dischtime) / pd.Timedelta(days=1) if prev is not None else None
            drugs = rx.loc[rx.hadm_id == stay.hadm_id, "drug"].str.strip().str.lower()
            codes = dx[dx.hadm_id == stay.hadm_id].sort_values("seq_num").icd9_code.dropna()
            rows.append({
                "encounter_id": str(stay.hadm_id), "encounter_seq": i + 1,
                "readmitted_30d": None if reason else label, "eligible": reason is None,
                "ineligible_reason": reason,
                "prior_inpatient_visits": len(earlier),
                "prior_emergency_visits": int((earlier.admission_type == "EMERGENCY").sum()),
                "days_since_last_discharge": round(gap, 6) if gap is not None and gap >= 0 else None,
                "num_procedures": int((px.hadm_id == stay.hadm_id).sum()),
                "num_medications": drugs.nunique() if len(drugs) else None,
                "number_diagnoses": len(codes),
                "principal_raw": codes.iloc[0] if len(codes) else None,
            })
    return pd.DataFrame(rows).set_index("encounter_id")


def test_demo_headline_counts(demo):
    df, pdf = demo
    assert df.schema == encounter_struct()
    assert len(pdf) == 129 and pdf.index.is_unique and pdf.patient_id.nunique() == 100
    assert (pdf.source == "mimic3").all() and (pdf.icd_version == 9).all()
    labels = pdf.readmitted_30d.map({True: "true", False: "false", None: "null"}).value_counts().to_dict()
    assert labels == {"false": 68, "null": 50, "true": 11}  # before the one label rule: 69 false, 49 null
    assert pdf.ineligible_reason.value_counts().to_dict() == {"died": 48, "hospice": 1}
    unmatured = pdf.index[pdf.eligible & pdf.readmitted_30d.isna()].tolist()
    assert unmatured == ["153826"]  # discharged on the last day of the data: window not observed
    assert int((pdf.discharge_disposition == "expired").sum()) == 40
    assert int(pdf.days_since_last_discharge.notna().sum()) == 29 == int((pdf.encounter_seq > 1).sum())
    assert pdf.prior_outpatient_visits.isna().all() and pdf.medication_changes.isna().all()


def test_demo_matches_independent_pandas_computation(demo, mimic3_dir):
    _, pdf = demo
    ref = pandas_reference(mimic3_dir)
    assert sorted(ref.index) == sorted(pdf.index)
    got = pdf.loc[ref.index]
    for column in ("encounter_seq", "prior_inpatient_visits", "prior_emergency_visits", "num_procedures",
                   "number_diagnoses", "eligible"):
        assert got[column].astype("int64").tolist() == ref[column].astype("int64").tolist(), column
    for column in ("readmitted_30d", "ineligible_reason"):
        assert got[column].tolist() == ref[column].tolist(), column
    gaps = got.days_since_last_discharge.round(6)
    assert [None if pd.isna(v) else v for v in gaps] == [None if pd.isna(v) else v
                                                         for v in ref.days_since_last_discharge]
    meds = [None if pd.isna(v) else int(v) for v in got.num_medications]
    assert meds == [None if pd.isna(v) else int(v) for v in ref.num_medications]
    assert sum(m is None for m in meds) == 7  # admissions with no PRESCRIPTIONS row: unknown, not 0
    principal = [d[0].replace(".", "") for d in got.diagnoses]
    assert principal == ref.principal_raw.astype(str).tolist()


def test_demo_known_admission(demo):
    _, pdf = demo
    row = pdf.loc["142345"]  # subject 10006: first listed admission of the demo
    assert (row.patient_id, str(row.admit_time), str(row.discharge_time)) == (
        "10006", "2164-10-23 21:09:00", "2164-11-01 17:15:00")
    assert (row.age_years, row.age_band, row.sex, row.race) == (70.0, "[70-80)", "Female", "AfricanAmerican")
    assert (row.admission_type, row.admission_source, row.discharge_disposition) == (
        "emergency", "emergency_room", "home_health")
    assert row.payer == "Medicare" and row.admitting_specialty == "InternalMedicine"
    assert list(row.diagnoses[:3]) == ["995.91", "996.62", "567.2"] and row.number_diagnoses == 21
    assert row.length_of_stay_days == pytest.approx(8 + 20.1 / 24)  # 21:09 -> 17:15, 8 days later


def test_demo_ages_over_89_are_capped(demo, mimic3_dir):
    _, pdf = demo
    adm = pd.read_csv(mimic3_dir / "ADMISSIONS.csv", parse_dates=["admittime"])
    pat = pd.read_csv(mimic3_dir / "PATIENTS.csv")
    born = adm.merge(pat, on="subject_id").set_index(adm.hadm_id.astype(str))
    shifted = born[born.dob.str[:4].astype(int) < born.admittime.dt.year - 150].index
    assert len(shifted) == 9
    assert (pdf.loc[shifted, "age_years"] == 90.0).all()
    assert (pdf.loc[shifted, "age_band"] == "[90-100)").all()
    assert pdf.age_years.max() == 90.0 and (pdf.drop(shifted).age_years < 90).all()


def _write_gz(path: Path, text: str) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(text)


def test_lower_case_gz_files_upper_case_headers_and_labevents(spark, demo, mimic3_dir, tmp_path):
    for table in TABLES:
        header, rest = (mimic3_dir / f"{table}.csv").read_text().split("\n", 1)
        _write_gz(tmp_path / f"{table.lower()}.csv.gz", header.upper() + "\n" + rest)
    _write_gz(tmp_path / "LABEVENTS.csv.gz", "\n".join([  # invented values on real hadm_ids
        "ROW_ID,SUBJECT_ID,HADM_ID,ITEMID,CHARTTIME,VALUE,VALUENUM,VALUEUOM,FLAG",
        "1,10006,142345,50852,2164-10-24 06:00:00,9.1,9.1,%,abnormal",
        "2,10006,142345,50931,2164-10-24 06:00:00,150,150,mg/dL,abnormal",
        "3,10006,142345,50912,2164-10-24 06:00:00,1.0,1.0,mg/dL,",
        "4,10006,,50931,2164-12-01 06:00:00,90,90,mg/dL,",
        "5,10011,105331,50931,2126-08-15 06:00:00,199,199,mg/dL,abnormal",
    ]) + "\n")
    variant = mimic3.read(spark, str(tmp_path))
    labs = {r["encounter_id"]: (r["num_lab_procedures"], r["a1c_result"], r["glucose_result"])
            for r in variant.where("num_lab_procedures IS NOT NULL").collect()}
    assert labs == {"142345": (3, ">8", "Norm"), "105331": (1, None, "Norm")}
    lab_columns = ("num_lab_procedures", "a1c_result", "glucose_result", "admitting_specialty")
    assertDataFrameEqual(variant.drop(*lab_columns), demo[0].drop(*lab_columns))


def test_missing_table_and_column_are_user_errors(spark, mimic3_dir, tmp_path):
    (tmp_path / "ADMISSIONS.csv").write_text((mimic3_dir / "ADMISSIONS.csv").read_text())
    with pytest.raises(UserError, match="table 'PATIENTS' not found"):
        mimic3.read(spark, str(tmp_path))
    header = (mimic3_dir / "ADMISSIONS.csv").read_text().split("\n", 1)[0]
    (tmp_path / "ADMISSIONS.csv").write_text(header.replace(",ethnicity", "") + "\n")
    with pytest.raises(UserError, match=r"ADMISSIONS\.csv: missing required column\(s\) 'ethnicity'"):
        mimic3.read(spark, str(tmp_path))
    (tmp_path / "ADMISSIONS.csv").write_text(header + "\n")
    with pytest.raises(UserError, match="no admissions"):
        mimic3.read(spark, str(tmp_path))
    with pytest.raises(UserError, match="not a folder"):
        mimic3.read(spark, str(tmp_path / "nowhere"))
