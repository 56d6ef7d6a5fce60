"""Monitoring thresholds and constants (docs/monitoring.md says why each threshold), and the model layer
imported on first use.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np

from core.config import REPO_ROOT
from core.features import CODE_FEATURES, FEATURE_COLUMNS

if TYPE_CHECKING:
    pass



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
