"""Label rules shared by every source.

30 days means 30 days: a readmission counts when the next unplanned admission starts no more than
30 calendar days after discharge (day 30 counts, day 31 does not). Patients who died or went to
hospice are not "not readmitted": they are ineligible and their label is unknown (null).
"""
from __future__ import annotations

import pandas as pd

from core.schema import INELIGIBLE_DISPOSITIONS

READMISSION_WINDOW_DAYS = 30


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
