"""The Hospitals page: CMS HRRP excess readmission ratios against state and national medians."""
from __future__ import annotations

import math
from typing import Optional

import pandas as pd

from core.warehouse import Warehouse

TOO_FEW = "Too few to report"
NOT_AVAILABLE = "Not available"


def hospital_options(wh: Warehouse) -> pd.DataFrame:
    return wh.query("SELECT facility_id, any_value(facility_name) AS facility_name, any_value(state) AS state "
                    "FROM hospitals GROUP BY facility_id ORDER BY facility_name, facility_id")


def hospital_benchmark(wh: Warehouse, facility_id: str) -> Optional[pd.DataFrame]:
    """Per measure: this hospital's excess readmission ratio (latest and previous fiscal year), the change,
    its state's and the nation's median, and whether it is above 1.0. Missing values stay missing."""
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
    out = []
    for measure, part in rows.groupby("measure", sort=True):
        now = part[part["fiscal_year"] == latest]
        before = part[part["fiscal_year"] == previous] if previous else part.iloc[0:0]
        err_now = _value(now, "err")
        err_before = _value(before, "err")
        too_few_now = bool(now["too_few_to_report"].fillna(False).any()) if len(now) else False
        out.append({
            "measure": measure,
            "measure_label": part["measure_label"].dropna().iloc[0] if part["measure_label"].notna().any() else measure,
            f"ratio FY{latest}": err_now,
            f"ratio FY{previous}" if previous else "ratio (previous)": err_before,
            "change": (err_now - err_before) if err_now is not None and err_before is not None else None,
            "state median": _value(now, "state_median"),
            "national median": _value(now, "national_median"),
            "discharges": _value(now, "discharges"),
            "status": (("Above 1.0: more readmissions than expected" if err_now > 1 else "At or below 1.0")
                       if err_now is not None else (TOO_FEW if too_few_now or _footnote_too_few(now)
                                                     else NOT_AVAILABLE)),
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


def _footnote_too_few(part: pd.DataFrame) -> bool:
    return any("1" in str(f).replace(" ", "").split(",") for f in part["footnote"].dropna())


def display_ratio(value) -> str:
    """A ratio as text; a missing one says so in words (never 0)."""
    return TOO_FEW if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"
