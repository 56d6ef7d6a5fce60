"""Drift of the model inputs and of the score, period by period, against a reference profile: PSI over
the reference bins with a chi-squared test on the same bins (vectorized over periods), a Wasserstein
effect size from a per-period sample, Benjamini-Hochberg across the inputs of a period.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from scipy import stats

from core import monitoring as mon
from core.features import FEATURE_LABELS
from core.schema import ENCOUNTER_FIELDS
from serving.monitoring.constants import MIN_PERIOD_ROWS, MONITORED, QUANTILE_SAMPLE, QUANTILES
from serving.monitoring.reference import Reference, _numbers, bin_index, is_monitorable, reference_counts

# Inputs the canonical schema requires: never missing in what is served (a row without one is refused), so a
# reference with missing values (Diabetes 130 leaves some dispositions blank) is compared on recorded values only;
# otherwise every period of every hospital would "drift" by the reference's missing share alone.
REQUIRED_INPUTS = frozenset(field.name for field in ENCOUNTER_FIELDS if field.required)


def chi_squared_p(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    """P-values of chi-squared tests that the reference counts and each row of `current` ([periods, bins])
    come from one distribution (`scipy.stats.chi2_contingency` without continuity correction, for all
    periods at once); 1 where untestable (fewer than two bins seen, or an empty sample)."""
    current = np.atleast_2d(np.asarray(current, dtype=np.float64))
    reference = np.broadcast_to(np.asarray(reference, dtype=np.float64), current.shape)
    columns = reference + current
    seen = columns > 0
    n_ref, n_cur = reference.sum(axis=1, keepdims=True), current.sum(axis=1, keepdims=True)
    total = n_ref + n_cur
    with np.errstate(invalid="ignore", divide="ignore"):
        expected_ref, expected_cur = columns * n_ref / total, columns * n_cur / total
        statistic = np.where(seen, (reference - expected_ref) ** 2 / expected_ref
                             + (current - expected_cur) ** 2 / expected_cur, 0.0).sum(axis=1)
    dof = seen.sum(axis=1) - 1
    testable = (dof >= 1) & (n_ref[:, 0] > 0) & (n_cur[:, 0] > 0)
    return np.where(testable, stats.chi2.sf(statistic, np.maximum(dof, 1)), 1.0)


def wasserstein_from_quantiles(profile: dict[str, Any], current_quantiles: np.ndarray) -> float:
    """Earth mover's distance between the reference and current distributions (the mean gap between their
    quantile functions on `QUANTILES`), in reference standard deviations."""
    reference = np.asarray(profile.get("quantiles") or [], dtype=np.float64)
    sd = profile.get("sd") or 0.0
    if reference.size != current_quantiles.size or not np.isfinite(current_quantiles).all():
        return float("nan")
    distance = float(np.mean(np.abs(reference - current_quantiles)))
    return distance / sd if sd > 0 else (0.0 if distance == 0 else float("inf"))


def drift_cells(profile: dict[str, Any], bins: np.ndarray, values, period_codes: np.ndarray,
                n_periods: int, sample: Optional[PeriodSample] = None) -> list[dict[str, float]]:
    """PSI, chi-squared p-value and effect size of one input in every period (one pass over the rows; the
    effect size's quantiles from `sample`, by default every row)."""
    reference = reference_counts(profile)
    width = reference.size
    counts = np.bincount(period_codes * width + bins, minlength=n_periods * width).reshape(n_periods, width)
    sample = sample or PeriodSample.of(period_codes, n_periods, cap=None)
    quantiles = sample.quantiles(values) if profile["kind"] == "numeric" else None
    p_values = chi_squared_p(reference, counts)
    cells = []
    for k in range(n_periods):
        current = counts[k].astype(np.float64)
        if current.sum() == 0:
            cells.append({"psi": float("nan"), "effect": float("nan"), "p_value": float("nan"), "n": 0})
            continue
        if profile["kind"] == "numeric":
            effect = wasserstein_from_quantiles(profile, quantiles[k])
        else:
            effect = mon.jensen_shannon_distance(reference, current)
        cells.append({"psi": mon.psi_from_counts(reference, current), "effect": effect,
                      "p_value": float(p_values[k]), "n": int(current.sum())})
    return cells


@dataclass(frozen=True)
class PeriodSample:
    """Up to `cap` rows of each period, drawn at random once and shared by every input: the quantiles of an
    effect size need a few thousand values, not a million."""
    order: np.ndarray      # row numbers, grouped by period, shuffled within it
    bounds: np.ndarray     # period k's rows are order[bounds[k]:ends[k]]
    ends: np.ndarray

    @classmethod
    def of(cls, period_codes: np.ndarray, n_periods: int, cap: Optional[int] = QUANTILE_SAMPLE,
           seed: int = 0) -> "PeriodSample":
        order = np.lexsort((np.random.default_rng(seed).random(period_codes.size), period_codes))
        bounds = np.searchsorted(period_codes[order], np.arange(n_periods + 1))
        ends = bounds[1:] if cap is None else np.minimum(bounds[1:], bounds[:-1] + cap)
        return cls(order, bounds[:-1], ends)

    def quantiles(self, values) -> np.ndarray:
        """[periods, len(QUANTILES)] quantiles of the sampled finite values (NaN for an empty period)."""
        array = _numbers(values)
        out = np.full((self.bounds.size, QUANTILES.size), np.nan)
        for k, (low, high) in enumerate(zip(self.bounds, self.ends)):
            part = array[self.order[low:high]]
            part = part[np.isfinite(part)]
            if part.size:
                out[k] = np.quantile(part, QUANTILES)
        return out


def _drift(rows, codes, periods, scored, reference: Reference, summaries) -> dict[str, Any]:
    """Every input in every period, BH-corrected across the inputs of a period; score PSI per period."""
    n_periods = len(periods)
    profiles = reference.profile["features"]
    monitored = [name for name in MONITORED if name in profiles and is_monitorable(profiles[name])]
    skipped = {name: "no values in the reference: the model never saw it filled" for name in MONITORED
               if name in profiles and not is_monitorable(profiles[name])}
    skipped.update({name: "not in the reference" for name in MONITORED if name not in profiles})
    index = np.flatnonzero(scored)
    sub_codes = codes[index]
    sample = PeriodSample.of(sub_codes, n_periods)

    def cells_of(name: str) -> list[dict[str, float]]:
        profile = profiles[name]
        values = rows[name].to_numpy()[index] if profile["kind"] == "numeric" else None
        bins = bin_index(profile, rows[name])[index]
        if name not in REQUIRED_INPUTS:
            return drift_cells(profile, bins, values, sub_codes, n_periods, sample)
        profile = {**profile, "missing": 0}
        recorded = bins != reference_counts(profile).size - 1
        return drift_cells(profile, bins[recorded], None if values is None else values[recorded],
                           sub_codes[recorded], n_periods, PeriodSample.of(sub_codes[recorded], n_periods))

    cells = {name: cells_of(name) for name in monitored}
    risk_profile_ = {"kind": "numeric", **reference.profile["risk"], "missing": 0, "sd": 0.0, "quantiles": []}
    risk = rows["risk"].to_numpy()[index]
    score = drift_cells(risk_profile_, bin_index(risk_profile_, risk), risk, sub_codes, n_periods, sample)
    out = []
    for k, summary in enumerate(summaries):
        adjusted = mon.benjamini_hochberg([cells[name][k]["p_value"] for name in monitored])
        drifting = []
        for name, p_adj in zip(monitored, adjusted):
            cell = cells[name][k]
            judged = cell["n"] >= MIN_PERIOD_ROWS and summary["complete"]  # a part-period skews calendar inputs
            severity = mon.drift_severity(cell["psi"], p_adj) if judged else None
            if severity:
                drifting.append(name)
            out.append({"period": summary["period"], "feature": name, "label": FEATURE_LABELS.get(name, name),
                        "psi": cell["psi"], "effect": cell["effect"], "p_value": cell["p_value"], "p_adjusted": p_adj,
                        "n": cell["n"], "judged": judged, "severity": severity})
        summary["score_psi"] = score[k]["psi"]
        summary["score_p_value"] = score[k]["p_value"]
        summary["drifted"] = drifting
        summary["drift_share"] = len(drifting) / len(monitored) if monitored else None
    return {"features": monitored, "skipped": skipped, "cells": out}


