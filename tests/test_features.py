"""The shared feature function: patient history uses only earlier encounters; missing stays missing."""
import math

import numpy as np
import pandas as pd
import pytest

from core.features import (
    FEATURE_COLUMNS,
    NUMERIC_NAMES,
    OUTPUT_COLUMNS,
    add_patient_history,
    build_features,
    encounter_features,
    first_stay_features,
    sort_for_history,
)
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


# --- the first-stay path (no history to order or group) equals the history path -----------------

def history_path(encounters: pd.DataFrame) -> pd.DataFrame:
    """`build_features` without its first-stay shortcut: sort, group, then the row features."""
    return encounter_features(add_patient_history(sort_for_history(encounters)))


def assert_columns_equal(columns: dict, expected: pd.DataFrame) -> None:
    """`first_stay_features`' numpy columns equal the DataFrame's (same rows, same order)."""
    for name in FEATURE_COLUMNS:
        got, want = columns[name], expected[name].to_numpy()
        if name in NUMERIC_NAMES:
            np.testing.assert_array_equal(got, want.astype(np.float64), err_msg=name)
        else:
            assert got.tolist() == want.tolist(), name


def synthetic_rows(n: int, seed: int = 0) -> list[dict]:
    """Canonical records with the awkward cases: missing values, ICD-10, odd codes, dates before 1970,
    empty and missing medication lists, every disposition, given eligibility."""
    rng = np.random.default_rng(seed)
    codes9 = ["428.0", "4280", "250.4", "V45.81", "E879.0", "8", "196.1", "571.2", "042", "", "?", None]
    codes10 = ["I50.9", "E11.65", "C78.1", "K70.4", "B20", "Z99.2"]
    rows = []
    for i in range(n):
        version = int(rng.choice([9, 10]))
        pool = codes10 if version == 10 else codes9
        admit = pd.Timestamp("1965-03-01") + pd.Timedelta(days=int(rng.integers(0, 22000)), hours=int(rng.integers(24)))
        stay = int(rng.integers(0, 20))
        maybe = lambda value: None if rng.random() < 0.15 else value  # noqa: E731
        rows.append(encounter(
            f"S{i:05d}", str(i), admit=None, discharge=None,
            admit_time=maybe(admit), discharge_time=maybe(admit + pd.Timedelta(days=stay)),
            icd_version=maybe(version), diagnoses=maybe([pool[j] for j in rng.integers(0, len(pool), rng.integers(0, 6))]),
            age_years=maybe(float(rng.integers(0, 110))), age_band=maybe(str(rng.choice(["[60-70)", "[80-90)", "[0-10)"]))),
            sex=str(rng.choice(["Female", "Male"])), race=maybe(str(rng.choice(["Caucasian", "Asian", "Other"]))),
            discharge_disposition=str(rng.choice(["home", "snf_rehab", "expired", "hospice", "other"])),
            length_of_stay_days=maybe(float(stay)), num_lab_procedures=maybe(int(rng.integers(0, 120))),
            num_procedures=maybe(int(rng.integers(0, 7))), num_medications=maybe(int(rng.integers(0, 60))),
            number_diagnoses=maybe(int(rng.integers(0, 16))), prior_outpatient_visits=maybe(int(rng.poisson(1))),
            prior_emergency_visits=maybe(int(rng.poisson(0.5))), prior_inpatient_visits=maybe(int(rng.poisson(0.8))),
            medication_changes=maybe([str(m) for m in rng.choice(["insulin:up", "insulin:steady", "metformin:down",
                                                                   "glipizide:steady"], rng.integers(0, 3))]),
            diabetes_med=maybe(bool(rng.integers(2))), a1c_result=maybe(str(rng.choice([">7", ">8", "Norm"]))),
            payer=maybe(str(rng.choice(["MC", "BC", "SP"]))), admitting_specialty=maybe("Cardiology"),
            readmitted_30d=maybe(bool(rng.integers(2)))))
    return rows


def test_first_stays_equal_the_history_path_on_real_rows(diabetes_csv):
    raw = pd.read_csv(diabetes_csv, dtype=str, keep_default_na=False, nrows=5000)
    first = diabetes130.to_canonical(raw).drop_duplicates("patient_id").reset_index(drop=True)
    assert len(first) > 4000
    expected = history_path(first)
    pd.testing.assert_frame_equal(build_features(first), expected)
    by_input = expected.set_index("encounter_id", drop=False).loc[first["encounter_id"]]
    assert_columns_equal(first_stay_features(first.to_dict("records")), by_input)
    for start in range(0, 600, 20):  # small calls (the API's) take the dict path of `_factorized`
        chunk = first.iloc[start:start + 20]
        assert_columns_equal(first_stay_features(chunk.to_dict("records")),
                             by_input.iloc[start:start + 20])


def test_first_stays_equal_the_history_path_on_synthetic_rows():
    rows = synthetic_rows(3000)
    canonical = frame(rows)
    expected = history_path(canonical)
    pd.testing.assert_frame_equal(build_features(canonical), expected)
    by_input = expected.set_index("encounter_id", drop=False).loc[canonical["encounter_id"]]
    records = canonical.to_dict("records")
    for start in range(0, len(records), 7):
        assert_columns_equal(first_stay_features(records[start:start + 7]), by_input.iloc[start:start + 7])
    one = first_stay_features([{**rows[0], "discharge_time": rows[0]["discharge_time"] and
                                rows[0]["discharge_time"].to_pydatetime()}])  # the API sends datetimes
    assert_columns_equal(one, by_input.iloc[:1])


def test_small_and_large_calls_agree_with_history(diabetes_csv):
    """Values found once per distinct value by pandas (large calls) or by a dict (small calls) agree."""
    raw = pd.read_csv(diabetes_csv, dtype=str, keep_default_na=False, nrows=3000)
    canonical = diabetes130.to_canonical(raw)
    whole = build_features(canonical).set_index("encounter_id")
    patients = canonical["patient_id"].unique()
    for start in range(0, 400, 40):
        part = canonical[canonical["patient_id"].isin(patients[start:start + 40])]
        small = build_features(part).set_index("encounter_id")
        pd.testing.assert_frame_equal(small, whole.loc[small.index])
