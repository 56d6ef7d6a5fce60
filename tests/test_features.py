"""The shared feature function: patient history uses only earlier encounters; missing stays missing."""
import math

import pandas as pd
import pytest

from core.features import OUTPUT_COLUMNS, build_features
from core.labels import apply_eligibility
from core.schema import COLUMNS
from core.sources import diabetes130


def encounter(patient, encounter_id, admit=None, discharge=None, **values):
    row = {column: None for column in COLUMNS}
    row.update(patient_id=patient, encounter_id=encounter_id, source="discharges", sex="Female",
               age_band="[60-70)", discharge_disposition="home", diagnoses=["428.0", "250.4", "V45.81"],
               icd_version=9, length_of_stay_days=3.0, prior_outpatient_visits=0,
               prior_emergency_visits=1, prior_inpatient_visits=2, medication_changes=["insulin:up"],
               readmitted_30d=False, eligible=True,
               admit_time=pd.Timestamp(admit) if admit else None,
               discharge_time=pd.Timestamp(discharge) if discharge else None)
    row.update(values)
    return row


def frame(rows):
    return apply_eligibility(pd.DataFrame(rows))


def test_history_comes_from_earlier_encounters_only():
    rows = [encounter("A", "3", "2024-03-01", "2024-03-04"),
            encounter("A", "1", "2024-01-01", "2024-01-06", readmitted_30d=True),
            encounter("A", "2", "2024-02-01", "2024-02-03")]
    features = build_features(frame(rows)).set_index("encounter_id")
    assert features.loc[["1", "2", "3"], "encounter_seq"].tolist() == [1, 2, 3]
    assert features.loc[["1", "2", "3"], "prior_stays_los_days"].tolist() == [0, 3, 6]
    assert features.loc[["1", "2", "3"], "prior_readmissions_30d"].tolist() == [0, 1, 1]
    assert math.isnan(features.loc["1", "days_since_last_discharge"])
    assert features.loc["2", "days_since_last_discharge"] == pytest.approx(26.0)


def test_adding_a_later_encounter_changes_nothing_before_it():
    early = [encounter("A", "1", "2024-01-01", "2024-01-06"), encounter("A", "2", "2024-02-01", "2024-02-03")]
    later = early + [encounter("A", "3", "2024-03-01", "2024-03-04", readmitted_30d=True)]
    before = build_features(frame(early)).set_index("encounter_id")
    after = build_features(frame(later)).set_index("encounter_id").loc[before.index]
    pd.testing.assert_frame_equal(before, after)


def test_without_dates_encounter_ids_order_numerically():
    rows = [encounter("B", "100"), encounter("B", "99"), encounter("B", "1000")]
    features = build_features(frame(rows)).set_index("encounter_id")
    assert features.loc[["99", "100", "1000"], "encounter_seq"].tolist() == [1, 2, 3]


def test_missing_is_missing_not_zero():
    rows = [encounter("C", "1", prior_outpatient_visits=None, medication_changes=None, race=None)]
    features = build_features(frame(rows)).iloc[0]
    assert math.isnan(features["prior_visits_total"])
    assert math.isnan(features["diabetes_meds_given"])
    assert features["race"] is None
    assert features["prior_inpatient_visits"] == 2


def test_diagnosis_features_and_charlson():
    features = build_features(frame([encounter("D", "1")])).iloc[0]
    assert (features["dx_1"], features["dx_1_category"], features["dx_1_chapter"]) == ("428.0", "428", "circulatory")
    assert features["principal_group"] == "circulatory"
    assert features["cc_congestive_heart_failure"] == 1.0 and features["cc_diabetes_complicated"] == 1.0
    assert features["charlson_index"] == 3.0
    assert (features["insulin"], features["metformin"]) == ("up", "no")


def test_ineligible_rows_keep_features_and_lose_the_label():
    rows = [encounter("E", "1", discharge_disposition="expired", readmitted_30d=False)]
    features = build_features(frame(rows)).iloc[0]
    assert not bool(features["eligible"])
    assert features["readmitted_30d"] is None
    assert list(build_features(frame(rows)).columns) == list(OUTPUT_COLUMNS)


def test_real_file_slice(diabetes_csv):
    raw = pd.read_csv(diabetes_csv, dtype=str, keep_default_na=False, nrows=2000)
    features = build_features(diabetes130.to_canonical(raw))
    assert len(features) == 2000 and features["encounter_id"].is_unique
    assert set(features["readmitted_30d"].dropna().unique()) <= {True, False}
