"""Model-quality metrics: one function, `evaluate_predictions`, used by `readmit evaluate`, the
benchmark, the model card and the dashboard.

Pure numpy (no scikit-learn at run time; the tests check every metric against scikit-learn).
Definitions follow ../shared/EVALUATION.md:

- AUROC: Mann-Whitney, ties counted one half (= `sklearn.metrics.roc_auc_score`).
- AUPRC: average precision, sum over distinct thresholds of (R_n - R_{n-1}) * P_n
  (= `sklearn.metrics.average_precision_score`; no interpolation).
- Brier: mean squared error of the probability.
- ECE: 10 equal-frequency bins. Rows are sorted by predicted probability (stable sort, so the
  result is deterministic) and cut into 10 consecutive blocks whose sizes differ by at most one
  (`np.array_split`); ECE = sum over bins of n_bin / n * |mean(y_bin) - mean(p_bin)|. Tied
  probabilities on a bin edge may fall on both sides of it.
- Calibration slope and intercept: logistic recalibration y ~ a + b * logit(p), fitted by
  Newton-Raphson (unpenalized maximum likelihood). Perfect calibration: slope 1, intercept 0.
  `calibration_in_the_large` is the intercept with the slope fixed at 1 (logit(p) as offset).
- Patient-cluster bootstrap: each replicate draws *patients* with replacement (as many as there
  are patients) and weights every row by how often its patient was drawn, so all encounters of a
  patient move together. Percentile 95% interval. Vectorized: replicates are processed in chunks
  as a weight matrix; AUROC of every replicate is computed from one sort.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np

ECE_BINS = 10
CAPACITIES = (0.05, 0.10, 0.20)
SMALL_GROUP_ROWS = 100       # a subgroup with fewer rows ...
SMALL_GROUP_POSITIVES = 10   # ... or fewer positives is flagged `small`: its metrics are unstable
MISSING_GROUP = "unknown"
_EPS = 1e-7


# --- input hygiene ------------------------------------------------------------------------------

def as_arrays(y, p) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels ({y.size}) and predictions ({p.size}) differ in length")
    if np.isnan(p).any() or np.isnan(y).any():
        raise ValueError("labels and predictions must not contain NaN: filter unevaluable rows first")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0/1")
    return y, p


def json_safe(value: Any) -> Any:
    """JSON-safe: numpy scalars to Python, NaN/inf to None, recursively."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return [json_safe(v) for v in value.tolist()]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


# --- discrimination -----------------------------------------------------------------------------

def auroc(y, p) -> float:
    """Area under the ROC curve (NaN when only one class is present)."""
    y, p = as_arrays(y, p)
    return float(weighted_auroc(y, p, np.ones((1, y.size)))[0])


def weighted_auroc(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC for each row of `weights` ([reps, n] non-negative row weights); ties count one half."""
    order = np.argsort(p, kind="mergesort")
    p_sorted, y_sorted = p[order], y[order]
    w = weights[:, order]
    starts = np.flatnonzero(np.r_[True, p_sorted[1:] != p_sorted[:-1]])  # groups of tied scores
    pos = np.add.reduceat(w * y_sorted, starts, axis=1)
    neg = np.add.reduceat(w * (1.0 - y_sorted), starts, axis=1)
    neg_below = np.cumsum(neg, axis=1) - neg
    numerator = (pos * (neg_below + 0.5 * neg)).sum(axis=1)
    denominator = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), np.nan)


def _flagged_counts(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each distinct cut-off (highest first): the cut-off, true positives and rows flagged at p >= it."""
    order = np.argsort(-p, kind="mergesort")
    p_sorted, y_sorted = p[order], y[order]
    last_of_tie = np.r_[p_sorted[1:] != p_sorted[:-1], True]
    return (p_sorted[last_of_tie], np.cumsum(y_sorted)[last_of_tie],
            (np.arange(y.size) + 1.0)[last_of_tie])


def average_precision(y, p) -> float:
    """Average precision (AUPRC), as scikit-learn defines it; NaN without positives."""
    y, p = as_arrays(y, p)
    if y.sum() == 0:
        return float("nan")
    _, tp, flagged = _flagged_counts(y, p)
    precision = tp / flagged
    recall = tp / y.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def roc_points(y, p, max_points: int = 201) -> dict[str, list[float]]:
    """ROC curve (false and true positive rates at every distinct threshold), thinned for plotting."""
    y, p = as_arrays(y, p)
    order = np.argsort(-p, kind="mergesort")
    p_sorted, y_sorted = p[order], y[order]
    last_of_tie = np.r_[p_sorted[1:] != p_sorted[:-1], True]
    tp = np.r_[0.0, np.cumsum(y_sorted)[last_of_tie]]
    fp = np.r_[0.0, np.cumsum(1.0 - y_sorted)[last_of_tie]]
    tpr = tp / tp[-1] if tp[-1] > 0 else tp
    fpr = fp / fp[-1] if fp[-1] > 0 else fp
    keep = _thin(len(tpr), max_points)
    return {"fpr": fpr[keep].tolist(), "tpr": tpr[keep].tolist()}


def pr_points(y, p, max_points: int = 201) -> dict[str, list[float]]:
    """Precision-recall curve at every distinct threshold, thinned for plotting."""
    y, p = as_arrays(y, p)
    order = np.argsort(-p, kind="mergesort")
    p_sorted, y_sorted = p[order], y[order]
    last_of_tie = np.r_[p_sorted[1:] != p_sorted[:-1], True]
    tp = np.cumsum(y_sorted)[last_of_tie]
    flagged = (np.arange(y.size) + 1.0)[last_of_tie]
    recall = tp / y.sum() if y.sum() > 0 else np.zeros_like(tp)
    precision = tp / flagged
    keep = _thin(len(recall), max_points)
    return {"recall": recall[keep].tolist(), "precision": precision[keep].tolist(),
            "threshold": p_sorted[last_of_tie][keep].tolist()}


def _thin(n: int, max_points: int) -> np.ndarray:
    if n <= max_points:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_points).round().astype(int))


# --- calibration --------------------------------------------------------------------------------

def brier(y, p) -> float:
    y, p = as_arrays(y, p)
    return float(np.mean((p - y) ** 2))


def log_loss(y, p) -> float:
    y, p = as_arrays(y, p)
    q = np.clip(p, _EPS, 1 - _EPS)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


def _equal_frequency_bins(p: np.ndarray, n_bins: int) -> list[np.ndarray]:
    order = np.argsort(p, kind="mergesort")
    return [block for block in np.array_split(order, min(n_bins, p.size)) if block.size]


def ece(y, p, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error over `n_bins` equal-frequency bins (see the module docstring)."""
    y, p = as_arrays(y, p)
    if y.size == 0:
        return float("nan")
    return float(sum(block.size / y.size * abs(y[block].mean() - p[block].mean())
                     for block in _equal_frequency_bins(p, n_bins)))


def reliability_curve(y, p, n_bins: int = ECE_BINS) -> list[dict[str, float]]:
    """Points of the reliability diagram on the ECE bins, with a Wilson 95% interval of the observed rate."""
    y, p = as_arrays(y, p)
    points = []
    for i, block in enumerate(_equal_frequency_bins(p, n_bins)):
        n, k = block.size, float(y[block].sum())
        lower, upper = wilson_interval(k, n)
        points.append({"bin": i, "n": int(n), "positives": int(k), "p_min": float(p[block].min()),
                       "p_max": float(p[block].max()), "mean_predicted": float(p[block].mean()),
                       "observed_rate": k / n, "lower": lower, "upper": upper})
    return points


def wilson_interval(k: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    if n == 0:
        return float("nan"), float("nan")
    rate = k / n
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def logit(p) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(q) - np.log1p(-q)


def fit_logistic(x, y, offset=None, max_iter: int = 100, tol: float = 1e-10) -> np.ndarray:
    """Unpenalized logistic regression by Newton-Raphson: returns [intercept, coef_1, ...].

    `x` is [n] or [n, k]; `offset` (optional) is added to the linear predictor with coefficient 1.
    Small and dependency-free, for recalibration and LACE's score-to-probability map.
    """
    y = np.asarray(y, dtype=np.float64).ravel()
    x = np.asarray(x, dtype=np.float64)
    x = x.reshape(-1, 1) if x.ndim == 1 else x
    design = np.column_stack([np.ones(y.size), x])
    off = np.zeros(y.size) if offset is None else np.asarray(offset, dtype=np.float64).ravel()
    beta = np.zeros(design.shape[1])
    prevalence = np.clip(y.mean(), _EPS, 1 - _EPS) if y.size else 0.5
    beta[0] = math.log(prevalence / (1 - prevalence)) - (off.mean() if y.size else 0.0)
    for _ in range(max_iter):
        eta = np.clip(design @ beta + off, -35, 35)
        mu = 1.0 / (1.0 + np.exp(-eta))
        gradient = design.T @ (y - mu)
        hessian = (design * (mu * (1 - mu))[:, None]).T @ design
        try:
            step = np.linalg.solve(hessian + 1e-12 * np.eye(len(beta)), gradient)
        except np.linalg.LinAlgError:
            step = np.linalg.lstsq(hessian, gradient, rcond=None)[0]
        beta = beta + step
        if np.max(np.abs(step)) < tol:
            break
    return beta


def calibration_fit(y, p) -> dict[str, float]:
    """Calibration slope and intercept (y ~ a + b logit p) and calibration-in-the-large (b fixed at 1)."""
    y, p = as_arrays(y, p)
    if y.size == 0 or y.min() == y.max():
        return {"calibration_slope": float("nan"), "calibration_intercept": float("nan"),
                "calibration_in_the_large": float("nan")}
    z = logit(p)
    intercept, slope = fit_logistic(z, y)
    in_the_large = fit_logistic(np.zeros((y.size, 0)), y, offset=z)[0]
    return {"calibration_slope": float(slope), "calibration_intercept": float(intercept),
            "calibration_in_the_large": float(in_the_large)}


# --- decisions ----------------------------------------------------------------------------------

def threshold_metrics(y, p, threshold: float) -> dict[str, float]:
    """Confusion counts, precision, recall, F1, accuracy and specificity when p >= threshold is flagged."""
    y, p = as_arrays(y, p)
    flag = p >= threshold
    tp = float(np.sum(flag & (y == 1)))
    fp = float(np.sum(flag & (y == 0)))
    fn = float(np.sum(~flag & (y == 1)))
    tn = float(np.sum(~flag & (y == 0)))
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    return {"threshold": float(threshold), "tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn),
            "precision": precision, "recall": recall, "f1": f1,
            "accuracy": (tp + tn) / y.size if y.size else float("nan"),
            "specificity": tn / (tn + fp) if tn + fp else float("nan"),
            "flagged_fraction": float(flag.mean()) if y.size else float("nan")}


def best_f1_cutoff(y, p) -> float:
    """The risk cut-off (flag p >= cut-off) with the highest F1; meant for a validation split."""
    y, p = as_arrays(y, p)
    if y.sum() == 0:
        return float("nan")
    cutoffs, tp, flagged = _flagged_counts(y, p)
    f1 = 2 * tp / (flagged + y.sum())
    return float(cutoffs[int(np.argmax(f1))])


def top_fraction_flags(p: np.ndarray, fraction: float) -> np.ndarray:
    """Boolean mask of the ceil(fraction * n) highest scores (ties broken by row order, deterministic)."""
    p = np.asarray(p, dtype=np.float64)
    k = int(math.ceil(fraction * p.size - 1e-9))
    flags = np.zeros(p.size, dtype=bool)
    if k > 0:
        flags[np.argsort(-p, kind="mergesort")[:k]] = True
    return flags


def capacity_metrics(y, p, fraction: float) -> dict[str, float]:
    """PPV, sensitivity and lift when the top `fraction` of encounters by risk are flagged."""
    y, p = as_arrays(y, p)
    flags = top_fraction_flags(p, fraction)
    return flag_summary(y, p, flags, fraction)


def flag_summary(y: np.ndarray, p: np.ndarray, flags: np.ndarray, fraction: float) -> dict[str, float]:
    n_flagged = int(flags.sum())
    hits = float(y[flags].sum())
    positives = float(y.sum())
    ppv = hits / n_flagged if n_flagged else float("nan")
    prevalence = positives / y.size if y.size else float("nan")
    return {"fraction": float(fraction), "n_flagged": n_flagged, "true_positives": int(hits),
            "cutoff": float(p[flags].min()) if n_flagged else float("nan"),
            "ppv": ppv, "sensitivity": hits / positives if positives else float("nan"),
            "lift": ppv / prevalence if prevalence else float("nan")}


def capacity_curve(y, p, fractions: Optional[Sequence[float]] = None) -> list[dict[str, float]]:
    """PPV and sensitivity for flagged fractions 1%..50% (the threshold trade-off by capacity)."""
    fractions = fractions if fractions is not None else [round(f, 2) for f in np.arange(0.01, 0.51, 0.01)]
    y, p = as_arrays(y, p)
    return [capacity_metrics(y, p, f) for f in fractions]
