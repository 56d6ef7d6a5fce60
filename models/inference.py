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

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from core.encoding import EncodedBatch, Preprocessing
from core.errors import UserError
from models.calibration import Calibrator

SCORING_BATCH = 2048


def file_hash(path: Path, length: int = 12) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:length]


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
    def load(cls, model_dir: str | Path, threads: int | None = None) -> "ReadmitPredictor":
        from transformers import AutoModelForSequenceClassification

        import models  # noqa: F401  (registers the Auto classes)
        from models.train import set_torch_threads

        folder = Path(model_dir)
        missing = [name for name in ("config.json", "model.safetensors", "preprocessing.json")
                   if not (folder / name).exists()]
        if missing:
            raise UserError(f"{folder} is not a readmission model folder (missing {', '.join(missing)}): "
                            "run `readmit train` or use --model models/champion")
        set_torch_threads(threads)
        model = AutoModelForSequenceClassification.from_pretrained(str(folder))
        model.eval()
        preprocessing = Preprocessing.load(folder)
        if model.config.feature_spec_version and model.config.feature_spec_version != preprocessing.feature_spec_version:
            raise UserError(f"{folder}: model built for feature spec {model.config.feature_spec_version}, "
                            f"preprocessing is {preprocessing.feature_spec_version}")
        thresholds_path = folder / "thresholds.json"
        thresholds = json.loads(thresholds_path.read_text()) if thresholds_path.exists() else {}
        training_path = folder / "training.json"
        training = json.loads(training_path.read_text()) if training_path.exists() else {}
        version = f"{model.config.model_type}@{file_hash(folder / 'model.safetensors')}"
        return cls(folder, model, model.config, preprocessing, Calibrator.load(folder), thresholds, version, training)

    # --- scores -----------------------------------------------------------------------------------
    def logits(self, batch: EncodedBatch, batch_size: int = SCORING_BATCH) -> np.ndarray:
        """Model logits [n, 2] (not readmitted, readmitted), batched, without gradients."""
        import torch

        from models.data import to_tensors
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
