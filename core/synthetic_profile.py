"""The synthetic generator's fitted profile (`core/data/synthetic_profile.json`, aggregates of real data
only) and the readmission model's definitions, shared by the generator (`core.synthetic`) and the script
that fits the profile (`scripts/fit_synthetic_profile.py`), so that both sides use the same terms."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.schema import AGE_BANDS, LIST_SEPARATOR

PROFILE_PATH = Path(__file__).resolve().parent / "data" / "synthetic_profile.json"
# Conditioning buckets of the profile (lower edges), shared with scripts/fit_synthetic_profile.py.
STAY_BUCKETS = (1, 3, 5, 8)        # length of stay 1-2, 3-4, 5-7, 8+ days
INPATIENT_BUCKETS = (0, 1, 2, 3)   # inpatient stays in the year before: 0, 1, 2, 3+
AGE_GROUP_EDGES = (0, 60, 80)      # age under 60, 60-79, 80+
READMISSION_DISPOSITIONS = ("home_health", "snf_rehab", "transfer_hospital", "against_advice", "other")
READMISSION_GROUPS = ("circulatory", "respiratory", "digestive", "diabetes", "injury", "musculoskeletal",
                      "genitourinary", "neoplasms")
READMISSION_TERMS = (
    ("log1p_prior_inpatient", "log1p_prior_emergency", "log1p_prior_outpatient", "log1p_length_of_stay",
     "number_diagnoses", "log1p_num_medications", "log1p_num_lab_procedures", "num_procedures",
     "age_decades", "diabetes_med", "any_medication_changed")
    + tuple(f"disposition_{d}" for d in READMISSION_DISPOSITIONS)
    + tuple(f"principal_{g}" for g in READMISSION_GROUPS))


@lru_cache(maxsize=4)
def load_profile(path: str | Path = PROFILE_PATH) -> dict[str, Any]:
    """The fitted profile (aggregates only). Cached: never mutate what it returns."""
    return json.loads(Path(path).read_text())


_BAND_MIDPOINTS = {band: int(band[1:band.index("-")]) + 5.0 for band in AGE_BANDS}


def band_midpoint_years(age_band: pd.Series) -> np.ndarray:
    """'[60-70)' -> 65.0; missing or unknown -> nan."""
    return pd.to_numeric(age_band.map(_BAND_MIDPOINTS), errors="coerce").to_numpy(dtype=np.float64)


def _is(values: pd.Series, level: str) -> np.ndarray:
    return (values.to_numpy(dtype=object) == level).astype(np.float64)


def readmission_design(encounters: pd.DataFrame, principal_group: pd.Series) -> np.ndarray:
    """The readmission model's inputs (columns in `READMISSION_TERMS` order) from canonical encounters.

    Used both to fit the model on real encounters and to draw synthetic labels, so both sides use the
    same definitions. Missing counts become 0 and a missing age band the mean decade of the others.
    """
    def count(name: str) -> np.ndarray:
        return pd.to_numeric(encounters[name], errors="coerce").fillna(0).to_numpy(dtype=np.float64)

    age = band_midpoint_years(encounters["age_band"]) / 10.0
    age = np.where(np.isnan(age), np.nanmean(age) if np.isfinite(age).any() else 0.0, age)
    joined = [LIST_SEPARATOR.join(items) + LIST_SEPARATOR for items in encounters["medication_changes"]]
    changed = [":up;" in text or ":down;" in text for text in joined]
    columns = [np.log1p(count("prior_inpatient_visits")), np.log1p(count("prior_emergency_visits")),
               np.log1p(count("prior_outpatient_visits")), np.log1p(count("length_of_stay_days")),
               count("number_diagnoses"), np.log1p(count("num_medications")), np.log1p(count("num_lab_procedures")),
               count("num_procedures"), age, _is(encounters["diabetes_med"], True),
               np.asarray(changed, dtype=np.float64)]
    columns += [_is(encounters["discharge_disposition"], d) for d in READMISSION_DISPOSITIONS]
    columns += [_is(principal_group, g) for g in READMISSION_GROUPS]
    return np.column_stack(columns)


def bucket(values, edges: tuple[int, ...]) -> np.ndarray:
    """Index of the bucket (given by ascending lower edges) each value falls in."""
    return np.searchsorted(np.asarray(edges), np.asarray(values, dtype=np.float64), side="right") - 1


def cell_key(group: str, stay_bucket: int) -> str:
    return f"{group}/{stay_bucket}"


def readmission_probability(design: np.ndarray, model: dict[str, Any]) -> np.ndarray:
    """Logistic model of the profile applied to a design matrix."""
    if tuple(model["terms"]) != READMISSION_TERMS:
        raise ValueError("the profile's readmission terms differ from this code's: rerun scripts/fit_synthetic_profile.py")
    logit = model["intercept"] + design @ np.asarray(model["coefficients"], dtype=np.float64)
    return 1.0 / (1.0 + np.exp(-logit))
