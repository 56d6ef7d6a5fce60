"""The canonical encounter: the one definition every reader, writer and model derives from.

`ENCOUNTER_FIELDS` is the single source of truth. From it we derive
- the Arrow schema (`arrow_schema()`), used for Parquet and pandas dtypes,
- the Spark StructType (`etl.spark_schema.spark_struct`, which only translates `Field.kind`),
- the pydantic request model (`EncounterIn`, for the API and upload validation),
- the upload template (`template_columns()` / `template_example_row()`).
A column is added here and nowhere else.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, create_model, field_validator
from pydantic import Field as PydField

SCHEMA_VERSION = "1.0"

Kind = Literal["string", "int", "float", "bool", "timestamp", "string_list"]

SOURCES = ("diabetes130", "mimic3", "mimic4", "discharges", "synthetic")

SEX_VALUES = ("Female", "Male")
RACE_VALUES = ("Caucasian", "AfricanAmerican", "Hispanic", "Asian", "Other")
AGE_BANDS = tuple(f"[{lo}-{lo + 10})" for lo in range(0, 100, 10))
ADMISSION_TYPES = ("emergency", "urgent", "elective", "newborn", "trauma", "other")
ADMISSION_SOURCES = ("physician_referral", "clinic_referral", "emergency_room", "transfer_hospital",
                     "transfer_facility", "birth", "other")
DISCHARGE_DISPOSITIONS = ("home", "home_health", "snf_rehab", "transfer_hospital", "against_advice",
                          "hospice", "expired", "other")
LAB_RESULTS_A1C = ("Norm", ">7", ">8")
LAB_RESULTS_GLUCOSE = ("Norm", ">200", ">300")
MEDICATION_STATUSES = ("steady", "up", "down")
INELIGIBLE_REASONS = ("died", "hospice")

# Dispositions after which a 30-day readmission cannot be observed or is not a care failure.
INELIGIBLE_DISPOSITIONS = {"expired": "died", "hospice": "hospice"}


@dataclass(frozen=True)
class Field:
    """One canonical column.

    `required` means an uploaded discharge must carry it; `allowed` lists the categories a value
    may take (None = free text); `bounds` are the plausible range for numbers (outside = invalid
    input, reported, never silently scored).
    """
    name: str
    kind: Kind
    description: str
    required: bool = False
    allowed: Optional[tuple[str, ...]] = None
    bounds: Optional[tuple[float, float]] = None
    example: Any = None
    derived: bool = False  # computed by the pipeline, not read from input
    extras: dict = field(default_factory=dict)


ENCOUNTER_FIELDS: tuple[Field, ...] = (
    Field("patient_id", "string", "Stable patient identifier (pseudonymous)", required=True, example="P000123"),
    Field("encounter_id", "string", "Unique encounter identifier", required=True, example="E0004567"),
    Field("source", "string", "Which adapter produced the row", allowed=SOURCES, derived=True),
    Field("admit_time", "timestamp", "Admission date-time", example="2026-11-20T08:30:00"),
    Field("discharge_time", "timestamp", "Discharge date-time (empty if not yet discharged)",
          example="2026-11-25T14:00:00"),
    Field("encounter_seq", "int", "1-based order of this encounter within the patient's encounters",
          derived=True),
    Field("age_years", "float", "Age in years at admission", bounds=(0, 120), example=67),
    Field("age_band", "string", "Ten-year age band, e.g. [60-70)", allowed=AGE_BANDS, example="[60-70)"),
    Field("sex", "string", "Sex", allowed=SEX_VALUES, required=True, example="Female"),
    Field("race", "string", "Race as recorded", allowed=RACE_VALUES, example="Caucasian"),
    Field("admission_type", "string", "Admission type", allowed=ADMISSION_TYPES, example="emergency"),
    Field("admission_source", "string", "Where the patient came from", allowed=ADMISSION_SOURCES,
          example="emergency_room"),
    Field("discharge_disposition", "string", "Where the patient went at discharge",
          allowed=DISCHARGE_DISPOSITIONS, required=True, example="home"),
    Field("length_of_stay_days", "float", "Length of stay in days", bounds=(0, 365), example=5),
    Field("diagnoses", "string_list", "ICD diagnosis codes, principal first (';'-separated in CSV)",
          required=True, example=["428.0", "250.02", "401.9"]),
    Field("icd_version", "int", "ICD version of `diagnoses` (9 or 10)", bounds=(9, 10), example=9),
    Field("number_diagnoses", "int", "Number of diagnoses entered", bounds=(0, 100), example=9),
    Field("num_procedures", "int", "Procedures during the stay", bounds=(0, 100), example=1),
    Field("num_lab_procedures", "int", "Lab tests during the stay", bounds=(0, 1000), example=44),
    Field("num_medications", "int", "Distinct medications during the stay", bounds=(0, 500), example=16),
    Field("medication_changes", "string_list",
          "Diabetes medications given and their change at discharge as drug:status, status one of "
          "steady/up/down (';'-separated in CSV)", example=["insulin:up", "metformin:steady"]),
    Field("diabetes_med", "bool", "Any diabetes medication prescribed", example=True),
    Field("a1c_result", "string", "HbA1c result if measured (empty = not measured)",
          allowed=LAB_RESULTS_A1C, example=">8"),
    Field("glucose_result", "string", "Max serum glucose if measured (empty = not measured)",
          allowed=LAB_RESULTS_GLUCOSE, example=None),
    Field("prior_outpatient_visits", "int", "Outpatient visits in the year before admission",
          bounds=(0, 200), example=0),
    Field("prior_emergency_visits", "int", "Emergency visits in the year before admission",
          bounds=(0, 200), example=1),
    Field("prior_inpatient_visits", "int", "Inpatient stays in the year before admission",
          bounds=(0, 200), example=2),
    Field("payer", "string", "Payer code or name", example="MC"),
    Field("admitting_specialty", "string", "Specialty of the admitting physician",
          example="InternalMedicine"),
    Field("readmitted_30d", "bool",
          "Readmitted within 30 days of discharge (empty = unknown, e.g. a current discharge)",
          example=None),
    Field("eligible", "bool", "Counts for readmission measurement (false if died or hospice)",
          derived=True),
    Field("ineligible_reason", "string", "Why not eligible", allowed=INELIGIBLE_REASONS, derived=True),
    Field("days_since_last_discharge", "float",
          "Days between the previous discharge of the same patient and this admission", derived=True),
)

FIELDS_BY_NAME = {f.name: f for f in ENCOUNTER_FIELDS}
COLUMNS = tuple(f.name for f in ENCOUNTER_FIELDS)
LIST_SEPARATOR = ";"

_ARROW_TYPES = {
    "string": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us"),
    "string_list": pa.list_(pa.string()),
}


def arrow_schema() -> pa.Schema:
    """Arrow schema of the canonical encounter (all columns nullable except the two ids)."""
    return pa.schema([pa.field(f.name, _ARROW_TYPES[f.kind], nullable=f.name not in ("patient_id", "encounter_id"))
                      for f in ENCOUNTER_FIELDS])


def template_columns() -> list[str]:
    """Columns of the discharges upload template: every non-derived field."""
    return [f.name for f in ENCOUNTER_FIELDS if not f.derived]


def template_example_row() -> dict[str, str]:
    """One example row for the template, in CSV text form."""
    row = {}
    for f in ENCOUNTER_FIELDS:
        if f.derived:
            continue
        value = f.example
        if value is None:
            row[f.name] = ""
        elif isinstance(value, list):
            row[f.name] = LIST_SEPARATOR.join(value)
        elif isinstance(value, bool):
            row[f.name] = "true" if value else "false"
        else:
            row[f.name] = str(value)
    return row


# --- pydantic request model, derived from the same fields -------------------------------------

_PY_TYPES = {"string": str, "int": int, "float": float, "bool": bool, "timestamp": dt.datetime,
             "string_list": list[str]}


def _pydantic_field(f: Field):
    py_type = _PY_TYPES[f.kind]
    if f.allowed is not None:
        py_type = Literal[f.allowed]  # type: ignore[valid-type]
    constraints: dict[str, Any] = {"description": f.description}
    if f.bounds is not None:
        constraints["ge"], constraints["le"] = f.bounds
    if f.kind == "string_list":
        constraints["max_length"] = 50
    if f.required:
        return (py_type, PydField(..., **constraints))
    return (Optional[py_type], PydField(None, **constraints))


class _EncounterBase(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("diagnoses", check_fields=False)
    @classmethod
    def _principal_diagnosis_present(cls, codes: list[str]) -> list[str]:
        if not codes or not codes[0]:
            raise ValueError("at least the principal diagnosis is required")
        return codes


def _build_encounter_model():
    input_fields = {f.name: _pydantic_field(f) for f in ENCOUNTER_FIELDS if not f.derived}
    example = {f.name: f.example for f in ENCOUNTER_FIELDS if not f.derived and f.example is not None}
    model = create_model("EncounterIn", __base__=_EncounterBase, **input_fields)
    model.model_config["json_schema_extra"] = {"examples": [example]}
    model.model_rebuild(force=True)
    return model


EncounterIn = _build_encounter_model()
EncounterIn.__doc__ = "One discharge in the canonical schema, as accepted by the API and the upload."
