"""Model lifecycle: recalibration under the change plan (`recalibrate`) and promotion (`promote`), and
which model folder serves (`serving_model_dir`).
"""
from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import pandas as pd
from sqlalchemy import Engine, select

from core import monitoring as mon
from core.config import get_settings
from core.encoding import encode
from core.errors import UserError
from core.warehouse import Warehouse, WarehouseError, write_text_atomic
from serving.db_tables import Outcome

if TYPE_CHECKING:
    from models.calibration import Calibrator

from serving.monitoring.constants import (
    MATURITY_DAYS,
    PROMOTION_FILE,
    QUANTILES,
    RECALIBRATION_ECE,
    RECALIBRATION_MIN_POSITIVES,
    RECALIBRATION_MIN_ROWS,
    _clean,
    _model_layer,
)
from serving.monitoring.reference import build_reference, load_model_reference, reference_path

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




def serving_model_dir(explicit: Optional[str] = None, settings: Any = None) -> str:
    """The model folder a serving process loads at start, first found of: `explicit` (a `--model` flag),
    `READMIT_MODEL_DIR` (set in the environment or .env, or passed to `Settings`), the promoted model
    (`readmit promote`), the shipped champion (the settings' default). `readmit demo` puts its own model
    between the promoted one and the champion (cli/app_commands.py)."""
    if explicit:
        return str(explicit)
    settings = settings if settings is not None else get_settings()
    if "model_dir" in settings.model_fields_set:  # chosen, not defaulted
        return str(settings.model_dir)
    return promoted_model_dir() or str(settings.model_dir)
