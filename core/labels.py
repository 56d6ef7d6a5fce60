"""Label rules shared by every source: the one home of the 30-day readmission label.

30 days means 30 days: a readmission counts when the patient's first admission after discharge
starts no more than 30 calendar days after it (day 30 counts, day 31 does not). Patients who died
or went to hospice are not "not readmitted": they are ineligible and their label is unknown (null).
`labels_from_dates` writes the whole rule once; every source with dates calls it.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

from core.features import sort_for_history
from core.schema import INELIGIBLE_DISPOSITIONS

READMISSION_WINDOW_DAYS = 30
PLANNED_ADMISSION_TYPES = ("elective",)
DEATH_COLUMNS = ("death_date", "death_time")   # used when a source has one (first found wins)
_EPOCH = pd.Timestamp("1970-01-01")
_DAY_OFFSET = 1 << 17     # pandas timestamps lie within +-106,752 days of the epoch
_DAY_SPAN = 1 << 18       # day numbers + offset fit below this; the last value means "no date"


def apply_eligibility(encounters: pd.DataFrame) -> pd.DataFrame:
    """Set `eligible` / `ineligible_reason` from the disposition and blank the label of ineligible rows."""
    out = encounters.copy()
    reason = out["discharge_disposition"].map(INELIGIBLE_DISPOSITIONS)
    out["ineligible_reason"] = reason.astype("object").where(reason.notna(), None)
    out["eligible"] = reason.isna()
    out["readmitted_30d"] = out["readmitted_30d"].astype("object").where(out["eligible"], None)
    return out


def is_readmission(days_from_discharge_to_next_admit: float | None) -> bool | None:
    """Whether a next admission this many calendar days after discharge is a 30-day readmission."""
    if days_from_discharge_to_next_admit is None or pd.isna(days_from_discharge_to_next_admit):
        return None
    return 0 <= days_from_discharge_to_next_admit <= READMISSION_WINDOW_DAYS


def calendar_days(values: pd.Series) -> np.ndarray:
    """Calendar day numbers (days since 1970-01-01) of timestamps or dates; NaN when unknown."""
    stamps = pd.to_datetime(values, errors="coerce")
    return (stamps.dt.normalize() - _EPOCH).dt.days.to_numpy(dtype=np.float64)


def first_admission_after(patient: np.ndarray, admit_day: np.ndarray, discharge_day: np.ndarray) -> np.ndarray:
    """For each row of a patient-sorted frame (by admit time), the position of the patient's first
    later admission starting on or after this discharge's date; -1 when there is none.

    Vectorised: one binary search over (patient, admit day) keys, which the sort makes ascending.
    An admission that started before this discharge (an overlapping stay) is skipped; one with no
    admit date is never a next admission; a stay with no discharge date has none.
    """
    n = len(patient)
    admit_key = np.where(np.isnan(admit_day), _DAY_SPAN - 1, admit_day + _DAY_OFFSET).astype(np.int64)
    target_day = np.where(np.isnan(discharge_day), _DAY_SPAN - 1, discharge_day + _DAY_OFFSET).astype(np.int64)
    base = patient.astype(np.int64) * _DAY_SPAN
    found = np.searchsorted(base + admit_key, base + target_day, side="left")
    following = np.maximum(found, np.arange(n) + 1)   # same-day stays sorted before this one do not count
    safe = np.minimum(following, max(n - 1, 0))
    valid = ((following < n) & (patient[safe] == patient) & ~np.isnan(admit_day[safe])
             & ~np.isnan(discharge_day))
    return np.where(valid, following, -1)


def labels_from_dates(encounters: pd.DataFrame, observed_until: Optional[pd.Timestamp] = None) -> pd.DataFrame:
    """`readmitted_30d`, `eligible`, `ineligible_reason` of encounters from their dates, by the rule:

    - Needs every encounter of each patient (any row order): `patient_id`, `encounter_id`,
      `admit_time`, `discharge_time`, `admission_type`, `discharge_disposition`, optionally
      `readmitted_30d` and a date of death (`death_date` or `death_time`). A patient's admissions
      are ordered as `core.features.sort_for_history` orders them.
    - Days are calendar days (dates, not hours). The stay's *next admission* is the patient's first
      later admission starting 0 or more days after this discharge (an overlapping stay that began
      before it is neither a readmission nor hides one).
    - CMS convention: only that next admission counts. Started 0..30 days after discharge (day 30
      counts, day 31 does not): true, unless it is planned (elective): false, later admissions in
      the window notwithstanding; of unknown type: null. Started after day 30: false.
    - No next admission: false only when the data covers the whole window (discharge + 30 days on
      or before `observed_until`, default the latest admit or discharge date of `encounters`);
      otherwise null (unmatured: a recent discharge is not a "no"). No discharge date: null.
    - A label the source supplies (`readmitted_30d` not null) is kept.
    - Ineligible, label null: disposition expired (`died`) or hospice (`hospice`); and a death
      0..30 days after discharge without a readmission (`died`; derived labels only): the window
      was cut short, so "not readmitted" would be false certainty.

    Returns a copy of `encounters` (same index and row order) with the three columns set.
    """
    columns = ["patient_id", "encounter_id", "admit_time", "discharge_time", "admission_type"]
    death = next((c for c in DEATH_COLUMNS if c in encounters.columns), None)
    ordered = sort_for_history(encounters[columns + ([death] if death else [])].reset_index(drop=True))
    admit_day = calendar_days(ordered["admit_time"])
    discharge_day = calendar_days(ordered["discharge_time"])
    following = first_admission_after(pd.factorize(ordered["patient_id"], use_na_sentinel=False)[0],
                                      admit_day, discharge_day)
    has_next = following >= 0
    at = np.where(has_next, following, 0)
    gap = np.where(has_next, admit_day[at] - discharge_day, np.nan)
    next_type = ordered["admission_type"].take(at) if len(ordered) else ordered["admission_type"]
    in_window = has_next & (gap <= READMISSION_WINDOW_DAYS)
    unknown_type = next_type.isna().to_numpy()
    readmitted = in_window & ~unknown_type & ~next_type.isin(PLANNED_ADMISSION_TYPES).to_numpy()
    matured = _observed_day(encounters, observed_until) - discharge_day >= READMISSION_WINDOW_DAYS
    known = ~np.isnan(discharge_day) & ~(in_window & unknown_type) & (has_next | matured)
    died_after = np.zeros(len(ordered), dtype=bool)
    if death:
        days_to_death = calendar_days(ordered[death]) - discharge_day
        died_after = (days_to_death >= 0) & (days_to_death <= READMISSION_WINDOW_DAYS) & ~readmitted

    position = ordered.index.to_numpy()
    derived = np.empty(len(ordered), dtype=object)
    derived[position] = np.where(known, readmitted, None)
    died = np.zeros(len(ordered), dtype=bool)
    died[position] = died_after
    return _with_labels(encounters, derived, died)


def _observed_day(encounters: pd.DataFrame, observed_until: Optional[pd.Timestamp]) -> float:
    """Calendar day number up to which the data is observed (NaN when unknown)."""
    if observed_until is None:
        observed_until = pd.concat([pd.to_datetime(encounters["admit_time"]),
                                    pd.to_datetime(encounters["discharge_time"])]).max()
    return calendar_days(pd.Series([observed_until]))[0]


def _with_labels(encounters: pd.DataFrame, derived: np.ndarray, died_after: np.ndarray) -> pd.DataFrame:
    """Keep supplied labels, fill the others, then set eligibility (disposition first, then death)."""
    out = encounters.copy()
    supplied = (out["readmitted_30d"].astype(object) if "readmitted_30d" in out.columns
                else pd.Series(None, index=out.index, dtype=object))
    has_label = supplied.notna().to_numpy()
    label = np.where(has_label, supplied.to_numpy(dtype=object), derived)
    reason = out["discharge_disposition"].map(INELIGIBLE_DISPOSITIONS).to_numpy(dtype=object)
    reason = np.where(pd.isna(reason) & died_after & ~has_label, "died", reason)
    eligible = pd.isna(reason)
    out["readmitted_30d"] = pd.Series(np.where(eligible, label, None), index=out.index, dtype=object)
    out["eligible"] = eligible
    out["ineligible_reason"] = pd.Series(np.where(eligible, None, reason), index=out.index, dtype=object)
    return out
