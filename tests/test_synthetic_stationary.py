"""The synthetic window is stationary (steady volume, case mix and patient history from its first day, as
`core.features` derives them from the data), and scenario "drift" changes the data from `drift_start` on
and nothing before it."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core import synthetic
from core.features import build_features

END = synthetic.DEFAULT_END
START = pd.Timestamp(synthetic.window_start(END))
SHIFT = pd.Timestamp(synthetic.drift_start(END))


@pytest.fixture(scope="module")
def stable() -> pd.DataFrame:
    return with_history(synthetic.generate_chunk(0, 40_000, seed=4))


@pytest.fixture(scope="module")
def drifted() -> pd.DataFrame:
    return with_history(synthetic.generate_chunk(0, 40_000, seed=4, scenario="drift"))


def with_history(encounters: pd.DataFrame) -> pd.DataFrame:
    """Encounters with the history the model sees (core.features, from the data alone) and a month."""
    features = build_features(encounters).set_index("encounter_id")
    out = encounters.copy()
    out["prior_stay"] = features.loc[out["encounter_id"], "encounter_seq"].to_numpy() > 1
    out["days_since"] = features.loc[out["encounter_id"], "days_since_last_discharge"].to_numpy()
    out["month"] = out["discharge_time"].dt.to_period("M")
    return out


def full_months(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of the window's complete months."""
    inside = frame[(frame["discharge_time"] >= START) & (frame["discharge_time"] < pd.Timestamp(END))]
    months = inside["month"]
    return inside[(months > months.min()) & (months < months.max())]


def test_daily_volume_is_steady(stable):
    rows = full_months(stable)
    per_day = rows.groupby("month").size() / rows.groupby("month")["month"].first().map(lambda m: m.days_in_month)
    assert len(per_day) == 23
    assert per_day.std() / per_day.mean() < 0.06, per_day.round(1).to_dict()


def test_history_is_in_steady_state_from_the_first_day(stable):
    rows = full_months(stable)
    share = rows.groupby("month")["prior_stay"].mean()
    assert share.max() - share.min() < 0.07, share.round(3).to_dict()
    first_quarter, last_quarter = share.iloc[:3].mean(), share.iloc[-3:].mean()
    assert abs(first_quarter - last_quarter) < 0.025
    gaps = rows.groupby(rows["month"].dt.quarter.astype(str) + rows["month"].dt.year.astype(str))["days_since"].median()
    assert gaps.max() / gaps.min() < 1.3


def test_case_mix_is_steady(stable):
    rows = full_months(stable)
    by_month = rows.groupby("month").agg(age=("age_years", "mean"), diagnoses=("number_diagnoses", "mean"),
                                         emergency=("admission_type", lambda t: (t == "emergency").mean()))
    assert by_month["age"].max() - by_month["age"].min() < 2.0
    assert by_month["diagnoses"].max() - by_month["diagnoses"].min() < 0.5
    assert by_month["emergency"].max() - by_month["emergency"].min() < 0.08


def test_earlier_stays_are_the_history_of_window_patients(stable):
    before = stable["discharge_time"] < START
    assert 0 < before.mean() < 0.1
    in_window = stable.loc[before, "patient_id"].isin(set(stable.loc[~before, "patient_id"]))
    assert in_window.mean() > 0.9, "only a history cut at a block edge stops before the window"
    assert (stable["discharge_time"] < pd.Timestamp(END)).all()


def test_drift_changes_nothing_before_it_starts(stable, drifted):
    key = ["patient_id", "admit_time", "length_of_stay_days", "age_years", "admission_type", "number_diagnoses"]
    early = pd.Timestamp(SHIFT) - pd.Timedelta(days=1)
    a = stable.loc[stable["discharge_time"] < early, key]
    b = drifted.loc[drifted["discharge_time"] < early, key]
    shared = a.merge(b, on=key)
    # the same stays, but for a few pushed out of their block by the extra readmissions after the shift
    assert len(shared) >= 0.95 * max(len(a), len(b))
    for name in ("age_years", "number_diagnoses", "length_of_stay_days"):
        assert b[name].mean() == pytest.approx(a[name].mean(), rel=0.02), name


def test_drift_changes_case_mix_coding_and_risk_after_it_starts(stable, drifted):
    def after(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[frame["discharge_time"] >= SHIFT]

    s, d = after(stable), after(drifted)
    assert d["age_years"].mean() - s["age_years"].mean() > 2.0
    assert (d["admission_type"] == "emergency").mean() - (s["admission_type"] == "emergency").mean() > 0.1
    assert d["number_diagnoses"].mean() - s["number_diagnoses"].mean() > 2.5
    assert d["prior_emergency_visits"].mean() - s["prior_emergency_visits"].mean() > 0.5
    observed = [frame["readmitted_30d"].dropna().astype(float).mean() for frame in (s, d)]
    assert observed[1] - observed[0] > 0.02, observed


def test_an_unknown_scenario_is_refused(monkeypatch):
    with pytest.raises(ValueError, match="unknown scenario"):
        synthetic.generate_chunk(0, 10, seed=1, scenario="chaos")
    monkeypatch.setenv(synthetic.SCENARIO_VARIABLE, "drift")
    assert synthetic.scenario_or_default() == "drift"
    pd.testing.assert_frame_equal(synthetic.generate_chunk(0, 64, seed=1),
                                  synthetic.generate_chunk(0, 64, seed=1, scenario="drift"))


def test_chunks_of_the_drift_scenario_are_independent_of_chunking():
    whole = synthetic.generate_chunk(0, 700, seed=3, scenario="drift")
    parts = [synthetic.generate_chunk(lo, hi - lo, seed=3, scenario="drift") for lo, hi in ((0, 333), (333, 700))]
    pd.testing.assert_frame_equal(pd.concat(parts, ignore_index=True), whole)
    assert np.isfinite(whole["age_years"]).all()
