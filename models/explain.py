"""Explanations of the readmission transformer, grouped by clinical field.

What is explained
-----------------
The *calibrated* risk (the number a nurse sees), in probability points: for every encounter
`base_risk + sum(attributions) == risk` (up to float rounding), where `base_risk` is the mean
calibrated risk over the explanation background.

Groups
------
`FIELD_GROUPS` puts every model input of one clinical field together (all Charlson flags, the index
and the diagnosis count are one group; the four prior-year visit counts are one; each diagnosis
position with its category and main-diagnosis group is one; ...). A numeric input and its missing
flag always travel together; a diagnosis position's three ids (code, category, chapter) too.

One method, everywhere
----------------------
The attributions are the groups' Shapley values for the interventional value function
v(S) = sum_k w_k f(x_S, b_k) over the weighted background rows b_k, computed by `two_sided_shapley`:
each group's effect added alone to every background row, and (for the groups that can become
reasons) removed alone from the encounter; their mean is the exact Shapley value wherever groups
interact at most in pairs, and on the champion higher-order interactions are small (docs/scoring.md
gives the measured agreement with the reference). It uses no random numbers and depends on nothing
but the encounter's own inputs, so the warehouse, the Patient page, uploads and the API give the same
numbers for the same features. `models.explain_reference.reference_shapley` computes the same values the plain, slow way, for
the tests and the benchmark.

The background is a small set of weighted medoid rows of the training encodings
(`models.explain_background`), stored in the model folder as `explain_background.safetensors`; the
reference computation lives in `models.explain_reference`.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from core import icd
from core.encoding import EncodedBatch
from core.features import CATEGORICAL_NAMES, CODE_FEATURES, NUMERIC_NAMES
from models.explain_background import Background


@dataclass(frozen=True)
class FieldGroup:
    name: str
    label: str                 # plain words, for tables and charts
    features: tuple[str, ...]  # names from core.features (numeric, categorical or code positions)


FIELD_GROUPS: tuple[FieldGroup, ...] = (
    FieldGroup("age", "age", ("age_years_est", "age_band")),
    FieldGroup("sex", "sex", ("sex",)),
    FieldGroup("race", "race", ("race",)),
    FieldGroup("payer", "payer", ("payer",)),
    FieldGroup("prior_visits", "visits in the past year",
               ("prior_outpatient_visits", "prior_emergency_visits", "prior_inpatient_visits",
                "prior_visits_total")),
    FieldGroup("earlier_stays", "earlier hospital stays on record",
               ("encounter_seq", "prior_stays_los_days", "prior_readmissions_30d", "days_since_last_discharge")),
    FieldGroup("admission", "admission type and source", ("admission_type", "admission_source")),
    FieldGroup("admitting_specialty", "admitting specialty", ("admitting_specialty",)),
    FieldGroup("length_of_stay", "length of stay", ("length_of_stay_days",)),
    FieldGroup("tests_procedures", "lab tests and procedures", ("num_lab_procedures", "num_procedures")),
    FieldGroup("medications", "medications during the stay", ("num_medications",)),
    FieldGroup("diabetes_medications", "diabetes medications",
               ("diabetes_meds_given", "diabetes_meds_changed", "insulin", "metformin", "diabetes_med")),
    FieldGroup("a1c", "HbA1c", ("a1c_result",)),
    FieldGroup("glucose", "serum glucose", ("glucose_result",)),
    FieldGroup("comorbidities", "comorbidities",
               ("charlson_index", "number_diagnoses") + tuple(f"cc_{c}" for c in icd.CHARLSON_CONDITIONS)),
    FieldGroup("dx_1", "main diagnosis", ("dx_1", "dx_1_category", "principal_group")),
    FieldGroup("dx_2", "second diagnosis", ("dx_2", "dx_2_category")),
    FieldGroup("dx_3", "third diagnosis", ("dx_3", "dx_3_category")),
    FieldGroup("discharge", "discharge destination", ("discharge_disposition",)),
    FieldGroup("discharge_day", "discharge day of week", ("discharge_weekday",)),
)
GROUP_NAMES = tuple(g.name for g in FIELD_GROUPS)
GROUP_LABELS = {g.name: g.label for g in FIELD_GROUPS}


# --- input units: the smallest pieces of an EncodedBatch that move together ---------------------

@dataclass(frozen=True)
class Unit:
    kind: str   # "numeric" | "categorical" | "code"
    index: int  # column in EncodedBatch.numeric / .categorical, or diagnosis position in .codes
    feature: str


@functools.cache
def input_units() -> tuple[Unit, ...]:
    return (tuple(Unit("numeric", j, n) for j, n in enumerate(NUMERIC_NAMES))
            + tuple(Unit("categorical", j, n) for j, n in enumerate(CATEGORICAL_NAMES))
            + tuple(Unit("code", p, n) for p, n in enumerate(CODE_FEATURES)))


def unit_groups(groups: Sequence[FieldGroup] = FIELD_GROUPS) -> np.ndarray:
    """Group index of every input unit; fails loudly if a feature is in no group or in two."""
    owner: dict[str, int] = {}
    for g, group in enumerate(groups):
        for feature in group.features:
            if feature in owner:
                raise ValueError(f"feature {feature} is in two explanation groups")
            owner[feature] = g
    units = input_units()
    missing = [u.feature for u in units if u.feature not in owner]
    if missing:
        raise ValueError(f"features in no explanation group: {', '.join(missing)}")
    return np.array([owner[u.feature] for u in units], dtype=np.int64)


def mix(x: EncodedBatch, background: EncodedBatch, take_x: np.ndarray, units_group: np.ndarray) -> EncodedBatch:
    """Rows that take each group from x where `take_x[row, group]` and from `background` otherwise.

    `x` and `background` must have the same number of rows as `take_x` (broadcast beforehand).
    """
    units = input_units()
    numeric = background.numeric.copy()
    missing = background.numeric_missing.copy()
    categorical = background.categorical.copy()
    codes = background.codes.copy()
    for unit, g in zip(units, units_group):
        rows = take_x[:, g]
        if unit.kind == "numeric":
            numeric[rows, unit.index] = x.numeric[rows, unit.index]
            missing[rows, unit.index] = x.numeric_missing[rows, unit.index]
        elif unit.kind == "categorical":
            categorical[rows, unit.index] = x.categorical[rows, unit.index]
        else:
            codes[rows, unit.index] = x.codes[rows, unit.index]
    return EncodedBatch(numeric, missing, categorical, codes)


# --- model calls on mixed rows ------------------------------------------------------------------

RiskFn = Callable[[EncodedBatch], np.ndarray]

MODEL_CALL_ROWS = 512
"""Rows per call of the risk function: small enough to stay in cache (10-20% less CPU time than 2048
here) and below the predictor's own batch size (2048), so each call is one forward pass."""
MIN_CALL_ROWS = 16
"""A forward pass on 1-3 rows takes another kernel path whose rounding differs in the last bits (seen on
this machine's CPU), so every call is padded to at least this many rows: a row's risk, and with it its
explanation, then does not depend on the batch it is scored in."""
CALL_ROWS = 32768  # mixed rows built at a time (bounds memory)


def evaluate(risk_fn: RiskFn, batch: EncodedBatch) -> np.ndarray:
    """`risk_fn` on `batch` as float64, in calls of MODEL_CALL_ROWS rows, each padded to MIN_CALL_ROWS
    (copies of its first row)."""
    n = len(batch)
    out = np.empty(n)
    for start in range(0, n, MODEL_CALL_ROWS):
        rows = np.arange(start, min(start + MODEL_CALL_ROWS, n))
        padded = np.concatenate([rows, np.full(max(0, MIN_CALL_ROWS - len(rows)), start)])
        out[rows] = np.asarray(risk_fn(batch.take(padded)), dtype=np.float64)[:len(rows)]
    return out


def mixed_risk(risk_fn: RiskFn, x: EncodedBatch, x_rows: np.ndarray, background: EncodedBatch,
               background_rows: np.ndarray, take_x: np.ndarray, units_group: np.ndarray) -> np.ndarray:
    """Risk of the rows that take each group from `x[x_rows[i]]` where `take_x[i, group]`, else from
    `background[background_rows[i]]`."""
    out = np.empty(len(x_rows))
    for start in range(0, len(x_rows), CALL_ROWS):
        part = slice(start, start + CALL_ROWS)
        rows = mix(x.take(x_rows[part]), background.take(background_rows[part]), take_x[part], units_group)
        out[part] = evaluate(risk_fn, rows)
    return out


def group_values(batch: EncodedBatch, units_group: np.ndarray, group: int) -> np.ndarray:
    """Every input of one field group, one row per encounter, as float64 columns: equal rows are equal
    inputs (so equal model tokens)."""
    columns = []
    for unit, g in zip(input_units(), units_group):
        if g != group:
            continue
        if unit.kind == "numeric":
            columns += [batch.numeric[:, unit.index], batch.numeric_missing[:, unit.index]]
        elif unit.kind == "categorical":
            columns.append(batch.categorical[:, unit.index])
        else:
            columns += [batch.codes[:, unit.index, level] for level in range(batch.codes.shape[2])]
    return np.column_stack(columns).astype(np.float64)


def _distinct(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of the first row of each distinct row value, index of each row's value)."""
    _, first, inverse = np.unique(values, axis=0, return_index=True, return_inverse=True)
    return first, inverse.reshape(-1)


def rows_differ(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[len(a), len(b)] bool: row i of a differs from row j of b."""
    return (a[:, None, :] != b[None, :, :]).any(-1)


# --- the explanation: two-sided Shapley values of the field groups ----------------------------

REFINED_GROUPS = 5
"""Groups per encounter whose value is measured from both sides (the largest by their added effect):
the candidates for the three reasons. Chosen by measurement (docs/scoring.md): 5 gives top-3 agreement
0.95 with the reference for about 55 model calls per encounter; all 20 gives 0.97 for about 190."""


KNOWN_EFFECTS_LIMIT = 200_000  # remembered added effects (`known`); the memo starts afresh past this


def _one_group_rows(pairs: list[tuple[int, np.ndarray, np.ndarray]], n_groups: int, take: bool
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x rows, background rows, take_x) of mixed rows that differ from one side in one group only: for
    each (group, x rows, background rows) of `pairs`, that group from x (`take`) or from the background."""
    x_rows = np.concatenate([x for _, x, _ in pairs]).astype(np.int64)
    background_rows = np.concatenate([b for _, _, b in pairs]).astype(np.int64)
    groups = np.concatenate([np.full(len(x), g) for g, x, _ in pairs]).astype(np.int64)
    take_x = np.full((len(x_rows), n_groups), not take)
    take_x[np.arange(len(x_rows)), groups] = take
    return x_rows, background_rows, take_x


def added_effects(risk_fn: RiskFn, batch: EncodedBatch, background: Background, background_risk: np.ndarray,
                  units_group: np.ndarray, known: Optional[dict[tuple[int, bytes], float]] = None) -> np.ndarray:
    """[n, G]: sum_k w_k (f(b_k with group g of row i) - f(b_k)), group g of the row put alone into each
    background row. It depends on the row only through its values of group g, so it is computed once per
    distinct value (a batch of 15,000 encounters has a few thousand distinct (group, value) pairs), and,
    with `known`, once per process: a memo of earlier calls' effects, which are the same numbers bit for
    bit (model calls do not depend on their batch, and each effect is summed in a fixed order)."""
    n_groups = int(units_group.max()) + 1
    known = {} if known is None else known
    if len(known) > KNOWN_EFFECTS_LIMIT:
        known.clear()
    plans, pairs = [], []
    for g in range(n_groups):
        values = group_values(batch, units_group, g)
        first, inverse = _distinct(values)
        keys = [(g, values[i].tobytes()) for i in first]
        new = np.flatnonzero([key not in known for key in keys]).astype(np.int64)
        value, k = np.nonzero(rows_differ(values[first[new]], group_values(background.batch, units_group, g)))
        plans.append((keys, inverse, new, value, k))
        pairs.append((g, first[new][value], k))
    x_rows, background_rows, take_x = _one_group_rows(pairs, n_groups, take=True)
    risk = mixed_risk(risk_fn, batch, x_rows, background.batch, background_rows, take_x, units_group)
    out = np.zeros((len(batch), n_groups))
    at = 0
    for g, (keys, inverse, new, value, k) in enumerate(plans):
        gain = np.zeros((len(new), len(background)))
        gain[value, k] = risk[at:at + len(value)] - background_risk[k]
        at += len(value)
        known.update(zip((keys[i] for i in new), (gain * background.weights).sum(1).tolist()))  # fixed order
        out[:, g] = np.array([known[key] for key in keys])[inverse]
    return out


def removed_effects(risk_fn: RiskFn, batch: EncodedBatch, risk: np.ndarray, background: Background,
                    units_group: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """[n, G]: sum_k w_k (f(x_i) - f(x_i with group g of b_k)) where `chosen[i, g]`, else 0: group g of the
    row replaced, alone, by each background row's. Background rows with equal values of the group share
    one model call."""
    n_groups = chosen.shape[1]
    plans, pairs = [], []
    for g in range(n_groups):
        rows = np.flatnonzero(chosen[:, g])
        background_values = group_values(background.batch, units_group, g)
        first, inverse = _distinct(background_values)
        weight = np.bincount(inverse, weights=background.weights, minlength=len(first))
        row, value = np.nonzero(rows_differ(group_values(batch, units_group, g)[rows], background_values[first]))
        plans.append((rows, first, weight, row, value))
        pairs.append((g, rows[row], first[value]))
    x_rows, background_rows, take_x = _one_group_rows(pairs, n_groups, take=False)
    replaced = mixed_risk(risk_fn, batch, x_rows, background.batch, background_rows, take_x, units_group)
    out = np.zeros(chosen.shape)
    at = 0
    for g, (rows, first, weight, row, value) in enumerate(plans):
        loss = np.zeros((len(rows), len(first)))
        loss[row, value] = risk[rows[row]] - replaced[at:at + len(row)]
        at += len(row)
        out[rows, g] = (loss * weight).sum(1)
    return out


def largest(values: np.ndarray, k: int) -> np.ndarray:
    """[n, G] bool: each row's k entries of largest magnitude (ties: the earlier group)."""
    chosen = np.zeros(values.shape, dtype=bool)
    np.put_along_axis(chosen, np.argsort(-np.abs(values), axis=1, kind="stable")[:, :k], True, axis=1)
    return chosen


def share_residual(values: np.ndarray, total: np.ndarray, free: np.ndarray) -> np.ndarray:
    """`values` plus each row's residual `total - sum(values)`, shared over its `free` entries in proportion
    to their magnitude (over all entries when no free entry moves, equally when none does): every row then
    sums to `total`."""
    residual = total - values.sum(1)
    size = np.abs(values) * free
    size = np.where(size.sum(1, keepdims=True) > 0, size, np.abs(values))
    size = np.where(size.sum(1, keepdims=True) > 0, size, 1.0)
    return values + residual[:, None] * size / size.sum(1, keepdims=True)


def two_sided_shapley(risk_fn: RiskFn, batch: EncodedBatch, risk: np.ndarray, background: Background,
                      background_risk: np.ndarray, groups: Sequence[FieldGroup] = FIELD_GROUPS,
                      refined: int = REFINED_GROUPS, known: Optional[dict[tuple[int, bytes], float]] = None
                      ) -> tuple[np.ndarray, float]:
    """Grouped Shapley values of the calibrated risk: ([n, G] in risk points, base risk), with
    `base + sum(row) == risk` for every row. `risk` is `risk_fn(batch)` (the scoring pass's own numbers);
    `background_risk` is `risk_fn(background.batch)`; `known`, a memo of added effects (`added_effects`)
    kept between calls with the same function, groups and background.

    For one background row k the value function is a game between the groups in which x and b_k differ.
    Where groups interact at most in pairs, a group's Shapley value in it is exactly the mean of its effect
    added alone to b_k and its effect removed alone from x; averaged over the weighted background rows, that
    is (added + removed) / 2 of `added_effects` and `removed_effects`. The `refined` groups with the largest
    added effect get that value; the others keep their added effect; what is left of risk - base (interactions
    of three or more groups, the others' pair interactions) is shared over the others (`share_residual`).
    No random numbers: an encounter's values depend on its own inputs only, never on its batch.
    """
    units_group = unit_groups(groups)
    base = float(background_risk @ background.weights)
    added = added_effects(risk_fn, batch, background, background_risk, units_group, known)
    chosen = largest(added, refined)
    removed = removed_effects(risk_fn, batch, risk, background, units_group, chosen)
    values = np.where(chosen, (added + removed) / 2, added)
    return share_residual(values, np.asarray(risk, dtype=np.float64) - base, ~chosen), base


def top_groups(attributions: np.ndarray, k: int = 3, min_points: float = 0.0005) -> list[list[int]]:
    """Per row, indices of the k groups with the largest |attribution| (ignoring negligible ones)."""
    order = np.argsort(-np.abs(attributions), axis=1, kind="stable")
    return [[int(g) for g in row[:k] if abs(attributions[i, g]) >= min_points] for i, row in enumerate(order)]
