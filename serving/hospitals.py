"""The Hospitals page: CMS HRRP excess readmission ratios against state and national medians."""
from __future__ import annotations

import math
from typing import Optional

import pandas as pd

from core.warehouse import Warehouse

TOO_FEW = "Too few to report"
NOT_AVAILABLE = "Not available"
# Why a value is missing, in words (CMS footnotes: core.hospitals.FOOTNOTES). Footnote 1 is CMS's own
# "too few cases to report"; `too_few_to_report` is the ETL's flag for a count CMS printed as 'Too Few to Report'.
NOT_THIS_PERIOD = "Unavailable this period"         # footnote 5
NO_CASES = "No eligible cases"                      # footnote 7
NO_RESULTS = "No results that year"                 # the hospital has no row for the measure that year
NO_EARLIER_YEAR = "No earlier year"                 # the hospital has results for one fiscal year only
NONE_IN_STATE = "None in the state"                 # no hospital of the state has a ratio: no median
NONE_NATIONALLY = "None nationally"
WITHHELD = "Withheld by CMS"                        # discharges blank while the ratio is published
_FOOTNOTE_REASONS = (("5", NOT_THIS_PERIOD), ("7", NO_CASES), ("1", TOO_FEW))   # first match wins
# Names short enough for a phone's chart axis; the full name (core.hospitals.MEASURE_LABELS) goes in the hover.
MEASURE_SHORT = {
    "READM-30-AMI-HRRP": "Heart attack",
    "READM-30-HF-HRRP": "Heart failure",
    "READM-30-PN-HRRP": "Pneumonia",
    "READM-30-COPD-HRRP": "COPD",
    "READM-30-CABG-HRRP": "CABG surgery",
    "READM-30-HIP-KNEE-HRRP": "Hip/knee replacement",
}


def reason_column(column: str) -> str:
    """The column of `hospital_benchmark` that says why `column` is missing ('ratio FY2024 reason')."""
    return f"{column} reason"


def hospital_options(wh: Warehouse) -> pd.DataFrame:
    return wh.query("SELECT facility_id, any_value(facility_name) AS facility_name, any_value(state) AS state "
                    "FROM hospitals GROUP BY facility_id ORDER BY facility_name, facility_id")


def hospital_benchmark(wh: Warehouse, facility_id: str) -> Optional[pd.DataFrame]:
    """Per measure (`measure_label`; `measure_short` for a chart axis): this hospital's excess readmission
    ratio (latest and previous fiscal year), the change, its state's and the nation's median, the
    discharges, and whether it is above 1.0. Missing values stay missing; beside each value column,
    `reason_column(column)` says why it is missing in words (None where the value is present)."""
    rows = wh.query(
        """WITH h AS (SELECT * FROM hospitals WHERE facility_id = ?),
                st AS (SELECT measure, fiscal_year, median(excess_readmission_ratio) AS state_median
                       FROM hospitals WHERE state = (SELECT any_value(state) FROM h) GROUP BY ALL),
                nat AS (SELECT measure, fiscal_year, median(excess_readmission_ratio) AS national_median
                        FROM hospitals GROUP BY ALL)
           SELECT h.measure, h.measure_label, h.fiscal_year, h.excess_readmission_ratio AS err, h.discharges,
                  h.readmissions, h.too_few_to_report, h.footnote, st.state_median, nat.national_median
           FROM h LEFT JOIN st USING (measure, fiscal_year) LEFT JOIN nat USING (measure, fiscal_year)
           ORDER BY h.measure, h.fiscal_year""", [str(facility_id)])
    if rows.empty:
        return None
    years = sorted(rows["fiscal_year"].dropna().astype(int).unique())
    latest = years[-1]
    previous = years[-2] if len(years) > 1 else None
    now_column, before_column = f"ratio FY{latest}", f"ratio FY{previous}" if previous else "ratio (previous)"
    out = []
    for measure, part in rows.groupby("measure", sort=True):
        now = part[part["fiscal_year"] == latest]
        before = part[part["fiscal_year"] == previous] if previous else part.iloc[0:0]
        err_now, err_before = _value(now, "err"), _value(before, "err")
        now_reason = None if err_now is not None else _missing_reason(now)
        values = {
            now_column: err_now, before_column: err_before,
            "change": (err_now - err_before) if err_now is not None and err_before is not None else None,
            "state median": _value(now, "state_median"), "national median": _value(now, "national_median"),
            "discharges": _value(now, "discharges"),
        }
        reasons = {
            now_column: now_reason,
            before_column: (None if err_before is not None else _missing_reason(before) if previous
                            else NO_EARLIER_YEAR),
            "state median": None if values["state median"] is not None else NO_RESULTS if now.empty else NONE_IN_STATE,
            "national median": (None if values["national median"] is not None
                                else NO_RESULTS if now.empty else NONE_NATIONALLY),
            "discharges": (None if values["discharges"] is not None else now_reason if now_reason is not None
                           else TOO_FEW if _flagged(now) else WITHHELD),
        }
        label = part["measure_label"].dropna().iloc[0] if part["measure_label"].notna().any() else measure
        out.append({
            "measure": measure, "measure_label": label,
            "measure_short": MEASURE_SHORT.get(str(measure).strip().upper(), label),
            **values,
            **{reason_column(column): reason for column, reason in reasons.items()},
            "status": (("Above 1.0: more readmissions than expected" if err_now > 1 else "At or below 1.0")
                       if err_now is not None else now_reason),
        })
    frame = pd.DataFrame(out)
    frame.attrs["latest_year"] = int(latest)
    frame.attrs["previous_year"] = int(previous) if previous is not None else None
    return frame


def _value(part: pd.DataFrame, column: str):
    if part.empty or part[column].isna().all():
        return None
    value = part[column].dropna().iloc[0]
    return float(value) if column != "discharges" else int(value)


def _footnotes(part: pd.DataFrame) -> set[str]:
    return {code.strip() for cell in part["footnote"].dropna() for code in str(cell).split(",") if code.strip()}


def _flagged(part: pd.DataFrame) -> bool:
    return bool(part["too_few_to_report"].fillna(False).astype(bool).any())


def _missing_reason(part: pd.DataFrame) -> str:
    """Why one hospital-measure-year has no ratio: its CMS footnote, else the ETL's too-few flag, else
    CMS's plain N/A; `NO_RESULTS` when the hospital has no row for that year at all."""
    if part.empty:
        return NO_RESULTS
    codes = _footnotes(part)
    for code, reason in _FOOTNOTE_REASONS:
        if code in codes:
            return reason
    return TOO_FEW if _flagged(part) else NOT_AVAILABLE


def display_ratio(value, reason: Optional[str] = None) -> str:
    """A ratio as text ('1.024'); a missing one is `reason` in words (`NOT_AVAILABLE` if none is given),
    never 0."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return reason or NOT_AVAILABLE
    return f"{value:.3f}"
