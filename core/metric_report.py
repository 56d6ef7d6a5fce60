"""The evaluation report: patient-cluster bootstrap intervals, subgroup tables and
`evaluate_predictions`, the one entry point used by `readmit evaluate`, the benchmark, the model card
and the dashboard. Built from the pure metrics in `core.metrics`.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from core.metrics import (
    CAPACITIES,
    MISSING_GROUP,
    SMALL_GROUP_POSITIVES,
    SMALL_GROUP_ROWS,
    as_arrays,
    auroc,
    average_precision,
    brier,
    calibration_fit,
    capacity_curve,
    capacity_metrics,
    ece,
    flag_summary,
    json_safe,
    log_loss,
    pr_points,
    reliability_curve,
    roc_points,
    threshold_metrics,
    top_fraction_flags,
    weighted_auroc,
)

# --- patient-cluster bootstrap --------------------------------------------------------------------

def patient_bootstrap_weights(patient_id, n_boot: int, seed: int = 0, chunk: int = 100):
    """Yield [chunk, n_rows] row-weight matrices: per replicate, patients are drawn with replacement
    and each row gets its patient's draw count. Deterministic for a seed."""
    ids = np.asarray(patient_id)
    # integer codes (the prediction log's) need no text conversion, which costs seconds at a million rows
    _, patient_index = np.unique(ids if ids.dtype.kind in "iu" else ids.astype(str), return_inverse=True)
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
    arrays = {name: as_arrays(y, s)[1] for name, s in named.items()}
    out: dict[str, list[np.ndarray]] = {name: [] for name in arrays}
    for weights in patient_bootstrap_weights(patient_id, n_boot, seed):
        for name, p in arrays.items():
            out[name].append(weighted_auroc(y, p, weights))
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
    y, p = as_arrays(y, p)
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
        missing = (v is None or (isinstance(v, float) and math.isnan(v))
                   or str(v) in ("", "<NA>", "nan", "None"))
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
    y, p = as_arrays(y, p)
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
            row["capacity"] = {name: flag_summary(yy, pp, flags[mask], fraction)
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
    y, p = as_arrays(y, p)
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
    return json_safe(result)
