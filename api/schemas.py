"""Request and response models.

The request model is derived from `core.schema.EncounterIn` (itself derived from the canonical
fields), never copied: a field added to the canonical schema appears here, with its bounds,
categories, lengths, example and validation rules (`core.validation`, the rules uploads follow).
This module adds only what JSON needs: a value must have the JSON type /openapi.json documents.
Free-text fields (`payer`, `admitting_specialty`, ICD codes) accept any
string: a value the model never saw in training collapses to the "other" level inside
`core.encoding`, exactly as in training. Categorical fields with a closed list in the canonical
schema (`sex`, `admission_type`, ...) reject values outside that list with 422: source adapters map
raw values onto those lists before training, and the API takes canonical input only.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
from typing import Any, Optional

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from core.features import FEATURE_SPEC_VERSION
from core.schema import COLUMNS, ENCOUNTER_FIELDS, SCHEMA_VERSION, EncounterIn
from core.validation import KIND_PROBLEMS, duplicate_errors, naive_utc

API_SOURCE = "discharges"  # an API record is a discharge supplied by a client, like an upload


_JSON_TYPES = {"string": (str,), "timestamp": (str,), "int": (int,), "float": (int, float), "bool": (bool,),
               "string_list": (list,)}
_KINDS = {f.name: f.kind for f in ENCOUNTER_FIELDS if not f.derived}


class EncounterRequest(EncounterIn):  # type: ignore[misc, valid-type]
    """One discharge in the canonical schema."""

    @field_validator(*_KINDS, mode="before")
    @classmethod
    def _json_type_as_documented(cls, value: Any, info: ValidationInfo) -> Any:
        """What /openapi.json promises is what we accept: 0 is not `false`, "67" is not a number."""
        kind = _KINDS[info.field_name]
        if value is None:
            return value
        ok = isinstance(value, _JSON_TYPES[kind]) and not (kind in ("int", "float") and isinstance(value, bool))
        if kind == "int" and isinstance(value, float) and value.is_integer():
            ok = True  # JSON Schema counts 1.0 as an integer
        if kind == "string_list" and ok:
            ok = all(isinstance(item, str) for item in value)
        if not ok:
            raise PydanticCustomError("json_type", KIND_PROBLEMS[kind])
        return value


EncounterRequest.model_config["json_schema_extra"] = EncounterIn.model_config.get("json_schema_extra")


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    encounters: list[EncounterRequest] = Field(
        ..., min_length=1, description="Encounters to score; at most READMIT_API_MAX_BATCH (default 1000). "
        "Encounters of the same patient in one batch are ordered and used as history, as in training. "
        "Each encounter_id once.")

    @model_validator(mode="after")
    def _unique_encounter_ids(self) -> "BatchRequest":
        """An encounter_id twice is refused as an upload refuses it (rows are the batch's items, from 1)."""
        repeated = duplicate_errors(pd.Series([e.encounter_id for e in self.encounters]))
        if repeated:
            raise PydanticCustomError("row_rule", repeated[0].problem,
                                      {"field": ("encounters", repeated[0].row - 1, "encounter_id")})
        return self


class AttributionGroup(BaseModel):
    group: str = Field(..., description="Clinical field group (all inputs of one field explained together)")
    label: str
    points: Optional[float] = Field(None, description="Contribution in calibrated-risk points (sum + base_risk = risk)")
    sentence: str


class Prediction(BaseModel):
    encounter_id: str
    risk: Optional[float] = Field(None, ge=0, le=1, description="Calibrated 30-day readmission probability; "
                                  "null when the encounter is not eligible (died, hospice)")
    risk_tier: Optional[str] = None
    risk_percentile: Optional[float] = None
    reasons: list[str] = Field(default_factory=list, description="Top factors behind this risk, strongest first")
    eligible: bool
    ineligible_reason: Optional[str] = None
    problem: Optional[str] = Field(None, description="Why an eligible encounter was not scored, if it was not")
    model_version: str


class Explanation(Prediction):
    base_risk: Optional[float] = Field(None, description="Risk of the average training encounter, "
                                       "the starting point of the attribution")
    groups: list[AttributionGroup] = Field(default_factory=list, description="Every field group's "
                                           "attribution, in the scoring service's group order")


class BatchPrediction(BaseModel):
    model_version: str
    count: int
    predictions: list[Prediction]


class Health(BaseModel):
    status: str
    model_version: Optional[str]
    feature_schema_hash: str
    schema_version: str = SCHEMA_VERSION
    feature_spec_version: str = FEATURE_SPEC_VERSION


class Ready(BaseModel):
    ready: bool
    model_version: Optional[str] = None


# --- mapping between requests, the canonical frame and responses -----------------------------

@functools.cache
def feature_schema_hash() -> str:
    """Hash of the canonical field list and the feature spec version: differs when either changes (both are
    fixed for the life of the process, so it is computed once)."""
    fields = [[f.name, f.kind, f.derived, list(f.allowed or ()), list(f.bounds or ())] for f in ENCOUNTER_FIELDS]
    text = json.dumps({"fields": fields, "feature_spec_version": FEATURE_SPEC_VERSION}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def to_canonical_frame(encounters: list[BaseModel]) -> pd.DataFrame:
    """Validated requests to canonical encounters (Arrow dtypes); derived columns left to the scorer."""
    rows = []
    for encounter in encounters:
        row: dict[str, Any] = {f.name: None for f in ENCOUNTER_FIELDS}
        row.update(encounter.model_dump())
        for name in ("admit_time", "discharge_time"):
            if row[name] is not None:
                row[name] = naive_utc(row[name])
        row["source"] = API_SOURCE
        rows.append(row)
    frame = pd.DataFrame(rows, columns=list(COLUMNS))  # list cells stay Python lists, as uploads produce
    for name in ("admit_time", "discharge_time"):
        frame[name] = pd.to_datetime(frame[name])
    return frame


def _clean(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    return value


def prediction_from_row(row: dict[str, Any], model_version: str, top_reasons: int = 3) -> dict[str, Any]:
    reasons = [str(_clean(row.get(f"reason_{i}"))) for i in range(1, top_reasons + 1)
               if _clean(row.get(f"reason_{i}")) not in (None, "")]
    return {"encounter_id": str(row["encounter_id"]), "risk": _clean(row.get("risk")),
            "risk_tier": _clean(row.get("risk_tier")), "risk_percentile": _clean(row.get("risk_percentile")),
            "reasons": reasons, "eligible": bool(_clean(row.get("eligible"))),
            "ineligible_reason": _clean(row.get("ineligible_reason")), "problem": _clean(row.get("problem")),
            "model_version": str(_clean(row.get("model_version")) or model_version)}


def explanation_from(row: dict[str, Any], explained: dict[str, Any], model_version: str) -> dict[str, Any]:
    """A prediction row plus `ScoringService.explain_one`'s grouped attribution."""
    out = prediction_from_row(row, model_version)
    out["base_risk"] = _clean(row.get("base_risk"))
    out["groups"] = [{key: _clean(group.get(key)) for key in ("group", "label", "points", "sentence")}
                     for group in explained.get("groups", [])] if out["risk"] is not None else []
    return out
