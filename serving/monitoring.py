"""Monitoring: the report `readmit monitor` writes and the Monitoring page shows, from the prediction log.

    report = monitoring_report(engine, as_of=dt.date(2026, 11, 28), model_dir="models/champion")
    report["alerts"]    # [{"check", "subject", "severity", "message", "period"}], act first
    any_act(report)     # `readmit monitor` exits 3 then

Period by period (weeks or months of discharge dates; docs/monitoring.md says why each threshold):
- volume, invalid rows, the score distribution and score PSI against a reference;
- drift of every model input against the reference: PSI over the reference's bins (quantile bins and a
  missing bin for numbers; levels, "other" and missing for categories) with a chi-squared test on the
  same bins, Benjamini-Hochberg across the inputs of a period (`core.monitoring.drift_severity`), and
  the share of inputs that drift;
- realised performance once every outcome of the period has matured (discharge + 30 days on or before
  `as_of`), estimated performance (confidence-based, `core.monitoring.estimated_performance`) always;
- fairness over the last matured periods, and service health from the API.

Each logged encounter counts once: its latest logged prediction (of `model_version` when given).

The reference is a profile of aggregates (`build_reference`, no cell under 20 rows): the model folder
ships one made from its validation split (`monitoring_reference.json`; it changes no score, so the
manifest does not cover it), and `START:END` makes one from the log's own discharges in that window.

Recalibration under the change plan (`recalibrate`) and promotion (`promote`) live here too: both
change which calibrated model serves, and both are checked against the same outcomes.
"""
from __future__ import annotations

import datetime as dt
import getpass
import html
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np
import pandas as pd
from pandas.api.types import union_categoricals
from prometheus_client.parser import text_string_to_metric_families
from scipy import stats
from sqlalchemy import Engine, Text, and_, cast, func, select

from core import metrics as core_metrics
from core import monitoring as mon
from core.config import REPO_ROOT, get_settings
from core.encoding import encode
from core.errors import UserError
from core.features import CODE_FEATURES, FEATURE_COLUMNS, FEATURE_LABELS, NUMERIC_NAMES
from core.metric_report import auroc_interval
from core.warehouse import Warehouse, WarehouseError, write_text_atomic
from serving import figures
from serving.db_tables import CallList, CallListEntry, Outcome, PredictionLog
from serving.prediction_log import parse_features

if TYPE_CHECKING:
    from models.calibration import Calibrator

REFERENCE_FILE = "monitoring_reference.json"
REFERENCE_FORMAT = 1
PERIODS = ("week", "month")
MATURITY_DAYS = 30                  # the label of a discharge is final 30 days after it
MIN_PERIOD_ROWS = 100               # fewer scored rows: the period is shown, not judged
MIN_CELL = 20                       # reference cells smaller than this are merged (privacy and stability)
MIN_LEVEL_SHARE = 0.005             # rarer reference levels count as "other"
MIN_FILLED_SHARE = 0.01             # an input filled in fewer reference rows is not monitored
QUANTILES = np.linspace(0.025, 0.975, 20)   # for the Wasserstein effect size...
QUANTILE_SAMPLE = 5_000             # ...from at most this many rows a period
MONITORED = tuple(name for name in FEATURE_COLUMNS if name not in CODE_FEATURES)
OTHER, MISSING = "__other__", "__missing__"
DATASET_DRIFT = (0.25, 0.5)         # share of drifting inputs: watch, act (Evidently's dataset drift is 0.5)
ESTIMATED_AUROC = (0.03, 0.05)      # |expected AUROC - reference|: watch, act
ESTIMATED_RATE = (0.10, 0.25)       # |expected readmission rate / reference - 1|: watch, act (and significant)
INVALID_SHARE = (0.02, 0.05)        # rows not scored for invalid values: watch, act
UNKNOWN_SHARE = (0.2, 0.5)          # matured discharges without an outcome: watch, act
VOLUME_RATIO = ((0.5, 2.0), (0.25, 4.0))    # scored rows / median of the other complete periods
AUROC_DROP = (0.0, 0.05)            # interval entirely below the reference AUROC minus this: watch, act
FAIRNESS_PERIODS = 3                # fairness over the last matured periods
# A flagged ratio is watch; act when its whole 95% interval lies outside 0.8-1.25: some 30 group ratios are
# tested at once, so one interval that merely excludes 1 is expected by chance now and then.
ERROR_RATE = (0.01, 0.05)           # API requests answered 5xx: watch, act
P95_SECONDS = (1.0, 2.5)            # API 95th percentile latency: watch, act
N_BOOT = 100                        # patient-bootstrap replicates of an interval (a monitoring read, not a paper)
RECALIBRATION_MIN_ROWS = 1000
RECALIBRATION_MIN_POSITIVES = 30
RECALIBRATION_ECE = 0.02
PROMOTION_FILE = REPO_ROOT / "data" / "promoted_model.json"


def _model_layer() -> SimpleNamespace:
    """The model layer, imported on first use: it loads torch and transformers (seconds), which the report
    never needs; only building a reference, recalibrating and promoting do."""
    from models import calibration, card, inference, manifest  # noqa: PLC0415 (torch only when a model is used)
    return SimpleNamespace(Calibrator=calibration.Calibrator, grouped_halves=calibration.grouped_halves,
                           CHANGES_FILE=card.CHANGES_FILE, write_card=card.write_card,
                           ReadmitPredictor=inference.ReadmitPredictor, sealed_update=manifest.sealed_update)


# --- reference profiles ------------------------------------------------------------------------------

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


# --- the log, matched to outcomes ------------------------------------------------------------------------

def load_monitoring_rows(engine: Engine, as_of: dt.date, model_version: Optional[str] = None,
                         names: Sequence[str] = MONITORED, chunk: int = 50_000) -> pd.DataFrame:
    """Each logged encounter's latest prediction (of `model_version` when given) with its outcome, one row
    per encounter discharged on or before `as_of`, and the columns the report needs:

    discharge (day), channel, model_version, source, encounter_id, patient_id, risk, scored, eligible,
    invalid, label (1 / 0 / NaN), status ("known", "unmatured" or "unknown") and the monitored inputs."""
    log, outcome = PredictionLog.__table__, Outcome.__table__
    latest = select(func.max(log.c.id)).group_by(log.c.source, log.c.encounter_id)
    # times and the JSON are read as text and parsed in bulk below: per-row conversion would dominate
    statement = (select(cast(log.c.logged_at, Text).label("logged_at"), log.c.channel, log.c.model_version,
                        log.c.source, log.c.encounter_id, log.c.patient_id, log.c.risk,
                        cast(log.c.features, Text).label("features"),
                        outcome.c.readmitted_30d, outcome.c.readmission_date)
                 .select_from(log.outerjoin(outcome, and_(outcome.c.source == log.c.source,
                                                          outcome.c.encounter_id == log.c.encounter_id))))
    if model_version:
        latest = latest.where(log.c.model_version == model_version)
        statement = statement.where(log.c.model_version == model_version)
    statement = statement.where(log.c.id.in_(latest) | log.c.encounter_id.is_(None))
    parts = []
    with engine.connect() as connection:
        cursor = connection.execute(statement).cursor   # raw DBAPI rows: converted in bulk, not row by row
        while part := cursor.fetchmany(chunk):
            frame = pd.DataFrame(part, columns=_LOG_READ)
            parsed = parse_features(frame["features"].tolist(), names, categorical=True)
            parts.append(_monitoring_frame(frame, parsed, as_of))
    if not parts:
        return _monitoring_frame(pd.DataFrame(columns=_LOG_READ), parse_features([], names, categorical=True), as_of)
    return _concat(parts)


def _concat(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Chunks into one frame; categorical columns keep a categorical dtype (the union of their categories)
    where `pd.concat` would fall back to millions of Python strings."""
    categorical = [name for name, dtype in parts[0].dtypes.items() if isinstance(dtype, pd.CategoricalDtype)]
    out = pd.concat([part.drop(columns=categorical) for part in parts], ignore_index=True)
    for name in categorical:
        out[name] = union_categoricals([part[name] for part in parts], ignore_order=True)
    return out


_LOG_READ = ["logged_at", "channel", "model_version", "source", "encounter_id", "patient_id", "risk", "features",
             "readmitted_30d", "readmission_date"]


def _monitoring_frame(frame: pd.DataFrame, parsed: pd.DataFrame, as_of: dt.date) -> pd.DataFrame:
    logged_day = pd.to_datetime(frame["logged_at"], utc=True, format="ISO8601").dt.tz_localize(None).dt.normalize()
    discharge = pd.to_datetime(parsed["_discharge_time"], errors="coerce").dt.normalize()
    discharge = discharge.fillna(logged_day).to_numpy()
    risk = pd.to_numeric(frame["risk"], errors="coerce").to_numpy(dtype=np.float64)
    # booleans, or 0 / 1 from a driver without booleans (SQLite): 1.0, 0.0 or NaN
    label = pd.array(frame["readmitted_30d"].to_numpy(dtype=object), dtype="boolean").to_numpy(
        dtype=np.float64, na_value=np.nan)
    readmission = pd.to_datetime(frame["readmission_date"], errors="coerce").to_numpy()
    days_to = (readmission - discharge) / np.timedelta64(1, "D")
    from_date = np.where(np.isnan(days_to) | (days_to < 0), np.nan, (days_to <= MATURITY_DAYS).astype(np.float64))
    label = np.where(np.isnan(label), from_date, label)
    as_of_day = np.datetime64(as_of, "D")
    matured = discharge + np.timedelta64(MATURITY_DAYS, "D") <= as_of_day
    out = pd.DataFrame({
        "discharge": discharge, "channel": frame["channel"].to_numpy(), "model_version": frame["model_version"].to_numpy(),
        "source": frame["source"].to_numpy(), "encounter_id": frame["encounter_id"].to_numpy(),
        "patient_id": frame["patient_id"].astype(object).fillna("").astype(str).to_numpy(), "risk": risk,
        "scored": np.isfinite(risk), "eligible": parsed["_eligible"].fillna(True).to_numpy(dtype=bool),
        "invalid": parsed["_invalid"].fillna(False).to_numpy(dtype=bool), "label": np.where(matured, label, np.nan),
        "status": np.where(~matured, "unmatured", np.where(np.isnan(label), "unknown", "known")),
    })
    out = pd.concat([out, parsed.drop(columns=["_discharge_time", "_eligible", "_invalid"]).reset_index(drop=True)],
                    axis=1)
    return out[out["discharge"] <= as_of_day].reset_index(drop=True)


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
    profile = build_reference(inside, inside["risk"], inside["label"], inside["patient_id"],
                              description=f"the log's discharges from {start} to {end} ({len(inside):,} scored)",
                              min_cell=1)
    return Reference("window", profile, (start, end))


def resolve_reference(spec: str, rows: pd.DataFrame, model_dir: Optional[str | Path]) -> Reference:
    if spec == "model":
        if model_dir is None:
            raise UserError("--reference model needs the model folder (--model DIR)")
        return Reference("model", load_model_reference(model_dir))
    return window_reference(rows, *parse_window(spec))


# --- periods ------------------------------------------------------------------------------------------

def _scored(rows: pd.DataFrame) -> np.ndarray:
    return (rows["scored"] & rows["eligible"] & ~rows["invalid"]).to_numpy(dtype=bool)


def assign_periods(discharge: np.ndarray, period: str) -> tuple[np.ndarray, list[pd.Period]]:
    """Each row's period number and the periods in order (weeks start on Monday)."""
    if period not in PERIODS:
        raise UserError(f"--period must be one of {', '.join(PERIODS)}")
    if len(discharge) == 0:
        return np.zeros(0, dtype=np.int64), []
    keys = pd.PeriodIndex(pd.DatetimeIndex(discharge), freq="M" if period == "month" else "W-SUN")
    codes, uniques = pd.factorize(keys, sort=True)
    return codes.astype(np.int64), list(uniques)


def period_id(p: pd.Period) -> str:
    return p.strftime("%Y-%m") if p.freqstr.startswith("M") else p.start_time.strftime("%G-W%V")


def period_label(p: pd.Period) -> str:
    if p.freqstr.startswith("M"):
        return p.strftime("%B %Y")
    start = p.start_time
    return f"the week of {start.day} {start.strftime('%b %Y')}"


def _period_bounds(p: pd.Period) -> tuple[dt.date, dt.date]:
    return p.start_time.date(), p.end_time.date()


# --- call lists -------------------------------------------------------------------------------------

def load_call_lists(engine: Engine) -> pd.DataFrame:
    """Every stored call-list entry with its list's date (empty when no list was ever built)."""
    entry, lists = CallListEntry.__table__, CallList.__table__
    statement = select(entry.c.source, entry.c.encounter_id, lists.c.list_date).join(
        lists, lists.c.id == entry.c.call_list_id)
    with engine.connect() as connection:
        return pd.DataFrame(connection.execute(statement).all(), columns=["source", "encounter_id", "list_date"])


def flagged_encounters(rows: pd.DataFrame, call_lists: pd.DataFrame, calls_per_day: int,
                       follow_up_days: int) -> tuple[np.ndarray, np.ndarray]:
    """Who was on a call list, and whether that came from the stored lists (True) or a replay.

    Discharges within the stored lists' reach (from the first list date minus `follow_up_days` to the
    last list date) are on a list when an entry names them. Others are replayed: the `calls_per_day`
    highest risks of each discharge day, as the worklist would have ranked them."""
    n = len(rows)
    order = np.lexsort((-np.nan_to_num(rows["risk"].to_numpy(dtype=np.float64), nan=-1.0), rows["discharge"].to_numpy()))
    rank = np.empty(n, dtype=np.int64)
    day = rows["discharge"].to_numpy()[order]
    starts = np.r_[True, day[1:] != day[:-1]] if n else np.zeros(0, dtype=bool)
    position = np.arange(n) - np.maximum.accumulate(np.where(starts, np.arange(n), 0)) if n else np.zeros(0, dtype=np.int64)
    rank[order] = position
    flagged = rank < max(1, int(calls_per_day))
    stored = np.zeros(n, dtype=bool)
    if len(call_lists):
        dates = pd.to_datetime(call_lists["list_date"])
        low = np.datetime64(dates.min() - pd.Timedelta(days=follow_up_days))
        high = np.datetime64(dates.max())
        stored = (rows["discharge"].to_numpy() >= low) & (rows["discharge"].to_numpy() <= high)
        named = pd.MultiIndex.from_frame(call_lists[["source", "encounter_id"]].astype(str))
        on_list = pd.MultiIndex.from_arrays([rows["source"].astype(str), rows["encounter_id"].astype(str)]).isin(named)
        flagged = np.where(stored, on_list, flagged)
    return flagged, stored


# --- the report ---------------------------------------------------------------------------------------

def _clean(value: Any) -> Any:
    """JSON-ready: NaN and infinities become None, numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def monitoring_report(engine: Engine, *, as_of: Optional[dt.date] = None, reference: str = "model",
                      period: str = "month", model_dir: Optional[str | Path] = None,
                      model_version: Optional[str] = None, calls_per_day: Optional[int] = None,
                      metrics_text: Optional[str] = None, n_boot: int = N_BOOT) -> dict[str, Any]:
    """The whole report from the operational database (see the module docstring)."""
    as_of = as_of or dt.datetime.now(dt.timezone.utc).date()
    settings = get_settings()
    rows = load_monitoring_rows(engine, as_of, model_version)
    chosen = resolve_reference(reference, rows, model_dir or settings.model_dir)
    return build_report(rows, chosen, as_of=as_of, period=period, call_lists=load_call_lists(engine),
                        calls_per_day=calls_per_day or settings.calls_per_day,
                        follow_up_days=settings.follow_up_days, metrics_text=metrics_text, n_boot=n_boot)


def build_report(rows: pd.DataFrame, reference: Reference, *, as_of: dt.date, period: str = "month",
                 call_lists: Optional[pd.DataFrame] = None, calls_per_day: int = 10, follow_up_days: int = 30,
                 metrics_text: Optional[str] = None, n_boot: int = N_BOOT) -> dict[str, Any]:
    """The report of monitoring rows (`load_monitoring_rows`) against a reference: pure, no database."""
    codes, periods = assign_periods(rows["discharge"].to_numpy(), period)
    scored = _scored(rows)
    flagged, stored = flagged_encounters(rows, call_lists if call_lists is not None else pd.DataFrame(
        columns=["source", "encounter_id", "list_date"]), calls_per_day, follow_up_days)
    flagged &= scored
    first = pd.Timestamp(rows["discharge"].min()).date() if len(rows) else as_of
    summaries = _period_summaries(rows, codes, periods, scored, stored, as_of, first, reference)
    drift = _drift(rows, codes, periods, scored, reference, summaries)
    patients = pd.factorize(rows["patient_id"])[0]     # integer codes: the bootstraps draw patients
    performance = _performance(rows, codes, scored, flagged, patients, summaries, n_boot)
    fairness = _fairness(rows, codes, scored, flagged, patients, summaries, n_boot)
    service = service_health(rows, codes, periods, metrics_text)
    report = {
        "as_of": as_of.isoformat(), "period": period, "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(
            timespec="seconds"),
        "reference": {"kind": reference.kind, "description": reference.description, "rows": reference.profile.get("rows"),
                      "window": [d.isoformat() for d in reference.window] if reference.window else None,
                      "mean_risk": reference.profile["risk"].get("mean"),
                      "expected_auroc": reference.profile["risk"].get("expected_auroc"),
                      "performance": reference.profile.get("performance", {})},
        "calls_per_day": int(calls_per_day),
        "model_versions": sorted({str(v) for v in rows["model_version"].dropna().unique()}),
        "counts": _counts(rows, scored),
        "periods": summaries, "drift": drift, "performance": performance, "fairness": fairness, "service": service,
    }
    report["alerts"] = [alert.as_dict() for alert in alerts(report)]
    return _clean(report)


def _counts(rows: pd.DataFrame, scored: np.ndarray) -> dict[str, int]:
    status = rows["status"].to_numpy()
    return {"logged": int(len(rows)), "scored": int(scored.sum()), "invalid": int(rows["invalid"].sum()),
            "ineligible": int((~rows["eligible"]).sum()), "with_outcome": int((scored & (status == "known")).sum()),
            "unmatured": int((scored & (status == "unmatured")).sum()),
            "unknown": int((scored & (status == "unknown")).sum())}


def _in_window(p: pd.Period, reference: Reference) -> bool:
    if reference.window is None:
        return False
    start, end = _period_bounds(p)
    return start >= reference.window[0] and end <= reference.window[1]


def _period_summaries(rows, codes, periods, scored, stored, as_of, first: dt.date, reference) -> list[dict[str, Any]]:
    """Each period's counts and score summary, from per-period sums over the rows (no frame is sliced). A period
    is `complete` when the log covers all of it: it starts on or after the first logged discharge and ends
    on or before `as_of`."""
    k = len(periods)
    status = rows["status"].to_numpy()

    def per_period(mask) -> np.ndarray:
        return np.bincount(codes, weights=np.asarray(mask, dtype=np.float64), minlength=k)

    totals = {"rows": per_period(np.ones(len(rows))), "scored": per_period(scored),
              "invalid": per_period(rows["invalid"].to_numpy(dtype=bool)),
              "ineligible": per_period(~rows["eligible"].to_numpy(dtype=bool)),
              "with_outcome": per_period(scored & (status == "known")),
              "unmatured": per_period(scored & (status == "unmatured")),
              "unknown": per_period(scored & (status == "unknown")),
              "api_rows": per_period(rows["channel"].to_numpy() == "api"), "stored": per_period(scored & stored)}
    risk = rows["risk"].to_numpy()[scored]
    order = np.lexsort((risk, codes[scored]))
    sorted_risk, bounds = risk[order], np.searchsorted(codes[scored][order], np.arange(k + 1))
    out = []
    for i, p in enumerate(periods):
        start, end = _period_bounds(p)
        part = sorted_risk[bounds[i]:bounds[i + 1]]
        scored_i, stored_i = int(totals["scored"][i]), int(totals["stored"][i])
        out.append({"period": period_id(p), "label": period_label(p), "start": start.isoformat(), "end": end.isoformat(),
                    "complete": first <= start and end <= as_of,
                    "matured": end + dt.timedelta(days=MATURITY_DAYS) <= as_of, "in_reference": _in_window(p, reference),
                    **{name: int(values[i]) for name, values in totals.items() if name != "stored"},
                    "invalid_share": float(totals["invalid"][i] / totals["rows"][i]) if totals["rows"][i] else 0.0,
                    "risk_mean": float(part.mean()) if part.size else None,
                    **{f"risk_p{q}": float(np.quantile(part, q / 100)) if part.size else None for q in (10, 50, 90)},
                    "call_list": "stored" if scored_i and stored_i == scored_i else "mixed" if stored_i else "replay"})
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
        return drift_cells(profile, bin_index(profile, rows[name])[index], values, sub_codes, n_periods, sample)

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


def _performance(rows, codes, scored, flagged, patients, summaries, n_boot) -> list[dict[str, Any]]:
    out = []
    risk, label = rows["risk"].to_numpy(), rows["label"].to_numpy()
    for k, summary in enumerate(summaries):
        in_period = (codes == k) & scored
        if in_period.sum() >= MIN_PERIOD_ROWS:
            estimate = mon.estimated_performance(risk[in_period], flagged[in_period])
            out.append({"period": summary["period"], "kind": "estimated", **estimate,
                        "risk_sd": float(np.std(risk[in_period], ddof=1)) if in_period.sum() > 1 else None})
        known = in_period & np.isfinite(label)
        y = label[known]
        if not summary["matured"] or known.sum() < MIN_PERIOD_ROWS or y.min() == y.max():
            continue
        realised = mon.realised_performance(y, risk[known], flagged[known])
        low, high = auroc_interval(y, risk[known], patients[known], n_boot=n_boot, seed=k)
        low_obs, high_obs = core_metrics.wilson_interval(float(y.sum()), int(y.size))
        out.append({"period": summary["period"], "kind": "realised", **realised, "auroc_low": low, "auroc_high": high,
                    "observed_low": low_obs, "observed_high": high_obs})
    return out


FAIRNESS_GROUPS = ("race", "sex", "age_band")


def _fairness(rows, codes, scored, flagged, patients, summaries, n_boot) -> dict[str, Any]:
    """Ratios to the largest group over the last `FAIRNESS_PERIODS` matured periods, by race, sex, age band
    and race x sex (cells under 10 suppressed by `core.monitoring.fairness_table`)."""
    matured = [k for k, s in enumerate(summaries) if s["matured"] and not s["in_reference"]][-FAIRNESS_PERIODS:]
    label = rows["label"].to_numpy()
    use = scored & np.isin(codes, matured) & np.isfinite(label)
    if not matured or use.sum() < MIN_CELL:
        return {"periods": [summaries[k]["period"] for k in matured], "rows": [], "n": int(use.sum())}
    subset = rows.loc[use, ["risk", *FAIRNESS_GROUPS]]
    groups = {name: subset[name].astype(object).fillna("unknown").astype(str) for name in FAIRNESS_GROUPS}
    groups["race x sex"] = groups["race"] + " / " + groups["sex"]
    tables = []
    for attribute, values in groups.items():
        table = mon.fairness_table(label[use], subset["risk"], flagged[use], values, patients[use], n_boot=n_boot)
        tables.append(table.assign(attribute=attribute))
    return {"periods": [summaries[k]["period"] for k in matured], "n": int(use.sum()),
            "rows": pd.concat(tables, ignore_index=True).to_dict("records")}


# --- service health -----------------------------------------------------------------------------------

def parse_api_metrics(text: str) -> dict[str, Any]:
    """Requests, the share answered 5xx and latency percentiles (interpolated in the histogram buckets)
    from a scrape of the API's /metrics; the scrape route itself is left out."""
    requests = errors = 0.0
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            route = sample.labels.get("route", "")
            if route == "/metrics":
                continue
            if sample.name == "readmit_api_requests_total":
                requests += sample.value
                errors += sample.value if sample.labels.get("status", "").startswith("5") else 0.0
            elif sample.name == "readmit_api_request_seconds_bucket":
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    out = {"requests": int(requests), "error_rate": errors / requests if requests else None}
    for q in (50, 95, 99):
        out[f"p{q}_seconds"] = _histogram_quantile(buckets, q / 100)
    return out


def _histogram_quantile(buckets: dict[float, float], q: float) -> Optional[float]:
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    target, previous_bound, previous_count = q * total, 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= target:
            if not np.isfinite(bound):
                return previous_bound
            share = (target - previous_count) / (count - previous_count) if count > previous_count else 1.0
            return previous_bound + share * (bound - previous_bound)
        previous_bound, previous_count = bound, count
    return previous_bound


def service_health(rows, codes, periods, metrics_text: Optional[str]) -> dict[str, Any]:
    api = (rows["channel"] == "api").to_numpy()
    per_period = [{"period": period_id(p), "api_predictions": int((api & (codes == k)).sum())}
                  for k, p in enumerate(periods)]
    metrics = parse_api_metrics(metrics_text) if metrics_text else None
    if metrics and metrics["requests"]:
        message = (f"{metrics['requests']:,} API requests since the API started, "
                   f"{_share(metrics['error_rate'])} answered with a server error; 95% took under "
                   f"{_seconds(metrics['p95_seconds'])}.")
    elif api.any():
        message = (f"{int(api.sum()):,} predictions came through the API; no metrics scrape was given "
                   "(--metrics FILE), so errors and latency are not reported.")
    else:
        message = "No API traffic: no prediction came through the API and no metrics scrape shows requests."
    return {"per_period": per_period, "metrics": metrics, "message": message}


# --- alerts -------------------------------------------------------------------------------------------

def _share(value: Optional[float], digits: int = 1) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{100 * value:.{digits}f}%"


def _seconds(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.2f} s" if value >= 0.1 else f"{1000 * value:.0f} ms"


def _band(value: float, bands: tuple[float, float]) -> Optional[str]:
    """'act' from the second band, 'watch' from the first, else None (NaN: None)."""
    if value is None or not np.isfinite(value):
        return None
    return "act" if value >= bands[1] else "watch" if value >= bands[0] else None


def alerts(report: dict[str, Any]) -> list[mon.Alert]:
    """Every check that fails, act first; each says in one sentence what a quality manager should know."""
    found = []
    summaries = {s["period"]: s for s in report["periods"]}
    judged = [s for s in report["periods"] if not s["in_reference"] and s["scored"] >= MIN_PERIOD_ROWS]
    for cell in report["drift"]["cells"]:
        summary = summaries[cell["period"]]
        if cell["severity"] and not summary["in_reference"]:
            found.append(mon.Alert("feature_drift", cell["feature"], cell["severity"],
                                   f"Data drift: {cell['label']} ({cell['feature']}) in {summary['label']} differs from "
                                   f"the reference (PSI {cell['psi']:.2f}; {cell['severity']}).", cell["period"]))
    for s in judged:
        found += _period_alerts(s, report)
    found += _volume_alerts(report["periods"])
    found += _fairness_alerts(report["fairness"])
    found += _service_alerts(report["service"])
    rank = {"act": 0, "watch": 1}
    return sorted(found, key=lambda a: (rank[a.severity], -(pd.Timestamp(summaries[a.period]["start"]).value
                                                            if a.period in summaries else 0), a.check, a.subject))


def _period_alerts(s: dict[str, Any], report: dict[str, Any]) -> list[mon.Alert]:
    out, label, period = [], s["label"], s["period"]
    monitored = len(report["drift"]["features"])
    severity = _band(s.get("drift_share"), DATASET_DRIFT)
    if severity:
        out.append(mon.Alert("dataset_drift", "inputs", severity,
                             f"Data drift: {len(s['drifted'])} of {monitored} model inputs changed in {label} "
                             f"({_share(s['drift_share'], 0)}; {severity}).", period))
    score_severity = mon.drift_severity(s.get("score_psi") or float("nan"), s.get("score_p_value") or float("nan")) \
        if s["complete"] else None
    if score_severity:
        out.append(mon.Alert("score_drift", "risk", score_severity,
                             f"Risk scores: the spread of risks in {label} moved away from the reference "
                             f"(PSI {s['score_psi']:.2f}; {score_severity}).", period))
    severity = _band(s["invalid_share"], INVALID_SHARE)
    if severity:
        out.append(mon.Alert("invalid_rows", "input", severity,
                             f"Data quality: {_share(s['invalid_share'])} of {label}'s discharges could not be "
                             f"scored for invalid values ({severity}).", period))
    matured_total = s["with_outcome"] + s["unknown"]
    if s["matured"] and matured_total:
        share = s["unknown"] / matured_total
        severity = _band(share, UNKNOWN_SHARE)
        if severity:
            out.append(mon.Alert("outcomes", "readmitted_30d", severity,
                                 f"Outcomes: {_share(share, 0)} of {label}'s discharges have no known outcome 30 days "
                                 f"on: load them with `readmit outcomes` ({severity}).", period))
    out += _performance_alerts(s, report)
    return out


def _performance_alerts(s: dict[str, Any], report: dict[str, Any]) -> list[mon.Alert]:
    out, label, period = [], s["label"], s["period"]
    rows = {r["kind"]: r for r in report["performance"] if r["period"] == period}
    reference = report["reference"]
    realised, estimated = rows.get("realised"), rows.get("estimated")
    if realised:
        severity = mon.calibration_severity(realised["observed_rate"], realised["predicted_rate"], realised["n"])
        if severity:
            out.append(mon.Alert("calibration", "calibration_in_the_large", severity,
                                 f"Calibration: observed readmissions in {label} were {_share(realised['observed_rate'])} "
                                 f"against {_share(realised['predicted_rate'])} predicted ({severity}).", period))
        base = (reference.get("performance") or {}).get("auroc")
        high = realised.get("auroc_high")
        if base is not None and high is not None:
            severity = "act" if high < base - AUROC_DROP[1] else "watch" if high < base - AUROC_DROP[0] else None
            if severity:
                out.append(mon.Alert("discrimination", "auroc", severity,
                                     f"Discrimination: AUROC in {label} was {realised['auroc']:.2f} (95% interval "
                                     f"{realised['auroc_low']:.2f}-{high:.2f}) against {base:.2f} in the reference "
                                     f"({severity}).", period))
    elif estimated and not s["matured"]:
        out += _estimated_alerts(estimated, reference, label, period)
    return out


def _estimated_alerts(estimated, reference, label, period) -> list[mon.Alert]:
    """The expected readmission rate (mean risk) or expected AUROC of an unmatured period apart from the
    reference's; the rate's change must also be beyond chance (a z-test on the mean risk at 5%)."""
    out = []
    base_rate, base_auroc = reference.get("mean_risk"), reference.get("expected_auroc")
    rate_change = abs(estimated["predicted_rate"] / base_rate - 1) if base_rate else float("nan")
    if estimated.get("risk_sd"):
        z = (estimated["predicted_rate"] - base_rate) / (estimated["risk_sd"] / np.sqrt(estimated["n"]))
        rate_change = rate_change if 2 * stats.norm.sf(abs(z)) < mon.SIGNIFICANCE else float("nan")
    auroc_change = abs(estimated["auroc"] - base_auroc) if base_auroc is not None else float("nan")
    severity = max((_band(rate_change, ESTIMATED_RATE), _band(auroc_change, ESTIMATED_AUROC)),
                   key=lambda v: {"act": 2, "watch": 1, None: 0}[v])
    if severity:
        out.append(mon.Alert("estimated_performance", "expected_readmission_rate", severity,
                             f"Estimated performance: outcomes of {label} are not known yet; from its risks the model "
                             f"expects {_share(estimated['predicted_rate'])} readmitted (reference "
                             f"{_share(base_rate)}) and an AUROC of {estimated['auroc']:.2f} (reference "
                             f"{base_auroc:.2f}) ({severity}).", period))
    return out


def _volume_alerts(summaries: list[dict[str, Any]]) -> list[mon.Alert]:
    complete = [s for s in summaries if s["complete"] and not s["in_reference"]]
    out = []
    for s in complete:
        others = [o["scored"] for o in complete if o is not s]
        if len(others) < 3 or not np.median(others):
            continue
        usual = float(np.median(others))
        ratio = s["scored"] / usual
        severity = ("act" if not VOLUME_RATIO[1][0] < ratio < VOLUME_RATIO[1][1] else
                    "watch" if not VOLUME_RATIO[0][0] < ratio < VOLUME_RATIO[0][1] else None)
        if severity:
            out.append(mon.Alert("volume", "scored", severity,
                                 f"Volume: {s['scored']:,} discharges scored in {s['label']}, {ratio:.0%} of the usual "
                                 f"{usual:,.0f} ({severity}).", s["period"]))
    return out


# Alerts follow equal opportunity (the call list reaches each group's readmitted patients alike) and
# calibration within groups; selection rate and PPV are shown, not alerted on: with base rates that differ
# by age, a well-calibrated list *should* select groups at different rates.
FAIRNESS_ALERTS = {"sensitivity": "reaches a different share of readmitted {group} patients",
                   "observed_to_expected": "is calibrated differently for {group} patients"}


def _fairness_alerts(fairness: dict[str, Any]) -> list[mon.Alert]:
    """Flagged ratios of the alerted metrics, for groups with at least `MIN_CELL` readmissions (with fewer,
    a ratio of 0 or a degenerate interval says nothing)."""
    readmissions = {(r["attribute"], r["group"]): r["cell"] for r in fairness["rows"] if r["metric"] == "sensitivity"}
    out = []
    for row in fairness["rows"]:
        if (not row["flagged"] or row["metric"] not in FAIRNESS_ALERTS
                or readmissions.get((row["attribute"], row["group"]), 0) < MIN_CELL):
            continue
        ratio = row["ratio"]
        outside = row["ratio_high"] < mon.FAIRNESS_BOUNDS[0] or row["ratio_low"] > mon.FAIRNESS_BOUNDS[1]
        severity = "act" if outside else "watch"
        words = FAIRNESS_ALERTS[row["metric"]].format(group=row["group"])
        out.append(mon.Alert("fairness", f"{row['attribute']}={row['group']}", severity,
                             f"Fairness: over {', '.join(fairness['periods'])} the model {words} than for "
                             f"{row['reference']} patients ({row['metric']} ratio {ratio:.2f}, 95% interval "
                             f"{row['ratio_low']:.2f}-{row['ratio_high']:.2f}; {severity}).", None))
    return out


def _service_alerts(service: dict[str, Any]) -> list[mon.Alert]:
    metrics, out = service.get("metrics") or {}, []
    severity = _band(metrics.get("error_rate"), ERROR_RATE)
    if severity:
        out.append(mon.Alert("service", "error_rate", severity,
                             f"Service: {_share(metrics['error_rate'])} of API requests failed with a server error "
                             f"({severity}).", None))
    severity = _band(metrics.get("p95_seconds"), P95_SECONDS)
    if severity:
        out.append(mon.Alert("service", "latency", severity,
                             f"Service: 5% of API requests took longer than {_seconds(metrics['p95_seconds'])} "
                             f"({severity}).", None))
    return out


def any_act(report: dict[str, Any]) -> bool:
    return any(alert["severity"] == "act" for alert in report["alerts"])


# --- recalibration under the change plan -----------------------------------------------------------------

CHANGE_PLAN = {
    "what_may_change": "the calibration map only (calibration.json): a monotone map of the raw model probability, "
                       "so the ranking, AUROC and the weights stay as they are",
    "when": "when monitoring shows calibration drift (observed and predicted readmission rates apart) on matured "
            "outcomes",
    "data": f"matured outcomes (discharge + {MATURITY_DAYS} days on or before the as-of date) of eligible encounters "
            f"discharged in the stated window: at least {RECALIBRATION_MIN_ROWS} encounters and "
            f"{RECALIBRATION_MIN_POSITIVES} readmissions",
    "how_checked": "the map is refitted on one half of the patients and checked on the other, both ways; accepted when "
                   f"that held-out ECE is under {RECALIBRATION_ECE} or lower than before",
    "release": "a new folder with a new manifest version; serving changes only when it is promoted "
               "(`readmit promote`), which records who and when",
}


def recalibration_rows(root: str, since: dt.date, until: Optional[dt.date], as_of: dt.date,
                       engine: Optional[Engine] = None) -> pd.DataFrame:
    """Feature rows of the eligible encounters discharged from `since` (to `until`, exclusive) whose outcome
    had matured by `as_of`, with `label`: the operational database's outcome where it has one, else the
    warehouse's."""
    last = min(until or as_of + dt.timedelta(days=1), as_of - dt.timedelta(days=MATURITY_DAYS - 1))
    try:
        frame = Warehouse(root).query(
            "SELECT f.*, e.discharge_time FROM features f JOIN encounters e USING (encounter_id) "
            "WHERE f.eligible AND e.discharge_time >= ? AND e.discharge_time < ?",
            [pd.Timestamp(since), pd.Timestamp(last)])
    except WarehouseError as error:
        raise UserError(str(error)) from None
    label = frame["readmitted_30d"].map({True: 1.0, False: 0.0}).astype(np.float64)
    if engine is not None and len(frame):
        table = Outcome.__table__
        with engine.connect() as connection:
            known = pd.DataFrame(connection.execute(select(table.c.source, table.c.encounter_id,
                                                           table.c.readmitted_30d)).all(),
                                 columns=["source", "encounter_id", "outcome"])
        merged = frame[["source", "encounter_id"]].merge(known, how="left", on=["source", "encounter_id"])
        override = merged["outcome"].map({True: 1.0, False: 0.0}).astype(np.float64).to_numpy()
        label = pd.Series(np.where(np.isfinite(override), override, label), index=frame.index)
    frame["label"] = label
    return frame[np.isfinite(frame["label"])].reset_index(drop=True)


def calibration_summary(y, p) -> dict[str, float]:
    """What the change record keeps of a calibration: ECE, calibration-in-the-large and slope, rates."""
    performance = mon.realised_performance(y, p)
    return {key: performance[key] for key in ("n", "observed_rate", "predicted_rate", "ece", "brier",
                                              "calibration_in_the_large", "calibration_slope")}


def _cross_fitted(method: str, raw: np.ndarray, y: np.ndarray, patients: np.ndarray) -> np.ndarray:
    """Each half of the patients' risks from a map fitted on the other half."""
    models = _model_layer()
    half = models.grouped_halves(patients, seed=0)
    out = np.empty_like(raw)
    for fit in (half, ~half):
        out[~fit] = np.clip(models.Calibrator.fit(method, raw[fit], y[fit])(raw[~fit]), 0.0, 1.0)
    return out


def _remapped_risk(reference: dict[str, Any], calibrator: "Calibrator") -> dict[str, Any]:
    """The reference's risk profile under a new calibration (the raw probability's bins do not move)."""
    risk = dict(reference["risk"])
    if "raw_edges" not in risk:
        return risk
    mapped = np.clip(calibrator(np.asarray(risk["raw_quantiles"])), 0, 1)
    risk.update(edges=np.clip(calibrator(np.asarray(risk["raw_edges"])), 0, 1).tolist(), mean=float(mapped.mean()),
                quantiles=np.quantile(mapped, QUANTILES).tolist(), expected_auroc=mon.expected_auroc(mapped))
    return risk


def recalibrate(root: str, model_dir: str | Path, since: dt.date, out_dir: str | Path, *,
                until: Optional[dt.date] = None, as_of: Optional[dt.date] = None, method: Optional[str] = None,
                reason: str, by: Optional[str] = None, engine: Optional[Engine] = None,
                rebase_reference: bool = False) -> dict[str, Any]:
    """Refit only the calibration map on recent matured outcomes into a copy of the model folder (weights
    untouched), under `CHANGE_PLAN`; returns the change record (also appended to the copy's changes.jsonl,
    and shown on its card). Nothing is written unless the plan's check passes."""
    source, target = Path(model_dir), Path(out_dir)
    if target.exists() and any(target.iterdir()):
        raise UserError(f"{target} exists and is not empty: choose a new folder for the recalibrated model")
    as_of = as_of or dt.datetime.now(dt.timezone.utc).date()
    models = _model_layer()
    predictor = models.ReadmitPredictor.load(source)
    data = recalibration_rows(root, since, until, as_of, engine)
    y = data["label"].to_numpy(dtype=np.float64)
    if len(data) < RECALIBRATION_MIN_ROWS or y.sum() < RECALIBRATION_MIN_POSITIVES:
        raise UserError(f"only {len(data):,} matured encounters with {int(y.sum())} readmissions from {since} (as of "
                        f"{as_of}); the change plan needs {RECALIBRATION_MIN_ROWS} and {RECALIBRATION_MIN_POSITIVES}")
    raw = np.asarray(predictor.raw_probability(encode(data, predictor.preprocessing)), dtype=np.float64)
    method = method or (predictor.calibrator.method if predictor.calibrator.method != "identity" else "platt")
    calibrator = models.Calibrator.fit(method, raw, y)
    patients = data["patient_id"].astype(str).to_numpy()
    before, after = calibration_summary(y, predictor.calibrate(raw)), calibration_summary(y, calibrator(raw))
    held_out = calibration_summary(y, _cross_fitted(method, raw, y, patients))
    accepted = held_out["ece"] < RECALIBRATION_ECE or held_out["ece"] < before["ece"]
    window = {"since": since.isoformat(), "until": (until or as_of).isoformat(), "as_of": as_of.isoformat(),
              "encounters": len(data), "patients": int(len(set(patients))), "readmissions": int(y.sum()),
              "discharges": [str(data["discharge_time"].min()), str(data["discharge_time"].max())]}
    if not accepted:
        raise UserError(f"recalibration not accepted by the change plan: held-out ECE {held_out['ece']:.4f} is neither "
                        f"under {RECALIBRATION_ECE} nor under the current {before['ece']:.4f}; nothing written")
    record = _clean({"change": "recalibration", "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                     "by": by or getpass.getuser(), "reason": reason, "from_version": predictor.model_version,
                     "method": method, "plan": CHANGE_PLAN, "data": {"warehouse": str(root), **window},
                     "before": before, "after": after, "after_held_out": held_out, "accepted": accepted,
                     "reference": "rebased on these encounters" if rebase_reference else "kept (risk bins remapped)"})
    shutil.copytree(source, target, dirs_exist_ok=True)
    calibrator.save(target, selection={"chosen": method, "criterion": "refit under the change plan (changes.jsonl)",
                                       "n": len(data), "refit": window})
    with models.sealed_update(target):
        if rebase_reference or reference_path(target).exists():
            reference = (build_reference(data, calibrator(raw), y, patients, raw,
                                         description=f"the recalibration data: discharges from {since} ({len(data):,})")
                         if rebase_reference else {**load_model_reference(target),
                                                   "risk": _remapped_risk(load_model_reference(target), calibrator)})
            reference_path(target).write_text(json.dumps(_clean(reference), indent=1, sort_keys=True) + "\n")
        with open(target / models.CHANGES_FILE, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
    models.write_card(target)
    return {**record, "to_version": models.ReadmitPredictor.load(target).model_version, "folder": str(target)}


# --- promotion ---------------------------------------------------------------------------------------

def promotion_file() -> Path:
    """Where the promoted-model record lives: `READMIT_PROMOTION_FILE`, else data/promoted_model.json."""
    return Path(os.environ.get("READMIT_PROMOTION_FILE") or PROMOTION_FILE)


def promotion_record(path: Optional[Path] = None) -> Optional[dict[str, Any]]:
    path = path or promotion_file()
    return json.loads(path.read_text()) if path.exists() else None


def promote(model_dir: str | Path, by: Optional[str] = None, path: Optional[Path] = None) -> dict[str, Any]:
    """Record that `model_dir` now serves: checked (manifest and a full load) first, the record replaced
    atomically, and every promotion appended to model_promotions.jsonl beside it."""
    folder = Path(model_dir).resolve()
    predictor = _model_layer().ReadmitPredictor.load(folder)
    path = path or promotion_file()
    previous = promotion_record(path)
    record = {"model_dir": str(folder), "model_version": predictor.model_version, "promoted_by": by or getpass.getuser(),
              "promoted_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "previous": {k: previous[k] for k in ("model_dir", "model_version")} if previous else None}
    write_text_atomic(path, json.dumps(record, indent=1, sort_keys=True) + "\n")
    with open(path.with_name("model_promotions.jsonl"), "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")
    return record


def promoted_model_dir(path: Optional[Path] = None) -> Optional[str]:
    """The promoted model folder, or None when nothing was promoted or its folder is gone. Serving reads it
    at start (`readmit app`, `readmit demo`): a running process keeps its model until restarted."""
    record = promotion_record(path)
    return record["model_dir"] if record and Path(record["model_dir"]).is_dir() else None


# --- reading the report: one line per chart, text and HTML ---------------------------------------------

def _latest(report: dict[str, Any], kind: str) -> Optional[dict[str, Any]]:
    rows = [r for r in report["performance"] if r["kind"] == kind]
    return rows[-1] if rows else None


def _label_of(report: dict[str, Any], period: str) -> str:
    return next((p["label"] for p in report["periods"] if p["period"] == period), period)


def readings(report: dict[str, Any]) -> dict[str, str]:
    """One plain sentence per chart of the Monitoring page and the HTML report."""
    realised, estimated = _latest(report, "realised"), _latest(report, "estimated")
    base = (report["reference"].get("performance") or {}).get("auroc")
    if realised:
        performance = (f"{_label_of(report, realised['period'])}, the latest period with matured outcomes: AUROC "
                       f"{realised['auroc']:.2f} ({realised['auroc_low']:.2f}-{realised['auroc_high']:.2f})"
                       + (f" against {base:.2f} in the reference" if base is not None else "")
                       + (f"; the call list's PPV was {_share(realised.get('ppv'))}." if realised.get("ppv") is not None
                          else "."))
    elif estimated:
        performance = (f"No period has matured outcomes yet; from the risks alone, {_label_of(report, estimated['period'])} "
                       f"should reach an AUROC of {estimated['auroc']:.2f}.")
    else:
        performance = "Nothing scored in the prediction log yet."
    if realised:
        calibration = (f"In {_label_of(report, realised['period'])}, {_share(realised['observed_rate'])} were readmitted "
                       f"against {_share(realised['predicted_rate'])} predicted.")
    else:
        calibration = "Observed rates appear once a period's outcomes have matured (30 days after it ends)."
    flagged = [c for c in report["drift"]["cells"] if c["severity"]]
    if flagged:
        worst = max(flagged, key=lambda c: c["psi"])
        drift = (f"{len(flagged)} input-periods drift ({sum(c['severity'] == 'act' for c in flagged)} act); the largest: "
                 f"{worst['label']} in {_label_of(report, worst['period'])} (PSI {worst['psi']:.2f}).")
    else:
        drift = "No model input drifts against the reference."
    fair = report["fairness"]
    if not fair["rows"]:
        fairness = "Fairness needs matured outcomes: none yet in the monitored periods."
    else:
        shown = [r for r in fair["rows"] if r["flagged"]]
        alerted = sum(a["check"] == "fairness" for a in report["alerts"])
        fairness = (f"Over {', '.join(fair['periods'])}: " + (
            f"{len(shown)} group ratios are outside 0.8-1.25 with an interval that excludes 1; {alerted} of them, "
            "on sensitivity or observed / expected, raise an alert." if shown else
            "no group ratio is outside 0.8-1.25 with an interval that excludes 1."))
    counts = report["counts"]
    volume = (f"{counts['scored']:,} scored discharges: {counts['with_outcome']:,} with a known outcome, "
              f"{counts['unknown']:,} matured without one, {counts['unmatured']:,} not yet 30 days old.")
    return {"performance": performance, "calibration": calibration, "drift": drift, "fairness": fairness,
            "volume": volume, "service": report["service"]["message"]}


def render_text(report: dict[str, Any]) -> str:
    """The report for a terminal or an e-mail: alerts, then one line per period."""
    lines = [f"Monitoring report as of {report['as_of']} ({report['period']}ly periods)",
             f"Reference: {report['reference']['description']}", ""]
    lines += [f"Alerts ({len(report['alerts'])}):"] + ([f"  [{a['severity']}] {a['message']}" for a in report["alerts"]]
                                                       or ["  none"])
    lines += ["", f"{'period':<10} {'scored':>7} {'outcome':>8} {'mean risk':>10} {'score PSI':>10} {'drift':>6} "
                  f"{'AUROC':>6} {'observed':>9}"]
    realised = {r["period"]: r for r in report["performance"] if r["kind"] == "realised"}
    for p in report["periods"]:
        r = realised.get(p["period"], {})
        lines.append(f"{p['period']:<10} {p['scored']:>7,} {p['with_outcome']:>8,} {_share(p['risk_mean']):>10} "
                     f"{_num(p.get('score_psi')):>10} {_share(p.get('drift_share'), 0):>6} {_num(r.get('auroc')):>6} "
                     f"{_share(r.get('observed_rate')) if r else '':>9}")
    lines += [""] + [f"{name}: {text}" for name, text in readings(report).items()]
    return "\n".join(lines) + "\n"


def _num(value: Optional[float], digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def render_html(report: dict[str, Any]) -> str:
    """A self-contained HTML report: the alerts, then each chart with its reading (plotly.js inlined once,
    nothing fetched from the network)."""
    read = readings(report)
    charts = [("performance", figures.monitoring_performance_figure(report)),
              ("calibration", figures.monitoring_calibration_figure(report)),
              ("drift", figures.monitoring_drift_figure(report)),
              ("fairness", figures.monitoring_fairness_figure(report)),
              ("volume", figures.monitoring_volume_figure(report)),
              ("service", figures.monitoring_service_figure(report))]
    rows = "".join(f"<tr class='{a['severity']}'><td>{a['severity']}</td><td>{html.escape(a['check'])}</td>"
                   f"<td>{html.escape(a['message'])}</td></tr>" for a in report["alerts"])
    body = [f"<h1>Readmission model monitoring, as of {report['as_of']}</h1>",
            f"<p>Reference: {html.escape(report['reference']['description'])}. Periods: {report['period']}s of "
            f"discharge dates. Model versions: {html.escape(', '.join(report['model_versions']) or 'none')}.</p>",
            f"<h2>Alerts ({len(report['alerts'])})</h2>",
            f"<table><tr><th>severity</th><th>check</th><th>finding</th></tr>{rows}</table>" if rows else
            "<p>No alert.</p>"]
    for i, (name, fig) in enumerate(charts):
        body.append(f"<p class='reading'>{html.escape(read[name])}</p>")
        body.append(fig.to_html(full_html=False, include_plotlyjs=i == 0, config={"displaylogo": False}))
    style = ("body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}tr.act td:first-child{background:#F8C9B0}"
             "tr.watch td:first-child{background:#FBE3C8}.reading{font-weight:bold;margin-top:2em}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Monitoring {report['as_of']}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")


def log_state(engine: Engine) -> str:
    """Changes whenever a prediction, an outcome or a call list is recorded: part of the page's cache key."""
    log, outcome, lists = PredictionLog.__table__, Outcome.__table__, CallList.__table__
    with engine.connect() as connection:
        logged = connection.execute(select(func.max(log.c.id), func.count())).one()
        known = connection.execute(select(func.count(), func.max(outcome.c.recorded_at))).one()
        built = connection.execute(select(func.max(lists.c.id))).scalar()
    return f"{logged[0]}:{logged[1]}:{known[0]}:{known[1]}:{built}"


CHECK_ORDER = ("calibration", "discrimination", "estimated_performance", "outcomes", "dataset_drift", "feature_drift",
               "score_drift", "invalid_rows", "volume", "fairness", "service")


def alert_summary(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One line per check, act first: its most severe and most recent alert (for data drift, every input
    drifting at that severity in that period), and how many more alerts the check raised."""
    out = []
    for check in CHECK_ORDER:
        found = [a for a in report["alerts"] if a["check"] == check]   # act first, newest first
        if not found:
            continue
        top, message = found[0], found[0]["message"]
        shown = 1
        if check == "feature_drift":
            same = [c for c in report["drift"]["cells"] if c["period"] == top["period"] and c["severity"] == top["severity"]]
            same.sort(key=lambda c: -c["psi"])
            message = (f"Data drift in {_label_of(report, top['period'])}: "
                       + ", ".join(f"{c['label']} ({c['feature']}, PSI {c['psi']:.2f})" for c in same)
                       + f" differ from the reference ({top['severity']}).")
            shown = len(same)
        out.append({"check": check, "severity": top["severity"], "message": message, "more": len(found) - shown})
    return sorted(out, key=lambda item: item["severity"] != "act")
