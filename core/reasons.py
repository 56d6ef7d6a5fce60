"""Plain-language reasons: a grouped attribution plus the row's own values, as a sentence a nurse can
check against the chart, e.g. "3 inpatient stays in the past year (raises risk)".

Every number or category in a sentence is read from the encounter's feature row (never invented);
a missing value is said to be missing ("HbA1c not measured").
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional

from core import icd

_DISPOSITION = {
    "home": "Discharged home",
    "home_health": "Discharged home with home health care",
    "snf_rehab": "Discharged to a skilled nursing or rehabilitation facility",
    "transfer_hospital": "Transferred to another hospital",
    "against_advice": "Left against medical advice",
    "hospice": "Discharged to hospice",
    "expired": "Died in hospital",
    "other": "Discharged to another setting",
}
_ADMISSION_TYPE = {"emergency": "Emergency", "urgent": "Urgent", "elective": "Elective",
                   "newborn": "Newborn", "trauma": "Trauma", "other": "Other"}
_ADMISSION_SOURCE = {"physician_referral": "physician referral", "clinic_referral": "clinic referral",
                     "emergency_room": "the emergency room", "transfer_hospital": "another hospital",
                     "transfer_facility": "another care facility", "birth": "birth", "other": "another source"}
_A1C = {"Norm": "HbA1c normal", ">7": "HbA1c above 7%", ">8": "HbA1c above 8%"}
_GLUCOSE = {"Norm": "Serum glucose normal", ">200": "Serum glucose above 200 mg/dL",
            ">300": "Serum glucose above 300 mg/dL"}
_DRUG_STATUS = {"up": "increased", "down": "decreased", "steady": "unchanged"}
_WEEKDAY = {"Mon": "Monday", "Tue": "Tuesday", "Wed": "Wednesday", "Thu": "Thursday", "Fri": "Friday",
            "Sat": "Saturday", "Sun": "Sunday"}
_ORDINAL = {1: "first", 2: "second", 3: "third"}


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(isinstance(value, float) and math.isnan(value)) or (value != value)  # NaN / pd.NA
    except TypeError:  # pd.NA comparisons
        return True


def _num(value: Any) -> Optional[float]:
    if _missing(value):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _count(value: Any, singular: str, plural: Optional[str] = None) -> Optional[str]:
    number = _num(value)
    if number is None:
        return None
    shown = f"{number:g}"
    return f"{shown} {singular if number == 1 else (plural or singular + 's')}"


def _text(value: Any) -> Optional[str]:
    return None if _missing(value) else str(value)


def describe(group: str, row: Mapping[str, Any]) -> str:
    """The values of one field group in plain words (no direction)."""
    get = row.get
    if group == "age":
        band = _text(get("age_band"))
        if band and band.startswith("[") and "-" in band:
            low, high = band.strip("[)").split("-")
            return f"Age {low}-{high}"
        age = _num(get("age_years_est"))
        return f"Age {age:g}" if age is not None else "Age not recorded"
    if group == "sex":
        sex = _text(get("sex"))
        return f"Sex {sex.lower()}" if sex else "Sex not recorded"
    if group == "race":
        race = _text(get("race"))
        return f"Race recorded as {race}" if race else "Race not recorded"
    if group == "payer":
        payer = _text(get("payer"))
        return f"Payer {payer}" if payer else "Payer not recorded"
    if group == "prior_visits":
        parts = [_count(get("prior_inpatient_visits"), "inpatient stay"),
                 _count(get("prior_emergency_visits"), "emergency visit"),
                 _count(get("prior_outpatient_visits"), "outpatient visit")]
        known = [p for p in parts if p]
        if not known:
            return "Visits in the past year not recorded"
        text = known[0] if len(known) == 1 else ", ".join(known[:-1]) + " and " + known[-1]
        return f"{text} in the past year"
    if group == "earlier_stays":
        seq = _num(get("encounter_seq"))
        if seq is None or seq <= 1:
            return "No earlier hospital stay on record"
        parts = [f"{_count(seq - 1, 'earlier hospital stay')} on record"]
        readmits = _num(get("prior_readmissions_30d"))
        if readmits:
            parts.append(f"{_count(readmits, 'followed', 'followed')} by a 30-day readmission")
        days = _num(get("days_since_last_discharge"))
        if days is not None:
            parts.append(f"{days:.0f} days since the previous discharge")
        return "; ".join(parts)
    if group == "admission":
        kind = _text(get("admission_type"))
        source = _text(get("admission_source"))
        head = f"{_ADMISSION_TYPE.get(kind, kind)} admission" if kind else "Admission type not recorded"
        return f"{head}, from {_ADMISSION_SOURCE.get(source, source)}" if source else \
            f"{head}, source not recorded"
    if group == "admitting_specialty":
        specialty = _text(get("admitting_specialty"))
        return f"Admitted by {specialty}" if specialty else "Admitting specialty not recorded"
    if group == "length_of_stay":
        return (f"Stayed {_count(get('length_of_stay_days'), 'day')}" if _num(get("length_of_stay_days")) is not None
                else "Length of stay not recorded")
    if group == "tests_procedures":
        labs = _count(get("num_lab_procedures"), "lab test")
        procedures = _count(get("num_procedures"), "procedure")
        known = [p for p in (labs, procedures) if p]
        return (" and ".join(known) + " during the stay") if known else "Lab tests and procedures not recorded"
    if group == "medications":
        meds = _count(get("num_medications"), "medication")
        return f"{meds} during the stay" if meds else "Number of medications not recorded"
    if group == "diabetes_medications":
        if _text(get("diabetes_med")) == "no":
            return "No diabetes medication"
        parts = []
        given = _num(get("diabetes_meds_given"))
        if given is not None:
            parts.append(f"{_count(given, 'diabetes medication')} given")
        changed = _num(get("diabetes_meds_changed"))
        if changed:
            parts.append(f"{changed:g} changed in dose")
        for drug in ("insulin", "metformin"):
            status = _text(get(drug))
            if status in _DRUG_STATUS:
                parts.append(f"{drug} {_DRUG_STATUS[status]}")
        if not parts:
            return ("On diabetes medication" if _text(get("diabetes_med")) == "yes"
                    else "Diabetes medication not recorded")
        return "Diabetes medications: " + ", ".join(parts)
    if group == "a1c":
        value = _text(get("a1c_result"))
        return _A1C.get(value, f"HbA1c {value}") if value else "HbA1c not measured"
    if group == "glucose":
        value = _text(get("glucose_result"))
        return _GLUCOSE.get(value, f"Serum glucose {value}") if value else "Serum glucose not measured"
    if group == "comorbidities":
        index = _num(get("charlson_index"))
        conditions = [name.replace("_", " ") for name in icd.CHARLSON_CONDITIONS
                      if (_num(get(f"cc_{name}")) or 0) > 0]
        head = f"Charlson comorbidity index {index:g}" if index is not None else "Charlson index not known"
        if conditions:
            head += f" ({', '.join(conditions)})"
        diagnoses = _count(get("number_diagnoses"), "diagnosis", "diagnoses")
        return f"{head}; {diagnoses} recorded" if diagnoses else head
    if group in ("dx_1", "dx_2", "dx_3"):
        position = int(group[-1])
        name = "Main diagnosis" if position == 1 else f"{_ORDINAL[position].capitalize()} diagnosis"
        code = _text(get(group))
        if not code:
            return f"{name} not recorded"
        area = _text(get("principal_group")) if position == 1 else _text(get(f"{group}_chapter"))
        return f"{name} {code} ({area})" if area else f"{name} {code}"
    if group == "discharge":
        value = _text(get("discharge_disposition"))
        return _DISPOSITION.get(value, f"Discharged to {value}") if value else "Discharge destination not recorded"
    if group == "discharge_day":
        day = _text(get("discharge_weekday"))
        return f"Discharged on a {_WEEKDAY.get(day, day)}" if day else "Discharge day not recorded"
    raise KeyError(f"no description for explanation group {group!r}")


def sentence(group: str, row: Mapping[str, Any], contribution: float) -> str:
    """'<values> (raises risk)' or '(lowers risk)', by the sign of the contribution."""
    direction = "raises risk" if contribution > 0 else "lowers risk"
    return f"{describe(group, row)} ({direction})"


def near_average(base_risk: float) -> str:
    """When no field moves the risk by a visible amount."""
    return f"Risk close to the average of {100 * base_risk:.0f}%: no single field changes it noticeably"
