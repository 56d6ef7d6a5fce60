"""Explanations: field groups, the exact reference, the fast estimators checked against it, reasons.

Models here are tiny randomly initialised transformers (the real model class): the checks are of the
estimators against exact Shapley values of the *same* model, not of clinical plausibility.
"""
from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest
import torch
from fixtures.tiny_model import tiny_setup

import serving.scoring as scoring
from core.encoding import encode
from core.features import CATEGORICAL_NAMES, CODE_FEATURES, NUMERIC_NAMES
from core.reasons import describe, sentence
from core.sources import diabetes130
from models.explain import (
    FIELD_GROUPS,
    GROUP_NAMES,
    ExplainerUnavailable,
    FieldGroup,
    TokenExplainer,
    _coalition_values,
    build_background,
    input_units,
    load_background,
    reference_shapley,
    sampled_shapley,
    save_background,
    unit_groups,
)
from serving.scoring import ScoringService

torch.set_num_threads(1)


def coarse_groups() -> tuple[FieldGroup, ...]:
    """Six themes (2^6 coalitions): small enough for exact enumeration in a test."""
    by_name = {g.name: g for g in FIELD_GROUPS}
    themes = {"demographics": ["age", "sex", "race", "payer"], "history": ["prior_visits", "earlier_stays"],
              "stay": ["admission", "admitting_specialty", "length_of_stay", "tests_procedures", "medications",
                       "discharge", "discharge_day"],
              "diabetes": ["diabetes_medications", "a1c", "glucose"], "comorbidities": ["comorbidities"],
              "diagnoses": ["dx_1", "dx_2", "dx_3"]}
    return tuple(FieldGroup(name, name, tuple(f for g in members for f in by_name[g].features))
                 for name, members in themes.items())


@pytest.fixture(scope="module")
def tiny(diabetes_csv):
    raw, canonical, features, prep, predictor = tiny_setup(diabetes_csv, nrows=3000, hidden=16, layers=1)
    batch = encode(features[features["eligible"]], prep)
    background = build_background(batch, k=8, seed=0)
    return {"features": features, "prep": prep, "predictor": predictor, "batch": batch, "background": background}


def test_every_feature_is_in_exactly_one_group():
    owner = unit_groups(FIELD_GROUPS)
    units = input_units()
    assert len(units) == len(NUMERIC_NAMES) + len(CATEGORICAL_NAMES) + len(CODE_FEATURES)
    assert set(owner) == set(range(len(FIELD_GROUPS)))
    assert 15 <= len(FIELD_GROUPS) <= 25
    charlson = FIELD_GROUPS[GROUP_NAMES.index("comorbidities")].features
    assert "charlson_index" in charlson and all(f in charlson for f in NUMERIC_NAMES if f.startswith("cc_"))
    with pytest.raises(ValueError, match="two explanation groups"):
        unit_groups(FIELD_GROUPS + (FieldGroup("again", "again", ("sex",)),))


def test_background_is_weighted_real_rows_and_round_trips(tiny, tmp_path):
    background = tiny["background"]
    assert len(background) == 8 and background.weights.sum() == pytest.approx(1.0)
    rows = {tuple(r) for r in tiny["batch"].categorical.tolist()}
    assert all(tuple(r) in rows for r in background.batch.categorical.tolist())
    save_background(tmp_path, background)
    back = load_background(tmp_path)
    np.testing.assert_array_equal(back.batch.numeric, background.batch.numeric)
    np.testing.assert_array_equal(back.batch.numeric_missing, background.batch.numeric_missing)
    np.testing.assert_array_equal(back.batch.codes, background.batch.codes)
    np.testing.assert_allclose(back.weights, background.weights)
    assert load_background(tmp_path / "nothing-here") is None


def test_token_site_is_found_and_every_group_has_tokens(tiny):
    explainer = TokenExplainer(tiny["predictor"].model, tiny["prep"], tiny["background"], tiny["predictor"].calibrate)
    assert explainer.site.module_name == "embeddings"
    token_group = explainer.site.token_group
    assert token_group[0] == -1  # [CLS] belongs to no field
    assert set(token_group[1:]) == set(range(len(FIELD_GROUPS)))


def test_exact_reference_matches_shap(tiny):
    shap = pytest.importorskip("shap")
    groups = coarse_groups()
    risk = tiny["predictor"].risk
    x = tiny["batch"].take(np.array([5]))
    ours, base = reference_shapley(risk, x, tiny["background"], groups=groups, exact=True)
    owner = unit_groups(groups)

    def value(masks):
        return _coalition_values(risk, x, tiny["background"], np.asarray(masks, dtype=bool), owner)

    explainer = shap.explainers.Exact(value, shap.maskers.Independent(np.zeros((1, len(groups))), max_samples=1))
    theirs = explainer(np.ones((1, len(groups)))).values[0]
    np.testing.assert_allclose(ours[0], theirs, atol=1e-9)
    assert base + ours[0].sum() == pytest.approx(risk(x)[0], abs=1e-6)  # float32, other batch shape


def _agreement(fast: np.ndarray, exact: np.ndarray) -> dict[str, float]:
    top1 = np.mean([np.argmax(np.abs(a)) == np.argmax(np.abs(b)) for a, b in zip(fast, exact)])
    top3 = np.mean([len(set(np.argsort(-np.abs(a))[:3]) & set(np.argsort(-np.abs(b))[:3])) / 3
                    for a, b in zip(fast, exact)])
    visible = np.abs(exact) > 0.01
    sign = float(np.mean(np.sign(fast[visible]) == np.sign(exact[visible]))) if visible.any() else 1.0
    return {"top1": float(top1), "top3": float(top3), "max_error": float(np.abs(fast - exact).max()), "sign": sign}


@pytest.fixture(scope="module")
def exact_coarse(tiny):
    rows = tiny["batch"].take(np.arange(0, 1200, 60))
    exact, base = reference_shapley(tiny["predictor"].risk, rows, tiny["background"], groups=coarse_groups(), exact=True)
    return rows, exact, base


def test_sampled_shapley_agrees_with_exact(tiny, exact_coarse):
    """The estimator behind single explanations and `--explain-method shapley`."""
    rows, exact, base = exact_coarse
    fast, fast_base = sampled_shapley(tiny["predictor"].risk, rows, tiny["background"], groups=coarse_groups(),
                                      n_samples=32)
    assert fast_base == pytest.approx(base, abs=1e-9)
    np.testing.assert_allclose(fast.sum(1), exact.sum(1), atol=1e-6)  # both sum to risk - base risk
    agreement = _agreement(fast, exact)
    print("sampled Shapley (32 samples) vs exact:", agreement)
    assert agreement["top1"] >= 0.8 and agreement["top3"] >= 0.8 and agreement["sign"] >= 0.9
    assert agreement["max_error"] <= 0.25 * np.abs(exact).max()


def test_gradient_explanations_are_additive_and_share_the_exact_base(tiny, exact_coarse):
    """The batch method's fidelity against Shapley values is measured (and printed) by
    benchmarks/scoring.py and reported in docs/scoring.md; here: its bookkeeping is exact."""
    rows, _, base = exact_coarse
    explainer = TokenExplainer(tiny["predictor"].model, tiny["prep"], tiny["background"], tiny["predictor"].calibrate,
                               groups=coarse_groups(),
                               raw_from_logits=tiny["predictor"].raw_probability_from_logits)
    fast, risk = explainer.explain(rows)
    assert explainer.base_risk == pytest.approx(base, abs=1e-6)
    np.testing.assert_allclose(fast.sum(1) + explainer.base_risk, risk, atol=1e-9)
    np.testing.assert_allclose(risk, tiny["predictor"].risk(rows), atol=1e-6)


def test_explain_one_is_fast_enough_and_additive(tiny, diabetes_csv):
    service = ScoringService.from_predictor(tiny["predictor"], background=tiny["background"])
    features = tiny["features"]
    raw = pd.read_csv(diabetes_csv, dtype=str, keep_default_na=False, nrows=5)
    canonical = diabetes130.to_canonical(raw).iloc[[1]]
    service.explain_one(canonical)  # warm-up
    started = time.perf_counter()
    result = service.explain_one(canonical)
    elapsed = time.perf_counter() - started
    print(f"one explanation: {elapsed:.3f} s")
    points = [g["points"] for g in result["groups"]]
    assert result["base_risk"] + sum(points) == pytest.approx(result["risk"], abs=1e-5)
    assert all(g["sentence"] for g in result["groups"])
    assert len(features) > 0


def test_reasons_use_the_rows_values_and_say_missing():
    row = {"prior_inpatient_visits": 3.0, "prior_emergency_visits": 1.0, "prior_outpatient_visits": 0.0,
           "discharge_disposition": "snf_rehab", "a1c_result": None, "glucose_result": ">300",
           "encounter_seq": 1.0, "age_band": "[70-80)", "dx_1": "428.0", "principal_group": "circulatory",
           "charlson_index": 3.0, "cc_congestive_heart_failure": 1.0, "cc_renal": 1.0, "number_diagnoses": 9.0,
           "length_of_stay_days": float("nan"), "diabetes_med": "yes", "insulin": "up", "diabetes_meds_given": 2.0,
           "diabetes_meds_changed": 1.0, "race": None}
    assert sentence("prior_visits", row, 0.04) == \
        "3 inpatient stays, 1 emergency visit and 0 outpatient visits in the past year (raises risk)"
    assert sentence("discharge", row, 0.02) == \
        "Discharged to a skilled nursing or rehabilitation facility (raises risk)"
    assert sentence("a1c", row, -0.01) == "HbA1c not measured (lowers risk)"
    assert describe("glucose", row) == "Serum glucose above 300 mg/dL"
    assert describe("earlier_stays", row) == "No earlier hospital stay on record"
    assert describe("age", row) == "Age 70-80"
    assert describe("dx_1", row) == "Main diagnosis 428.0 (circulatory)"
    assert describe("dx_2", row) == "Second diagnosis not recorded"
    assert describe("length_of_stay", row) == "Length of stay not recorded"
    assert describe("race", row) == "Race not recorded"
    assert describe("comorbidities", row) == \
        "Charlson comorbidity index 3 (congestive heart failure, renal); 9 diagnoses recorded"
    assert "insulin increased" in describe("diabetes_medications", row)
    for group in GROUP_NAMES:  # every group has words, even for an empty row
        assert describe(group, {})


def test_without_a_token_layer_explanations_fall_back_to_sampled_shapley(tiny, monkeypatch, diabetes_csv):

    def unavailable(*_args, **_kwargs):
        raise ExplainerUnavailable("no token layer")

    monkeypatch.setattr(scoring, "TokenExplainer", unavailable)
    service = ScoringService.from_predictor(tiny["predictor"], background=tiny["background"])
    assert service.explainer is None and service.explain_method == "shapley"
    canonical = diabetes130.to_canonical(pd.read_csv(diabetes_csv, dtype=str, keep_default_na=False, nrows=8))
    predictions = service.score_encounters(canonical)
    scored = predictions[predictions["risk"].notna()]
    assert scored["reason_1"].notna().all()
    for _, row in scored.iterrows():
        assert row["base_risk"] + sum(json.loads(row["attributions"]).values()) == pytest.approx(row["risk"], abs=1e-5)
