"""Plain-language reasons: a grouped attribution plus the row's own values, as a sentence a nurse can
check against the chart, e.g. "3 inpatient stays in the year before this admission (reported on the
record; raises risk)".

Every number or category in a sentence is read from the encounter's feature row (never invented);
a missing value is said to be missing ("HbA1c not measured"). Coded values are worded by
`core.vocabulary`, diagnoses by `core.icd.describe_diagnosis`.

Two kinds of count must never be mistaken for one another, so each says where it comes from:
- counts the record itself reports (Diabetes 130's visits in the year before the admission, the number
  of diagnoses entered): "... (reported on the record)";
- stays present in the loaded data (the history features): "... in these records".
A patient can have 6 inpatient stays reported and no earlier stay in these records; worded this way
the two reasons do not contradict each other.

A reason that lowers risk where one would expect the opposite carries its context, each context a fact
checked on the Diabetes 130 data (tests/test_reasons_templates.py).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Optional

from core import icd, vocabulary
from core.vocabulary import is_missing as _missing

REPORTED = "reported on the record"
IN_THESE_RECORDS = "in these records"

# What a describer returns: the text, and a note on where its values come from (or None).
Described = tuple[str, Optional[str]]

_ORDINAL = {1: "Main", 2: "Second", 3: "Third"}
_ORDINAL_WORD = {2: "second", 3: "third"}


def _num(value: Any) -> Optional[float]:
    if _missing(value):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _count(value: Any, singular: str, plural: Optional[str] = None) -> Optional[str]:
    """'1 stay', '2 stays', '0 stays'; None when the value is missing."""
    number = _num(value)
    if number is None:
        return None
    return f"{number:g} {singular if number == 1 else (plural or singular + 's')}"


def _text(value: Any) -> Optional[str]:
    return None if _missing(value) else str(value)


def _lower_first(text: str) -> str:
    """'Dose increased' -> 'dose increased'; acronyms ('HIV/AIDS') keep their case."""
    return text if text[1:2].isupper() else text[:1].lower() + text[1:]


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _coded(field: str, intro: str, missing: str, value: Any) -> Described:
    """'<intro><words>'; an undocumented code already names its field ('Payer code CP (not
    documented)'), its '(not documented)' becoming the sentence's note."""
    if _missing(value):
        return missing, None
    words = vocabulary.label(field, value)
    note = f" ({vocabulary.NOT_DOCUMENTED})"
    return (words[:-len(note)], vocabulary.NOT_DOCUMENTED) if words.endswith(note) else (f"{intro}{words}", None)


# --- one describer per explanation group ---------------------------------------------------------------

def _age(row: Mapping[str, Any]) -> Described:
    band = row.get("age_band")
    if not _missing(band):
        return f"Age {vocabulary.label('age_band', band)}", None
    age = _num(row.get("age_years_est"))
    return (f"Age {age:.0f} years" if age is not None else "Age not recorded"), None


def _sex(row: Mapping[str, Any]) -> Described:
    return _coded("sex", "Sex: ", "Sex not recorded", row.get("sex"))


def _race(row: Mapping[str, Any]) -> Described:
    return _coded("race", "Race recorded as ", "Race not recorded", row.get("race"))


def _payer(row: Mapping[str, Any]) -> Described:
    return _coded("payer", "Payer: ", "Payer not recorded", row.get("payer"))


def _prior_visits(row: Mapping[str, Any]) -> Described:
    parts = [_count(row.get("prior_inpatient_visits"), "inpatient stay"),
             _count(row.get("prior_emergency_visits"), "emergency visit"),
             _count(row.get("prior_outpatient_visits"), "outpatient visit")]
    known = [p for p in parts if p]
    if not known:
        return "Visits in the year before this admission not recorded", None
    return f"{_join(known)} in the year before this admission", REPORTED


def _earlier_stays(row: Mapping[str, Any]) -> Described:
    seq = _num(row.get("encounter_seq"))
    earlier = 0.0 if seq is None else max(seq - 1, 0.0)
    if earlier == 0:
        return f"No earlier stay {IN_THESE_RECORDS}", None
    parts = [f"{_count(earlier, 'earlier stay')} {IN_THESE_RECORDS}"]
    readmits = _num(row.get("prior_readmissions_30d"))
    if readmits:
        parts.append(f"{readmits:g} of them followed by a readmission within 30 days" if earlier > 1
                     else "followed by a readmission within 30 days")
    days = _num(row.get("days_since_last_discharge"))
    if days is not None:
        parts.append("previous discharge less than a day before this admission" if days < 1 else
                     f"previous discharge {_count(round(days), 'day')} before this admission")
    return "; ".join(parts), None


def _admission(row: Mapping[str, Any]) -> Described:
    kind, source = row.get("admission_type"), row.get("admission_source")
    if _missing(kind) and _missing(source):
        return "Admission type and source not recorded", None
    return (f"Admission type: {vocabulary.label('admission_type', kind)}; "
            f"admitted from: {vocabulary.label('admission_source', source)}"), None


def _specialty(row: Mapping[str, Any]) -> Described:
    return _coded("admitting_specialty", "Admitting specialty: ", "Admitting specialty not recorded",
                  row.get("admitting_specialty"))


def _length_of_stay(row: Mapping[str, Any]) -> Described:
    days = _count(row.get("length_of_stay_days"), "day")
    return (f"Stayed {days}" if days else "Length of stay not recorded"), None


def _tests_procedures(row: Mapping[str, Any]) -> Described:
    known = [p for p in (_count(row.get("num_lab_procedures"), "lab test"),
                         _count(row.get("num_procedures"), "procedure")) if p]
    return (f"{_join(known)} during the stay" if known else "Lab tests and procedures not recorded"), None


def _medications(row: Mapping[str, Any]) -> Described:
    meds = _count(row.get("num_medications"), "medication")
    return (f"{meds} during the stay" if meds else "Number of medications not recorded"), None


def _diabetes_medications(row: Mapping[str, Any]) -> Described:
    given = _num(row.get("diabetes_meds_given"))
    on_medication = _text(row.get("diabetes_med"))
    if given == 0 or (given is None and on_medication == "no"):
        return "No diabetes medication", None
    parts = []
    if given is not None:
        parts.append(f"{given:g} given")
    changed = _num(row.get("diabetes_meds_changed"))
    if changed:
        parts.append(f"{changed:g} changed in dose")
    for drug in ("insulin", "metformin"):
        status = _text(row.get(drug))
        if status in ("steady", "up", "down"):
            parts.append(f"{drug} {_lower_first(vocabulary.label(drug, status))}")
    if not parts:
        return ("On diabetes medication" if on_medication == "yes" else "Diabetes medication not recorded"), None
    return "Diabetes medications: " + ", ".join(parts), None


def _a1c(row: Mapping[str, Any]) -> Described:
    value = row.get("a1c_result")
    return ("HbA1c not measured" if _missing(value) else
            f"HbA1c {_lower_first(vocabulary.label('a1c_result', value))}"), None


def _glucose(row: Mapping[str, Any]) -> Described:
    value = row.get("glucose_result")
    return ("Serum glucose not measured" if _missing(value) else
            f"Serum glucose {_lower_first(vocabulary.label('glucose_result', value))}"), None


def _comorbidities(row: Mapping[str, Any]) -> Described:
    index = _num(row.get("charlson_index"))
    conditions = [_lower_first(vocabulary.label("charlson_condition", name)) for name in icd.CHARLSON_CONDITIONS
                  if (_num(row.get(f"cc_{name}")) or 0) > 0]
    if index is None:
        head = "Charlson comorbidity index not known"
    else:  # computed from the (at most three) codes in the data, not from every diagnosis entered
        listed = f" ({', '.join(conditions)})" if conditions else ""
        head = f"Charlson comorbidity index {index:g}{listed} from the diagnosis codes {IN_THESE_RECORDS}"
    diagnoses = _count(row.get("number_diagnoses"), "diagnosis", "diagnoses")
    return (f"{head}; {diagnoses} entered", REPORTED) if diagnoses else (head, None)


def _diagnosis(position: int) -> Callable[[Mapping[str, Any]], Described]:
    field = f"dx_{position}"

    def describe_position(row: Mapping[str, Any]) -> Described:
        code = _text(row.get(field))
        if not code:
            return (f"No {_ORDINAL_WORD[position]} diagnosis code {IN_THESE_RECORDS}" if position > 1
                    else "Main diagnosis not recorded"), None
        version = icd.infer_version(code, _text(row.get(f"{field}_chapter")))
        return f"{_ORDINAL[position]} diagnosis: {icd.describe_diagnosis(code, version)}", None

    return describe_position


def _discharge(row: Mapping[str, Any]) -> Described:
    value = row.get("discharge_disposition")
    return ("Discharge destination not recorded" if _missing(value)
            else vocabulary.label("discharge_disposition", value)), None


def _discharge_day(row: Mapping[str, Any]) -> Described:
    day = row.get("discharge_weekday")
    return ("Discharge day not recorded" if _missing(day)
            else f"Discharged on a {vocabulary.label('discharge_weekday', day)}"), None


_DESCRIBERS: dict[str, Callable[[Mapping[str, Any]], Described]] = {
    "age": _age, "sex": _sex, "race": _race, "payer": _payer, "prior_visits": _prior_visits,
    "earlier_stays": _earlier_stays, "admission": _admission, "admitting_specialty": _specialty,
    "length_of_stay": _length_of_stay, "tests_procedures": _tests_procedures, "medications": _medications,
    "diabetes_medications": _diabetes_medications, "a1c": _a1c, "glucose": _glucose,
    "comorbidities": _comorbidities, "dx_1": _diagnosis(1), "dx_2": _diagnosis(2), "dx_3": _diagnosis(3),
    "discharge": _discharge, "discharge_day": _discharge_day,
}
GROUPS = tuple(_DESCRIBERS)  # the explanation groups with a sentence (models.explain.FIELD_GROUPS)


# --- context for a direction one would not expect ----------------------------------------------------
# (group, does the row hold the value one expects to raise risk?, what the data says). Each claim is
# checked on the Diabetes 130 file by tests/test_reasons_templates.py::test_context_claims_hold.

def _at_least(field: str, threshold: float) -> Callable[[Mapping[str, Any]], bool]:
    return lambda row: (_num(row.get(field)) or 0) >= threshold


def _one_of(field: str, levels: tuple[str, ...]) -> Callable[[Mapping[str, Any]], bool]:
    return lambda row: _text(row.get(field)) in levels


HIGH_A1C = (">7", ">8")
HIGH_GLUCOSE = (">200", ">300")
LONG_STAY_DAYS = 7
HIGH_CHARLSON = 2

_MORE_READMISSIONS = "lowers risk here, although in this data {} went with more readmissions on average"
_LOWERING_CONTEXT: tuple[tuple[str, Callable[[Mapping[str, Any]], bool], str], ...] = (
    ("a1c", _one_of("a1c_result", HIGH_A1C),
     "lowers risk: in this data a high HbA1c was often followed by a change in diabetes medication, and "
     "patients tested for HbA1c were readmitted less often than those not tested"),
    ("glucose", _one_of("glucose_result", HIGH_GLUCOSE), _MORE_READMISSIONS.format("a high serum glucose")),
    ("prior_visits", lambda row: _at_least("prior_inpatient_visits", 1)(row) or
     _at_least("prior_emergency_visits", 1)(row),
     _MORE_READMISSIONS.format("inpatient or emergency visits in the year before")),
    ("earlier_stays", _at_least("encounter_seq", 2), _MORE_READMISSIONS.format("earlier stays")),
    ("comorbidities", _at_least("charlson_index", HIGH_CHARLSON),
     _MORE_READMISSIONS.format("a higher Charlson index")),
    ("length_of_stay", _at_least("length_of_stay_days", LONG_STAY_DAYS), _MORE_READMISSIONS.format("a longer stay")),
)


def _direction(group: str, row: Mapping[str, Any], contribution: float) -> str:
    if contribution is None or not contribution or math.isnan(contribution):
        return "no effect on risk"
    if contribution > 0:
        return "raises risk"
    for context_group, expected_to_raise, context in _LOWERING_CONTEXT:
        if context_group == group and expected_to_raise(row):
            return context
    return "lowers risk"


def _described(group: str, row: Mapping[str, Any]) -> Described:
    try:
        describer = _DESCRIBERS[group]
    except KeyError:
        raise KeyError(f"no description for explanation group {group!r}") from None
    return describer(row)


def describe(group: str, row: Mapping[str, Any]) -> str:
    """The values of one field group in plain words (no direction)."""
    text, source = _described(group, row)
    return f"{text} ({source})" if source else text


def sentence(group: str, row: Mapping[str, Any], contribution: float) -> str:
    """'<values> (raises risk)' or '(lowers risk)' by the sign of the contribution; where the numbers
    come from and, for an unexpected direction, its context, in the same parenthesis."""
    text, source = _described(group, row)
    return f"{text} ({'; '.join(p for p in (source, _direction(group, row, contribution)) if p)})"


def near_average(base_risk: float) -> str:
    """When no field moves the risk by a visible amount."""
    return f"Risk close to the average of {100 * base_risk:.0f}%: no single field changes it noticeably"
