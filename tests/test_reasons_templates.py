"""Every reason template over real Diabetes 130 rows and synthetic encounters, with attributions of both
signs (and zero) for every group: slots filled, coded levels in words, plurals right, and no two reasons
of one row contradicting each other.

The checks are plain functions that return the problems they find, so
`test_the_checks_catch_broken_templates` shows each of them failing on a broken template.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import pandas as pd
import pytest

from core import reasons, synthetic, vocabulary
from core.features import build_features
from core.sources import diabetes130

SIGNS = (0.02, -0.02, 0.0)
DIRECTIONS = {1: ("raises risk",), -1: ("lowers risk",), 0: ("no effect on risk",)}
SAMPLE_ROWS = 2000

UNFILLED = re.compile(r"[{}]|\b(?:nan|NaN|None|NaT)\b|<NA>")
_NOUNS = r"(?:stay|visit|day|diagnosis|medication|procedure|test|readmission)"
ONE_WITH_PLURAL = re.compile(r"(?<![\d.])1 (?:\w+ )?(?:stays|visits|days|diagnoses|medications|procedures|tests|"
                             r"readmissions)\b")
MANY_WITH_SINGULAR = re.compile(rf"(?<![\d.])(?:0|[2-9]|[1-9]\d+|\d+\.\d+) (?:\w+ )?{_NOUNS}\b")
# A count and what it counts; the same thing must carry one number in a row.
COUNTED = re.compile(r"\b(\d+(?:\.\d+)?|No) (inpatient stay|emergency visit|outpatient visit|earlier stay)s?\b")
REPORTED_NOUNS = ("inpatient stay", "emergency visit", "outpatient visit", "diagnoses entered", "diagnosis entered")
IN_DATA_NOUNS = ("earlier stay", "diagnosis code")
EXPLICIT_CODE = re.compile(r"\b[A-Z][a-z]*(?: [a-z]+)* code \S+ \(not documented")
CAMEL = re.compile(r"[a-z][A-Z]")
# Fields whose levels are codes a nurse should never see raw.
LEVEL_FIELDS = ("sex", "race", "age_band", "admission_type", "admission_source", "discharge_disposition", "payer",
                "admitting_specialty", "a1c_result", "glucose_result", "insulin", "metformin", "diabetes_med",
                "principal_group", "discharge_weekday", "dx_1_chapter", "dx_2_chapter", "dx_3_chapter")


# --- the checks ---------------------------------------------------------------------------------------

def _code_like(level: str) -> bool:
    """Levels that would betray a raw code if printed (plain lowercase words such as 'home' are not)."""
    return bool("_" in level or level[:1] in "[>" or CAMEL.search(level) or re.fullmatch(r"[A-Z]{2,}", level)
                or level in vocabulary.WEEKDAY or level == "Norm")


def raw_levels(row: Mapping[str, Any]) -> set[str]:
    levels = set()
    for field in LEVEL_FIELDS:
        value = row.get(field)
        if not vocabulary.is_missing(value) and _code_like(str(value)) and vocabulary.label(field, value) != str(value):
            levels.add(str(value))
    return levels


def text_problems(text: str, row: Mapping[str, Any]) -> list[str]:
    """Problems of a row's sentences taken together: slots, plurals, raw levels, untitled diagnoses."""
    problems = [f"unfilled slot {m.group()!r}: {text}" for m in UNFILLED.finditer(text)]
    problems += [f"plural after 1 {m.group()!r}" for m in ONE_WITH_PLURAL.finditer(text)]
    problems += [f"singular after a number {m.group()!r}" for m in MANY_WITH_SINGULAR.finditer(text)]
    levels = raw_levels(row)
    if levels:
        shown = re.compile(r"(?<![\w\[>])(?:" + "|".join(map(re.escape, levels)) + r")(?![\w\]])")
        problems += [f"raw level {m.group()!r}: {text}" for m in shown.finditer(EXPLICIT_CODE.sub("", text))]
    if "Unlisted code" in text:
        problems.append(f"diagnosis without a title: {text}")
    return problems


def direction_problems(said: list[tuple[str, str]], sign: float) -> list[str]:
    expected = DIRECTIONS[(sign > 0) - (sign < 0)]
    problems = []
    for group, s in said:
        found = [d for d in ("raises risk", "lowers risk", "no effect on risk") if d in s]
        if len(found) != 1 or found[0] not in expected:
            problems.append(f"{group}: direction {found} for sign {sign}: {s}")
    return problems


def contradictions(said: list[tuple[str, str]]) -> list[str]:
    """Two reasons of one row that cannot both be true as worded: a count without its source (reported on
    the record, or present in these records), or one thing counted twice with different numbers."""
    problems = []
    counts: dict[str, set[float]] = {}
    for group, s in said:
        if any(n in s for n in REPORTED_NOUNS) and reasons.REPORTED not in s:
            problems.append(f"{group}: record-reported count without its source: {s}")
        if any(n in s for n in IN_DATA_NOUNS) and reasons.IN_THESE_RECORDS not in s:
            problems.append(f"{group}: count of stays in the data without its source: {s}")
        if s.startswith("No diabetes medication") and ("given" in s or "dose" in s):
            problems.append(f"{group}: no medication, yet doses: {s}")
        for number, noun in COUNTED.findall(s):
            counts.setdefault(noun, set()).add(0.0 if number == "No" else float(number))
    problems += [f"{noun} counted as {sorted(numbers)} in one row" for noun, numbers in counts.items()
                 if len(numbers) > 1]
    return problems


def row_problems(row: Mapping[str, Any]) -> list[str]:
    """Every group's sentence for every sign: each check, and each sentence starts with its description."""
    described = {g: reasons.describe(g, row).removesuffix(")") for g in reasons.GROUPS}
    out, texts = [], []
    for sign in SIGNS:
        said = [(g, reasons.sentence(g, row, sign)) for g in reasons.GROUPS]
        out += direction_problems(said, sign) + contradictions(said)
        out += [f"{g}: sentence does not start with its description: {s}" for g, s in said
                if not s.startswith(described[g])]
        texts += [s for _, s in said]
    return out + text_problems(" | ".join(texts), row)


def all_problems(rows: list[Mapping[str, Any]]) -> list[str]:
    return [p for row in rows for p in row_problems(row)]


# --- the rows -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_raw(diabetes_csv) -> pd.DataFrame:
    return pd.read_csv(diabetes_csv, dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def real_features(real_raw) -> pd.DataFrame:
    """The whole dev file (complete patient histories), for the sample and for the data checks."""
    return build_features(diabetes130.to_canonical(real_raw))


def covering_sample(features: pd.DataFrame, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """n random rows plus one row for every level of every coded field and the extremes of the counts."""
    picked = set(features.sample(min(n, len(features)), random_state=seed).index)
    for field in LEVEL_FIELDS:
        picked |= set(features.groupby(features[field].fillna("<missing>"), sort=False).head(1).index)
    for field in ("prior_inpatient_visits", "encounter_seq", "prior_readmissions_30d", "charlson_index",
                  "length_of_stay_days", "diabetes_meds_changed"):
        picked |= {features[field].idxmax(), features[field].idxmin()}
    return features.loc[sorted(picked)].to_dict("records")


def test_every_template_over_real_diabetes130_rows(real_features):
    rows = covering_sample(real_features, SAMPLE_ROWS)
    problems = all_problems(rows)
    assert len(rows) > SAMPLE_ROWS and not problems, "\n".join(problems[:15])


def test_every_template_over_synthetic_encounters():
    features = build_features(synthetic.generate_chunk(0, SAMPLE_ROWS, seed=5))
    rows = covering_sample(features, SAMPLE_ROWS)
    assert features["days_since_last_discharge"].notna().any()  # the history wording is exercised
    problems = all_problems(rows)
    assert not problems, "\n".join(problems[:15])


def test_record_reported_and_present_stays_are_told_apart():
    row = {"prior_inpatient_visits": 6.0, "prior_emergency_visits": 1.0, "prior_outpatient_visits": 0.0,
           "encounter_seq": 1.0}
    assert reasons.sentence("prior_visits", row, 0.1) == ("6 inpatient stays, 1 emergency visit and 0 outpatient "
                                                          "visits in the year before this admission (reported on "
                                                          "the record; raises risk)")
    assert reasons.sentence("earlier_stays", row, -0.1) == "No earlier stay in these records (lowers risk)"
    later = dict(row, encounter_seq=2.0, prior_readmissions_30d=1.0, days_since_last_discharge=12.4)
    assert reasons.describe("earlier_stays", later) == ("1 earlier stay in these records; followed by a "
                                                        "readmission within 30 days; previous discharge 12 days "
                                                        "before this admission")
    assert reasons.describe("earlier_stays", dict(later, encounter_seq=3.0)).startswith("2 earlier stays in these")


def test_wording_of_codes_and_diagnoses():
    row = {"dx_1": "428", "dx_1_chapter": "circulatory", "dx_2": "E11.65", "dx_2_chapter": "endocrine",
           "payer": "CP", "race": "AfricanAmerican", "age_band": "[40-50)", "a1c_result": ">8",
           "admitting_specialty": "Family/GeneralPractice", "discharge_disposition": "home_health"}
    assert reasons.sentence("dx_1", row, 0.1) == "Main diagnosis: Heart failure (428) (raises risk)"
    assert reasons.describe("dx_2", row) == "Second diagnosis: Type 2 diabetes mellitus with hyperglycemia (E11.65)"
    assert reasons.describe("dx_3", row) == "No third diagnosis code in these records"
    assert reasons.sentence("payer", row, 0.1) == "Payer code CP (not documented; raises risk)"
    assert reasons.describe("payer", {"payer": "MC"}) == "Payer: Medicare"
    assert reasons.describe("race", row) == "Race recorded as African American"
    assert reasons.describe("age", row) == "Age 40-49 years"
    assert reasons.describe("admitting_specialty", row) == "Admitting specialty: Family or general practice"
    assert reasons.describe("discharge", row) == "Discharged home with home health care"
    assert reasons.sentence("a1c", row, -0.1).startswith("HbA1c above 8% (lowers risk: in this data a high HbA1c")
    assert reasons.sentence("a1c", row, 0.1) == "HbA1c above 8% (raises risk)"
    assert reasons.sentence("a1c", {"a1c_result": "Norm"}, -0.1) == "HbA1c normal (below 7%) (lowers risk)"


def test_context_claims_hold_in_the_real_data(real_raw, real_features):
    """Each context added to an unexpected 'lowers risk' states a fact of the Diabetes 130 data."""
    known = real_features[real_features["eligible"] & real_features["readmitted_30d"].notna()]
    readmitted = known["readmitted_30d"].astype(bool)
    # The file's own flag: any change of diabetes medication, in dose or in drug.
    changed = known["encounter_id"].map(real_raw.set_index("encounter_id")["change"]).eq("Ch")
    records = known.to_dict("records")
    for group, expected_to_raise, context in reasons._LOWERING_CONTEXT:
        flagged = pd.Series([expected_to_raise(r) for r in records], index=known.index)
        assert 100 < flagged.sum() < len(known), group
        if group == "a1c":  # "often followed by a change in diabetes medication", "tested ... less often"
            assert changed[flagged].mean() >= 0.5 and "often followed by a change" in context
            tested = known["a1c_result"].notna()
            assert readmitted[tested].mean() < readmitted[~tested].mean()
        else:  # "... went with more readmissions on average"
            assert "went with more readmissions on average" in context
            assert readmitted[flagged].mean() > readmitted[~flagged].mean(), group


def test_every_group_has_words_even_for_an_empty_row():
    for group in reasons.GROUPS:
        for sign in SIGNS:
            assert not UNFILLED.search(reasons.sentence(group, {}, sign))
    with pytest.raises(KeyError):
        reasons.describe("no_such_group", {})


@pytest.mark.parametrize("broken, expected", [
    ("earlier_stays_as_inpatient", "record-reported count without its source"),
    ("plural_always", "plural after 1"),
    ("raw_race", "raw level 'AfricanAmerican'"),
    ("unfilled_slot", "unfilled slot"),
])
def test_the_checks_catch_broken_templates(monkeypatch, broken, expected):
    row = {"prior_inpatient_visits": 6.0, "prior_emergency_visits": 1.0, "prior_outpatient_visits": 0.0,
           "encounter_seq": 2.0, "race": "AfricanAmerican", "num_procedures": 1.0, "dx_1": "428"}
    assert not row_problems(row)
    if broken == "earlier_stays_as_inpatient":
        monkeypatch.setitem(reasons._DESCRIBERS, "earlier_stays",
                            lambda r: (f"{r['encounter_seq'] - 1:g} inpatient stays", None))
    elif broken == "plural_always":
        monkeypatch.setattr(reasons, "_count", lambda value, singular, plural=None:
                            None if value is None else f"{value:g} {plural or singular + 's'}")
    elif broken == "raw_race":
        monkeypatch.setitem(reasons._DESCRIBERS, "race", lambda r: (f"Race {r.get('race')}", None))
    else:
        monkeypatch.setitem(reasons._DESCRIBERS, "tests_procedures", lambda r: ("{count} procedures", None))
    problems = row_problems(row)
    assert any(expected in p for p in problems), problems
