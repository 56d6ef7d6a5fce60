"""Plain words for every coded level: every level of the real data and of the schema has its own entry."""
from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from core import icd, schema, synthetic, vocabulary
from core.features import CATEGORICAL_NAMES, CODE_CHAPTERS, MISSING_LEVEL, OTHER_LEVEL, build_features
from core.sources import diabetes130
from core.vocabulary import VOCABULARIES, label

# Categorical features whose levels are diagnosis codes (worded by core.icd, tested in test_icd.py).
CODE_LEVEL_FIELDS = ("dx_1_category", "dx_2_category", "dx_3_category")
WORDED_FIELDS = tuple(f for f in CATEGORICAL_NAMES if f not in CODE_LEVEL_FIELDS) + CODE_CHAPTERS


@pytest.fixture(scope="module")
def real_features(diabetes_csv) -> pd.DataFrame:
    raw = pd.read_csv(diabetes_csv, dtype=str, keep_default_na=False)
    return build_features(diabetes130.to_canonical(raw))


def _levels(values: pd.Series) -> set[str]:
    return {str(v) for v in values.dropna().unique()}


def test_every_categorical_feature_has_a_vocabulary():
    assert set(WORDED_FIELDS) <= set(VOCABULARIES)
    assert all(field in vocabulary.DIAGNOSIS_FIELDS for field in CODE_LEVEL_FIELDS)


def test_every_level_of_the_real_data_has_its_own_label(real_features):
    unlabelled = {field: sorted(_levels(real_features[field]) - set(VOCABULARIES[field]))
                  for field in WORDED_FIELDS}
    assert not {f: levels for f, levels in unlabelled.items() if levels}
    assert len(_levels(real_features["admitting_specialty"])) > 60  # the scan saw the real variety


def test_every_level_of_the_schema_and_the_synthetic_profile_has_its_own_label():
    declared = {f.name: f.allowed for f in schema.ENCOUNTER_FIELDS if f.allowed}
    declared |= {"insulin": schema.MEDICATION_STATUSES + ("no",), "metformin": schema.MEDICATION_STATUSES + ("no",),
                 "medication_change": schema.MEDICATION_STATUSES, "diabetes_med": ("yes", "no"),
                 "discharge_weekday": ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"),
                 "charlson_condition": icd.CHARLSON_CONDITIONS, "chapter": icd.CHAPTERS,
                 **{name: icd.CHAPTERS for name in CODE_CHAPTERS}}
    for field, table in synthetic.load_profile()["categorical"].items():
        if field in VOCABULARIES:
            declared[field] = tuple(declared.get(field, ())) + tuple(lv for lv in table["levels"] if lv is not None)
    missing = {field: sorted(set(levels) - set(VOCABULARIES[field])) for field, levels in declared.items()}
    assert not {f: levels for f, levels in missing.items() if levels}


def test_every_diabetes130_payer_code_is_explained_or_said_to_be_undocumented(real_features):
    for code in _levels(real_features["payer"]):
        words = label("payer", code)
        assert words != code and (code not in words or words == f"Payer code {code} (not documented)")
    assert label("payer", "MC") == "Medicare" and label("payer", "BC") == "Blue Cross/Blue Shield"
    assert label("payer", "SP") == "Self-pay"


@pytest.mark.parametrize("field, level, words", [
    ("race", "AfricanAmerican", "African American"), ("age_band", "[40-50)", "40-49 years"),
    ("age_band", "[0-10)", "0-9 years"), ("age_band", "[90-100)", "90-99 years"),
    ("admitting_specialty", "Family/GeneralPractice", "Family or general practice"),
    ("admitting_specialty", "Surgery-General", "General surgery"),
    ("admitting_specialty", "InternalMedicine", "Internal medicine"),
    ("discharge_disposition", "snf_rehab", "Discharged to a skilled nursing or rehabilitation facility"),
    ("admission_source", "emergency_room", "Emergency room"), ("a1c_result", ">7", "Between 7% and 8%"),
    ("insulin", "up", "Dose increased"), ("diabetes_med", True, "On diabetes medication"),
    ("discharge_weekday", "Sat", "Saturday"), ("charlson_condition", "hiv_aids", "HIV/AIDS"),
    ("dx_1", "428", "Heart failure (428)"), ("dx_1_category", "V58", f"{icd.diagnosis_title('V58')} (V58)"),
    ("dx_2", "E11.65", "Type 2 diabetes mellitus with hyperglycemia (E11.65)"),
    ("payer", "CP", "Payer code CP (not documented)"),
])
def test_examples(field, level, words):
    assert label(field, level) == words


@pytest.mark.parametrize("missing", [None, float("nan"), np.nan, pd.NA, pd.NaT, "", "?", "None", MISSING_LEVEL])
def test_missing_reads_not_recorded(missing):
    assert label("race", missing) == "Not recorded"
    assert label("payer", missing) == "Not recorded"
    assert label("a1c_result", missing) == "Not measured"  # Diabetes 130 writes 'None' for not measured
    assert label("dx_1", missing) == "Not recorded"


@pytest.mark.parametrize("field, level, words", [
    ("admission_source", "transfer_from_court", "Transfer from court"),
    ("admitting_specialty", "PediatricsSurgery", "Pediatrics Surgery"),
    ("payer", "ZZ", "Payer code ZZ (not documented)"), ("admission_type", "9", "Admission type code 9 (not documented)"),
    ("admitting_specialty", "Internal Medicine Dept", "Internal Medicine Dept"),
    ("principal_group", OTHER_LEVEL, "Other (too rare to count separately)"),
])
def test_unknown_levels_read_as_words_or_say_they_are_codes(field, level, words):
    assert label(field, level) == words


def test_labels_are_words_not_codes():
    camel = re.compile(r"[a-z]{2}[A-Z][a-z]")  # InternalMedicine, not mg/dL
    for field, table in VOCABULARIES.items():
        for level, words in table.items():
            assert words and not words[0].islower() and "_" not in words and "[" not in words, (field, level, words)
            assert not camel.search(words) and words not in ("None", "nan"), (field, level, words)
            assert not (isinstance(level, float) and math.isnan(level))
