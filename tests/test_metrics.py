"""core.metrics against scikit-learn and hand-computed values on small arrays."""
from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from core import metric_report, metrics


@pytest.fixture(scope="module")
def sample():
    rng = np.random.default_rng(7)
    n = 400
    p = rng.beta(1.5, 8, size=n)
    p[:40] = np.round(p[:40], 2)  # some ties
    y = (rng.random(n) < np.clip(p * 1.4, 0, 1)).astype(int)
    patient = np.repeat(np.arange(160), [3] * 80 + [2] * 80)[:n]
    return y, p, patient


def test_auroc_auprc_brier_match_sklearn(sample):
    y, p, _ = sample
    assert metrics.auroc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert metrics.average_precision(y, p) == pytest.approx(average_precision_score(y, p), abs=1e-12)
    assert metrics.brier(y, p) == pytest.approx(brier_score_loss(y, p), abs=1e-12)


def test_auroc_with_heavy_ties_and_one_class():
    y = np.array([0, 0, 1, 1, 0, 1, 0, 1])
    p = np.array([0.1, 0.5, 0.5, 0.5, 0.2, 0.9, 0.9, 0.1])
    assert metrics.auroc(y, p) == pytest.approx(roc_auc_score(y, p))
    assert metrics.average_precision(y, p) == pytest.approx(average_precision_score(y, p))
    assert np.isnan(metrics.auroc([1, 1, 1], [0.2, 0.3, 0.4]))


def test_ece_hand_computed():
    # 20 rows, 10 equal-frequency bins of 2 rows each (sorted by p).
    p = np.array([0.05, 0.05, 0.1, 0.1, 0.2, 0.2, 0.3, 0.3, 0.4, 0.4,
                  0.5, 0.5, 0.6, 0.6, 0.7, 0.7, 0.8, 0.8, 0.9, 0.9])
    y = np.array([0, 0, 0, 1, 0, 0, 1, 0, 1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 1, 1])
    # per-bin |mean y - mean p| = .05,.4,.2,.2,.6,0,.4,.2,.2,.1  -> each weighted 2/20
    expected = (0.05 + 0.4 + 0.2 + 0.2 + 0.6 + 0.0 + 0.4 + 0.2 + 0.2 + 0.1) / 10
    assert metrics.ece(y, p) == pytest.approx(expected)
    curve = metrics.reliability_curve(y, p)
    assert [c["n"] for c in curve] == [2] * 10
    assert curve[1]["observed_rate"] == pytest.approx(0.5)
    assert curve[1]["mean_predicted"] == pytest.approx(0.1)


def test_ece_unequal_bin_sizes():
    p = np.linspace(0.01, 0.99, 25)
    y = (p > 0.5).astype(int)
    blocks = np.array_split(np.arange(25), 10)  # sizes 3,3,3,3,3,2,2,2,2,2
    expected = sum(len(b) / 25 * abs(y[b].mean() - p[b].mean()) for b in blocks)
    assert metrics.ece(y, p) == pytest.approx(expected)


def test_calibration_slope_intercept_match_unpenalized_sklearn(sample):
    y, p, _ = sample
    z = metrics.logit(p).reshape(-1, 1)
    reference = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(z, y)
    fit = metrics.calibration_fit(y, p)
    assert fit["calibration_slope"] == pytest.approx(reference.coef_[0, 0], abs=1e-4)
    assert fit["calibration_intercept"] == pytest.approx(reference.intercept_[0], abs=1e-4)


def test_perfectly_calibrated_probabilities_give_slope_one():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.02, 0.6, size=60_000)
    y = (rng.random(p.size) < p).astype(int)
    fit = metrics.calibration_fit(y, p)
    assert fit["calibration_slope"] == pytest.approx(1.0, abs=0.05)
    assert fit["calibration_in_the_large"] == pytest.approx(0.0, abs=0.03)
    assert metrics.ece(y, p) < 0.01


def test_threshold_metrics_match_sklearn(sample):
    y, p, _ = sample
    t = 0.2
    got = metrics.threshold_metrics(y, p, t)
    pred = (p >= t).astype(int)
    assert got["precision"] == pytest.approx(precision_score(y, pred))
    assert got["recall"] == pytest.approx(recall_score(y, pred))
    assert got["f1"] == pytest.approx(f1_score(y, pred))
    assert got["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert got["tp"] + got["fp"] + got["tn"] + got["fn"] == len(y)


def test_capacity_flags_top_fraction():
    p = np.array([0.9, 0.1, 0.8, 0.2, 0.7, 0.3, 0.6, 0.4, 0.5, 0.05])
    y = np.array([1, 0, 0, 0, 1, 0, 0, 1, 0, 0])
    top = metrics.capacity_metrics(y, p, 0.2)        # flags 0.9 and 0.8
    assert top["n_flagged"] == 2 and top["ppv"] == pytest.approx(0.5)
    assert top["sensitivity"] == pytest.approx(1 / 3)
    assert top["lift"] == pytest.approx(0.5 / 0.3)
    top = metrics.capacity_metrics(y, p, 0.05)       # ceil(0.5) = 1 flagged
    assert top["n_flagged"] == 1 and top["ppv"] == 1.0


def test_bootstrap_weights_keep_patients_together():
    patient = np.array(["a", "a", "b", "c", "c", "c"])
    for weights in metric_report.patient_bootstrap_weights(patient, n_boot=50, seed=1, chunk=20):
        assert np.all(weights[:, 0] == weights[:, 1])
        assert np.all(weights[:, 3] == weights[:, 4]) and np.all(weights[:, 4] == weights[:, 5])
        # three patients drawn per replicate
        assert np.all(weights[:, [0, 2, 3]].sum(axis=1) == 3)


def test_bootstrap_replicates_equal_weighted_sklearn(sample):
    y, p, patient = sample
    reps = metric_report.bootstrap_auroc(y, p, patient, n_boot=5, seed=3)
    weights = np.concatenate(list(metric_report.patient_bootstrap_weights(patient, 5, 3)))
    for r in range(5):
        assert reps[r] == pytest.approx(roc_auc_score(y, p, sample_weight=weights[r]), abs=1e-12)


def test_cluster_bootstrap_ignores_duplicated_rows_where_row_bootstrap_would_not(sample):
    y, p, patient = sample
    ci = metric_report.auroc_interval(y, p, patient, n_boot=300, seed=11)
    # Every encounter repeated 8 times within its patient: resampling patients is unchanged,
    # so the interval is identical; resampling rows would shrink it by about sqrt(8).
    y8, p8, patient8 = np.repeat(y, 8), np.repeat(p, 8), np.repeat(patient, 8)
    assert metric_report.auroc_interval(y8, p8, patient8, n_boot=300, seed=11) == pytest.approx(ci)
    rows_as_patients = metric_report.auroc_interval(y8, p8, np.arange(y8.size), n_boot=300, seed=11)
    assert (rows_as_patients[1] - rows_as_patients[0]) < 0.6 * (ci[1] - ci[0])
    assert ci[0] < metrics.auroc(y, p) < ci[1]


def test_auroc_difference_of_identical_models_is_zero(sample):
    y, p, patient = sample
    diff = metric_report.auroc_difference(y, p, p, patient, n_boot=100)
    assert diff["difference"] == 0 and diff["ci"] == [0.0, 0.0]


def test_fit_logistic_matches_sklearn(sample):
    y, p, _ = sample
    x = np.column_stack([p * 10, (p > 0.2).astype(float)])
    reference = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(x, y)
    beta = metrics.fit_logistic(x, y)
    assert beta[0] == pytest.approx(reference.intercept_[0], abs=1e-4)
    assert beta[1:] == pytest.approx(reference.coef_[0], abs=1e-4)


def test_evaluate_predictions_is_json_and_consistent(sample):
    y, p, patient = sample
    sex = np.where(np.arange(len(y)) % 2 == 0, "Female", "Male").astype(object)
    race = np.array(["Caucasian"] * (len(y) - 30) + [None] * 30, dtype=object)
    out = metric_report.evaluate_predictions(y, p, patient, {"sex": sex, "race": race},
                                       {"best_f1": 0.2, "top_10pct": {"threshold": 0.3}}, n_boot=200)
    json.dumps(out, allow_nan=False)
    assert out["overall"]["auroc"] == pytest.approx(roc_auc_score(y, p))
    assert out["overall"]["n"] == len(y) and out["overall"]["positives"] == int(y.sum())
    assert set(out["thresholds"]) == {"best_f1", "top_10pct"}
    assert set(out["capacity"]) == {"top_5pct", "top_10pct", "top_20pct"}
    sex_rows = {row["level"]: row for row in out["subgroups"]["sex"]}
    assert sex_rows["Female"]["n"] + sex_rows["Male"]["n"] == len(y)
    female = sex == "Female"
    assert sex_rows["Female"]["auroc"] == pytest.approx(roc_auc_score(y[female], p[female]))
    race_rows = {row["level"]: row for row in out["subgroups"]["race"]}
    assert race_rows["unknown"]["n"] == 30 and race_rows["unknown"]["small"] is True
    # subgroup capacity uses the global flags: flagged counts add up to the overall count
    assert sum(r["capacity"]["top_10pct"]["n_flagged"] for r in out["subgroups"]["sex"]) \
        == out["capacity"]["top_10pct"]["n_flagged"]
    assert len(out["reliability"]) == 10


def test_best_f1_cutoff_is_the_f1_maximizer(sample):
    y, p, _ = sample
    cutoff = metrics.best_f1_cutoff(y, p)
    best = f1_score(y, (p >= cutoff).astype(int))
    assert all(f1_score(y, (p >= t).astype(int)) <= best + 1e-12 for t in np.unique(p))
