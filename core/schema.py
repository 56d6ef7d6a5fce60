"""The canonical encounter: the one definition every reader, writer and model derives from.

`ENCOUNTER_FIELDS` is the single source of truth. From it we derive
- the Arrow schema (`arrow_schema()`), used for Parquet and pandas dtypes,
- the Spark StructType (`etl.spark_schema.spark_struct`, which only translates `Field.kind`),
- the pydantic request model (`EncounterIn`, for the API), validated by the rules of
  `core.validation` that uploads, `readmit score` and the ETL apply too, and documented with the
  same limits (bounds, categories, lengths) in its JSON schema,
- the upload template (`template_columns()` / `template_example_row()`).
A column is added here and nowhere else.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Optional

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, ValidationInfo, WithJsonSchema, create_model, field_validator, model_validator
from pydantic import Field as PydField
from pydantic_core import PydanticCustomError

from core.validation import (
    LIST_SEPARATOR,
    ROW_RULE_FIELDS,
    parse_text,
    row_problems,
    rules_from_fields,
    value_problem,
)

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

ID_MAX_LENGTH = 64       # patient and encounter ids
CODE_MAX_LENGTH = 16     # an ICD code: 'V45.81', 'S72.001A'
TEXT_MAX_LENGTH = 64     # free text: payer, specialty, a drug:status item
MAX_LIST_ITEMS = 50

# Dispositions after which a 30-day readmission cannot be observed or is not a care failure.
INELIGIBLE_DISPOSITIONS = {"expired": "died", "hospice": "hospice"}


@dataclass(frozen=True)
class Field:
    """One canonical column.

    `required` means an uploaded discharge must carry it; `allowed` lists the categories a value
    may take (None = free text); `bounds` are the plausible range for numbers (outside = invalid
    input, reported, never silently scored); `max_length` bounds a text value or each item of a
    list, `max_items` a list. Date-times must lie between 1900-01-01 and tomorrow, and the fields of
    one encounter must agree with each other (`core.validation.row_problems`).
    """
    name: str
    kind: Kind
    description: str
    required: bool = False
    allowed: Optional[tuple[str, ...]] = None
    bounds: Optional[tuple[float, float]] = None
    max_length: Optional[int] = None
    max_items: Optional[int] = None
    example: Any = None
    derived: bool = False  # computed by the pipeline, not read from input
    extras: dict = field(default_factory=dict)


ENCOUNTER_FIELDS: tuple[Field, ...] = (
    Field("patient_id", "string", "Stable patient identifier (pseudonymous)", required=True,
          max_length=ID_MAX_LENGTH, example="P000123"),
    Field("encounter_id", "string", "Unique encounter identifier", required=True,
          max_length=ID_MAX_LENGTH, example="E0004567"),
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
          required=True, max_length=CODE_MAX_LENGTH, max_items=MAX_LIST_ITEMS, example=["428.0", "250.02", "401.9"]),
    Field("icd_version", "int", "ICD version of `diagnoses` (9 or 10)", bounds=(9, 10), example=9),
    Field("number_diagnoses", "int", "Number of diagnoses entered", bounds=(0, 100), example=9),
    Field("num_procedures", "int", "Procedures during the stay", bounds=(0, 100), example=1),
    Field("num_lab_procedures", "int", "Lab tests during the stay", bounds=(0, 1000), example=44),
    Field("num_medications", "int", "Distinct medications during the stay", bounds=(0, 500), example=16),
    Field("medication_changes", "string_list",
          "Diabetes medications given and their change at discharge as drug:status, status one of "
          "steady/up/down (';'-separated in CSV)", max_length=TEXT_MAX_LENGTH, max_items=MAX_LIST_ITEMS,
          example=["insulin:up", "metformin:steady"]),
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
    Field("payer", "string", "Payer code or name", max_length=TEXT_MAX_LENGTH, example="MC"),
    Field("admitting_specialty", "string", "Specialty of the admitting physician", max_length=TEXT_MAX_LENGTH,
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
_JSON_TYPES = {"string": "string", "int": "integer", "float": "number", "bool": "boolean"}
RULES_BY_NAME = {rule.name: rule for rule in rules_from_fields(ENCOUNTER_FIELDS)}


def json_schema(f: Field) -> dict[str, Any]:
    """The JSON schema of one field's value, with the limits `core.validation` enforces."""
    if f.kind == "timestamp":
        return {"type": "string", "format": "date-time"}
    if f.kind == "string_list":
        items: dict[str, Any] = {"type": "string", **({"maxLength": f.max_length} if f.max_length else {})}
        return {"type": "array", "items": items, **({"maxItems": f.max_items} if f.max_items else {}),
                **({"minItems": 1} if f.required else {})}
    schema: dict[str, Any] = {"type": _JSON_TYPES[f.kind]}
    if f.allowed is not None:
        schema["enum"] = list(f.allowed)
    if f.bounds is not None:
        schema["minimum"], schema["maximum"] = f.bounds
    if f.max_length is not None:
        schema["maxLength"] = f.max_length
    if f.required and f.kind == "string":
        schema["minLength"] = 1
    return schema


def _pydantic_field(f: Field):
    py_type = Annotated[_PY_TYPES[f.kind], WithJsonSchema(json_schema(f))]
    if f.required:
        return (py_type, PydField(..., description=f.description))
    return (Optional[py_type], PydField(None, description=f.description))


def _refuse(problem: Optional[str], error_type: str = "value_rule", context: Optional[dict] = None) -> None:
    if problem is not None:
        raise PydanticCustomError(error_type, problem, context)


class _EncounterBase(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="before")
    @classmethod
    def _read_as_uploads_are_read(cls, value: Any, info: ValidationInfo) -> Any:
        """Text is checked and date-times are parsed by the functions uploads use, before pydantic
        reads them: its own messages differ, and its date-time parser accepts other forms."""
        rule = RULES_BY_NAME[info.field_name]
        if rule.kind in ("string", "string_list"):
            _refuse(value_problem(rule, value, plausible=False))
        elif rule.kind == "timestamp" and isinstance(value, str):
            try:
                return parse_text("timestamp", value.strip())
            except ValueError as error:
                _refuse(str(error))
        return value

    @field_validator("*")
    @classmethod
    def _value_rules(cls, value: Any, info: ValidationInfo) -> Any:
        _refuse(value_problem(RULES_BY_NAME[info.field_name], value))
        return value

    @model_validator(mode="after")
    def _row_rules(self) -> "_EncounterBase":
        """The first row-rule problem; `ctx.field` names the field it blames (the API puts it in `loc`)."""
        problems = row_problems({name: getattr(self, name) for name in ROW_RULE_FIELDS})
        if problems:
            field_name, message = problems[0]
            _refuse(message, "row_rule", {"field": field_name})
        return self


def _build_encounter_model():
    input_fields = {f.name: _pydantic_field(f) for f in ENCOUNTER_FIELDS if not f.derived}
    example = {f.name: f.example for f in ENCOUNTER_FIELDS if not f.derived and f.example is not None}
    model = create_model("EncounterIn", __base__=_EncounterBase, **input_fields)
    model.model_config["json_schema_extra"] = {"examples": [example]}
    model.model_rebuild(force=True)
    return model


EncounterIn = _build_encounter_model()
EncounterIn.__doc__ = "One discharge in the canonical schema, as accepted by the API (the rules uploads follow)."
