"""Reference profiles: the aggregates a period is compared with (no cell under 20 rows), the model folder's
`monitoring_reference.json`, the bins an input's values fall in, and the reference a report uses
(the model's, or a window of the log itself).
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np
import pandas as pd

from core import monitoring as mon
from core.encoding import encode
from core.errors import UserError
from core.features import NUMERIC_NAMES
from core.metric_report import auroc_interval
from core.warehouse import Warehouse, WarehouseError

if TYPE_CHECKING:
    pass

from serving.monitoring.constants import (
    MIN_CELL,
    MIN_FILLED_SHARE,
    MIN_LEVEL_SHARE,
    MIN_PERIOD_ROWS,
    MISSING,
    MONITORED,
    N_BOOT,
    QUANTILES,
    REFERENCE_FILE,
    REFERENCE_FORMAT,
    _clean,
    _model_layer,
)
from serving.monitoring.rows import _scored


def _numbers(values) -> np.ndarray:
    return pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=np.float64)


def _merge_small(edges: np.ndarray, counts: np.ndarray, min_cell: int) -> tuple[np.ndarray, np.ndarray]:
    """Drop inner cut points until every bin holds at least `min_cell` rows."""
    edges, counts = list(edges), list(counts)
    while len(counts) > 1 and min(counts) < min_cell:
        i = int(np.argmin(counts))
        j = i + 1 if i == 0 or (i < len(counts) - 1 and counts[i + 1] < counts[i - 1]) else i - 1
        low = min(i, j)
        counts[low:low + 2] = [counts[low] + counts[low + 1]]
        del edges[low]
    return np.asarray(edges, dtype=np.float64), np.asarray(counts, dtype=np.int64)


def numeric_profile(values, min_cell: int = MIN_CELL) -> dict[str, Any]:
    """Decile bins plus a 0.5% tail bin at each end (merged to `min_cell`), the missing count, quantiles and
    the standard deviation. The tail bins keep the values of a rare flag (1 in 3% of rows) apart from the
    rest and catch values beyond the reference's usual range."""
    array = _numbers(values)
    filled = array[np.isfinite(array)]
    tails = np.quantile(filled, [0.005, 0.995]) if filled.size else np.array([])
    edges = np.unique(np.r_[tails, mon.numeric_bin_edges(filled)])
    counts = mon.numeric_counts(filled, edges)
    edges, counts = _merge_small(edges, counts, min_cell)
    return {"kind": "numeric", "edges": edges.tolist(), "counts": counts.tolist(),
            "missing": int(array.size - filled.size),
            "quantiles": np.quantile(filled, QUANTILES).tolist() if filled.size >= min_cell else [],
            "sd": float(filled.std(ddof=1)) if filled.size > 1 else 0.0}


def _levels(values) -> np.ndarray:
    series = pd.Series(values, dtype=object)
    return series.where(series.notna(), MISSING).astype(str).to_numpy()


def categorical_profile(values, min_cell: int = MIN_CELL) -> dict[str, Any]:
    """Counts of the levels seen in at least `min_cell` rows and `MIN_LEVEL_SHARE` of them; the rest
    pooled as "other"; missing apart."""
    levels = pd.Series(_levels(values)).value_counts()
    missing = int(levels.pop(MISSING)) if MISSING in levels.index else 0
    kept = levels[(levels >= min_cell) & (levels >= MIN_LEVEL_SHARE * levels.sum())]
    return {"kind": "categorical", "levels": [str(v) for v in kept.index], "counts": [int(c) for c in kept],
            "other": int(levels.sum() - kept.sum()), "missing": missing}


def risk_profile(risk, raw=None, min_cell: int = MIN_CELL) -> dict[str, Any]:
    """The risk distribution (decile bins), its mean, and the raw model probability's deciles and
    quantiles when known (a recalibrated copy maps them through its new calibration)."""
    risk = _numbers(risk)
    risk = risk[np.isfinite(risk)]
    profile = numeric_profile(risk, min_cell)
    out = {"edges": profile["edges"], "counts": profile["counts"], "quantiles": profile["quantiles"],
           "mean": float(risk.mean()) if risk.size else float("nan"), "expected_auroc": mon.expected_auroc(risk),
           "n": int(risk.size)}
    if raw is not None:
        raw = _numbers(raw)
        raw = raw[np.isfinite(raw)]
        out["raw_edges"] = mon.numeric_bin_edges(raw).tolist()
        out["raw_quantiles"] = np.quantile(raw, np.linspace(0.005, 0.995, 100)).tolist()
    return out


def build_reference(features: pd.DataFrame, risk, y=None, patient_id=None, raw=None, *, description: str,
                    names: Sequence[str] = MONITORED, min_cell: int = MIN_CELL) -> dict[str, Any]:
    """A reference profile (JSON-ready, aggregates only) of feature rows, their risks and, when known,
    their outcomes (realised performance of the reference)."""
    numeric = set(NUMERIC_NAMES)
    profiles = {name: (numeric_profile if name in numeric else categorical_profile)(features[name], min_cell)
                for name in names if name in features.columns}
    reference = {"format": REFERENCE_FORMAT, "description": description, "rows": int(len(features)),
                 "features": profiles, "risk": risk_profile(risk, raw, min_cell)}
    if y is not None:
        y = _numbers(y)
        p = _numbers(risk)
        known = np.isfinite(y) & np.isfinite(p)
        if known.sum() >= min_cell:
            performance = {k: v for k, v in mon.realised_performance(y[known], p[known]).items()}
            if patient_id is not None:
                low, high = auroc_interval(y[known], p[known], np.asarray(patient_id)[known], n_boot=N_BOOT)
                performance.update(auroc_low=low, auroc_high=high)
            reference["performance"] = _clean(performance)
    return reference


def reference_path(model_dir: str | Path) -> Path:
    return Path(model_dir) / REFERENCE_FILE


def save_model_reference(model_dir: str | Path, reference: dict[str, Any]) -> Path:
    """Write the folder's monitoring reference (verified first when sealed: a reference is only written beside
    the files it describes; the manifest does not cover it, so the version stays)."""
    path = reference_path(model_dir)
    with _model_layer().sealed_update(model_dir):
        path.write_text(json.dumps(_clean(reference), indent=1, sort_keys=True) + "\n")
    return path


def load_model_reference(model_dir: str | Path) -> dict[str, Any]:
    path = reference_path(model_dir)
    if not path.exists():
        raise UserError(f"{path}: missing; build it with `readmit monitor-reference --model {model_dir} --warehouse W` "
                        "or monitor against a window of the log (--reference START:END)")
    reference = json.loads(path.read_text())
    if reference.get("format") != REFERENCE_FORMAT:
        raise UserError(f"{path}: unknown format {reference.get('format')!r} (expected {REFERENCE_FORMAT})")
    return reference


def model_reference_from_warehouse(model_dir: str | Path, root: str, split: str = "validation") -> dict[str, Any]:
    """The reference of a model: its `split` rows of the warehouse it was trained from, scored by it."""
    predictor = _model_layer().ReadmitPredictor.load(model_dir)
    try:
        features = Warehouse(root).query("SELECT * FROM features WHERE split = ? AND eligible", [split])
    except WarehouseError as error:
        raise UserError(str(error)) from None
    if features.empty:
        raise UserError(f"warehouse {root} has no eligible {split} rows in its features table")
    raw = np.asarray(predictor.raw_probability(encode(features, predictor.preprocessing)), dtype=np.float64)
    risk = predictor.calibrate(raw)
    labels = features["readmitted_30d"].map({True: 1.0, False: 0.0}).astype(np.float64)
    return build_reference(features, risk, labels, features["patient_id"], raw,
                           description=f"the {split} split of the model's training data ({len(features):,} "
                                       f"encounters), scored by {predictor.model_version}")


# --- drift of one input against a profile -------------------------------------------------------------

def bin_index(profile: dict[str, Any], values) -> np.ndarray:
    """Each value's bin in the profile's order: value bins, then ("other" for categories) and missing."""
    if profile["kind"] == "numeric":
        array = _numbers(values)
        edges = np.asarray(profile["edges"], dtype=np.float64)
        index = np.searchsorted(edges, array, side="right")
        return np.where(np.isfinite(array), index, len(edges) + 1)
    levels = list(profile["levels"])
    if isinstance(getattr(values, "dtype", None), pd.CategoricalDtype):  # bin the categories, not the rows
        lookup = bin_index(profile, np.asarray(values.cat.categories, dtype=object))
        codes = values.cat.codes.to_numpy()
        return np.where(codes < 0, len(levels) + 1, lookup[np.maximum(codes, 0)])
    codes = pd.Categorical(_levels(values), categories=levels + [MISSING]).codes.astype(np.int64)
    raw = _levels(values)
    return np.where(raw == MISSING, len(levels) + 1, np.where(codes < 0, len(levels), codes))


def reference_counts(profile: dict[str, Any]) -> np.ndarray:
    extra = [profile["other"]] if profile["kind"] == "categorical" else []
    return np.asarray(list(profile["counts"]) + extra + [profile["missing"]], dtype=np.float64)


def is_monitorable(profile: dict[str, Any]) -> bool:
    counts = reference_counts(profile)
    return counts.sum() > 0 and 1 - counts[-1] / counts.sum() >= MIN_FILLED_SHARE


# --- references for a report ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Reference:
    kind: str                                       # "model" or "window"
    profile: dict[str, Any]
    window: Optional[tuple[dt.date, dt.date]] = None

    @property
    def description(self) -> str:
        return str(self.profile.get("description", ""))


def parse_window(text: str) -> tuple[dt.date, dt.date]:
    """'2025-01-01:2025-06-30' -> both days (inclusive); UserError otherwise."""
    try:
        start, end = (dt.date.fromisoformat(part.strip()) for part in text.split(":"))
    except ValueError:
        raise UserError(f"--reference must be 'model' or START:END (YYYY-MM-DD:YYYY-MM-DD), got {text[:40]!r}") from None
    if end < start:
        raise UserError(f"--reference {text}: the end is before the start")
    return start, end


def window_reference(rows: pd.DataFrame, start: dt.date, end: dt.date) -> Reference:
    """A reference made of the log's own scored discharges from `start` to `end`."""
    inside = rows[_scored(rows) & (rows["discharge"] >= np.datetime64(start)) & (rows["discharge"] <= np.datetime64(end))]
    if len(inside) < MIN_PERIOD_ROWS:
        raise UserError(f"the reference window {start}:{end} holds {len(inside)} scored discharges in the log; "
                        f"at least {MIN_PERIOD_ROWS} are needed")
    # No patient bootstrap of the window's AUROC: it is rebuilt on every run, nothing reads its interval
    # (alerts compare a period's interval with the reference's point AUROC), and on a big log it cost more
    # than every period's interval together.
    profile = build_reference(inside, inside["risk"], inside["label"], None,
                              description=f"the log's discharges from {start} to {end} ({len(inside):,} scored)",
                              min_cell=1)
    return Reference("window", profile, (start, end))


def resolve_reference(spec: str, rows: pd.DataFrame, model_dir: Optional[str | Path]) -> Reference:
    if spec == "model":
        if model_dir is None:
            raise UserError("--reference model needs the model folder (--model DIR)")
        return Reference("model", load_model_reference(model_dir))
    return window_reference(rows, *parse_window(spec))


