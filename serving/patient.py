"""The Patient page: one encounter's record, stored explanation, live explanation and LACE points.

A missing patient is `None`, never another patient.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import pandas as pd

from core import icd, lace
from core import reasons as reason_text
from core.features import FEATURE_LABELS, sort_for_history
from core.intake import from_warehouse_frame
from core.reasons import describe
from core.schema import LIST_SEPARATOR
from core.warehouse import Warehouse
from models.explain import GROUP_LABELS


@dataclass
class PatientDetail:
    encounter: dict[str, Any]
    prediction: Optional[dict[str, Any]]
    features: Optional[dict[str, Any]]
    diagnoses: pd.DataFrame
    medications: pd.DataFrame
    other_encounters: pd.DataFrame
    contributions: pd.DataFrame      # feature, label, value, contribution (sorted by |contribution|)
    lace: Optional[dict[str, Any]]

    @property
    def patient_id(self) -> str:
        return str(self.encounter["patient_id"])

    @property
    def encounter_id(self) -> str:
        return str(self.encounter["encounter_id"])


def resolve_encounter(wh: Warehouse, encounter_id: Optional[str] = None,
                      patient_id: Optional[str] = None) -> Optional[str]:
    """The encounter to show: the given one if it exists, else the patient's latest; None if unknown."""
    table = "encounters" if wh.has_table("encounters") else "predictions"
    if encounter_id:
        found = wh.query(f"SELECT encounter_id FROM {table} WHERE encounter_id = ? LIMIT 1", [str(encounter_id)])
        return str(found["encounter_id"].iloc[0]) if len(found) else None
    if patient_id:
        order = "discharge_time DESC NULLS LAST, admit_time DESC NULLS LAST, " if table == "encounters" else ""
        found = wh.query(f"SELECT encounter_id FROM {table} WHERE patient_id = ? ORDER BY {order}encounter_id DESC "
                         "LIMIT 1", [str(patient_id)])
        return str(found["encounter_id"].iloc[0]) if len(found) else None
    return None


def resolve_any_id(wh: Warehouse, typed: str) -> Optional[str]:
    """The encounter for an id a user typed without saying which kind: an encounter with that id, else
    that patient's latest encounter; None when neither exists (never a near match)."""
    return resolve_encounter(wh, encounter_id=typed) or resolve_encounter(wh, patient_id=typed)


def _one(wh: Warehouse, table: str, encounter_id: str) -> Optional[dict[str, Any]]:
    if not wh.has_table(table):
        return None
    rows = wh.query(f"SELECT * FROM {table} WHERE encounter_id = ? LIMIT 1", [encounter_id])
    return None if rows.empty else rows.iloc[0].to_dict()


MEDICATION_CHANGE_WORDS = {"steady": "given, dose unchanged", "up": "dose increased", "down": "dose decreased"}


def patient_detail(wh: Warehouse, encounter_id: str) -> Optional[PatientDetail]:
    """Everything the Patient page shows for one encounter, or None when the encounter is unknown."""
    encounter = _one(wh, "encounters", encounter_id)
    prediction = _one(wh, "predictions", encounter_id)
    if encounter is None and prediction is None:
        return None
    if encounter is None:  # predictions without the encounters table: show what we have
        encounter = {"encounter_id": prediction["encounter_id"], "patient_id": prediction["patient_id"]}
    features = _one(wh, "features", encounter_id)
    version = int(encounter.get("icd_version") or 9) if not pd.isna(encounter.get("icd_version") or 9) else 9
    codes = _as_list(encounter.get("diagnoses"))
    diagnoses = pd.DataFrame([{"position": i + 1, "code": icd.normalize_code(c, version) or c,
                               "description": diagnosis_description(icd.normalize_code(c, version), version)}
                              for i, c in enumerate(codes) if c])
    meds = []
    for item in _as_list(encounter.get("medication_changes")):
        if item and ":" in str(item):
            drug, status = str(item).split(":", 1)
            meds.append({"medication": drug, "at discharge": MEDICATION_CHANGE_WORDS.get(status, status)})
    others = pd.DataFrame()
    if wh.has_table("encounters"):
        pred_cols = ", p.risk, p.risk_tier" if wh.has_table("predictions") else ""
        pred_join = " LEFT JOIN predictions p ON p.encounter_id = e.encounter_id" if pred_cols else ""
        others = wh.query(
            f"SELECT e.encounter_id, e.admit_time, e.discharge_time, e.length_of_stay_days, e.admission_type, "
            f"e.discharge_disposition, e.readmitted_30d{pred_cols} FROM encounters e{pred_join} "
            "WHERE e.patient_id = ? AND e.encounter_id <> ? ORDER BY e.admit_time NULLS LAST, e.encounter_id",
            [str(encounter["patient_id"]), encounter_id])
    return PatientDetail(encounter, prediction, features, diagnoses, pd.DataFrame(meds), others,
                         contributions(prediction, features), lace_for(encounter, features))


def _as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(LIST_SEPARATOR)]
    try:
        return [v for v in list(value)]
    except TypeError:
        return []


def diagnosis_description(code: Optional[str], version: int = 9) -> str:
    """Plain words for a code: its clinical group and ICD chapter (no licensed code titles are shipped)."""
    if not code:
        return "unknown code"
    group, chapter = icd.clinical_group(code, version), icd.chapter(code, version)
    if group == "diabetes":
        return "diabetes mellitus"
    parts = [f"{chapter} conditions" if chapter else "unrecognised code"]
    if group and group not in ("other", chapter):
        parts.insert(0, group)
    return ", ".join(parts)


def contributions(prediction: Optional[dict[str, Any]], features: Optional[dict[str, Any]]) -> pd.DataFrame:
    """Per-feature contributions to this patient's risk from the stored attributions, biggest first."""
    empty = pd.DataFrame(columns=["feature", "label", "value", "text", "contribution"])
    if not prediction or prediction.get("attributions") in (None, ""):
        return empty
    raw = prediction["attributions"]
    try:
        parsed = json.loads(raw) if isinstance(raw, str) else dict(raw)
    except (TypeError, ValueError):
        return empty
    rows = []
    for name, value in parsed.items():
        try:
            amount = float(value)
        except (TypeError, ValueError):
            continue
        shown = ""
        if name in GROUP_LABELS and features and describe is not None:
            try:
                shown = describe(name, features)
            except Exception:
                shown = ""
        elif features and features.get(name) is not None and not (
                isinstance(features.get(name), float) and math.isnan(features.get(name))):
            shown = str(features.get(name))
        label = GROUP_LABELS.get(name) or FEATURE_LABELS.get(name, name.replace("_", " "))
        text = shown if name in GROUP_LABELS and shown else (f"{label} = {shown}" if shown else label)
        rows.append({"feature": name, "label": label, "value": shown, "text": text, "contribution": amount})
    if not rows:
        return empty
    out = pd.DataFrame(rows)
    return out.reindex(out["contribution"].abs().sort_values(ascending=False).index).reset_index(drop=True)


RISK_AGREEMENT = 1e-6   # live and stored risk of the same model agree far closer than this


@dataclass(frozen=True)
class LiveExplanation:
    """`ScoringService.explain_one` for one encounter: base_risk + sum(points) == risk."""
    encounter_id: str
    risk: float
    base_risk: float
    points: dict[str, float]         # every field group's attribution (calibrated-risk units)
    contributions: pd.DataFrame      # as `contributions()`: feature, label, value, text, contribution
    reasons: tuple[str, ...]         # the top three sentences, as the batch scorer words them
    model_version: str
    samples: int

    def agrees_with(self, stored_risk: Any) -> bool:
        return stored_risk is not None and not pd.isna(stored_risk) and \
            abs(float(stored_risk) - self.risk) <= RISK_AGREEMENT


def encounters_up_to(wh: Warehouse, encounter_id: str) -> pd.DataFrame:
    """The patient's encounters up to and including this one (canonical columns), in the history order
    of `core.features.sort_for_history`, this one last; empty when the encounter is unknown. Later stays
    are left out: they never enter this encounter's features and would only cost explanation time."""
    if not wh.has_table("encounters"):
        return pd.DataFrame()
    rows = wh.query("SELECT * FROM encounters WHERE patient_id = "
                    "(SELECT patient_id FROM encounters WHERE encounter_id = ? LIMIT 1)", [str(encounter_id)])
    if rows.empty:
        return pd.DataFrame()
    ordered = sort_for_history(from_warehouse_frame(rows)).reset_index(drop=True)
    at = np.flatnonzero(ordered["encounter_id"].astype(str).to_numpy() == str(encounter_id))
    return ordered.iloc[: int(at[0]) + 1].reset_index(drop=True) if len(at) else pd.DataFrame()


def live_explanation(service, wh: Warehouse, encounter_id: str, top: int = 3,
                     min_points: float = 0.0005) -> Optional[LiveExplanation]:
    """Sampled Shapley explanation of one encounter, computed now by `service.explain_one` over the
    patient's encounters up to this one. None when the encounter is unknown or not scored (ineligible,
    impossible values)."""
    history = encounters_up_to(wh, encounter_id)
    if history.empty:
        return None
    result = service.explain_one(history)
    risk, base = result.get("risk"), result.get("base_risk")
    if risk is None or pd.isna(risk) or base is None or pd.isna(base):
        return None
    points = {g["group"]: float(g["points"]) for g in result["groups"] if g.get("points") is not None}
    features = service.features_for(history).iloc[-1].to_dict()
    contrib = contributions({"attributions": json.dumps(points)}, features)
    ranked = sorted((g for g in result["groups"] if g.get("points") is not None and abs(g["points"]) >= min_points),
                    key=lambda g: -abs(g["points"]))   # stable: ties keep the field order, as the scorer
    reasons = tuple(g["sentence"] for g in ranked[:top]) or (reason_text.near_average(float(base)),)
    return LiveExplanation(str(result["encounter_id"]), float(risk), float(base), points, contrib, reasons,
                           str(getattr(service, "model_version", "unknown")),
                           int(getattr(service, "single_samples", 32)))


def lace_for(encounter: dict[str, Any], features: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """LACE points for one encounter through `core.lace` (the same code the evaluation uses)."""
    charlson = (features or {}).get("charlson_index")
    if charlson is None:
        codes = [icd.normalize_code(c, 9) for c in _as_list(encounter.get("diagnoses"))]
        charlson = icd.charlson_index(icd.charlson_conditions(codes, 9))
    record = pd.DataFrame([{"length_of_stay_days": encounter.get("length_of_stay_days"),
                            "admission_type": encounter.get("admission_type"),
                            "admission_source": encounter.get("admission_source"),
                            "charlson_index": charlson,
                            "prior_emergency_visits": encounter.get("prior_emergency_visits")}])
    row = lace.lace_components(record).iloc[0]
    points = {k: int(row[k]) for k in ("L", "A", "C", "E")}
    points["total"] = int(row["lace"])
    points["band"] = "high (10 or more)" if points["total"] >= 10 else (
        "moderate (5 to 9)" if points["total"] >= 5 else "low (under 5)")
    return points
