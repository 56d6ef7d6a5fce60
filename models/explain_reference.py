"""The explanations' reference: the same grouped Shapley values as `models.explain.two_sided_shapley`,
computed the plain, slow way (every coalition, or random orders of the groups), for the tests and the
benchmark that measure how closely the fast method agrees."""
from __future__ import annotations

import itertools
import math
from typing import Optional, Sequence

import numpy as np

from core.encoding import EncodedBatch
from models.explain import (
    FIELD_GROUPS,
    FieldGroup,
    RiskFn,
    evaluate,
    group_values,
    mix,
    mixed_risk,
    rows_differ,
    unit_groups,
)
from models.explain_background import Background


def _repeat(batch: EncodedBatch, times: int) -> EncodedBatch:
    return EncodedBatch(np.repeat(batch.numeric, times, 0), np.repeat(batch.numeric_missing, times, 0),
                        np.repeat(batch.categorical, times, 0), np.repeat(batch.codes, times, 0))


def _tile(batch: EncodedBatch, times: int) -> EncodedBatch:
    return EncodedBatch(np.tile(batch.numeric, (times, 1)), np.tile(batch.numeric_missing, (times, 1)),
                        np.tile(batch.categorical, (times, 1)), np.tile(batch.codes, (times, 1, 1)))


def coalition_values(risk_fn: RiskFn, x: EncodedBatch, background: Background, masks: np.ndarray,
                      units_group: np.ndarray, chunk_rows: int = 65536) -> np.ndarray:
    """v(S) = sum_k w_k f(x_S, bg_k) for each coalition mask (bool [m, G]) of one row x."""
    k = len(background)
    m = len(masks)
    values = np.empty(m)
    per_chunk = max(1, chunk_rows // k)
    for start in range(0, m, per_chunk):
        block = masks[start:start + per_chunk]
        take = np.repeat(block, k, axis=0)
        rows = mix(_repeat(x, len(take)), _tile(background.batch, len(block)), take, units_group)
        risk = np.asarray(risk_fn(rows), dtype=np.float64).reshape(len(block), k)
        values[start:start + len(block)] = risk @ background.weights
    return values


def _exact_shapley(values: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Shapley values from the values of all 2^G coalitions (`masks` in itertools.product order)."""
    n_groups = masks.shape[1]
    index = {tuple(m): i for i, m in enumerate(masks)}
    sizes = masks.sum(1)
    weight = np.array([math.factorial(s) * math.factorial(n_groups - s - 1) / math.factorial(n_groups)
                       if s < n_groups else 0.0 for s in sizes])
    out = np.zeros(n_groups)
    for g in range(n_groups):
        without = np.flatnonzero(~masks[:, g])
        with_g = masks[without].copy()
        with_g[:, g] = True
        partner = np.array([index[tuple(m)] for m in with_g])
        out[g] = np.sum(weight[without] * (values[partner] - values[without]))
    return out


def _walks(players: np.ndarray, pairs: int, n_groups: int, rng: np.random.Generator
           ) -> tuple[list[np.ndarray], np.ndarray]:
    """`pairs` random orders of `players` and their reverses; the masks of every walk's inner steps."""
    orders = []
    for _ in range(pairs):
        order = rng.permutation(players)
        orders += [order, order[::-1]]
    inner = max(len(players) - 1, 0)
    masks = np.zeros((len(orders) * inner, n_groups), dtype=bool)
    for w, order in enumerate(orders):
        for step, g in enumerate(order[:-1]):
            masks[w * inner + step:(w + 1) * inner, g] = True
    return orders, masks


def reference_shapley(risk_fn: RiskFn, x: EncodedBatch, background: Background,
                      groups: Sequence[FieldGroup] = FIELD_GROUPS, exact: Optional[bool] = None,
                      pairs: int = 8, seed: int = 0) -> tuple[np.ndarray, float]:
    """Grouped Shapley values of the interventional value function v(S) = sum_k w_k f(x_S, b_k), computed
    the plain way, for tests and the benchmark: ([n, G], base risk).

    `exact` (default when G <= 12): from all 2^G coalitions. Otherwise as sum_k w_k phi_k, phi_k the Shapley
    values of the game from background row k to x (v is a weighted sum of those games), each estimated by
    `pairs` antithetic pairs of random orders of the groups in which x and b_k differ (the others add
    nothing). Unbiased, every background row covered; each walk ends at f(x), so base + sum == f(x).
    """
    units_group = unit_groups(groups)
    n_groups = len(groups)
    exact = n_groups <= 12 if exact is None else exact
    background_risk = evaluate(risk_fn, background.batch)
    base = float(background_risk @ background.weights)
    risk = evaluate(risk_fn, x)
    out = np.zeros((len(x), n_groups))
    all_masks = np.array(list(itertools.product([False, True], repeat=n_groups)), dtype=bool) if exact else None
    rng = np.random.default_rng(seed)
    background_values = [group_values(background.batch, units_group, g) for g in range(n_groups)]
    for row in range(len(x)):
        xi = x.take(np.array([row]))
        if exact:
            out[row] = _exact_shapley(coalition_values(risk_fn, xi, background, all_masks, units_group), all_masks)
            continue
        differs = np.column_stack([rows_differ(group_values(xi, units_group, g), background_values[g])[0]
                                   for g in range(n_groups)])  # [K, G]
        walks = [(k, *_walks(np.flatnonzero(differs[k]), pairs, n_groups, rng)) for k in range(len(background))]
        masks = np.concatenate([m for _, _, m in walks])
        background_rows = np.concatenate([np.full(len(m), k) for k, _, m in walks]).astype(np.int64)
        inner = mixed_risk(risk_fn, xi, np.zeros(len(masks), dtype=np.int64), background.batch, background_rows,
                           masks, units_group)
        at = 0
        for k, orders, _ in walks:
            for order in (o for o in orders if len(o)):
                steps = len(order) - 1
                path = np.concatenate([[background_risk[k]], inner[at:at + steps], [risk[row]]])
                at += steps
                out[row, order] += background.weights[k] * np.diff(path) / len(orders)
    return out, base
