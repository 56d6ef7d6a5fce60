"""The synthetic generator: determinism, chunking, date-consistent labels, fitted rates, privacy of the
profile, a learnable label, and the streaming template writer."""
from __future__ import annotations

import datetime as dt
import importlib.util
import json
import tracemalloc

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from core import synthetic
from core.features import build_features
from core.labels import READMISSION_WINDOW_DAYS, is_readmission
from core.schema import AGE_BANDS, COLUMNS, FIELDS_BY_NAME, LIST_SEPARATOR, EncounterIn, arrow_schema, template_columns
from core.synthetic_profile import READMISSION_TERMS
from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    return synthetic.generate_chunk(0, 30_000, seed=11)


@pytest.fixture(scope="module")
def fit_script():
    spec = importlib.util.spec_from_file_location("fit_synthetic_profile",
                                                  REPO_ROOT / "scripts" / "fit_synthetic_profile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- determinism and chunking ---------------------------------------------------------------------

def test_same_arguments_same_rows():
    pd.testing.assert_frame_equal(synthetic.generate_chunk(40, 300, 5), synthetic.generate_chunk(40, 300, 5))


def test_seed_changes_rows():
    a, b = synthetic.generate_chunk(0, 300, 5), synthetic.generate_chunk(0, 300, 6)
    assert (a["num_lab_procedures"] != b["num_lab_procedures"]).mean() > 0.5


def test_union_of_chunks_is_independent_of_chunking():
    whole = synthetic.generate_chunk(0, 1000, 3)
    bounds = [0, 1, 77, 320, 321, 640, 999, 1000]   # none of them on a block edge but 320 and 640
    parts = [synthetic.generate_chunk(lo, hi - lo, 3) for lo, hi in zip(bounds, bounds[1:])]
    pd.testing.assert_frame_equal(pd.concat(parts, ignore_index=True), whole)


def test_empty_chunk_has_the_canonical_columns():
    empty = synthetic.generate_chunk(123, 0, 1)
    assert len(empty) == 0 and tuple(empty.columns) == COLUMNS


def test_end_date_only_shifts_times():
    default = synthetic.generate_chunk(0, 500, 2)
    earlier = synthetic.generate_chunk(0, 500, 2, end=dt.date(2024, 1, 1))
    shift = pd.Timestamp(synthetic.DEFAULT_END) - pd.Timestamp("2024-01-01")
    pd.testing.assert_series_equal(earlier["admit_time"] + shift, default["admit_time"])
    others = [c for c in COLUMNS if c not in ("admit_time", "discharge_time")]
    pd.testing.assert_frame_equal(earlier[others], default[others])


# --- schema ---------------------------------------------------------------------------------------

def test_rows_fit_the_canonical_arrow_schema(sample):
    assert tuple(sample.columns) == COLUMNS
    table = pa.Table.from_pandas(sample.head(2000), schema=arrow_schema(), preserve_index=False)
    assert table.num_rows == 2000
    assert set(sample["source"]) == {"synthetic"}
    assert sample["encounter_id"].is_unique


def test_rows_pass_upload_validation(sample):
    rows = sample.head(500)[template_columns()]
    for record in rows.astype(object).where(rows.notna(), None).to_dict("records"):
        EncounterIn(**record)


def test_categories_are_canonical(sample):
    for name, spec in FIELDS_BY_NAME.items():
        if spec.allowed is not None and sample[name].dtype == object:
            assert set(sample[name].dropna()) <= set(spec.allowed), name


# --- patients, dates and labels -------------------------------------------------------------------

def test_patients_are_ordered_runs_of_consecutive_rows(sample):
    runs = (sample["patient_id"] != sample["patient_id"].shift()).cumsum()
    assert runs.groupby(sample["patient_id"]).nunique().max() == 1
    seq = sample.groupby("patient_id").cumcount() + 1
    assert (sample["encounter_seq"].to_numpy() == seq.to_numpy()).all()
    sizes = sample.groupby("patient_id").size()
    assert 1.2 < len(sample) / sizes.size < 1.8 and sizes.max() > 5


def test_stays_follow_each_other(sample):
    assert (sample["discharge_time"] > sample["admit_time"]).all()
    later = sample["encounter_seq"] > 1
    previous_discharge = sample["discharge_time"].shift()
    gap_days = (sample["admit_time"] - previous_discharge).dt.total_seconds() / 86400
    assert (gap_days[later] > 0).all()
    np.testing.assert_allclose(sample.loc[later, "days_since_last_discharge"], gap_days[later])
    assert sample.loc[~later, "days_since_last_discharge"].isna().all()
    calendar_days = (sample["discharge_time"].dt.normalize() - sample["admit_time"].dt.normalize()).dt.days
    assert (calendar_days == sample["length_of_stay_days"]).all()


def test_label_agrees_with_the_next_admission(sample):
    next_admit = sample["admit_time"].shift(-1)
    has_next = sample["patient_id"] == sample["patient_id"].shift(-1)
    float_gap = (next_admit - sample["discharge_time"]).dt.total_seconds() / 86400
    calendar_gap = (next_admit.dt.normalize() - sample["discharge_time"].dt.normalize()).dt.days
    rows = sample[has_next]
    assert rows["eligible"].all(), "death and hospice end a patient's history"
    expected = [is_readmission(g) for g in float_gap[has_next]]
    assert rows["readmitted_30d"].tolist() == expected
    assert rows["readmitted_30d"].tolist() == [is_readmission(g) for g in calendar_gap[has_next]]
    assert 0.05 < np.mean(expected) < 0.5
    readmissions = sample["readmitted_30d"].shift().eq(True) & sample["patient_id"].eq(sample["patient_id"].shift())
    assert readmissions.sum() > 100
    assert (sample.loc[readmissions, "admission_type"] != "elective").all(), "a readmission is unplanned"
    assert (sample.loc[~readmissions, "admission_type"] == "elective").mean() > 0.1


def test_recent_final_discharges_have_unknown_labels(sample):
    observed_until = pd.Timestamp(synthetic.DEFAULT_END) - pd.Timedelta(days=1)
    is_last = sample["patient_id"] != sample["patient_id"].shift(-1)
    days_ago = (observed_until - sample["discharge_time"].dt.normalize()).dt.days
    recent = is_last & (days_ago < READMISSION_WINDOW_DAYS)
    assert recent.sum() > 100
    assert sample.loc[recent, "readmitted_30d"].isna().all()
    # no readmission in the data and the whole window observed: not readmitted (core.labels)
    assert sample.loc[is_last & ~recent & sample["eligible"], "readmitted_30d"].eq(False).all()


def test_dates_lie_in_a_recent_window(sample):
    end = pd.Timestamp(synthetic.DEFAULT_END)
    assert sample["discharge_time"].max() < end
    assert (sample["discharge_time"] >= end - pd.Timedelta(days=28)).sum() > 300
    in_window = sample["admit_time"] >= end - pd.Timedelta(days=synthetic.WINDOW_DAYS + 1)
    assert in_window.mean() > 0.9


def test_ineligible_stays_end_a_history_and_have_no_label(sample):
    ineligible = ~sample["eligible"]
    assert set(sample.loc[ineligible, "discharge_disposition"]) == {"expired", "hospice"}
    assert sample.loc[ineligible, "readmitted_30d"].isna().all()
    is_last = sample["patient_id"] != sample["patient_id"].shift(-1)
    assert is_last[ineligible].all()


def test_age_matches_its_band(sample):
    low = sample["age_band"].str.extract(r"^\[(\d+)-")[0].astype(float)
    assert ((sample["age_years"] >= low) & (sample["age_years"] < low + 10)).all()
    by_patient = sample.groupby("patient_id")
    elapsed = (sample["admit_time"].dt.normalize() - by_patient["admit_time"].transform("min").dt.normalize()).dt.days
    expected = np.minimum(by_patient["age_years"].transform("first") + np.floor(elapsed / 365.25), 99)
    assert (sample["age_years"] == expected).all()
    assert (sample["age_years"] > by_patient["age_years"].transform("first")).any()


def test_features_see_the_same_history(sample):
    features = build_features(sample.head(3000)).set_index("encounter_id")
    rows = sample.head(3000).set_index("encounter_id")
    np.testing.assert_allclose(features.loc[rows.index, "days_since_last_discharge"],
                               rows["days_since_last_discharge"])
    assert (features.loc[rows.index, "encounter_seq"].to_numpy() == rows["encounter_seq"].to_numpy(float)).all()


# --- fitted rates and a learnable label -----------------------------------------------------------

def _shares(values: pd.Series) -> dict:
    return values.astype(object).where(values.notna(), None).value_counts(normalize=True, dropna=False).to_dict()


def _profile_shares(table: dict) -> dict:
    total = sum(table["counts"])
    return {level: n / total for level, n in zip(table["levels"], table["counts"])}


def test_marginal_rates_match_the_profile(sample):
    profile = synthetic.load_profile()
    rates = profile["rates"]
    # Every readmission drawn is a stay in the data (core.synthetic `_settled`), so the rate over all
    # stays with a known label is the fitted one.
    known = sample["readmitted_30d"].notna()
    assert sample.loc[known, "readmitted_30d"].astype(float).mean() == pytest.approx(rates["readmitted_30d"], abs=0.015)
    assert (~sample["eligible"]).mean() == pytest.approx(rates["ineligible"], abs=0.006)
    assert sample["patient_id"].nunique() / len(sample) == pytest.approx(rates["patients_per_encounter"], abs=0.03)
    for name in ("race", "sex", "age_band"):
        expected = _profile_shares(profile["categorical"][name])
        observed = _shares(sample[name])
        for level, share in expected.items():
            # ages drift upwards a little: a patient's later stays are at older ages
            assert observed.get(level, 0.0) == pytest.approx(share, abs=0.02), (name, level)


def test_diagnoses_are_icd9_codes_of_the_profile(sample):
    profile = synthetic.load_profile()
    known = {code for position in profile["codes"].values() for table in position.values() for code in table["levels"]}
    codes = {code for codes in sample["diagnoses"] for code in codes}
    assert codes <= known
    assert all(codes_[0] for codes_ in sample["diagnoses"])
    assert (sample["number_diagnoses"] >= sample["diagnoses"].map(len)).all()
    assert sample["diabetes_med"].tolist() == [bool(m) for m in sample["medication_changes"]]


def test_a_model_trained_on_synthetic_rows_ranks_other_synthetic_rows(sample):

    numeric = ["prior_inpatient_visits", "prior_emergency_visits", "length_of_stay_days", "num_medications",
               "number_diagnoses", "age_years_est", "encounter_seq", "diabetes_meds_changed"]
    categorical = ["discharge_disposition", "principal_group", "admission_source"]

    def labelled(encounters):
        features = build_features(encounters)
        features = features[features["eligible"] & features["readmitted_30d"].notna()]
        x = features[numeric + categorical].copy()
        x[numeric] = np.log1p(x[numeric].fillna(0))
        x[categorical] = x[categorical].fillna("missing")
        return x, features["readmitted_30d"].astype(bool)

    x_train, y_train = labelled(sample)
    x_test, y_test = labelled(synthetic.generate_chunk(0, 10_000, seed=12))
    model = make_pipeline(ColumnTransformer([("num", StandardScaler(), numeric),
                                             ("cat", OneHotEncoder(handle_unknown="ignore"), categorical)]),
                          LogisticRegression(max_iter=500)).fit(x_train, y_train)
    auroc = roc_auc_score(y_test, model.predict_proba(x_test)[:, 1])
    assert auroc > 0.6


# --- the profile: aggregates only -----------------------------------------------------------------

def _count_lists(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "counts":
                yield value
            else:
                yield from _count_lists(value)


def test_profile_has_no_small_cells():
    profile = synthetic.load_profile()
    cells = [n for counts in _count_lists(profile) for n in counts]
    assert len(cells) > 500
    assert min(cells) >= profile["min_cell"] == 20
    assert "encounter_id" not in json.dumps(profile) and "patient_nbr" not in json.dumps(profile)


def test_profile_model_matches_the_code():
    model = synthetic.load_profile()["readmission"]
    assert tuple(model["terms"]) == READMISSION_TERMS
    assert len(model["coefficients"]) == len(READMISSION_TERMS)
    assert dict(zip(model["terms"], model["coefficients"]))["log1p_prior_inpatient"] > 0.3


def test_rare_values_are_merged_into_bins_of_twenty(fit_script):
    table = fit_script.merged_bins([1] * 25 + [2] * 5 + [3] * 16 + [50])
    assert table == {"values": [1, 5], "counts": [25, 22]}  # (2*5 + 3*16 + 50) / 22 rounds to 5


def test_rare_codes_pool_into_their_category_or_vanish(fit_script):
    codes = ["428.0"] * 30 + ["250.01"] * 12 + ["250.83"] * 9 + ["V45.81"] * 19 + [None] * 40
    assert fit_script.code_table(codes) == {"levels": ["428.0", "250"], "counts": [30, 21]}


def test_rare_levels_are_dropped(fit_script):
    table = fit_script.level_table(["a"] * 20 + ["b"] * 19 + [None] * 25)
    assert table == {"levels": [None, "a"], "counts": [25, 20]}


def test_fitting_a_real_subset_keeps_only_aggregates(fit_script, diabetes_csv, tmp_path):
    raw = pd.read_csv(diabetes_csv, dtype=str, keep_default_na=False, nrows=4000)
    subset = tmp_path / "subset.csv"
    raw.to_csv(subset, index=False)
    output = tmp_path / "profile.json"
    assert fit_script.main(["--input", str(subset), "--output", str(output)]) == 0
    profile = json.loads(output.read_text())
    assert min(n for counts in _count_lists(profile) for n in counts) >= 20
    text = output.read_text()
    assert not any(f'"{value}"' in text for value in raw["patient_nbr"].head(200))


# --- the upload template --------------------------------------------------------------------------

def test_template_csv_round_trips(tmp_path):
    path = tmp_path / "discharges.csv"
    assert synthetic.write_template_csv(path, rows=2500, seed=4, chunk_rows=1000) == 2500
    text = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert list(text.columns) == template_columns() and len(text) == 2500
    rows = synthetic.generate_chunk(0, 2500, 4)
    assert text["encounter_id"].tolist() == rows["encounter_id"].tolist()
    assert [t.split(LIST_SEPARATOR) for t in text["diagnoses"]] == rows["diagnoses"].tolist()
    assert pd.to_datetime(text["admit_time"], format="%Y-%m-%dT%H:%M:%S").tolist() == rows["admit_time"].tolist()
    assert set(text["readmitted_30d"]) == {"true", "false", ""}
    assert set(text["diabetes_med"]) == {"true", "false"}
    assert text["age_years"].str.fullmatch(r"\d+").all()
    assert set(text["age_band"]) <= set(AGE_BANDS)


def _peak_bytes(path, rows: int) -> int:
    tracemalloc.start()
    try:
        synthetic.write_template_csv(path, rows=rows, seed=9, chunk_rows=500)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_template_writer_streams(tmp_path):
    small = _peak_bytes(tmp_path / "small.csv", 2_000)
    large = _peak_bytes(tmp_path / "large.csv", 20_000)   # ten times the rows, about the same peak
    assert large < 1.5 * small, (small, large)
    assert sum(1 for _ in open(tmp_path / "large.csv")) == 20_001
