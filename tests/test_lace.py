"""LACE points on hand-scored examples and the train-only probability map."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core import lace


def test_length_of_stay_points():
    days = [0, 0.5, 1, 2, 3, 4, 6, 7, 13, 14, 30, None]
    assert lace.length_of_stay_points(days).tolist() == [0, 0, 1, 2, 3, 4, 4, 5, 5, 7, 7, 0]


def test_acuity_points_with_emergency_room_fallback():
    types = ["emergency", "urgent", "elective", "trauma", None, None, "newborn"]
    sources = ["emergency_room", "physician_referral", "emergency_room", None, "emergency_room",
               "physician_referral", "birth"]
    # an elective admission through the ER stays elective: the fallback applies only when the type is missing
    assert lace.acuity_points(types, sources).tolist() == [3, 3, 0, 3, 3, 0, 0]


def test_comorbidity_and_ed_points():
    assert lace.comorbidity_points([0, 1, 2, 3, 4, 7, None]).tolist() == [0, 1, 2, 3, 5, 5, 0]
    assert lace.ed_points([0, 1, 3, 4, 9, None]).tolist() == [0, 1, 3, 4, 4, 0]


def test_lace_on_hand_scored_records():
    records = pd.DataFrame({
        # 5-day emergency stay, Charlson 2, one ED visit: 4 + 3 + 2 + 1 = 10
        # 1-day elective stay, Charlson 0, none: 1 + 0 + 0 + 0 = 1
        # 14-day urgent stay, Charlson 6, 12 ED visits: 7 + 3 + 5 + 4 = 19 (the maximum)
        "length_of_stay_days": [5.0, 1.0, 14.0],
        "admission_type": ["emergency", "elective", "urgent"],
        "admission_source": ["emergency_room", "physician_referral", "transfer_hospital"],
        "charlson_index": [2.0, 0.0, 6.0],
        "prior_emergency_visits": [1.0, 0.0, 12.0],
    })
    parts = lace.lace_components(records)
    assert parts[["L", "A", "C", "E"]].values.tolist() == [[4, 3, 2, 1], [1, 0, 0, 0], [7, 3, 5, 4]]
    assert lace.lace_score(records).tolist() == [10, 1, 19]


def test_lace_model_fits_increasing_probability_and_round_trips():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 20, size=5000)
    y = (rng.random(5000) < 1 / (1 + np.exp(-(-3 + 0.12 * scores)))).astype(int)
    model = lace.LaceModel.fit(scores, y)
    assert model.slope == pytest.approx(0.12, abs=0.04)
    probs = model.predict_proba(np.arange(20))
    assert np.all(np.diff(probs) > 0)
    assert lace.LaceModel.from_dict(model.to_dict()) == model
    # the logistic fit reproduces the training prevalence
    assert model.predict_proba(scores).mean() == pytest.approx(y.mean(), abs=1e-6)


def test_lace_model_refuses_one_class():
    with pytest.raises(ValueError):
        lace.LaceModel.fit([1, 2, 3], [0, 0, 0])
