"""The model card's inputs: the model folder's files parsed once (`Folder`), the evaluations in
metrics.json, and the number formatting every card section uses (`models.card` renders the card)."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

from models.manifest import MANIFEST_FILE, version_label

PRIMARY_NAMES = ("transformer", "readmit-transformer", "model", "champion")
EXCLUDED_DISPOSITIONS = "11, 13, 14, 19, 20, 21"
# Inputs HTI-1 asks a developer to disclose (race, ethnicity, language, sex, age, social determinants).
DISCLOSED_INPUTS = {"race": "race", "sex": "sex", "age_band": "age band", "age_years_est": "estimated age in years",
                    "payer": "payer (insurance type)"}

Evaluation = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class Folder:
    """The model folder's files, parsed once; a missing or unreadable file is an empty dict."""
    config: dict[str, Any]
    preprocessing: dict[str, Any]
    training: dict[str, Any]
    calibration: dict[str, Any]
    thresholds: dict[str, Any]
    metrics: dict[str, Any]
    manifest: dict[str, Any]

    @property
    def version(self) -> Optional[str]:
        if not self.manifest.get("version"):
            return None
        return version_label(self.config.get("model_type", "model"), self.manifest["version"])

    @property
    def evaluations(self) -> list[Evaluation]:
        report = self.metrics.get("models") if isinstance(self.metrics.get("models"), dict) else self.metrics
        return list(iter_evaluations(report))

    @property
    def primary(self) -> Optional[Evaluation]:
        return primary_evaluation(self.evaluations)

    @property
    def overall(self) -> dict[str, Any]:
        return self.primary[1]["overall"] if self.primary else {}

    @property
    def splits(self) -> dict[str, Any]:
        return self.training.get("data", {}).get("splits", {})

    @property
    def disclosed_inputs(self) -> list[str]:
        """The inputs among `DISCLOSED_INPUTS` that config.json lists, in words."""
        names = self.config.get("categorical_feature_names", []) + self.config.get("numeric_feature_names", [])
        return [label for name, label in DISCLOSED_INPUTS.items() if name in names]

    @property
    def data_manifest(self) -> dict[str, Any]:
        return self.training.get("data", {}).get("features_manifest") or {}


def read_json(folder: Path, name: str) -> dict[str, Any]:
    path = folder / name
    if not path.exists():
        return {}
    try:
        parsed = json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def read_folder(folder: str | Path) -> Folder:
    folder = Path(folder)
    return Folder(*(read_json(folder, name) for name in ("config.json", "preprocessing.json", "training.json",
                                                     "calibration.json", "thresholds.json", "metrics.json",
                                                     MANIFEST_FILE)))


# --- formatting ----------------------------------------------------------------------------------

def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def fmt_num(value: Any, digits: int = 3) -> str:
    if is_missing(value):
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def fmt_count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else fmt_num(value)


def fmt_pct(value: Any, digits: int = 1) -> str:
    return "–" if is_missing(value) or not isinstance(value, (int, float)) else f"{100 * value:.{digits}f}%"


def is_interval(ci: Any) -> bool:
    return isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(v, (int, float)) for v in ci)


def fmt_interval(ci: Any) -> str:
    return f" ({ci[0]:.3f}–{ci[1]:.3f})" if is_interval(ci) else ""


def fmt_ci(ci: Any) -> str:
    return f" (95% CI {ci[0]:.3f}–{ci[1]:.3f})" if is_interval(ci) else ""


def fmt_names(names: Iterable[str]) -> str:
    return ", ".join(f"`{name}`" for name in names)


def md_table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(row) + " |" for row in rows])


# --- metrics.json ---------------------------------------------------------------------------------

def iter_evaluations(metrics: Any, prefix: str = "") -> Iterable[Evaluation]:
    """Every (name, evaluation) pair in metrics.json: an evaluation is a dict with an "overall" dict."""
    if not isinstance(metrics, dict):
        return
    if isinstance(metrics.get("overall"), dict):
        yield prefix or "transformer", metrics
        return
    for key, value in metrics.items():
        if isinstance(value, dict):
            yield from iter_evaluations(value, f"{prefix}/{key}" if prefix else str(key))


def primary_evaluation(evaluations: list[Evaluation]) -> Optional[Evaluation]:
    for name, evaluation in evaluations:
        if any(part in PRIMARY_NAMES for part in name.lower().split("/")):
            return name, evaluation
    return evaluations[0] if evaluations else None


def subgroup_rows(evaluation: dict[str, Any]) -> Iterable[tuple[str, dict[str, Any]]]:
    for group, rows in (evaluation.get("subgroups") or {}).items():
        rows = rows if isinstance(rows, list) else [{"level": k, **v} for k, v in rows.items()]
        for row in rows:
            yield group, row


def split_name(f: Folder) -> str:
    return str(f.metrics.get("split", "?"))

