"""Monitoring math: drift, realised and estimated performance, fairness ratios and alert rules.

Pure numpy / scipy on arrays of one period against a reference; `serving.monitoring` gathers the
periods and writes the report. Conventions, and why:

- **PSI** (population stability index) over reference deciles for numbers and over levels for
  categories, with the conventional bands: below 0.1 stable, 0.1-0.25 a shift worth watching, 0.25
  and above a shift to act on. Empty bins get a small floor so one empty bin cannot make PSI infinite.
- **Test statistics beside PSI**: Jensen-Shannon distance (base 2, 0..1) for categories and the
  Wasserstein distance in reference standard deviations for numbers (Evidently's defaults), with
  KS / chi-squared p-values corrected across features by Benjamini-Hochberg. A feature drifts when
  its PSI crosses a band AND the corrected test says the difference is not chance: at the volumes
  of one month a PSI of 0.1 is rarely noise, but the test guards small periods.
- **Realised performance** only for periods whose 30-day outcomes have matured.
- **Estimated performance** (confidence-based, as NannyML's CBPE): with calibrated risks, the expected
  number of readmissions among any set of patients is the sum of their risks, so expected confusion
  counts, PPV, sensitivity and AUROC follow without labels. It is right only while calibration
  holds, which is why it is replaced by realised figures once labels arrive.
- **Fairness**: each group's rate as a ratio to the largest group's, with a bootstrap interval;
  flagged outside 0.8-1.25 only when the interval excludes 1; cells under 10 are suppressed.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from core.metrics import auroc, brier, calibration_fit, ece

PSI_WATCH = 0.10
PSI_ACT = 0.25
SIGNIFICANCE = 0.05           # false-discovery rate across the features of one period
PSI_FLOOR = 1e-4              # share given to an empty bin
PSI_BINS = 10
MIN_CELL = 10                 # smaller fairness cells are suppressed (seismometer's rule)
FAIRNESS_BOUNDS = (0.8, 1.25)
CALIBRATION_WATCH = 0.02      # |observed - predicted| readmission rate, absolute
CALIBRATION_ACT = 0.04
SEVERITIES = ("watch", "act")


@dataclass(frozen=True)
class Alert:
    """One finding: `check` names the rule (e.g. `feature_drift`), `subject` what it is about (a
    canonical column, a group, `score`), and `message` says it in a sentence a quality manager reads."""
    check: str
    subject: str
    severity: str
    message: str
    period: Optional[str] = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- drift ---------------------------------------------------------------------------------------------

def _clean_numeric(values) -> np.ndarray:
    array = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=np.float64)
    return array[np.isfinite(array)]


def _clean_levels(values) -> np.ndarray:
    series = pd.Series(values, dtype=object)
    return series.where(series.notna(), "(missing)").astype(str).to_numpy()


def numeric_bin_edges(reference, bins: int = PSI_BINS) -> np.ndarray:
    """Inner cut points at the reference's quantiles (duplicates dropped for discrete values)."""
    ref = _clean_numeric(reference)
    if ref.size == 0:
        return np.array([])
    return np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))


def _shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    shares = counts / total if total else np.zeros_like(counts, dtype=np.float64)
    shares = np.maximum(shares, PSI_FLOOR)
    return shares / shares.sum()


def psi_from_counts(reference_counts, current_counts) -> float:
    """PSI = sum (cur - ref) * ln(cur / ref) over bins, shares floored at PSI_FLOOR."""
    ref = _shares(np.asarray(reference_counts, dtype=np.float64))
    cur = _shares(np.asarray(current_counts, dtype=np.float64))
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def numeric_counts(values, edges: np.ndarray) -> np.ndarray:
    return np.bincount(np.searchsorted(edges, _clean_numeric(values), side="right"), minlength=len(edges) + 1)


def level_counts(reference, current) -> tuple[np.ndarray, np.ndarray]:
    """Counts of every level seen in either sample (missing is a level of its own)."""
    ref, cur = _clean_levels(reference), _clean_levels(current)
    levels = np.union1d(ref, cur)
    return (pd.Series(ref).value_counts().reindex(levels, fill_value=0).to_numpy(),
            pd.Series(cur).value_counts().reindex(levels, fill_value=0).to_numpy())


def jensen_shannon_distance(reference_counts, current_counts) -> float:
    """Jensen-Shannon distance in bits (0 identical .. 1 disjoint); NaN when a sample is empty."""
    ref = np.asarray(reference_counts, dtype=np.float64)
    cur = np.asarray(current_counts, dtype=np.float64)
    if ref.sum() == 0 or cur.sum() == 0:
        return float("nan")
    p, q = ref / ref.sum(), cur / cur.sum()
    m = 0.5 * (p + q)
    divergence = 0.5 * stats.entropy(p, m, base=2) + 0.5 * stats.entropy(q, m, base=2)
    return float(np.sqrt(max(divergence, 0.0)))


def wasserstein_in_sd(reference, current) -> float:
    """Earth mover's distance between the two samples, in reference standard deviations."""
    ref, cur = _clean_numeric(reference), _clean_numeric(current)
    if ref.size < 2 or cur.size == 0:
        return float("nan")
    sd = ref.std(ddof=1)
    distance = stats.wasserstein_distance(ref, cur)
    return float(distance / sd) if sd > 0 else (0.0 if distance == 0 else float("inf"))


def feature_drift(reference, current, kind: str, bins: int = PSI_BINS) -> dict[str, float]:
    """PSI, the effect statistic and an uncorrected p-value for one feature of one period.

    `kind` is "numeric" (decile PSI, Wasserstein in SDs, two-sample KS) or "categorical" (level PSI,
    Jensen-Shannon distance, chi-squared on the level counts).
    """
    if kind == "numeric":
        edges = numeric_bin_edges(reference, bins)
        ref_counts, cur_counts = numeric_counts(reference, edges), numeric_counts(current, edges)
        ref, cur = _clean_numeric(reference), _clean_numeric(current)
        p_value = float(stats.ks_2samp(ref, cur).pvalue) if ref.size and cur.size else float("nan")
        effect = wasserstein_in_sd(reference, current)
    else:
        ref_counts, cur_counts = level_counts(reference, current)
        p_value = _chi_squared_p(ref_counts, cur_counts)
        effect = jensen_shannon_distance(ref_counts, cur_counts)
    return {"psi": psi_from_counts(ref_counts, cur_counts), "effect": effect, "p_value": p_value,
            "n_reference": int(ref_counts.sum()), "n_current": int(cur_counts.sum())}


def _chi_squared_p(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    table = np.vstack([ref_counts, cur_counts])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 1.0
    return float(stats.chi2_contingency(table, correction=False).pvalue)


def benjamini_hochberg(p_values: Sequence[float]) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (NaN stays NaN), as `scipy.stats.false_discovery_control`."""
    p = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full(p.shape, np.nan)
    finite = np.isfinite(p)
    if finite.any():
        adjusted[finite] = stats.false_discovery_control(p[finite], method="bh")
    return adjusted


def drift_severity(psi: float, adjusted_p: float) -> Optional[str]:
    """`act` from PSI 0.25, `watch` from 0.1, when the corrected test agrees it is not chance."""
    if not np.isfinite(psi) or not (np.isfinite(adjusted_p) and adjusted_p < SIGNIFICANCE):
        return None
    return "act" if psi >= PSI_ACT else "watch" if psi >= PSI_WATCH else None


def score_psi(reference_risk, current_risk, bins: int = PSI_BINS) -> float:
    """PSI of the risk score over the reference's deciles."""
    edges = numeric_bin_edges(reference_risk, bins)
    return psi_from_counts(numeric_counts(reference_risk, edges), numeric_counts(current_risk, edges))


# --- performance -------------------------------------------------------------------------------------

def _arrays(y, p) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(y, dtype=np.float64).ravel(), np.asarray(p, dtype=np.float64).ravel()


def realised_performance(y, p, flagged=None) -> dict[str, float]:
    """Discrimination and calibration on matured outcomes, and the call list's PPV and sensitivity
    when `flagged` (who was on a call list) is given."""
    y, p = _arrays(y, p)
    out = {"n": int(y.size), "observed_rate": float(y.mean()) if y.size else float("nan"),
           "predicted_rate": float(p.mean()) if p.size else float("nan"),
           "auroc": auroc(y, p) if y.size else float("nan"),
           "brier": brier(y, p) if y.size else float("nan"),
           "ece": ece(y, p) if y.size else float("nan")}
    out["calibration_difference"] = out["observed_rate"] - out["predicted_rate"]
    fit = calibration_fit(y, p) if y.size else {}
    out["calibration_in_the_large"] = fit.get("calibration_in_the_large", float("nan"))
    out["calibration_slope"] = fit.get("calibration_slope", float("nan"))
    if flagged is not None:
        out.update(_call_list_rates(y, np.asarray(flagged, dtype=bool)))
    return out


def _call_list_rates(y: np.ndarray, flagged: np.ndarray) -> dict[str, float]:
    called = int(flagged.sum())
    return {"called": called,
            "ppv": float(y[flagged].mean()) if called else float("nan"),
            "sensitivity": float(y[flagged].sum() / y.sum()) if y.sum() else float("nan")}


def expected_auroc(p) -> float:
    """AUROC expected under the risks themselves: each patient counts p as a positive and 1 - p as a
    negative; pairs are compared across patients, ties counted one half."""
    p = np.asarray(p, dtype=np.float64).ravel()
    if p.size < 2:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    ps = p[order]
    starts = np.flatnonzero(np.r_[True, ps[1:] != ps[:-1]])
    pos = np.add.reduceat(ps, starts)
    neg = np.add.reduceat(1.0 - ps, starts)
    neg_below = np.cumsum(neg) - neg
    # pairs within one patient (p_i * (1 - p_i)) are not comparisons between patients: remove them
    same_patient = np.sum(ps * (1 - ps))
    numerator = np.sum(pos * (neg_below + 0.5 * neg)) - 0.5 * same_patient
    denominator = pos.sum() * neg.sum() - same_patient
    return float(numerator / denominator) if denominator > 0 else float("nan")


def estimated_performance(p, flagged=None) -> dict[str, float]:
    """Confidence-based estimates for a period whose outcomes have not matured (labels unused)."""
    p = np.asarray(p, dtype=np.float64).ravel()
    out = {"n": int(p.size), "predicted_rate": float(p.mean()) if p.size else float("nan"),
           "auroc": expected_auroc(p), "brier": float(np.mean(p * (1 - p))) if p.size else float("nan")}
    if flagged is not None:
        flagged = np.asarray(flagged, dtype=bool)
        called = int(flagged.sum())
        out.update({"called": called, "ppv": float(p[flagged].mean()) if called else float("nan"),
                    "sensitivity": float(p[flagged].sum() / p.sum()) if p.sum() else float("nan")})
    return out


def calibration_severity(observed_rate: float, predicted_rate: float, n: int) -> Optional[str]:
    """`act` when observed and predicted readmission rates differ by 4 points or more, `watch` from 2,
    provided the difference is beyond what chance gives at this n (a binomial test at 5%)."""
    if not n or not np.isfinite(observed_rate) or not np.isfinite(predicted_rate):
        return None
    gap = abs(observed_rate - predicted_rate)
    chance = stats.binomtest(int(round(observed_rate * n)), n, min(max(predicted_rate, 1e-9), 1 - 1e-9)).pvalue
    if chance >= SIGNIFICANCE:
        return None
    return "act" if gap >= CALIBRATION_ACT else "watch" if gap >= CALIBRATION_WATCH else None


# --- fairness -----------------------------------------------------------------------------------------

FAIRNESS_METRICS = ("selection_rate", "sensitivity", "ppv", "observed_to_expected")


_SUMS = ("rows", "readmitted", "called", "called_readmitted", "expected")


def _rates(sums: np.ndarray) -> dict[str, np.ndarray]:
    """Fairness metrics from summed columns (`_SUMS` order, last axis): share called, share of the
    group's readmissions called, readmissions among those called, observed / expected readmissions."""
    rows, readmitted, called, called_readmitted, expected = np.moveaxis(sums, -1, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"selection_rate": np.where(rows > 0, called / rows, np.nan),
                "sensitivity": np.where(readmitted > 0, called_readmitted / readmitted, np.nan),
                "ppv": np.where(called > 0, called_readmitted / called, np.nan),
                "observed_to_expected": np.where(expected > 0, readmitted / expected, np.nan)}


def group_rates(y, p, flagged) -> dict[str, float]:
    """The fairness metrics of one group of encounters."""
    y, p = _arrays(y, p)
    flagged = np.asarray(flagged, dtype=bool)
    sums = np.array([y.size, y.sum(), flagged.sum(), (flagged & (y == 1)).sum(), p.sum()], dtype=np.float64)
    return {name: float(value) for name, value in _rates(sums).items()}


def _patient_sums(y, p, flagged, in_group, patient_index, n_patients) -> np.ndarray:
    """[n_patients, 5] sums of one group's rows per patient, so a bootstrap draw of patients is one
    matrix product."""
    columns = (np.ones_like(y), y, flagged, flagged * y, p)
    return np.column_stack([np.bincount(patient_index, weights=c * in_group, minlength=n_patients)
                            for c in columns])


def _bootstrap_counts(n_patients: int, n_boot: int, seed: int, chunk: int = 50):
    """Yield [chunk, n_patients] draw counts: patients drawn with replacement, deterministic per seed."""
    rng = np.random.default_rng(seed)
    done = 0
    while done < n_boot:
        reps = min(chunk, n_boot - done)
        draws = rng.integers(0, n_patients, size=(reps, n_patients))
        offsets = (np.arange(reps) * n_patients)[:, None]
        yield np.bincount((draws + offsets).ravel(), minlength=reps * n_patients).reshape(reps, n_patients)
        done += reps


def fairness_table(y, p, flagged, groups, patient_id, n_boot: int = 200, seed: int = 0) -> pd.DataFrame:
    """Per group and metric: the value, its ratio to the largest group's with a patient-cluster bootstrap
    95% interval, and whether it is flagged (outside 0.8-1.25 with an interval that excludes 1). A cell
    under MIN_CELL (rows; readmissions for sensitivity; calls for PPV) is suppressed: no value shown."""
    y, p = _arrays(y, p)
    flagged = np.asarray(flagged, dtype=np.float64)
    labels = pd.Series(groups, dtype=object).fillna("unknown").astype(str).to_numpy()
    sizes = pd.Series(labels).value_counts()
    reference = str(sizes.index[0])
    _, patient_index = np.unique(np.asarray(patient_id).astype(str), return_inverse=True)
    n_patients = int(patient_index.max()) + 1 if patient_index.size else 0
    sums = {level: _patient_sums(y, p, flagged, (labels == level).astype(np.float64), patient_index, n_patients)
            for level in sizes.index}
    replicates = {level: [] for level in sizes.index}
    for counts in _bootstrap_counts(n_patients, n_boot, seed):
        for level, per_patient in sums.items():
            replicates[level].append(counts @ per_patient)
    boot = {level: _rates(np.concatenate(parts)) for level, parts in replicates.items()}
    totals = {level: _rates(per_patient.sum(axis=0)) for level, per_patient in sums.items()}
    rows = []
    for level in sizes.index:
        cells = dict(zip(_SUMS, sums[level].sum(axis=0)))
        for metric in FAIRNESS_METRICS:
            with np.errstate(invalid="ignore", divide="ignore"):
                ratios = boot[level][metric] / boot[reference][metric]
            rows.append(_fairness_row(level, reference, metric, float(totals[level][metric]),
                                      float(totals[reference][metric]), _cell_size(metric, cells),
                                      _interval(ratios)))
    return pd.DataFrame(rows)


def _cell_size(metric: str, cells: dict[str, float]) -> int:
    return int({"sensitivity": cells["readmitted"], "ppv": cells["called"]}.get(metric, cells["rows"]))


def _interval(ratios: np.ndarray) -> tuple[float, float]:
    ratios = ratios[np.isfinite(ratios)]
    if ratios.size < 10:
        return float("nan"), float("nan")
    return float(np.quantile(ratios, 0.025)), float(np.quantile(ratios, 0.975))


def _fairness_row(level, reference, metric, value, ref_value, cell, interval) -> dict[str, Any]:
    suppressed = cell < MIN_CELL
    ratio = value / ref_value if ref_value and np.isfinite(value) and np.isfinite(ref_value) else float("nan")
    low, high = interval
    outside = bool(np.isfinite(ratio) and not (FAIRNESS_BOUNDS[0] <= ratio <= FAIRNESS_BOUNDS[1]))
    excludes_one = bool(np.isfinite(low) and np.isfinite(high) and (high < 1 or low > 1))
    return {"group": level, "reference": reference, "metric": metric, "cell": cell, "suppressed": suppressed,
            "value": None if suppressed else value, "ratio": None if suppressed else ratio,
            "ratio_low": None if suppressed else low, "ratio_high": None if suppressed else high,
            "flagged": bool(not suppressed and level != reference and outside and excludes_one)}


# --- service health -----------------------------------------------------------------------------------

def latency_summary(latencies_ms, errors=None) -> dict[str, float]:
    """Request count, error rate and latency percentiles (ms)."""
    latencies = np.asarray(latencies_ms, dtype=np.float64)
    latencies = latencies[np.isfinite(latencies)]
    out = {"requests": int(latencies.size)}
    if errors is not None:
        errors = np.asarray(errors, dtype=bool)
        out["error_rate"] = float(errors.mean()) if errors.size else float("nan")
    for q in (50, 95, 99):
        out[f"p{q}_ms"] = float(np.percentile(latencies, q)) if latencies.size else float("nan")
    return out
