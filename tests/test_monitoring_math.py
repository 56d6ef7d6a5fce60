"""core.monitoring against hand-computed examples and scipy / scikit-learn."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance
from sklearn.metrics import brier_score_loss, roc_auc_score

from core import monitoring as M


def test_psi_by_hand():
    # shares 0.5/0.5 -> 0.25/0.75: (0.25-0.5) ln(0.5) + (0.75-0.5) ln(1.5)
    expected = -0.25 * math.log(0.5) + 0.25 * math.log(1.5)
    assert M.psi_from_counts([50, 50], [25, 75]) == pytest.approx(expected)
    assert M.psi_from_counts([10, 20, 30], [10, 20, 30]) == pytest.approx(0.0)


def test_psi_empty_bin_is_finite():
    assert math.isfinite(M.psi_from_counts([100, 0], [50, 50]))


def test_jensen_shannon_matches_scipy():
    a, b = np.array([10, 20, 30, 0]), np.array([5, 25, 10, 10])
    assert M.jensen_shannon_distance(a, b) == pytest.approx(jensenshannon(a / a.sum(), b / b.sum(), base=2))


def test_wasserstein_in_reference_sds_matches_scipy():
    rng = np.random.default_rng(0)
    ref, cur = rng.normal(0, 2, 500), rng.normal(1, 2, 400)
    assert M.wasserstein_in_sd(ref, cur) == pytest.approx(wasserstein_distance(ref, cur) / ref.std(ddof=1))


def test_benjamini_hochberg_by_hand():
    # sorted p 0.01, 0.02, 0.03, 0.5 with m=4: 0.04, 0.04, 0.04, 0.5
    adjusted = M.benjamini_hochberg([0.03, 0.01, np.nan, 0.5, 0.02])
    assert adjusted[[1, 4, 0, 3]] == pytest.approx([0.04, 0.04, 0.04, 0.5])
    assert np.isnan(adjusted[2])


def test_feature_drift_finds_a_shift_and_not_noise():
    rng = np.random.default_rng(1)
    reference = rng.normal(60, 10, 5000)
    same = M.feature_drift(reference, rng.normal(60, 10, 1000), "numeric")
    moved = M.feature_drift(reference, rng.normal(70, 10, 1000), "numeric")
    assert same["psi"] < M.PSI_WATCH and same["p_value"] > 0.01
    assert moved["psi"] > M.PSI_ACT and moved["p_value"] < 1e-6
    levels = M.feature_drift(rng.choice(["a", "b", None], 3000), rng.choice(["a", "b", "c"], 800), "categorical")
    assert levels["psi"] > M.PSI_ACT and levels["n_current"] == 800


def test_drift_severity_needs_both_size_and_significance():
    assert M.drift_severity(0.3, 0.001) == "act"
    assert M.drift_severity(0.15, 0.001) == "watch"
    assert M.drift_severity(0.3, 0.2) is None
    assert M.drift_severity(0.05, 0.0) is None


def test_realised_performance_matches_sklearn():
    rng = np.random.default_rng(2)
    p = rng.uniform(0.02, 0.6, 3000)
    y = (rng.uniform(size=p.size) < p).astype(float)
    flagged = p >= np.quantile(p, 0.9)
    out = M.realised_performance(y, p, flagged)
    assert out["auroc"] == pytest.approx(roc_auc_score(y, p))
    assert out["brier"] == pytest.approx(brier_score_loss(y, p))
    assert out["ppv"] == pytest.approx(y[flagged].mean())
    assert out["sensitivity"] == pytest.approx(y[flagged].sum() / y.sum())
    assert abs(out["calibration_slope"] - 1) < 0.2


def test_expected_auroc_is_the_mean_of_realised_aurocs_when_calibrated():
    rng = np.random.default_rng(3)
    p = rng.beta(1.2, 8, 2000)
    realised = [roc_auc_score(rng.uniform(size=p.size) < p, p) for _ in range(200)]
    assert M.expected_auroc(p) == pytest.approx(np.mean(realised), abs=0.005)


def test_estimated_performance_of_the_call_list():
    p = np.array([0.5, 0.4, 0.1, 0.1])
    out = M.estimated_performance(p, flagged=[True, True, False, False])
    assert out["ppv"] == pytest.approx(0.45)
    assert out["sensitivity"] == pytest.approx(0.9 / 1.1)
    assert out["brier"] == pytest.approx(np.mean(p * (1 - p)))


def test_calibration_severity():
    assert M.calibration_severity(0.159, 0.112, 3000) == "act"
    assert M.calibration_severity(0.135, 0.112, 3000) == "watch"
    assert M.calibration_severity(0.115, 0.112, 3000) is None
    assert M.calibration_severity(0.20, 0.112, 20) is None      # too few to tell from chance


def _fair_frame(n=4000, seed=4, bias=1.0):
    rng = np.random.default_rng(seed)
    group = rng.choice(["A", "B"], n, p=[0.7, 0.3])
    p = rng.uniform(0.02, 0.5, n)
    y = (rng.uniform(size=n) < p).astype(float)
    score = np.where(group == "B", p * bias, p)
    flagged = score >= np.quantile(score, 0.8)
    return pd.DataFrame({"y": y, "p": p, "flagged": flagged, "group": group,
                         "patient": [f"P{i // 2}" for i in range(n)]})


def test_group_rates_by_hand():
    rates = M.group_rates([1, 0, 1, 0], [0.5, 0.5, 0.25, 0.25], [True, True, False, False])
    assert rates == {"selection_rate": 0.5, "sensitivity": 0.5, "ppv": 0.5, "observed_to_expected": pytest.approx(2 / 1.5)}


def test_fairness_fair_groups_are_not_flagged_and_a_biased_one_is():
    fair = _fair_frame()
    table = M.fairness_table(fair["y"], fair["p"], fair["flagged"], fair["group"], fair["patient"], n_boot=200)
    assert set(table["reference"]) == {"A"} and not table["flagged"].any()
    biased = _fair_frame(bias=0.4)
    table = M.fairness_table(biased["y"], biased["p"], biased["flagged"], biased["group"], biased["patient"])
    selection = table[(table["group"] == "B") & (table["metric"] == "selection_rate")].iloc[0]
    assert selection["flagged"] and selection["ratio"] < 0.8 and selection["ratio_high"] < 1


def test_fairness_small_cells_are_suppressed():
    frame = _fair_frame(n=2000)
    groups = frame["group"].where(frame.index >= 8, "tiny")
    table = M.fairness_table(frame["y"], frame["p"], frame["flagged"], groups, frame["patient"], n_boot=50)
    tiny = table[table["group"] == "tiny"]
    assert tiny["suppressed"].all() and tiny["value"].isna().all() and not tiny["flagged"].any()


def test_latency_summary_matches_numpy():
    latencies = np.arange(1, 101, dtype=float)
    out = M.latency_summary(latencies, errors=[i % 10 == 0 for i in range(100)])
    assert out["requests"] == 100 and out["error_rate"] == pytest.approx(0.1)
    assert out["p95_ms"] == pytest.approx(np.percentile(latencies, 95))
