"""UCI Diabetes 130-US hospitals (1999-2008): raw CSV rows to canonical encounters.

Pure pandas on string columns, so the Spark ETL (through `mapInPandas`) and the scorer run the
very same mapping. Code tables follow the official IDs_mapping.csv; ids that mean "Not Available",
"NULL", "Not Mapped" or "Unknown/Invalid" become missing values, never a category of their own.
"""
from __future__ import annotations

import pandas as pd

from core.labels import apply_eligibility
from core.schema import AGE_BANDS, FIELDS_BY_NAME
from core.validation import ColumnRule

SOURCE = "diabetes130"
MISSING_TOKEN = "?"

REQUIRED_COLUMNS = (
    "encounter_id", "patient_nbr", "race", "gender", "age", "admission_type_id",
    "discharge_disposition_id", "admission_source_id", "time_in_hospital", "payer_code",
    "medical_specialty", "num_lab_procedures", "num_procedures", "num_medications",
    "number_outpatient", "number_emergency", "number_inpatient", "diag_1", "diag_2", "diag_3",
    "number_diagnoses", "max_glu_serum", "A1Cresult", "change", "diabetesMed", "readmitted",
)
DRUG_COLUMNS = (
    "metformin", "repaglinide", "nateglinide", "chlorpropamide", "glimepiride", "acetohexamide",
    "glipizide", "glyburide", "tolbutamide", "pioglitazone", "rosiglitazone", "acarbose", "miglitol",
    "troglitazone", "tolazamide", "examide", "citoglipton", "insulin", "glyburide-metformin",
    "glipizide-metformin", "glimepiride-pioglitazone", "metformin-rosiglitazone",
    "metformin-pioglitazone",
)
INTEGER_COLUMNS = ("time_in_hospital", "num_lab_procedures", "num_procedures", "num_medications",
                   "number_outpatient", "number_emergency", "number_inpatient", "number_diagnoses")

LABELS = ("<30", ">30", "NO")
GENDERS = ("Female", "Male", "Unknown/Invalid")
# Raw count column -> the canonical field whose plausible bounds it must respect.
_BOUNDED_AS = {"time_in_hospital": "length_of_stay_days", "num_lab_procedures": "num_lab_procedures",
               "num_procedures": "num_procedures", "num_medications": "num_medications",
               "number_outpatient": "prior_outpatient_visits", "number_emergency": "prior_emergency_visits",
               "number_inpatient": "prior_inpatient_visits", "number_diagnoses": "number_diagnoses"}


def _rule(name: str) -> ColumnRule:
    """The one validation rule of a raw Diabetes 130 column, used by the ETL and the scorer alike:
    every column present, ids never blank, counts whole numbers within the schema's bounds, and the
    label, age band and gender among the documented values (an unseen level would otherwise pass on
    as a category nobody has trained on)."""
    allowed = {"readmitted": LABELS, "age": AGE_BANDS, "gender": GENDERS}.get(name)
    bounds = FIELDS_BY_NAME[_BOUNDED_AS[name]].bounds if name in _BOUNDED_AS else None
    return ColumnRule(name, "int" if name in INTEGER_COLUMNS else "string", required=True,
                      nullable=name not in ("encounter_id", "patient_nbr"), allowed=allowed, bounds=bounds)


RULES: tuple[ColumnRule, ...] = tuple(_rule(name) for name in REQUIRED_COLUMNS)

ADMISSION_TYPE = {"1": "emergency", "2": "urgent", "3": "elective", "4": "newborn", "7": "trauma"}
ADMISSION_SOURCE = {
    "1": "physician_referral", "2": "clinic_referral", "3": "clinic_referral", "7": "emergency_room",
    "4": "transfer_hospital", "10": "transfer_hospital", "22": "transfer_hospital",
    "5": "transfer_facility", "6": "transfer_facility", "18": "transfer_facility",
    "19": "transfer_facility", "25": "transfer_facility", "26": "transfer_facility",
    "11": "birth", "12": "birth", "13": "birth", "14": "birth", "23": "birth", "24": "birth",
    "8": "other",
}
DISCHARGE_DISPOSITION = {
    "1": "home", "6": "home_health", "8": "home_health",
    "3": "snf_rehab", "4": "snf_rehab", "5": "snf_rehab", "15": "snf_rehab", "22": "snf_rehab",
    "23": "snf_rehab", "24": "snf_rehab",
    "2": "transfer_hospital", "10": "transfer_hospital", "27": "transfer_hospital",
    "29": "transfer_hospital",
    "7": "against_advice",
    "13": "hospice", "14": "hospice",
    "11": "expired", "19": "expired", "20": "expired", "21": "expired",
    "9": "other", "12": "other", "16": "other", "17": "other", "28": "other", "30": "other",
}
# Diabetes 130 ids with no meaning (missing): admission type 5, 6, 8; source 9, 15, 17, 20, 21;
# disposition 18, 25, 26. They are absent from the maps above and so become null.
SEX = {"Female": "Female", "Male": "Male"}
LAB_NOT_MEASURED = "None"


def header_matches(columns) -> bool:
    """Whether a CSV header looks like the Diabetes 130 file."""
    return {"encounter_id", "patient_nbr", "readmitted", "diag_1"}.issubset(set(columns))


def _blank_missing(series: pd.Series) -> pd.Series:
    stripped = series.astype("string").str.strip()
    return stripped.mask(stripped.isin([MISSING_TOKEN, ""]))


def _medication_changes(raw: pd.DataFrame) -> pd.Series:
    present = [c for c in DRUG_COLUMNS if c in raw.columns]
    statuses = raw[present].apply(lambda col: col.astype("string").str.strip().str.lower())
    given = statuses.isin(["steady", "up", "down"])
    return pd.Series(
        [[f"{drug}:{status}" for drug, status, on in zip(present, row_status, row_given) if on]
         for row_status, row_given in zip(statuses.itertuples(index=False), given.itertuples(index=False))],
        index=raw.index, dtype="object")


def _lab(series: pd.Series) -> pd.Series:
    value = _blank_missing(series)
    return value.mask(value == LAB_NOT_MEASURED)


def to_canonical(raw: pd.DataFrame) -> pd.DataFrame:
    """Map a frame of raw Diabetes 130 rows (all strings, already validated) to canonical encounters."""
    diagnoses = raw[["diag_1", "diag_2", "diag_3"]].apply(_blank_missing)
    ints = {c: pd.to_numeric(_blank_missing(raw[c]), errors="raise").astype("Int64") for c in INTEGER_COLUMNS}
    out = pd.DataFrame({
        "patient_id": raw["patient_nbr"].astype("string").str.strip(),
        "encounter_id": raw["encounter_id"].astype("string").str.strip(),
        "source": SOURCE,
        "admit_time": pd.NaT,
        "discharge_time": pd.NaT,
        "encounter_seq": pd.NA,
        "age_years": float("nan"),
        "age_band": _blank_missing(raw["age"]),
        "sex": raw["gender"].astype("string").str.strip().map(SEX),
        "race": _blank_missing(raw["race"]),
        "admission_type": raw["admission_type_id"].astype("string").str.strip().map(ADMISSION_TYPE),
        "admission_source": raw["admission_source_id"].astype("string").str.strip().map(ADMISSION_SOURCE),
        "discharge_disposition": raw["discharge_disposition_id"].astype("string").str.strip()
        .map(DISCHARGE_DISPOSITION),
        "length_of_stay_days": ints["time_in_hospital"].astype("float64"),
        # Positional: a missing principal diagnosis stays a null first element, so the secondary
        # code is never promoted to principal.
        "diagnoses": [[None if pd.isna(c) else str(c) for c in row]
                      for row in diagnoses.itertuples(index=False)],
        "icd_version": 9,
        "number_diagnoses": ints["number_diagnoses"],
        "num_procedures": ints["num_procedures"],
        "num_lab_procedures": ints["num_lab_procedures"],
        "num_medications": ints["num_medications"],
        "medication_changes": _medication_changes(raw),
        "diabetes_med": raw["diabetesMed"].astype("string").str.strip().map({"Yes": True, "No": False}),
        "a1c_result": _lab(raw["A1Cresult"]),
        "glucose_result": _lab(raw["max_glu_serum"]),
        "prior_outpatient_visits": ints["number_outpatient"],
        "prior_emergency_visits": ints["number_emergency"],
        "prior_inpatient_visits": ints["number_inpatient"],
        "payer": _blank_missing(raw["payer_code"]),
        "admitting_specialty": _blank_missing(raw["medical_specialty"]),
        "readmitted_30d": raw["readmitted"].astype("string").str.strip().map(
            {"<30": True, ">30": False, "NO": False}),
        "eligible": True,
        "ineligible_reason": None,
        "days_since_last_discharge": float("nan"),
    }, index=raw.index)
    # A trailing missing secondary diagnosis carries no position information: drop it.
    out["diagnoses"] = [_trim_trailing_missing(codes) for codes in out["diagnoses"]]
    return apply_eligibility(out)


def _trim_trailing_missing(codes: list) -> list:
    while codes and codes[-1] is None:
        codes = codes[:-1]
    return codes
