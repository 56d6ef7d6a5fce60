"""The `hospitals` table: CMS Hospital Readmissions Reduction Program (HRRP) results per hospital.

One row per hospital, measure and fiscal year. Defined once here (column names, Arrow types,
descriptions); the Spark adapter derives its schema from `arrow_schema()`. Values CMS publishes as
'N/A' or 'Too Few to Report' are null, never zero; `too_few_to_report` says the second in words.
"""
from __future__ import annotations

from typing import Optional

import pyarrow as pa

# (name, Arrow type, description)
HOSPITAL_COLUMNS: tuple[tuple[str, pa.DataType, str], ...] = (
    ("facility_id", pa.string(), "CMS Certification Number (CCN), six characters, leading zeros kept"),
    ("facility_name", pa.string(), "Hospital name"),
    ("state", pa.string(), "Two-letter state code"),
    ("measure", pa.string(), "CMS measure id, e.g. READM-30-HF-HRRP"),
    ("measure_label", pa.string(), "The measure in plain words, e.g. Heart failure"),
    ("fiscal_year", pa.int64(), "HRRP payment fiscal year (FY = end year of the measure period + 2)"),
    ("discharges", pa.int64(), "Number of eligible discharges (null when CMS reports N/A)"),
    ("excess_readmission_ratio", pa.float64(),
     "Predicted / expected readmission rate; above 1 means more readmissions than expected"),
    ("predicted_rate", pa.float64(), "Predicted 30-day readmission rate, percent"),
    ("expected_rate", pa.float64(), "Expected 30-day readmission rate, percent"),
    ("readmissions", pa.int64(), "Number of readmissions (null when N/A or Too Few to Report)"),
    ("too_few_to_report", pa.bool_(), "CMS withheld a count as 'Too Few to Report' (fewer than 11)"),
    ("start_date", pa.date32(), "First day of the measure period"),
    ("end_date", pa.date32(), "Last day of the measure period"),
    ("footnote", pa.string(), "CMS footnote code(s), see FOOTNOTES"),
)
COLUMNS = tuple(name for name, _, _ in HOSPITAL_COLUMNS)

MEASURE_LABELS = {
    "READM-30-AMI-HRRP": "Heart attack (acute myocardial infarction)",
    "READM-30-HF-HRRP": "Heart failure",
    "READM-30-PN-HRRP": "Pneumonia",
    "READM-30-COPD-HRRP": "Chronic obstructive pulmonary disease (COPD)",
    "READM-30-CABG-HRRP": "Coronary artery bypass graft (CABG) surgery",
    "READM-30-HIP-KNEE-HRRP": "Elective hip or knee replacement",
}

# CMS Provider Data Catalog footnotes that occur in the HRRP hospital file.
FOOTNOTES = {
    "1": "The number of cases/patients is too few to report.",
    "5": "Results are not available for this reporting period.",
    "7": "No cases met the criteria for this measure.",
}

# Fiscal year of an HRRP file = calendar year in which its measure period ends + this offset
# (FY 2024: 07/01/2019-06/30/2022; FY 2025: 07/01/2020-06/30/2023).
FISCAL_YEAR_OFFSET = 2

NOT_AVAILABLE = "N/A"
TOO_FEW_TO_REPORT = "Too Few to Report"
NULL_TOKENS = (NOT_AVAILABLE, TOO_FEW_TO_REPORT, "")


def arrow_schema() -> pa.Schema:
    """Arrow schema of the hospitals table."""
    return pa.schema([pa.field(name, kind) for name, kind, _ in HOSPITAL_COLUMNS])


def footnote_text(code: Optional[str]) -> Optional[str]:
    """Plain words for a footnote cell ('1', '5' or '1, 5'); None when empty."""
    if not code or not str(code).strip():
        return None
    parts = [part.strip() for part in str(code).split(",") if part.strip()]
    return " ".join(FOOTNOTES.get(part, f"CMS footnote {part}.") for part in parts)
