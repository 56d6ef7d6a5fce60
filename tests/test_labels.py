"""The one 30-day label rule (`core.labels.labels_from_dates`) on hand-made patients, and the MIMIC
Spark path against the pandas discharges path on the same admissions."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.labels import READMISSION_WINDOW_DAYS, labels_from_dates
from core.sources.discharges import derive_labels
from etl.sources import _mimic as M
from etl.sources import mimic3, mimic4
from etl.sources._csv import read_csv, require_table

FAR = pd.Timestamp("2031-01-01")  # observed long after every hand-made stay
MIMIC4_FIXTURE = Path(__file__).parent / "fixtures" / "mimic4"


def stay(patient: str, encounter: str, admit: str, discharge: str | None, kind: str | None = "emergency",
         disposition: str | None = "home", **extra) -> dict:
    return {"patient_id": patient, "encounter_id": encounter, "admit_time": pd.Timestamp(admit),
            "discharge_time": pd.Timestamp(discharge) if discharge else pd.NaT, "admission_type": kind,
            "discharge_disposition": disposition, "readmitted_30d": None, **extra}


def labelled(*stays: dict, observed_until=FAR) -> pd.DataFrame:
    return labels_from_dates(pd.DataFrame(list(stays)), observed_until).set_index("encounter_id")


def labels(*stays: dict, observed_until=FAR) -> dict:
    return labelled(*stays, observed_until=observed_until)["readmitted_30d"].to_dict()


def test_day_30_counts_and_day_31_does_not_on_calendar_dates():
    got = labels(
        stay("p29", "a", "2030-01-01 08:00", "2030-01-05 12:00"), stay("p29", "b", "2030-02-03 08:00", "2030-02-05"),
        # day 30 although more than 30 x 24 hours elapsed
        stay("p30", "c", "2030-01-01 08:00", "2030-01-05 00:10"), stay("p30", "d", "2030-02-04 23:50", "2030-02-06"),
        # day 31 although fewer than 31 x 24 hours elapsed
        stay("p31", "e", "2030-01-01 08:00", "2030-01-05 23:00"), stay("p31", "f", "2030-02-05 00:30", "2030-02-07"),
        stay("p0", "g", "2030-01-01 08:00", "2030-01-05 12:00"), stay("p0", "h", "2030-01-05 18:00", "2030-01-07"))
    assert (got["a"], got["c"], got["e"], got["g"]) == (True, True, False, True)
    assert READMISSION_WINDOW_DAYS == 30


def test_only_the_next_admission_counts_and_a_planned_one_is_not_a_readmission():
    got = labels(stay("p", "a", "2030-01-01", "2030-01-03"),
                 stay("p", "b", "2030-01-10", "2030-01-11", kind="elective"),
                 stay("p", "c", "2030-01-20", "2030-01-22"))
    assert got == {"a": False, "b": True, "c": False}  # c: no readmission, window observed


def test_unknown_type_of_the_next_admission():
    got = labels(stay("p", "a", "2030-01-01", "2030-01-03"), stay("p", "b", "2030-01-10", "2030-01-11", kind=None),
                 stay("q", "c", "2030-01-01", "2030-01-03"), stay("q", "d", "2030-03-10", "2030-03-11", kind=None))
    assert (got["a"], got["c"]) == (None, False)  # inside the window: unknown; after day 30: not readmitted


def test_an_overlapping_stay_is_skipped_not_a_readmission():
    got = labels(stay("p", "a", "2030-01-01", "2030-01-10"), stay("p", "b", "2030-01-05", "2030-01-06"),
                 stay("p", "c", "2030-01-20", "2030-01-21"), stay("q", "d", "2030-01-01", "2030-01-10"),
                 stay("q", "e", "2030-01-05", "2030-01-06"))
    assert (got["a"], got["b"], got["d"], got["e"]) == (True, True, False, False)


def test_death_within_30_days_without_readmission_is_ineligible():
    out = labelled(stay("p", "a", "2030-01-01", "2030-01-05", death_date=pd.Timestamp("2030-01-15")),
                   stay("q", "b", "2030-01-01", "2030-01-05", death_date=pd.Timestamp("2030-01-15")),
                   stay("q", "c", "2030-01-10", "2030-01-12", disposition="expired",
                        death_date=pd.Timestamp("2030-01-15")),
                   stay("r", "d", "2030-01-01", "2030-01-05", death_date=pd.Timestamp("2030-02-05")),
                   stay("s", "e", "2030-01-01", "2030-01-05", death_date=pd.NaT))
    assert out.loc["a", ["readmitted_30d", "eligible", "ineligible_reason"]].tolist() == [None, False, "died"]
    assert out.loc["b", ["readmitted_30d", "eligible", "ineligible_reason"]].tolist() == [True, True, None]
    assert out.loc["c", "ineligible_reason"] == "died"
    assert out.loc["d", ["readmitted_30d", "eligible"]].tolist() == [False, True]  # day 31: outside the window
    assert out.loc["e", ["readmitted_30d", "eligible"]].tolist() == [False, True]


def test_death_time_column_and_a_planned_next_admission_before_death():
    out = labelled(stay("p", "a", "2030-01-01", "2030-01-05", death_time=pd.Timestamp("2030-01-25 13:00")),
                   stay("p", "b", "2030-01-10", "2030-01-11", kind="elective",
                        death_time=pd.Timestamp("2030-01-25 13:00")))
    assert out["ineligible_reason"].tolist() == ["died", "died"]
    assert out["readmitted_30d"].tolist() == [None, None]


def test_expired_and_hospice_dispositions_are_ineligible():
    out = labelled(stay("p", "a", "2030-01-01", "2030-01-05", disposition="hospice"),
                   stay("p", "b", "2030-01-10", "2030-01-12", disposition="expired"),
                   stay("q", "c", "2030-01-01", "2030-01-05", disposition=None))
    assert out["ineligible_reason"].tolist() == ["hospice", "died", None]
    assert out["eligible"].tolist() == [False, False, True]
    assert out["readmitted_30d"].tolist() == [None, None, False]


def test_an_unmatured_window_at_the_end_of_the_data_is_unknown():
    until = pd.Timestamp("2030-03-31 10:00")
    got = labels(stay("p", "a", "2030-02-20", "2030-03-01 23:00"), stay("q", "b", "2030-02-20", "2030-03-02 01:00"),
                 stay("r", "c", "2030-03-20", "2030-03-25"), stay("r", "d", "2030-03-29", "2030-03-30"),
                 stay("s", "e", "2030-01-01", None), observed_until=until)
    assert got == {"a": False, "b": None, "c": True, "d": None, "e": None}


def test_observed_until_defaults_to_the_latest_date_in_the_data():
    got = labels(stay("p", "a", "2030-01-01", "2030-01-05"), stay("q", "b", "2030-01-20", "2030-02-04"),
                 observed_until=None)
    assert got == {"a": False, "b": None}  # the data ends on 4 February: day 30 after 5 January is seen


def test_a_supplied_label_is_kept():
    got = labels({**stay("p", "a", "2030-01-01", "2030-01-05"), "readmitted_30d": True},
                 {**stay("q", "b", "2030-01-01", "2030-01-05"), "readmitted_30d": False},
                 stay("q", "c", "2030-01-10", "2030-01-11"),
                 {**stay("r", "d", "2030-01-01", "2030-01-05", disposition="expired"), "readmitted_30d": True})
    assert got == {"a": True, "b": False, "c": False, "d": None}


def test_patients_interleaved_and_unsorted_input():
    stays = [stay(p, f"{p}{k}", f"2030-{1 + k * months:02d}-{day:02d}", f"2030-{1 + k * months:02d}-{day + 2:02d}")
             for p, day, months in (("p", 1, 1), ("q", 3, 1), ("r", 10, 2)) for k in range(3)]
    frame = pd.DataFrame(stays)
    alone = pd.concat([labels_from_dates(frame[frame.patient_id == p], FAR) for p in ("p", "q", "r")])
    shuffled = frame.sample(frac=1, random_state=3)
    shuffled.index = shuffled.index * 10 + 7
    out = labels_from_dates(shuffled, FAR)
    assert out.index.tolist() == shuffled.index.tolist()
    assert out["encounter_id"].tolist() == shuffled["encounter_id"].tolist()
    assert (out.set_index("encounter_id")["readmitted_30d"].to_dict()
            == alone.set_index("encounter_id")["readmitted_30d"].to_dict()
            == {"p0": True, "p1": True, "p2": False, "q0": True, "q1": True, "q2": False,
                "r0": False, "r1": False, "r2": False})


def test_same_admit_time_ordered_by_numeric_encounter_id():
    got = labels(stay("p", "10", "2030-01-01 08:00", "2030-01-03 09:00"),
                 stay("p", "9", "2030-01-01 08:00", "2030-01-01 09:00"),
                 stay("p", "11", "2030-01-20 08:00", "2030-01-21 09:00", kind="elective"))
    assert got == {"9": True, "10": False, "11": False}  # 9 first: its next admission is 10 (same day)


def test_empty_input_gets_the_columns():
    empty = labels_from_dates(pd.DataFrame([stay("p", "a", "2030-01-01", "2030-01-02")]).iloc[:0])
    assert empty.empty and {"readmitted_30d", "eligible", "ineligible_reason"} <= set(empty.columns)


# --- the MIMIC Spark path and the pandas discharges path ----------------------------------------

def _label_triples(frame: pd.DataFrame) -> dict:
    rows = frame.astype(object).where(frame.notna(), None)
    return {r.encounter_id: (r.readmitted_30d, bool(r.eligible), r.ineligible_reason) for r in rows.itertuples()}


def _same_labels(encounters, admissions) -> dict:
    """Spark adapter output vs `derive_labels` on the adapter's admissions (with `death_date`)."""
    spark_side = _label_triples(encounters.select("encounter_id", "readmitted_30d", "eligible",
                                                  "ineligible_reason").toPandas())
    frame = admissions.toPandas()
    frame["readmitted_30d"] = None
    pandas_side = _label_triples(derive_labels(frame))
    assert spark_side == pandas_side
    return spark_side


@pytest.fixture
def tiny_arrow_batches(spark):
    """Patients cross Arrow batch borders in the per-patient pass."""
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "3")
    yield
    spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")


def test_mimic4_spark_labels_equal_the_pandas_discharges_labels(spark, tiny_arrow_batches):
    folder = mimic4.hosp_folder(str(MIMIC4_FIXTURE))
    admissions = mimic4._admissions(M.read_table(spark, folder, "admissions", mimic4.ADMISSION_COLUMNS, "mimic4"),
                                    read_csv(spark, require_table(folder, "patients", "mimic4"),
                                             mimic4.PATIENT_COLUMNS), "race")
    got = _same_labels(mimic4.read(spark, str(MIMIC4_FIXTURE)), admissions)
    assert got["20000011"] == (False, True, None)  # elective next admission
    assert got["20000021"] == (None, False, "died")  # died 15 days after discharge


def test_mimic3_demo_spark_labels_equal_the_pandas_discharges_labels(spark, mimic3_dir, tiny_arrow_batches):
    admissions = mimic3._admissions(M.read_table(spark, mimic3_dir, "ADMISSIONS", mimic3.ADMISSION_COLUMNS, "mimic3"),
                                    read_csv(spark, require_table(mimic3_dir, "PATIENTS", "mimic3"),
                                             mimic3.PATIENT_COLUMNS))
    got = _same_labels(mimic3.read(spark, str(mimic3_dir)), admissions)
    values = [label for label, _, _ in got.values()]
    assert (values.count(True), values.count(False), values.count(None)) == (11, 68, 50)
    assert np.mean([eligible for _, eligible, _ in got.values()]) == pytest.approx(80 / 129)
