"""Explanations: field groups, the exact reference, the two-sided Shapley values checked against it.

Models here are tiny randomly initialised transformers (the real model class) or hand-made functions
with known Shapley values: the checks are of the method against exact Shapley values of the *same*
function, not of clinical plausibility. Fidelity on the champion is measured by benchmarks/scoring.py.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from fixtures.tiny_model import tiny_setup

from core.encoding import encode
from core.features import CATEGORICAL_NAMES, CODE_FEATURES, NUMERIC_NAMES
from models.explain import (
    FIELD_GROUPS,
    GROUP_NAMES,
    FieldGroup,
    evaluate,
    group_values,
    input_units,
    two_sided_shapley,
    unit_groups,
)
from models.explain_background import build_background, load_background, save_background
from models.explain_reference import coalition_values, reference_shapley
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
    return {"canonical": canonical, "features": features, "prep": prep, "predictor": predictor, "batch": batch,
            "background": background, "background_risk": evaluate(predictor.risk, background.batch)}


def explain(tiny, rows, groups=FIELD_GROUPS, risk_fn=None, **kwargs):
    risk_fn = risk_fn or tiny["predictor"].risk
    return two_sided_shapley(risk_fn, rows, evaluate(risk_fn, rows), tiny["background"],
                             evaluate(risk_fn, tiny["background"].batch), groups=groups, **kwargs)


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


def test_exact_reference_matches_shap(tiny):
    shap = pytest.importorskip("shap")
    groups = coarse_groups()
    risk = tiny["predictor"].risk
    x = tiny["batch"].take(np.array([5]))
    ours, base = reference_shapley(risk, x, tiny["background"], groups=groups, exact=True)
    owner = unit_groups(groups)

    def value(masks):
        return coalition_values(risk, x, tiny["background"], np.asarray(masks, dtype=bool), owner)

    explainer = shap.explainers.Exact(value, shap.maskers.Independent(np.zeros((1, len(groups))), max_samples=1))
    theirs = explainer(np.ones((1, len(groups)))).values[0]
    np.testing.assert_allclose(ours[0], theirs, atol=1e-9)
    assert base + ours[0].sum() == pytest.approx(risk(x)[0], abs=1e-6)  # float32, other batch shape


def _agreement(fast: np.ndarray, exact: np.ndarray) -> dict[str, float]:
    top1 = np.mean([np.argmax(np.abs(a)) == np.argmax(np.abs(b)) for a, b in zip(fast, exact)])
    top3 = np.mean([len(set(np.argsort(-np.abs(a))[:3]) & set(np.argsort(-np.abs(b))[:3])) / 3
                    for a, b in zip(fast, exact)])
    return {"top1": float(top1), "top3": float(top3), "max_error": float(np.abs(fast - exact).max())}


@pytest.fixture(scope="module")
def exact_coarse(tiny):
    rows = tiny["batch"].take(np.arange(0, 1200, 60))
    exact, base = reference_shapley(tiny["predictor"].risk, rows, tiny["background"], groups=coarse_groups(), exact=True)
    return rows, exact, base


def test_sampled_reference_converges_to_the_exact_values(tiny, exact_coarse):
    """The benchmark's reference for 20 groups (too many to enumerate) is the same quantity, sampled."""
    rows, exact, base = exact_coarse
    sampled, sampled_base = reference_shapley(tiny["predictor"].risk, rows, tiny["background"],
                                              groups=coarse_groups(), exact=False, pairs=16)
    assert sampled_base == pytest.approx(base, abs=1e-9)
    np.testing.assert_allclose(sampled.sum(1), exact.sum(1), atol=1e-6)
    assert np.abs(sampled - exact).max() <= 0.05 * np.abs(exact).max()


def pairwise_game(groups, seed=0):
    """A function of the encoded row with only main effects and interactions of two groups, whose Shapley
    values the two-sided method must reproduce exactly."""
    owner = unit_groups(groups)
    rng = np.random.default_rng(seed)
    main = rng.normal(size=len(groups))
    pairs = np.triu(rng.normal(size=(len(groups), len(groups))), 1)

    def risk(batch):
        h = np.column_stack([np.tanh(group_values(batch, owner, g).sum(1) / 50) for g in range(len(groups))])
        return h @ main + np.einsum("ng,gh,nh->n", h, pairs, h)
    return risk


def test_two_sided_shapley_is_exact_where_groups_interact_in_pairs(tiny):
    groups = coarse_groups()
    game = pairwise_game(groups)
    rows = tiny["batch"].take(np.arange(0, 600, 40))
    exact, base = reference_shapley(game, rows, tiny["background"], groups=groups, exact=True)
    every, every_base = explain(tiny, rows, groups, risk_fn=game, refined=len(groups))
    assert every_base == pytest.approx(base, abs=1e-12)
    np.testing.assert_allclose(every, exact, atol=1e-10)
    some, _ = explain(tiny, rows, groups, risk_fn=game, refined=2)  # the others keep their added effect
    np.testing.assert_allclose(some.sum(1) + base, game(rows), atol=1e-10)


def test_two_sided_shapley_agrees_with_exact_values_of_the_transformer(tiny, exact_coarse):
    rows, exact, base = exact_coarse
    ours, our_base = explain(tiny, rows, coarse_groups(), refined=3)
    assert our_base == pytest.approx(base, abs=1e-9)
    agreement = _agreement(ours, exact)
    assert agreement["top1"] >= 0.9 and agreement["top3"] >= 0.85, agreement
    assert agreement["max_error"] <= 0.2 * np.abs(exact).max(), agreement


def test_explanations_are_additive(tiny):
    rows = tiny["batch"].take(np.arange(0, 2000, 10))
    risk = evaluate(tiny["predictor"].risk, rows)
    attributions, base = explain(tiny, rows)
    assert attributions.shape == (len(rows), len(FIELD_GROUPS))
    np.testing.assert_allclose(base + attributions.sum(1), risk, atol=1e-12)
    assert base == pytest.approx(float(tiny["background_risk"] @ tiny["background"].weights), abs=0)


def test_an_encounter_gets_the_same_numbers_in_any_batch(tiny):
    """No random numbers and nothing shared between rows: alone, in a batch, shuffled: bit for bit."""
    rows = tiny["batch"].take(np.arange(0, 900, 9))
    together, _ = explain(tiny, rows)
    order = np.random.default_rng(1).permutation(len(rows))
    shuffled, _ = explain(tiny, rows.take(order))
    np.testing.assert_array_equal(shuffled, together[order])
    for i in (0, 17, 99):
        alone, _ = explain(tiny, rows.take(np.array([i])))
        np.testing.assert_array_equal(alone[0], together[i])


def test_scoring_stores_additive_attributions_and_explain_one_repeats_them(tiny):
    service = ScoringService.from_predictor(tiny["predictor"], background=tiny["background"])
    canonical = tiny["canonical"].head(40)
    predictions = service.score_encounters(canonical)
    scored = predictions[predictions["risk"].notna()]
    assert len(scored) > 30 and scored["reason_1"].notna().all()
    for _, row in scored.iterrows():
        assert row["base_risk"] + sum(json.loads(row["attributions"]).values()) == pytest.approx(row["risk"], abs=5e-6)
    last = scored.index[-1]
    one = service.explain_one(canonical.iloc[: last + 1])
    assert one["risk"] == predictions.at[last, "risk"] and one["base_risk"] == predictions.at[last, "base_risk"]
    assert {g["group"]: g["points"] for g in one["groups"]} == json.loads(predictions.at[last, "attributions"])
    ranked = sorted(one["groups"], key=lambda g: -abs(g["points"]))
    assert ranked[0]["sentence"] == predictions.at[last, "reason_1"]
    single = canonical.groupby("patient_id")["encounter_id"].transform("size").to_numpy() == 1
    for i in np.flatnonzero(single & predictions["risk"].notna().to_numpy())[:5]:  # no history in the 40 rows
        alone = service.score_encounters(canonical.iloc[[i]]).iloc[0]
        assert alone["risk"] == predictions.at[i, "risk"]
        assert alone[["attributions", "reason_1", "reason_2", "reason_3"]].tolist() == \
            predictions.loc[i, ["attributions", "reason_1", "reason_2", "reason_3"]].tolist()


def test_without_a_background_file_explanations_use_a_neutral_row(tiny):
    service = ScoringService.from_predictor(tiny["predictor"])
    assert service.background_source.startswith("fallback") and len(service.background) == 1
    predictions = service.score_encounters(tiny["canonical"].head(10))
    scored = predictions[predictions["risk"].notna()]
    for _, row in scored.iterrows():
        assert row["base_risk"] + sum(json.loads(row["attributions"]).values()) == pytest.approx(row["risk"], abs=5e-6)
    assert pd.Series(service.score_encounters(tiny["canonical"].head(10), explain=False)["attributions"]).isna().all()
