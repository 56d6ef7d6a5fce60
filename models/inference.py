"""Loading a model folder and scoring encoded rows: the API the scoring service builds on.

    predictor = ReadmitPredictor.load("models/champion")
    batch = core.encoding.encode(features, predictor.preprocessing)
    risk = predictor.risk(batch)                 # calibrated probability of readmission within 30 days
    tiers = predictor.tier(risk)                 # "Very high" / "High" / "Medium" / "Low"
    pct = predictor.percentile(risk)             # percentile among validation encounters (0-100)

For explanations at the torch level: `predictor.model(**models.data.to_tensors(batch)).logits` works on
tensors (also with gradients, outside `torch.inference_mode`); `predictor.raw_probability_from_logits`
and `predictor.calibrate` turn logits into the same risk `risk()` returns.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from safetensors import SafetensorError
from transformers import AutoModelForSequenceClassification

from core.encoding import PREPROCESSING_FILE, EncodedBatch, Preprocessing
from core.errors import UserError
from models.calibration import Calibrator
from models.data import to_tensors
from models.manifest import ModelFolderError, build_manifest, read_json, verify_manifest, version_label
from models.runtime import set_torch_threads

SCORING_BATCH = 2048
THRESHOLDS_FILE = "thresholds.json"
TRAINING_FILE = "training.json"
WEIGHTS_FILE = "model.safetensors"


def _few(keys: Any, shown: int = 3) -> str:
    """A short, sorted list of tensor names; a shape mismatch (name, file shape, model shape) as one name."""
    names = sorted(f"{key[0]} {list(key[1])} in the file, {list(key[2])} in config.json" if isinstance(key, tuple)
                   else str(key) for key in keys)
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def load_weights_strictly(folder: Path):
    """The model of config.json with every tensor of model.safetensors, exactly, in eval mode.

    transformers only logs a report for missing or unexpected tensors and initialises the missing ones at
    random, so a renamed tensor or one more layer in the config would give a random model; here any
    missing, unexpected or reshaped tensor is an error.
    """
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            str(folder), output_loading_info=True, ignore_mismatched_sizes=True)  # reported below, by name
    except (OSError, ValueError, RuntimeError, SafetensorError) as error:
        detail = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ModelFolderError(f"{folder}: config.json and {WEIGHTS_FILE} do not load as one model "
                               f"({detail})") from error
    differences = [f"{label}: {_few(info[key])}" for key, label in (
        ("missing_keys", "missing tensors"), ("unexpected_keys", "unexpected tensors"),
        ("mismatched_keys", "shape mismatches")) if info.get(key)]
    if differences:
        raise ModelFolderError(f"{folder / WEIGHTS_FILE}: tensors do not match config.json exactly "
                               f"({'; '.join(differences)})")
    return model.eval()


def read_preprocessing(folder: Path) -> Preprocessing:
    try:
        return Preprocessing.load(folder)
    except (ValueError, KeyError, TypeError) as error:  # JSONDecodeError is a ValueError
        raise ModelFolderError(f"{folder / PREPROCESSING_FILE}: invalid preprocessing state ({error})") from error


def _probability(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def _check_tiers(tiers: Any) -> None:
    """Highest tier first, `min_risk` strictly decreasing: `tier()` takes the first tier a risk reaches."""
    if not isinstance(tiers, list) or not all(isinstance(t, dict) for t in tiers):
        raise ValueError("tiers must be a list of {name, min_risk}")
    names = [t.get("name") for t in tiers]
    if not all(isinstance(name, str) and name for name in names) or len(set(names)) != len(names):
        raise ValueError("tier names must be distinct, non-empty strings")
    cuts = [_probability(t.get("min_risk"), f"tier {t['name']!r} min_risk") for t in tiers]
    for i in range(1, len(cuts)):
        if cuts[i] >= cuts[i - 1]:
            raise ValueError(f"tier cut-offs must increase from the lowest tier to the highest: {names[i]!r} "
                             f"({cuts[i]:g}) is listed below {names[i - 1]!r} ({cuts[i - 1]:g})")


def _check_capacity(capacity: Any) -> None:
    """Flagging a larger share of patients cannot need a higher cut-off."""
    if not isinstance(capacity, list) or not all(isinstance(c, dict) for c in capacity):
        raise ValueError("capacity must be a list of {top_percent, risk_cutoff}")
    points = []
    for c in capacity:
        percent = c.get("top_percent")
        if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not 0 < percent <= 100:
            raise ValueError(f"capacity top_percent must be in (0, 100], got {percent!r}")
        points.append((float(percent), _probability(c.get("risk_cutoff"), f"top {percent:g}% risk_cutoff")))
    points.sort()
    for (share, cut), (larger, larger_cut) in pairwise(points):
        if larger_cut > cut:
            raise ValueError(f"capacity cut-offs must not increase with the share flagged: top {larger:g}% "
                             f"({larger_cut:g}) is above top {share:g}% ({cut:g})")


def _check_quantiles(quantiles: Any) -> None:
    """`percentile()` interpolates in these: both increasing, probabilities strictly."""
    if not isinstance(quantiles, dict):
        raise ValueError("risk_quantiles must be {probabilities, values}")
    probabilities, values = quantiles.get("probabilities"), quantiles.get("values")
    if not isinstance(probabilities, list) or not isinstance(values, list) or len(probabilities) != len(values) \
            or len(values) < 2:
        raise ValueError("risk_quantiles must have equally long lists of at least 2 probabilities and values")
    p = [_probability(v, f"risk_quantiles probabilities[{i}]") for i, v in enumerate(probabilities)]
    v = [_probability(x, f"risk_quantiles values[{i}]") for i, x in enumerate(values)]
    if any(b <= a for a, b in pairwise(p)) or any(b < a for a, b in pairwise(v)):
        raise ValueError("risk_quantiles must increase (probabilities strictly, values non-decreasing)")


def check_thresholds(thresholds: Any) -> None:
    """ValueError unless every cut-off a risk is read against is a probability in a consistent order."""
    if not isinstance(thresholds, dict):
        raise ValueError("expected a JSON object")
    _check_tiers(thresholds.get("tiers", []))
    _check_capacity(thresholds.get("capacity", []))
    best = thresholds.get("best_f1")
    if best is not None:
        _probability(best.get("risk_cutoff") if isinstance(best, dict) else best, "best_f1 risk_cutoff")
    if "risk_quantiles" in thresholds:
        _check_quantiles(thresholds["risk_quantiles"])


def read_thresholds(folder: Path) -> dict[str, Any]:
    """thresholds.json, validated; {} when the folder has none (then `tier` and `percentile` say so)."""
    path = folder / THRESHOLDS_FILE
    if not path.exists():
        return {}
    thresholds = read_json(path)
    try:
        check_thresholds(thresholds)
    except ValueError as error:
        raise ModelFolderError(f"{path}: invalid thresholds ({error})") from error
    return thresholds


@dataclass
class ReadmitPredictor:
    model_dir: Path
    model: Any                       # ReadmitTransformerForSequenceClassification, eval mode
    config: Any                      # ReadmitTransformerConfig
    preprocessing: Preprocessing
    calibrator: Calibrator
    thresholds: dict[str, Any]
    model_version: str
    training: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, model_dir: str | Path, threads: int | None = None, *,
             check_manifest: bool = True) -> "ReadmitPredictor":
        """Load a model folder. Refuses, with a ModelFolderError of one line naming the file, a folder whose
        files differ from manifest.json, whose tensors do not match config.json exactly, or whose
        calibration or thresholds are invalid. `check_manifest=False` is for `readmit seal` only: it checks
        the content of a folder before sealing it."""
        folder = Path(model_dir)
        missing = [name for name in ("config.json", "model.safetensors", "preprocessing.json")
                   if not (folder / name).exists()]
        if missing:
            raise UserError(f"{folder} is not a readmission model folder (missing {', '.join(missing)}): "
                            "run `readmit train` or use --model models/champion")
        version = verify_manifest(folder) if check_manifest else build_manifest(folder)["version"]
        set_torch_threads(threads)
        model = load_weights_strictly(folder)
        preprocessing = read_preprocessing(folder)
        spec = model.config.feature_spec_version
        if spec and spec != preprocessing.feature_spec_version:
            raise ModelFolderError(f"{folder / 'config.json'}: model built for feature spec {spec}, "
                                   f"{PREPROCESSING_FILE} is {preprocessing.feature_spec_version}")
        thresholds = read_thresholds(folder)
        training = read_json(folder / TRAINING_FILE) if (folder / TRAINING_FILE).exists() else {}
        return cls(folder, model, model.config, preprocessing, Calibrator.load(folder), thresholds,
                   version_label(model.config.model_type, version), training)

    # --- scores -----------------------------------------------------------------------------------
    def logits(self, batch: EncodedBatch, batch_size: int = SCORING_BATCH) -> np.ndarray:
        """Model logits [n, 2] (not readmitted, readmitted), batched, without gradients."""

        parts = []
        with torch.inference_mode():
            for start in range(0, len(batch), batch_size):
                part = batch.take(np.arange(start, min(start + batch_size, len(batch))))
                parts.append(self.model(**to_tensors(part)).logits.float().numpy())
        return np.concatenate(parts) if parts else np.zeros((0, 2), dtype=np.float32)

    @staticmethod
    def raw_probability_from_logits(logits: np.ndarray) -> np.ndarray:
        logits = np.asarray(logits, dtype=np.float64)
        return 1.0 / (1.0 + np.exp(logits[..., 0] - logits[..., 1]))

    def raw_probability(self, batch: EncodedBatch) -> np.ndarray:
        """Uncalibrated model probability of readmission (the class-weighted loss inflates it)."""
        return self.raw_probability_from_logits(self.logits(batch))

    def calibrate(self, raw_probability: np.ndarray) -> np.ndarray:
        """Raw probability -> calibrated risk (monotone non-decreasing)."""
        return np.clip(self.calibrator(np.asarray(raw_probability, dtype=np.float64)), 0.0, 1.0)

    def risk(self, batch: EncodedBatch) -> np.ndarray:
        """Calibrated probability of readmission within 30 days."""
        return self.calibrate(self.raw_probability(batch))

    # --- interpretation of a risk -----------------------------------------------------------------
    @property
    def tier_names(self) -> list[str]:
        return [t["name"] for t in self.thresholds.get("tiers", [])]

    def tier(self, risk: Sequence[float] | np.ndarray) -> list[str]:
        """Risk tier of each risk, by the validation cut-offs in thresholds.json (highest tier first)."""
        tiers = self.thresholds.get("tiers") or []
        if not tiers:
            raise UserError(f"{self.model_dir} has no risk tiers (thresholds.json): retrain the model")
        out = []
        for value in np.asarray(risk, dtype=np.float64).reshape(-1):
            if np.isnan(value):
                out.append("")
                continue
            out.append(next((t["name"] for t in tiers if value >= t["min_risk"]), tiers[-1]["name"]))
        return out

    def percentile(self, risk: Sequence[float] | np.ndarray) -> np.ndarray:
        """Share of validation encounters (in percent, 0-100) with a calibrated risk at or below `risk`."""
        quantiles = self.thresholds.get("risk_quantiles")
        if not quantiles:
            raise UserError(f"{self.model_dir} has no validation risk distribution (thresholds.json)")
        values = np.asarray(quantiles["values"], dtype=np.float64)
        probabilities = np.asarray(quantiles["probabilities"], dtype=np.float64)
        risk = np.asarray(risk, dtype=np.float64)
        # Ties (flat stretches of an isotonic map): take the upper end, "at or below".
        upper = np.searchsorted(values, risk, side="right")
        lower = np.clip(upper - 1, 0, len(values) - 1)
        upper_c = np.clip(upper, 0, len(values) - 1)
        span = values[upper_c] - values[lower]
        fraction = np.where(span > 0, (risk - values[lower]) / np.where(span > 0, span, 1.0), 0.0)
        result = probabilities[lower] + np.clip(fraction, 0, 1) * (probabilities[upper_c] - probabilities[lower])
        result = np.where(risk < values[0], 0.0, np.where(risk >= values[-1], 1.0, result))
        return np.where(np.isnan(risk), np.nan, 100.0 * result)

    def capacity_cutoff(self, top_percent: float) -> float:
        for entry in self.thresholds.get("capacity", []):
            if float(entry["top_percent"]) == float(top_percent):
                return float(entry["risk_cutoff"])
        quantiles = self.thresholds["risk_quantiles"]
        return float(np.interp(1 - top_percent / 100.0, quantiles["probabilities"], quantiles["values"]))
