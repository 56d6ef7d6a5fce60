"""Post-hoc calibration of the raw model probability, chosen by measurement on validation.

Three candidates, each a monotone non-decreasing map raw probability -> calibrated probability,
stored as plain JSON (no pickles):
- temperature: sigmoid(z / T), z = logit(raw): one parameter, fixes over/under-confidence only;
- platt: sigmoid(a * z + b): also fixes the prior shift the class-weighted loss introduces;
- isotonic: a step function fitted by isotonic regression, interpolated linearly between steps.

`choose_calibrator` fits every candidate on one patient-grouped half of the validation split and
measures log-loss and ECE on the other half (and the other way round), picks the lowest mean
log-loss, and refits the winner on the whole validation split.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.isotonic import IsotonicRegression

from core import metrics
from models.manifest import ModelFolderError, read_json, sealed_update

CALIBRATION_FILE = "calibration.json"
METHODS = ("temperature", "platt", "isotonic")
KNOWN_METHODS = ("identity",) + METHODS
_EPS = 1e-6


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


def _fit_logistic(z: np.ndarray, y: np.ndarray, with_slope_and_bias: bool) -> tuple[float, float]:
    """Newton's method on the 1-D (or 2-D) logistic log-likelihood; deterministic and dependency free."""
    a, b = 1.0, 0.0
    for _ in range(100):
        p = sigmoid(a * z + b)
        w = np.clip(p * (1 - p), 1e-12, None)
        if with_slope_and_bias:
            grad = np.array([np.sum((p - y) * z), np.sum(p - y)])
            hess = np.array([[np.sum(w * z * z), np.sum(w * z)], [np.sum(w * z), np.sum(w)]]) + 1e-9 * np.eye(2)
            step = np.linalg.solve(hess, grad)
            a, b = a - step[0], b - step[1]
        else:
            grad = np.sum((p - y) * z)
            hess = np.sum(w * z * z) + 1e-9
            step = np.array([grad / hess, 0.0])
            a = a - step[0]
        if np.max(np.abs(step)) < 1e-10:
            break
    return float(a), float(b)


def _finite(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _non_decreasing(values: Any, name: str) -> list[float]:
    if not isinstance(values, list) or not values:
        raise ValueError(f"{name} must be a non-empty list of numbers")
    numbers = [_finite(v, f"{name}[{i}]") for i, v in enumerate(values)]
    if any(b < a for a, b in pairwise(numbers)):
        raise ValueError(f"{name} must be non-decreasing")
    return numbers


def check_calibration(method: str, params: dict[str, Any]) -> None:
    """ValueError unless `method` is known and `params` define a finite, non-decreasing map into [0, 1]
    (a NaN parameter would silently give every row an empty risk; a decreasing one inverts the ranking)."""
    if method not in KNOWN_METHODS:
        raise ValueError(f"unknown calibration method {method!r} (known: {', '.join(KNOWN_METHODS)})")
    if method == "temperature" and _finite(params.get("temperature"), "temperature") <= 0:
        raise ValueError("temperature must be positive")
    if method == "platt":
        _finite(params.get("b"), "b")
        if _finite(params.get("a"), "a") <= 0:
            raise ValueError("platt slope a must be positive (a decreasing map inverts the ranking)")
    if method == "isotonic":
        x, y = _non_decreasing(params.get("x"), "x"), _non_decreasing(params.get("y"), "y")
        if len(x) != len(y):
            raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
        if not 0.0 <= y[0] <= y[-1] <= 1.0:
            raise ValueError("isotonic y values must be probabilities in [0, 1]")


@dataclass
class Calibrator:
    """A fitted calibration map; `params` is all the state, JSON-serializable."""
    method: str
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fit(cls, method: str, raw: np.ndarray, y: np.ndarray) -> "Calibrator":
        raw = np.asarray(raw, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if method == "identity":
            return cls("identity", {})
        if method == "temperature":
            a, _ = _fit_logistic(logit(raw), y, with_slope_and_bias=False)
            a = max(a, 1e-3)  # a temperature is positive: the map stays increasing
            return cls("temperature", {"temperature": 1.0 / a})
        if method == "platt":
            a, b = _fit_logistic(logit(raw), y, with_slope_and_bias=True)
            if a <= 0:  # a decreasing map would invert the ranking: fall back to a bias-only fit
                a = 1e-3
            return cls("platt", {"a": a, "b": b})
        if method == "isotonic":
            iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(raw, y)
            return cls("isotonic", {"x": [float(v) for v in iso.X_thresholds_],
                                    "y": [float(v) for v in iso.y_thresholds_]})
        raise ValueError(f"unknown calibration method {method!r} (choose from {', '.join(METHODS)})")

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, dtype=np.float64)
        if self.method == "identity":
            return raw.copy()
        if self.method == "temperature":
            return sigmoid(logit(raw) / self.params["temperature"])
        if self.method == "platt":
            return sigmoid(self.params["a"] * logit(raw) + self.params["b"])
        if self.method == "isotonic":
            return np.interp(raw, np.asarray(self.params["x"]), np.asarray(self.params["y"]))
        raise ValueError(f"unknown calibration method {self.method!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "params": self.params}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> "Calibrator":
        """A validated calibrator (ValueError otherwise) from `to_dict`'s output."""
        if not isinstance(state, dict) or not isinstance(state.get("params", {}), dict):
            raise ValueError('expected {"method": ..., "params": {...}}')
        calibrator = cls(state.get("method"), dict(state.get("params", {})))
        check_calibration(calibrator.method, calibrator.params)
        return calibrator

    def save(self, folder: str | Path, selection: dict[str, Any] | None = None) -> Path:
        """Write calibration.json; a sealed folder (recalibration) is verified before and resealed after."""
        check_calibration(self.method, self.params)
        path = Path(folder) / CALIBRATION_FILE
        with sealed_update(folder):
            path.write_text(json.dumps({**self.to_dict(), "selection": selection or {}}, indent=1))
        return path

    @classmethod
    def load(cls, folder: str | Path) -> "Calibrator":
        """The folder's calibration; missing or invalid is an error, never a silent uncalibrated fallback
        (an uncalibrated model says so with method "identity")."""
        path = Path(folder) / CALIBRATION_FILE
        if not path.exists():
            raise ModelFolderError(f"{path}: missing; without it risks would be uncalibrated (restore it, or "
                                   "recalibrate the model)")
        try:
            return cls.from_dict(read_json(path))
        except ValueError as error:
            raise ModelFolderError(f"{path}: invalid calibration ({error})") from error


def grouped_halves(groups: np.ndarray, seed: int) -> np.ndarray:
    """A boolean mask putting each group (patient) wholly in one half, chosen at random with `seed`."""
    unique = np.unique(np.asarray(groups).astype(str))
    rng = np.random.default_rng(seed)
    chosen = set(unique[rng.permutation(len(unique))[: len(unique) // 2]])
    return np.array([g in chosen for g in np.asarray(groups).astype(str)])


def choose_calibrator(raw: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int = 0,
                      methods: tuple[str, ...] = METHODS) -> tuple[Calibrator, dict[str, Any]]:
    """Pick the calibration method with the lowest held-out log-loss (2-fold, patient-grouped halves),
    then refit it on all the data. Returns the calibrator and the measurements behind the choice."""
    raw = np.asarray(raw, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    half = grouped_halves(groups, seed)
    results: dict[str, Any] = {}
    for method in ("identity",) + tuple(methods):
        losses, eces = [], []
        for fit_mask in (half, ~half):
            calibrator = Calibrator.fit(method, raw[fit_mask], y[fit_mask])
            held_out = calibrator(raw[~fit_mask])
            losses.append(metrics.log_loss(y[~fit_mask], held_out))
            eces.append(metrics.ece(y[~fit_mask], held_out))
        results[method] = {"held_out_log_loss": float(np.mean(losses)), "held_out_ece": float(np.mean(eces))}
    best = min(methods, key=lambda m: results[m]["held_out_log_loss"])
    calibrator = Calibrator.fit(best, raw, y)
    selection = {"chosen": best, "criterion": "mean held-out log-loss, 2-fold patient-grouped halves of validation",
                 "seed": seed, "n": int(len(y)), "candidates": results}
    return calibrator, selection
