"""The Patient page: one encounter's record, stored explanation, live explanation and LACE points.

A missing patient is `None`, never another patient.
"""
from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import pandas as pd
from sqlalchemy import Engine, select

from core import icd, lace, vocabulary
from core import reasons as reason_text
from core.features import FEATURE_LABELS, sort_for_history
from core.intake import from_warehouse_frame, warehouse_list
from core.reasons import describe
from core.schema import LIST_SEPARATOR
from core.warehouse import Warehouse
from models.explain import GROUP_LABELS
from serving.database import session_scope
from serving.db_tables import UploadedDischarge, UploadedScore


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
    uploaded: Optional[dict[str, Any]] = None   # uploaded_by, uploaded_at, upload_name of an uploaded discharge

    @property
    def patient_id(self) -> str:
        return str(self.encounter["patient_id"])

    @property
    def encounter_id(self) -> str:
        return str(self.encounter["encounter_id"])

    @property
    def medications_recorded(self) -> bool:
        """False when the stay's medication list is null (not recorded); True when it was recorded, even empty."""
        return warehouse_list(self.encounter.get("medication_changes"), "medication_changes") is not None


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




def patient_detail(wh: Warehouse, encounter_id: str) -> Optional[PatientDetail]:
    """Everything the Patient page shows for one encounter, or None when the encounter is unknown."""
    encounter = _one(wh, "encounters", encounter_id)
    prediction = _one(wh, "predictions", encounter_id)
    if encounter is None and prediction is None:
        return None
    if encounter is None:  # predictions without the encounters table: show what we have
        encounter = {"encounter_id": prediction["encounter_id"], "patient_id": prediction["patient_id"]}
    features = _one(wh, "features", encounter_id)
    return PatientDetail(encounter, prediction, features, _diagnoses(encounter), _medications(encounter),
                         _other_stays(wh, str(encounter["patient_id"]), encounter_id),
                         contributions(prediction, features), lace_for(encounter, features))


def _diagnoses(encounter: dict[str, Any]) -> pd.DataFrame:
    """Position, code and the code's title: the table has a Code column, so the description is the title
    alone ('Heart failure'), not `icd.describe_diagnosis`'s 'Heart failure (428)'."""
    version = int(encounter.get("icd_version") or 9) if not pd.isna(encounter.get("icd_version") or 9) else 9
    codes = _as_list(encounter.get("diagnoses"))
    rows = []
    for i, c in enumerate(codes):
        if c:
            code = icd.normalize_code(c, version) or c
            rows.append({"position": i + 1, "code": code,
                         "description": icd.diagnosis_title(code, version) or "Unlisted code"})
    return pd.DataFrame(rows)


def _medications(encounter: dict[str, Any]) -> pd.DataFrame:
    meds = []
    for item in _as_list(encounter.get("medication_changes")):
        if item and ":" in str(item):
            drug, status = str(item).split(":", 1)
            meds.append({"medication": drug, "at discharge": vocabulary.label("medication_change", status)})
    return pd.DataFrame(meds)


def _other_stays(wh: Warehouse, patient_id: str, encounter_id: str) -> pd.DataFrame:
    """The patient's other stays in the warehouse, oldest first. The stays are found first (materialized):
    joined in one step, DuckDB hashes every prediction instead (1.6 s rather than 0.3 s at a million
    patients)."""
    if not wh.has_table("encounters"):
        return pd.DataFrame()
    pred_cols = ", p.risk, p.risk_tier" if wh.has_table("predictions") else ""
    pred_join = " LEFT JOIN predictions p ON p.encounter_id = e.encounter_id" if pred_cols else ""
    return wh.query(
        "WITH e AS MATERIALIZED (SELECT encounter_id, admit_time, discharge_time, length_of_stay_days, "
        "admission_type, discharge_disposition, readmitted_30d FROM encounters "
        "WHERE patient_id = ? AND encounter_id <> ?) "
        f"SELECT e.*{pred_cols} FROM e{pred_join} ORDER BY e.admit_time NULLS LAST, e.encounter_id",
        [patient_id, encounter_id])


def _as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(LIST_SEPARATOR)]
    try:
        return [v for v in list(value)]
    except TypeError:
        return []


# (label, canonical column, vocabulary field or None for a plain value) of the Patient page's stay table.
STAY_FACTS = (
    ("Age band", "age_band", "age_band"), ("Sex", "sex", "sex"), ("Race", "race", "race"),
    ("Admitted", "admit_time", None), ("Discharged", "discharge_time", None),
    ("Admission type", "admission_type", "admission_type"), ("Admitted from", "admission_source", "admission_source"),
    ("Discharged to", "discharge_disposition", "discharge_disposition"),
    ("Length of stay (days)", "length_of_stay_days", None),
    ("Admitting specialty", "admitting_specialty", "admitting_specialty"), ("Payer", "payer", "payer"),
    ("Procedures", "num_procedures", None), ("Lab tests", "num_lab_procedures", None),
    ("Medications", "num_medications", None), ("HbA1c", "a1c_result", "a1c_result"),
    ("Max glucose", "glucose_result", "glucose_result"),
    ("Outpatient visits in the year before (reported on the record)", "prior_outpatient_visits", None),
    ("Emergency visits in the year before (reported on the record)", "prior_emergency_visits", None),
    ("Inpatient stays in the year before (reported on the record)", "prior_inpatient_visits", None),
)


def stay_facts(encounter: dict[str, Any]) -> list[tuple[str, str]]:
    """The stay in words: coded fields through `core.vocabulary`, dates to the minute, a missing value
    said as such ("Not recorded"), never "None"."""
    facts = []
    for label_text, column, field in STAY_FACTS:
        value = encounter.get(column)
        if field is not None:
            facts.append((label_text, vocabulary.label(field, value)))
        elif vocabulary.is_missing(value):
            facts.append((label_text, vocabulary.NOT_RECORDED))
        elif isinstance(value, (pd.Timestamp, dt.datetime)):
            facts.append((label_text, pd.Timestamp(value).strftime("%Y-%m-%d %H:%M")))
        else:
            facts.append((label_text, _shown_value(column, value)))
    return facts


def _shown_value(name: str, value: Any) -> str:
    """A feature value in words: coded levels through `core.vocabulary`, numbers without a spurious .0."""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return f"{value:g}"
    return vocabulary.label(name, value)


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
        elif features and not vocabulary.is_missing(features.get(name)):
            shown = _shown_value(name, features.get(name))
        label = GROUP_LABELS.get(name) or FEATURE_LABELS.get(name, name.replace("_", " "))
        text = shown if name in GROUP_LABELS and shown else (f"{label} = {shown}" if shown else label)
        rows.append({"feature": name, "label": label, "value": shown, "text": text, "contribution": amount})
    if not rows:
        return empty
    out = pd.DataFrame(rows)
    return out.reindex(out["contribution"].abs().sort_values(ascending=False).index).reset_index(drop=True)


RISK_AGREEMENT = 1e-6   # live and stored risk of the same model agree far closer than this


def needs_live_explanation(prediction: Optional[dict[str, Any]], model_version: Optional[str]) -> bool:
    """Whether the Patient page must explain this score now rather than show the stored explanation.

    The scorer stores reasons and attributions with every prediction, by the one method every path uses
    (`models.explain.two_sided_shapley`, no random numbers), so for the loaded model they are exactly what
    a live computation would give: recompute only when none are stored or another model version stored
    them (`model_version` None: no model loaded, nothing to compute with)."""
    if not model_version or not prediction:
        return False
    stored = prediction.get("attributions")
    if stored is None or stored == "" or (isinstance(stored, float) and math.isnan(stored)):
        return True
    return str(prediction.get("model_version")) != str(model_version)


@dataclass(frozen=True)
class LiveExplanation:
    """`ScoringService.explain_one` for one encounter, computed now: base_risk + sum(points) == risk."""
    encounter_id: str
    risk: float
    base_risk: float
    points: dict[str, float]         # every field group's attribution (calibrated-risk units)
    contributions: pd.DataFrame      # as `contributions()`: feature, label, value, text, contribution
    reasons: tuple[str, ...]         # the top three sentences, as the batch scorer words them
    model_version: str

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
    """The explanation of one encounter computed now by `service.explain_one` over the patient's encounters
    up to this one: the numbers and reasons `readmit score` stores for it with the same model. None when
    the encounter is unknown or not scored (ineligible, impossible values)."""
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
    reasons = tuple(result.get("reasons") or (g["sentence"] for g in ranked[:top])) or \
        (reason_text.near_average(float(base)),)
    return LiveExplanation(str(result["encounter_id"]), float(risk), float(base), points, contrib, reasons,
                           str(getattr(service, "model_version", "unknown")))


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


def uploaded_detail(engine: Engine, wh: Warehouse, encounter_id: Optional[str] = None,
                    patient_id: Optional[str] = None, source: Optional[str] = None) -> Optional[PatientDetail]:
    """An uploaded discharge (serving.upload.add_to_worklist) as the Patient page shows it: the encounter with
    that id (in `source` when given), else the patient's latest uploaded discharge; None when neither exists.
    Its other stays are the warehouse's stays of the same patient id (the ones its score used as history)."""
    query = select(UploadedDischarge)
    if encounter_id:
        query = query.where(UploadedDischarge.encounter_id == str(encounter_id))
    elif patient_id:
        query = query.where(UploadedDischarge.patient_id == str(patient_id))
    else:
        return None
    if source:
        query = query.where(UploadedDischarge.source == str(source))
    with session_scope(engine) as session:
        found = sorted(session.scalars(query), key=lambda d: (str(d.record.get("discharge_time") or ""), d.id))
        if not found:
            return None
        discharge = found[-1]
        score = session.scalars(select(UploadedScore).where(UploadedScore.uploaded_discharge_id == discharge.id)
                                .order_by(UploadedScore.id.desc()).limit(1)).first()
    encounter = dict(discharge.record)
    for name in ("admit_time", "discharge_time"):
        encounter[name] = pd.Timestamp(encounter[name]) if encounter.get(name) else None
    prediction = _uploaded_prediction(encounter, score)
    return PatientDetail(encounter, prediction, None, _diagnoses(encounter), _medications(encounter),
                         _other_stays(wh, discharge.patient_id, discharge.encounter_id),
                         contributions(prediction, None), lace_for(encounter, None),
                         uploaded={"uploaded_by": discharge.uploaded_by, "uploaded_at": discharge.uploaded_at,
                                   "upload_name": discharge.upload_name})


def _uploaded_prediction(encounter: dict[str, Any], score: Optional[UploadedScore]) -> dict[str, Any]:
    """An uploaded_score row in the predictions table's columns."""
    if score is None:
        return {"eligible": encounter.get("eligible"), "ineligible_reason": encounter.get("ineligible_reason")}
    reasons = list(score.reasons or [])
    contributions_ = score.contributions or {}
    return {"encounter_id": encounter["encounter_id"], "patient_id": encounter["patient_id"], "risk": score.risk,
            "risk_tier": score.risk_tier, "risk_percentile": score.risk_percentile,
            **{f"reason_{k}": reasons[k - 1] if len(reasons) >= k else None for k in (1, 2, 3)},
            "attributions": json.dumps(contributions_.get("points") or {}),
            "base_risk": contributions_.get("base_risk"), "model_version": score.model_version,
            "eligible": encounter.get("eligible"), "ineligible_reason": encounter.get("ineligible_reason")}
