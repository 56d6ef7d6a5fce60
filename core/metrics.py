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
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

ECE_BINS = 10
CAPACITIES = (0.05, 0.10, 0.20)
SMALL_GROUP_ROWS = 100       # a subgroup with fewer rows ...
SMALL_GROUP_POSITIVES = 10   # ... or fewer positives is flagged `small`: its metrics are unstable
MISSING_GROUP = "unknown"
_EPS = 1e-7


# --- input hygiene ------------------------------------------------------------------------------

def _as_arrays(y, p) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels ({y.size}) and predictions ({p.size}) differ in length")
    if np.isnan(p).any() or np.isnan(y).any():
        raise ValueError("labels and predictions must not contain NaN: filter unevaluable rows first")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0/1")
    return y, p


def _clean(value: Any) -> Any:
    """JSON-safe: numpy scalars to Python, NaN/inf to None, recursively."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_clean(v) for v in value.tolist()]
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
    y, p = _as_arrays(y, p)
    return float(_weighted_auroc(y, p, np.ones((1, y.size)))[0])


def _weighted_auroc(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
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
    y, p = _as_arrays(y, p)
    if y.sum() == 0:
        return float("nan")
    _, tp, flagged = _flagged_counts(y, p)
    precision = tp / flagged
    recall = tp / y.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def roc_points(y, p, max_points: int = 201) -> dict[str, list[float]]:
    """ROC curve (false and true positive rates at every distinct threshold), thinned for plotting."""
    y, p = _as_arrays(y, p)
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
    y, p = _as_arrays(y, p)
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
    y, p = _as_arrays(y, p)
    return float(np.mean((p - y) ** 2))


def log_loss(y, p) -> float:
    y, p = _as_arrays(y, p)
    q = np.clip(p, _EPS, 1 - _EPS)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


def _equal_frequency_bins(p: np.ndarray, n_bins: int) -> list[np.ndarray]:
    order = np.argsort(p, kind="mergesort")
    return [block for block in np.array_split(order, min(n_bins, p.size)) if block.size]


def ece(y, p, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error over `n_bins` equal-frequency bins (see the module docstring)."""
    y, p = _as_arrays(y, p)
    if y.size == 0:
        return float("nan")
    return float(sum(block.size / y.size * abs(y[block].mean() - p[block].mean())
                     for block in _equal_frequency_bins(p, n_bins)))


def reliability_curve(y, p, n_bins: int = ECE_BINS) -> list[dict[str, float]]:
    """Points of the reliability diagram on the ECE bins, with a Wilson 95% interval of the observed rate."""
    y, p = _as_arrays(y, p)
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
    y, p = _as_arrays(y, p)
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
    y, p = _as_arrays(y, p)
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
    y, p = _as_arrays(y, p)
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
    y, p = _as_arrays(y, p)
    flags = top_fraction_flags(p, fraction)
    return _flag_summary(y, p, flags, fraction)


def _flag_summary(y: np.ndarray, p: np.ndarray, flags: np.ndarray, fraction: float) -> dict[str, float]:
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
    y, p = _as_arrays(y, p)
    return [capacity_metrics(y, p, f) for f in fractions]


# --- patient-cluster bootstrap --------------------------------------------------------------------

def patient_bootstrap_weights(patient_id, n_boot: int, seed: int = 0, chunk: int = 100):
    """Yield [chunk, n_rows] row-weight matrices: per replicate, patients are drawn with replacement
    and each row gets its patient's draw count. Deterministic for a seed."""
    _, patient_index = np.unique(np.asarray(patient_id).astype(str), return_inverse=True)
    n_patients = int(patient_index.max()) + 1 if patient_index.size else 0
    rng = np.random.default_rng(seed)
    done = 0
    while done < n_boot:
        reps = min(chunk, n_boot - done)
        draws = rng.integers(0, n_patients, size=(reps, n_patients))
        counts = np.bincount((draws + (np.arange(reps) * n_patients)[:, None]).ravel(),
                             minlength=reps * n_patients).reshape(reps, n_patients)
        yield counts[:, patient_index].astype(np.float64)
        done += reps


def bootstrap_auroc(y, scores: Mapping[str, np.ndarray] | np.ndarray, patient_id, n_boot: int = 1000,
                    seed: int = 0) -> dict[str, np.ndarray] | np.ndarray:
    """AUROC of every replicate, the same patient draws for every score array (for paired differences)."""
    single = not isinstance(scores, Mapping)
    named = {"_": scores} if single else dict(scores)
    y = np.asarray(y, dtype=np.float64).ravel()
    arrays = {name: _as_arrays(y, s)[1] for name, s in named.items()}
    out: dict[str, list[np.ndarray]] = {name: [] for name in arrays}
    for weights in patient_bootstrap_weights(patient_id, n_boot, seed):
        for name, p in arrays.items():
            out[name].append(_weighted_auroc(y, p, weights))
    result = {name: np.concatenate(parts) if parts else np.array([]) for name, parts in out.items()}
    return result["_"] if single else result


def percentile_interval(values: np.ndarray, level: float = 0.95) -> list[float]:
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return [float("nan"), float("nan")]
    alpha = (1 - level) / 2
    return [float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))]


def auroc_interval(y, p, patient_id, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> list[float]:
    """Patient-cluster bootstrap percentile interval of AUROC."""
    return percentile_interval(bootstrap_auroc(y, p, patient_id, n_boot, seed), level)


def auroc_difference(y, p_a, p_b, patient_id, n_boot: int = 1000, seed: int = 0,
                     level: float = 0.95) -> dict[str, Any]:
    """AUROC(a) - AUROC(b) on the same rows, with a paired patient-cluster bootstrap interval."""
    reps = bootstrap_auroc(y, {"a": p_a, "b": p_b}, patient_id, n_boot, seed)
    diff = reps["a"] - reps["b"]
    return {"difference": auroc(y, p_a) - auroc(y, p_b), "ci": percentile_interval(diff, level),
            "p_a_not_better": float(np.mean(diff[~np.isnan(diff)] <= 0)) if np.any(~np.isnan(diff)) else None,
            "n_boot": n_boot, "seed": seed}


# --- one entry point ----------------------------------------------------------------------------

def overall_metrics(y, p) -> dict[str, float]:
    y, p = _as_arrays(y, p)
    n, positives = int(y.size), int(y.sum())
    return {"n": n, "positives": positives, "prevalence": positives / n if n else float("nan"),
            "mean_predicted": float(p.mean()) if n else float("nan"),
            "auroc": auroc(y, p), "auprc": average_precision(y, p), "brier": brier(y, p),
            "ece": ece(y, p), "log_loss": log_loss(y, p) if n else float("nan"), **calibration_fit(y, p)}


def _threshold_values(thresholds: Optional[Mapping[str, Any]]) -> dict[str, float]:
    """Accept {name: float} or {name: {"threshold" | "risk_cutoff": float, ...}} (as a model folder stores them)."""
    out = {}
    for name, value in (thresholds or {}).items():
        if isinstance(value, Mapping):
            value = next((value[key] for key in ("threshold", "risk_cutoff", "value") if key in value), None)
        if value is None:
            continue
        try:
            out[str(name)] = float(value)
        except (TypeError, ValueError):
            continue
    return out


def _group_labels(values) -> np.ndarray:
    labels = []
    for v in values:
        missing = v is None or (isinstance(v, float) and math.isnan(v)) or v is np.nan or str(v) in ("", "<NA>", "nan", "None")
        labels.append(MISSING_GROUP if missing else str(v))
    return np.asarray(labels, dtype=object)


def subgroup_table(y, p, groups: Mapping[str, Iterable], thresholds: Optional[Mapping[str, Any]] = None,
                   capacities: Sequence[float] = CAPACITIES, n_boot: int = 200, seed: int = 0,
                   patient_id=None) -> dict[str, list[dict[str, Any]]]:
    """Per grouping variable, one row per level: counts, positives, the overall metrics, metrics at
    each (global) threshold and PPV/sensitivity of the globally flagged top fractions.

    Thresholds and capacity cut-offs are the ones applied to everyone (a subgroup does not get its own
    cut-off), so the table shows who is flagged and how well it works within each group. Groups with
    fewer than SMALL_GROUP_ROWS rows or SMALL_GROUP_POSITIVES positives are flagged `small`.
    """
    y, p = _as_arrays(y, p)
    thresholds = _threshold_values(thresholds)
    global_flags = {f"top_{round(f * 100)}pct": (f, top_fraction_flags(p, f)) for f in capacities}
    table: dict[str, list[dict[str, Any]]] = {}
    for group_name, values in groups.items():
        labels = _group_labels(values)
        if labels.size != y.size:
            raise ValueError(f"group '{group_name}' has {labels.size} values for {y.size} rows")
        rows = []
        for level in sorted(set(labels.tolist()), key=lambda v: (v == MISSING_GROUP, v)):
            mask = labels == level
            yy, pp = y[mask], p[mask]
            row: dict[str, Any] = {"level": level, **overall_metrics(yy, pp)}
            row["small"] = bool(mask.sum() < SMALL_GROUP_ROWS or yy.sum() < SMALL_GROUP_POSITIVES)
            if patient_id is not None and n_boot and 0 < yy.sum() < yy.size:
                row["auroc_ci"] = auroc_interval(yy, pp, np.asarray(patient_id)[mask], n_boot, seed)
            row["thresholds"] = {name: threshold_metrics(yy, pp, t) for name, t in thresholds.items()}
            row["capacity"] = {name: _flag_summary(yy, pp, flags[mask], fraction)
                               for name, (fraction, flags) in global_flags.items()}
            rows.append(row)
        table[group_name] = rows
    return table


def evaluate_predictions(y, p, patient_id, groups: Optional[Mapping[str, Iterable]] = None,
                         thresholds: Optional[Mapping[str, Any]] = None, *, n_boot: int = 1000,
                         seed: int = 0, capacities: Sequence[float] = CAPACITIES,
                         subgroup_boot: int = 200) -> dict[str, Any]:
    """Everything `readmit evaluate` reports for one model on one set of rows, JSON-serializable.

    y: 0/1 labels; p: predicted probabilities; patient_id: cluster for the bootstrap;
    groups: {"race": values, "sex": values, "age_band": values}; thresholds: {name: threshold}.
    """
    y, p = _as_arrays(y, p)
    patient_id = np.asarray(patient_id).astype(str)
    if patient_id.size != y.size:
        raise ValueError("patient_id must have one value per row")
    overall = overall_metrics(y, p)
    overall["auroc_ci"] = auroc_interval(y, p, patient_id, n_boot, seed) if 0 < y.sum() < y.size else [None, None]
    overall["n_patients"] = int(np.unique(patient_id).size)
    threshold_values = _threshold_values(thresholds)
    result = {
        "overall": overall,
        "bootstrap": {"n_boot": n_boot, "seed": seed, "level": 0.95, "cluster": "patient",
                      "method": "percentile"},
        "thresholds": {name: threshold_metrics(y, p, t) for name, t in threshold_values.items()},
        "capacity": {f"top_{round(f * 100)}pct": capacity_metrics(y, p, f) for f in capacities},
        "reliability": reliability_curve(y, p),
        "curves": {"roc": roc_points(y, p), "pr": pr_points(y, p), "capacity": capacity_curve(y, p)},
        "subgroups": subgroup_table(y, p, groups or {}, threshold_values, capacities, subgroup_boot, seed,
                                    patient_id),
    }
    return _clean(result)
