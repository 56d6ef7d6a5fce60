"""`readmit evaluate`: the transformer, LACE and the MLlib baselines on the same rows of one split.

    report = evaluate(warehouse, model_dir, split="test", extra={"mllib_gbt": frame, ...})

Rows: eligible encounters of the split with a known label (`models.data.read_split`), the same rows
the trainer held out. Every model is scored on exactly these rows; a baseline that misses rows is
an error, not a silently smaller denominator.

- transformer: `ReadmitPredictor.load(model_dir)`, `core.encoding.encode` of the feature rows with the
  model's own preprocessing state, calibrated `risk`; thresholds from the model folder (chosen on
  validation by the trainer).
- LACE: `core.lace` on the same feature rows; score-to-probability map fitted on the TRAIN split;
  thresholds: the conventional LACE >= 10 and the best-F1 cut-off on VALIDATION.
- extra (MLlib): probabilities from `etl.baselines` (trained on train, tuned on validation); best-F1
  threshold on their validation predictions.

Output in the model folder (or `out_dir`): `metrics.json`; the dashboard draws its figures from it
(`serving.figures`). When metrics.json lands in the model folder, the model card (README.md) is
re-rendered from it, so the two never disagree.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import pandas as pd

from core import metric_report, metrics
from core.encoding import encode
from core.errors import UserError
from core.lace import LaceModel, lace_score
from core.warehouse import Warehouse
from models.card import write_card
from models.data import read_split
from models.inference import ReadmitPredictor  # the model engineer's loader

log = logging.getLogger(__name__)

GROUPS = ("race", "sex", "age_band")
TRANSFORMER = "transformer"
LACE = "lace"
LACE_HIGH_RISK = 10
METRICS_FILE = "metrics.json"


def decision_thresholds(thresholds: Any) -> dict[str, float]:
    """The model folder's thresholds (as `models.train.build_thresholds` writes them) as {name: cut-off}."""
    if not thresholds:
        return {}
    out: dict[str, float] = {}
    if isinstance(thresholds, Mapping):
        best = thresholds.get("best_f1")
        if isinstance(best, Mapping) and best.get("risk_cutoff") is not None:
            out["best_f1"] = float(best["risk_cutoff"])
        elif isinstance(best, (int, float)):
            out["best_f1"] = float(best)
        for item in thresholds.get("capacity", []) or []:
            if isinstance(item, Mapping) and item.get("risk_cutoff") is not None:
                out[f"validation_top_{item.get('top_percent'):g}pct"] = float(item["risk_cutoff"])
        for item in thresholds.get("tiers", []) or []:
            if isinstance(item, Mapping) and item.get("min_risk"):
                out[f"tier_{item['name']}"] = float(item["min_risk"])
        structured = any(key in thresholds for key in ("best_f1", "capacity", "tiers"))
        for name, value in thresholds.items():  # a plain {name: cut-off} mapping
            if (not structured and isinstance(value, (int, float)) and not isinstance(value, bool)
                    and 0.0 <= value <= 1.0):
                out[str(name)] = float(value)
    return out


def transformer_risk(predictor: Any, frame: pd.DataFrame) -> np.ndarray:
    """Calibrated risk of the transformer for feature rows, encoded with the model's own state."""
    batch = encode(frame, predictor.preprocessing)
    return np.asarray(predictor.risk(batch), dtype=np.float64).ravel()


def load_predictor(model_dir: str | Path):
    if not Path(model_dir).exists():
        raise UserError(f"model folder {model_dir} does not exist: run `readmit train` first")
    return ReadmitPredictor.load(model_dir)


def _labels(frame: pd.DataFrame) -> np.ndarray:
    return frame["readmitted_30d"].astype(bool).to_numpy().astype(np.int64)


def _read_split(warehouse: Warehouse, split: str) -> pd.DataFrame:
    return read_split(warehouse, split)


def lace_baseline(warehouse: Warehouse, frame: pd.DataFrame) -> tuple[np.ndarray, dict[str, float], dict[str, Any]]:
    """LACE probabilities for `frame`, with the map fitted on train and thresholds chosen on validation."""
    train = _read_split(warehouse, "train")
    model = LaceModel.fit(lace_score(train), _labels(train))
    validation = _read_split(warehouse, "validation")
    thresholds = {f"lace_ge_{LACE_HIGH_RISK}": float(model.predict_proba(LACE_HIGH_RISK))}
    if len(validation) and _labels(validation).any():
        thresholds["best_f1"] = metrics.best_f1_cutoff(_labels(validation),
                                                       model.predict_proba(lace_score(validation)))
    scores = lace_score(frame)
    info = {**model.to_dict(), "score_distribution": {str(k): int(v) for k, v in
                                                       zip(*np.unique(scores, return_counts=True))}}
    return model.predict_proba(scores), thresholds, info


def _align(frame: pd.DataFrame, name: str, predictions: pd.DataFrame) -> np.ndarray:
    """Probabilities of an external model in the row order of `frame`; every row must be covered."""
    by_id = predictions.assign(encounter_id=predictions["encounter_id"].astype(str)) \
        .drop_duplicates("encounter_id").set_index("encounter_id")["probability"]
    aligned = by_id.reindex(frame["encounter_id"].astype(str))
    if aligned.isna().any():
        raise UserError(f"{name} has no prediction for {int(aligned.isna().sum())} of {len(frame)} evaluated "
                        "encounters: baselines must be scored on the same rows")
    return aligned.to_numpy(dtype=np.float64)


def comparison_rows(results: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for name, result in results.items():
        overall = result["overall"]
        rows.append({"model": name, "auroc": overall["auroc"], "auroc_ci": overall["auroc_ci"],
                     "auprc": overall["auprc"], "brier": overall["brier"], "ece": overall["ece"],
                     "calibration_slope": overall["calibration_slope"], "n": overall["n"]})
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    def f(v, d=3):
        return "  n/a" if v is None else f"{v:.{d}f}"
    lines = [f"{'model':<16} {'AUROC [95% CI]':<24} {'AUPRC':>6} {'Brier':>6} {'ECE':>6} {'slope':>6} {'n':>7}"]
    for r in rows:
        ci = r["auroc_ci"] or [None, None]
        lines.append(f"{r['model']:<16} {f(r['auroc'])} [{f(ci[0])}, {f(ci[1])}]    {f(r['auprc']):>6} "
                     f"{f(r['brier']):>6} {f(r['ece']):>6} {f(r['calibration_slope'], 2):>6} {r['n']:>7}")
    return "\n".join(lines)


def evaluate(warehouse_root: str | Path, model_dir: str | Path, split: str = "test",
             extra: Optional[Mapping[str, pd.DataFrame]] = None, extra_info: Optional[Mapping[str, Any]] = None,
             out_dir: Optional[str | Path] = None, predictor: Any = None, n_boot: int = 1000,
             seed: int = 0, include_lace: bool = True) -> dict[str, Any]:
    """Evaluate every model on the same rows and write metrics.json; returns the report."""
    warehouse = Warehouse(str(warehouse_root))
    frame = _read_split(warehouse, split)
    if frame.empty:
        raise UserError(f"split '{split}' of {warehouse_root} has no eligible encounters with a known label")
    y = _labels(frame)
    patients = frame["patient_id"].astype(str).to_numpy()
    groups = {name: frame[name].to_numpy(dtype=object) for name in GROUPS}

    predictor = predictor if predictor is not None else load_predictor(model_dir)
    probabilities: dict[str, np.ndarray] = {TRANSFORMER: transformer_risk(predictor, frame)}
    thresholds: dict[str, dict[str, float]] = {TRANSFORMER: decision_thresholds(getattr(predictor, "thresholds", {}))}
    info: dict[str, Any] = {TRANSFORMER: {"model_version": getattr(predictor, "model_version", None),
                                          "model_dir": str(model_dir)}}
    if include_lace:
        probabilities[LACE], thresholds[LACE], info[LACE] = lace_baseline(warehouse, frame)
    for name, predictions in (extra or {}).items():
        probabilities[name] = _align(frame, name, predictions)
        validation = predictions[predictions["split"] == "validation"] if "split" in predictions \
            else predictions.iloc[0:0]
        thresholds[name] = ({"best_f1": metrics.best_f1_cutoff(validation["label"], validation["probability"])}
                            if len(validation) and "label" in validation else {})
        info[name] = dict((extra_info or {}).get(name, {}))

    results = {}
    for name, p in probabilities.items():
        log.info("metrics for %s on %d rows", name, len(p))
        results[name] = metric_report.evaluate_predictions(y, p, patients, groups, thresholds[name], n_boot=n_boot, seed=seed)
    rows = comparison_rows(results)
    report = {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "split": split, "warehouse": str(warehouse_root), "model_dir": str(model_dir),
        "model_version": getattr(predictor, "model_version", None),  # the manifest's: ties these numbers to the files
        "rows": {"evaluated": int(len(frame)), "patients": int(len(set(patients))), "positives": int(y.sum()),
                 "selection": "eligible encounters (not died, not hospice) with a known 30-day label"},
        "protocol": {"ece_bins": metrics.ECE_BINS, "ece_binning": "equal-frequency",
                     "auroc_interval": "patient-cluster bootstrap, percentile 95%", "n_boot": n_boot, "seed": seed,
                     "thresholds": "chosen on the validation split; capacities flag the top k% of this split"},
        "comparison": rows,
        "models": results,
        "model_info": metrics.json_safe(info),
    }
    write_outputs(report, out_dir or model_dir)
    if writes_model_folder(model_dir, out_dir):
        write_card(model_dir)
    return report


def writes_model_folder(model_dir: str | Path, out_dir: Optional[str | Path]) -> bool:
    """Whether metrics.json goes to the model folder itself (then its card must be re-rendered)."""
    return out_dir is None or Path(out_dir).resolve() == Path(model_dir).resolve()


def write_outputs(report: dict[str, Any], folder: str | Path) -> Path:
    """Write metrics.json atomically (a temporary file renamed over the old one)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / METRICS_FILE
    tmp = folder / f".{METRICS_FILE}.tmp"
    tmp.write_text(json.dumps(report, indent=1, allow_nan=False))
    tmp.replace(path)
    return path
