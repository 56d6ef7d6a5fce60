"""Plain English for every coded field, in one place: `label(field, level)`.

One dict per field maps the canonical level (see `core.schema`, the Diabetes 130 mapping in
`core.sources.diabetes130`, the MIMIC mapping in `etl.sources._mimic`) to the words a nurse reads.
Diagnosis codes are described by `core.icd.describe_diagnosis` (titles from the ICD packages).

A missing level reads "Not recorded" (lab results: "Not measured"), never "None". A level no dict
knows reads as a code ("Payer code ZZ (not documented)") when it looks like one, else as readable
text; it is never shown raw without saying so.
"""
from __future__ import annotations

import math
import re
from typing import Any, Optional

import numpy as np

from core import icd
from core.features import MISSING_LEVEL, OTHER_LEVEL
from core.schema import AGE_BANDS

NOT_RECORDED = "Not recorded"
NOT_MEASURED = "Not measured"
NOT_DOCUMENTED = "not documented"
RARE_LEVEL = "Other (too rare to count separately)"

SEX = {"Female": "Female", "Male": "Male"}
RACE = {"Caucasian": "Caucasian", "AfricanAmerican": "African American", "Hispanic": "Hispanic",
        "Asian": "Asian", "Other": "Other"}


def _age_band_words(band: str) -> str:
    """'[40-50)' -> '40-49 years' (the band includes its lower bound, excludes its upper)."""
    low, high = band.strip("[)").split("-")
    return f"{low}-{int(high) - 1} years"


AGE_BAND = {band: _age_band_words(band) for band in AGE_BANDS}
ADMISSION_TYPE = {"emergency": "Emergency", "urgent": "Urgent", "elective": "Elective", "newborn": "Newborn",
                  "trauma": "Trauma center", "other": "Other"}
# Diabetes 130 folds "HMO referral" into clinic referral and "court/law enforcement" into other.
ADMISSION_SOURCE = {"physician_referral": "Physician referral", "clinic_referral": "Clinic referral",
                    "emergency_room": "Emergency room", "transfer_hospital": "Transfer from another hospital",
                    "transfer_facility": "Transfer from another care facility", "birth": "Birth",
                    "other": "Other source"}
DISCHARGE_DISPOSITION = {
    "home": "Discharged home",
    "home_health": "Discharged home with home health care",
    "snf_rehab": "Discharged to a skilled nursing or rehabilitation facility",
    "transfer_hospital": "Transferred to another hospital",
    "against_advice": "Left against medical advice",
    "hospice": "Discharged to hospice",
    "expired": "Died in hospital",
    "other": "Discharged to another setting",
}

# Diabetes 130 payer codes are not documented code by code: Strack et al. 2014 (Table 1) only says the
# field holds 23 distinct values "for example, Blue Cross/Blue Shield, Medicare, and self-pay", and
# IDs_mapping.csv has no payer table. Those three are given; every other code says it is undocumented.
# The names are MIMIC's insurance values (etl.sources._mimic keeps them as they are).
UNDOCUMENTED_PAYER_CODES = ("MD", "HM", "UN", "CP", "SI", "DM", "CM", "CH", "PO", "WC", "OT", "OG", "MP", "FR")
PAYER = {
    "MC": "Medicare", "BC": "Blue Cross/Blue Shield", "SP": "Self-pay",
    "Medicare": "Medicare", "Medicaid": "Medicaid", "Private": "Private insurance", "Government": "Government",
    "Self Pay": "Self-pay", "No charge": "No charge", "Other": "Other payer",
} | {code: f"Payer code {code} ({NOT_DOCUMENTED})" for code in UNDOCUMENTED_PAYER_CODES}

# Diabetes 130 `medical_specialty` (and the MIMIC services mapped onto the same names).
UNDOCUMENTED_SPECIALTIES = ("DCPTEAM",)
SPECIALTY = {
    "AllergyandImmunology": "Allergy and immunology",
    "Anesthesiology": "Anesthesiology",
    "Anesthesiology-Pediatric": "Pediatric anesthesiology",
    "Cardiology": "Cardiology",
    "Cardiology-Pediatric": "Pediatric cardiology",
    "Dentistry": "Dentistry",
    "Dermatology": "Dermatology",
    "Emergency/Trauma": "Emergency and trauma medicine",
    "Endocrinology": "Endocrinology",
    "Endocrinology-Metabolism": "Endocrinology and metabolism",
    "Family/GeneralPractice": "Family or general practice",
    "Gastroenterology": "Gastroenterology",
    "Gynecology": "Gynecology",
    "Hematology": "Hematology",
    "Hematology/Oncology": "Hematology and oncology",
    "Hospitalist": "Hospitalist",
    "InfectiousDiseases": "Infectious diseases",
    "InternalMedicine": "Internal medicine",
    "Nephrology": "Nephrology",
    "Neurology": "Neurology",
    "Neurophysiology": "Neurophysiology",
    "Obsterics&Gynecology-GynecologicOnco": "Gynecologic oncology",
    "Obstetrics": "Obstetrics",
    "ObstetricsandGynecology": "Obstetrics and gynecology",
    "Oncology": "Oncology",
    "Ophthalmology": "Ophthalmology",
    "Orthopedics": "Orthopedics",
    "Orthopedics-Reconstructive": "Reconstructive orthopedics",
    "Osteopath": "Osteopathic medicine",
    "Otolaryngology": "Ear, nose and throat (otolaryngology)",
    "OutreachServices": "Outreach services",
    "Pathology": "Pathology",
    "Pediatrics": "Pediatrics",
    "Pediatrics-AllergyandImmunology": "Pediatric allergy and immunology",
    "Pediatrics-CriticalCare": "Pediatric critical care",
    "Pediatrics-EmergencyMedicine": "Pediatric emergency medicine",
    "Pediatrics-Endocrinology": "Pediatric endocrinology",
    "Pediatrics-Hematology-Oncology": "Pediatric hematology and oncology",
    "Pediatrics-InfectiousDiseases": "Pediatric infectious diseases",
    "Pediatrics-Neonatology": "Neonatology",
    "Pediatrics-Neurology": "Pediatric neurology",
    "Pediatrics-Pulmonology": "Pediatric pulmonology",
    "Perinatology": "Perinatology",
    "PhysicalMedicineandRehabilitation": "Physical medicine and rehabilitation",
    "PhysicianNotFound": "Physician not found",
    "Podiatry": "Podiatry",
    "Proctology": "Proctology",
    "Psychiatry": "Psychiatry",
    "Psychiatry-Addictive": "Addiction psychiatry",
    "Psychiatry-Child/Adolescent": "Child and adolescent psychiatry",
    "Psychology": "Psychology",
    "Pulmonology": "Pulmonology",
    "Radiologist": "Radiology",
    "Radiology": "Radiology",
    "Resident": "Resident physician",
    "Rheumatology": "Rheumatology",
    "Speech": "Speech",
    "SportsMedicine": "Sports medicine",
    "Surgeon": "Surgery (specialty not given)",
    "Surgery-Cardiovascular": "Cardiovascular surgery",
    "Surgery-Cardiovascular/Thoracic": "Cardiovascular and thoracic surgery",
    "Surgery-Colon&Rectal": "Colon and rectal surgery",
    "Surgery-General": "General surgery",
    "Surgery-Maxillofacial": "Maxillofacial surgery",
    "Surgery-Neuro": "Neurosurgery",
    "Surgery-Pediatric": "Pediatric surgery",
    "Surgery-Plastic": "Plastic surgery",
    "Surgery-PlasticwithinHeadandNeck": "Plastic surgery of the head and neck",
    "Surgery-Thoracic": "Thoracic surgery",
    "Surgery-Vascular": "Vascular surgery",
    "SurgicalSpecialty": "Surgical specialty",
    "Urology": "Urology",
    "Other": "Other specialty",
} | {code: f"Specialty code {code} ({NOT_DOCUMENTED})" for code in UNDOCUMENTED_SPECIALTIES}

# Diabetes 130 documents '>7' as above 7% but below 8%, 'Norm' as below 7%.
A1C = {"Norm": "Normal (below 7%)", ">7": "Between 7% and 8%", ">8": "Above 8%"}
GLUCOSE = {"Norm": "Normal", ">200": "Above 200 mg/dL", ">300": "Above 300 mg/dL"}
# A drug's status at discharge ('no' = not given), as `core.features` words it.
MEDICATION_CHANGE = {"no": "Not given", "steady": "Dose unchanged", "up": "Dose increased",
                     "down": "Dose decreased"}
DIABETES_MED = {"yes": "On diabetes medication", "no": "No diabetes medication"}
CLINICAL_GROUP = {"circulatory": "Circulatory system", "respiratory": "Respiratory system",
                  "digestive": "Digestive system", "diabetes": "Diabetes", "injury": "Injury and poisoning",
                  "musculoskeletal": "Musculoskeletal system", "genitourinary": "Genitourinary system",
                  "neoplasms": "Neoplasms (tumors)", "other": "Other conditions"}
CHAPTER = {
    "infectious": "Infectious and parasitic diseases", "neoplasms": "Neoplasms (tumors)",
    "endocrine": "Endocrine, nutritional and metabolic diseases", "blood": "Diseases of the blood",
    "mental": "Mental and behavioral disorders", "nervous": "Nervous system and sense organs",
    "circulatory": "Circulatory system", "respiratory": "Respiratory system", "digestive": "Digestive system",
    "genitourinary": "Genitourinary system", "pregnancy": "Pregnancy and childbirth",
    "skin": "Skin and subcutaneous tissue", "musculoskeletal": "Musculoskeletal system",
    "congenital": "Congenital anomalies", "perinatal": "Perinatal conditions",
    "symptoms": "Symptoms and ill-defined conditions", "injury": "Injury and poisoning",
    "external": "External causes of injury", "supplementary": "Factors influencing health status",
}
WEEKDAY = {"Mon": "Monday", "Tue": "Tuesday", "Wed": "Wednesday", "Thu": "Thursday", "Fri": "Friday",
           "Sat": "Saturday", "Sun": "Sunday"}
SOURCE = {"diabetes130": "Diabetes 130-US hospitals (1999-2008)", "mimic3": "MIMIC-III", "mimic4": "MIMIC-IV",
          "discharges": "Uploaded discharges", "synthetic": "Synthetic data"}
INELIGIBLE_REASON = {"died": "Died in hospital", "hospice": "Discharged to hospice"}
CHARLSON_CONDITION = {
    "myocardial_infarction": "Myocardial infarction", "congestive_heart_failure": "Congestive heart failure",
    "peripheral_vascular": "Peripheral vascular disease", "cerebrovascular": "Cerebrovascular disease",
    "dementia": "Dementia", "chronic_pulmonary": "Chronic pulmonary disease", "rheumatic": "Rheumatic disease",
    "peptic_ulcer": "Peptic ulcer disease", "mild_liver": "Mild liver disease",
    "diabetes_uncomplicated": "Diabetes without complications",
    "diabetes_complicated": "Diabetes with complications", "hemiplegia": "Hemiplegia or paraplegia",
    "renal": "Renal disease", "malignancy": "Cancer (any malignancy)",
    "severe_liver": "Moderate or severe liver disease", "metastatic_tumor": "Metastatic solid tumor",
    "hiv_aids": "HIV/AIDS",
}

VOCABULARIES: dict[str, dict[str, str]] = {
    "sex": SEX, "race": RACE, "age_band": AGE_BAND, "admission_type": ADMISSION_TYPE,
    "admission_source": ADMISSION_SOURCE, "discharge_disposition": DISCHARGE_DISPOSITION, "payer": PAYER,
    "admitting_specialty": SPECIALTY, "a1c_result": A1C, "glucose_result": GLUCOSE,
    "insulin": MEDICATION_CHANGE, "metformin": MEDICATION_CHANGE, "medication_change": MEDICATION_CHANGE,
    "diabetes_med": DIABETES_MED, "principal_group": CLINICAL_GROUP, "chapter": CHAPTER,
    "dx_1_chapter": CHAPTER, "dx_2_chapter": CHAPTER, "dx_3_chapter": CHAPTER,
    "discharge_weekday": WEEKDAY, "source": SOURCE, "ineligible_reason": INELIGIBLE_REASON,
    "charlson_condition": CHARLSON_CONDITION,
}
# Fields whose levels are ICD codes: described by `core.icd.describe_diagnosis`.
DIAGNOSIS_FIELDS = ("diagnosis", "dx_1", "dx_2", "dx_3", "dx_1_category", "dx_2_category", "dx_3_category")
_NOT_MEASURED_FIELDS = ("a1c_result", "glucose_result")
_CODE_NOUN = {"payer": "Payer", "admitting_specialty": "Specialty"}
# Text that stands for "no value" wherever it comes from (pandas, Diabetes 130's '?', its lab word 'None').
_MISSING_WORDS = frozenset({"", "?", "none", "nan", "nat", "<na>", "null", MISSING_LEVEL})
_CODE_LIKE = re.compile(r"^[A-Z0-9]{1,8}$")
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")


def is_missing(level: Any) -> bool:
    """None, NaN, pd.NA, NaT, '' and the placeholder words for a missing value."""
    if level is None:
        return True
    if isinstance(level, float):
        return math.isnan(level)
    if isinstance(level, str):
        return level.strip().lower() in _MISSING_WORDS
    try:
        return bool(level != level)  # NaT, pd.NA
    except TypeError:  # pd.NA refuses truth testing
        return True


def _text(level: Any) -> str:
    if isinstance(level, (bool, np.bool_)):
        return "yes" if level else "no"
    return str(level).strip()


def _readable(field: str, text: str) -> str:
    """An unknown level: a code says it is one; other text loses underscores and CamelCase joins."""
    if _CODE_LIKE.match(text):
        noun = _CODE_NOUN.get(field, field.replace("_", " ").capitalize())
        return f"{noun} code {text} ({NOT_DOCUMENTED})"
    words = " ".join(_CAMEL.sub(" ", text.replace("_", " ")).split())
    return words[:1].upper() + words[1:]


def label(field: str, level: Any, icd_version: Optional[int] = None) -> str:
    """Plain words for one level of a coded field, e.g. label('race', 'AfricanAmerican') ->
    'African American', label('dx_1', '428') -> 'Heart failure (428)'. `icd_version` only matters for
    diagnosis fields (default: inferred from the code)."""
    if is_missing(level):
        return NOT_MEASURED if field in _NOT_MEASURED_FIELDS else NOT_RECORDED
    text = _text(level)
    if text == OTHER_LEVEL:
        return RARE_LEVEL
    if field in DIAGNOSIS_FIELDS:
        return icd.describe_diagnosis(text, icd_version or icd.infer_version(text))
    words = VOCABULARIES.get(field, {}).get(text)
    return words if words is not None else _readable(field, text)
