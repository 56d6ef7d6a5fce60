"""ICD normalization, chapters, clinical groups and Charlson conditions on hand-checked codes."""
import pytest

from core import icd


@pytest.mark.parametrize("raw, version, expected", [
    ("4280", 9, "428.0"), ("428", 9, "428"), ("250.83", 9, "250.83"), ("V4581", 9, "V45.81"),
    ("V27", 9, "V27"), ("E8790", 9, "E879.0"), ("8", 9, "008"), ("?", 9, None), ("", 9, None),
    (None, 9, None), ("I509", 10, "I50.9"), ("E119", 10, "E11.9"), ("i50.9", 10, "I50.9"),
])
def test_normalize_code(raw, version, expected):
    assert icd.normalize_code(raw, version) == expected


@pytest.mark.parametrize("code, version, chapter, group", [
    ("428.0", 9, "circulatory", "circulatory"), ("250.83", 9, "endocrine", "diabetes"),
    ("786.05", 9, "symptoms", "respiratory"), ("V27", 9, "supplementary", "other"),
    ("E879.0", 9, "external", "other"), ("820.8", 9, "injury", "injury"),
    ("E11.9", 10, "endocrine", "diabetes"), ("I50.9", 10, "circulatory", "circulatory"),
    ("C34.1", 10, "neoplasms", "neoplasms"),
])
def test_chapter_and_group(code, version, chapter, group):
    assert icd.chapter(code, version) == chapter
    assert icd.clinical_group(code, version) == group


def test_charlson_hierarchy_keeps_only_the_severe_form():
    found = icd.charlson_conditions(["250.4", "250.0", "428.0", "197.7", "162.9"], 9)
    assert found == {"diabetes_complicated", "congestive_heart_failure", "metastatic_tumor"}
    assert icd.charlson_index(found) == 2 + 1 + 6


def test_charlson_icd10():
    assert icd.charlson_conditions(["I50.9", "N18.4", "E11.9"], 10) == {
        "congestive_heart_failure", "renal", "diabetes_uncomplicated"}
