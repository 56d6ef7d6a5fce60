"""The LACE index (van Walraven et al., CMAJ 2010;182(6):551-7) from the canonical / feature record.

LACE = L + A + C + E, 0..19:

- L, length of stay in days: <1 -> 0, 1 -> 1, 2 -> 2, 3 -> 3, 4-6 -> 4, 7-13 -> 5, >=14 -> 7.
- A, acuity: an emergent (unplanned) admission -> 3, else 0.
- C, Charlson comorbidity index: 0 -> 0, 1 -> 1, 2 -> 2, 3 -> 3, >=4 -> 5.
- E, emergency-department visits in the 6 months before admission, capped at 4 (0..4 points).

Approximations forced by the data we have (Diabetes 130 and the canonical encounter). Each one is
also listed in docs/evaluation.md:

1. E uses `prior_emergency_visits`, the count of emergency visits in the *year* before admission
   (Diabetes 130 `number_emergency`); no 6-month count exists. A year holds at least as many visits
   as 6 months, so E is over-counted for some patients.
2. C is the Charlson index computed from the recorded diagnosis codes only (Diabetes 130 keeps the
   first three of up to 16 diagnoses), with Quan 2005 coding and the original Charlson weights,
   without the age component (as van Walraven's LACE); conditions coded only in earlier stays or
   beyond the third diagnosis are missed, so C is under-counted.
3. L: Diabetes 130 `time_in_hospital` is whole days from 1 to 14, used as is; a missing length of
   stay scores 0 points.
4. A: admission types `emergency`, `urgent` and `trauma` count as acute. When the admission type
   is missing (Diabetes 130 ids 5, 6, 8: "Not Available"/"NULL"/"Not Mapped"), an admission
   from the emergency room (`admission_source == "emergency_room"`) counts as acute; otherwise 0.
5. A missing Charlson index or ED count scores 0 points.

`LaceModel` maps the score to a probability with a logistic fit (intercept + slope on the score),
fitted on the TRAIN split only, so LACE can be compared on Brier and ECE as well as AUROC.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from core.metrics import fit_logistic

ACUTE_ADMISSION_TYPES = frozenset({"emergency", "urgent", "trauma"})
ED_CAP = 4
MAX_SCORE = 19


def length_of_stay_points(days) -> np.ndarray:
    d = pd.to_numeric(pd.Series(np.asarray(days, dtype=object)), errors="coerce").to_numpy(dtype=np.float64)
    points = np.select([d < 1, d < 2, d < 3, d < 4, d < 7, d < 14, d >= 14], [0, 1, 2, 3, 4, 5, 7], default=0)
    return np.where(np.isnan(d), 0, points).astype(np.int64)


def acuity_points(admission_type, admission_source=None) -> np.ndarray:
    types = pd.Series(np.asarray(admission_type, dtype=object))
    acute = types.isin(ACUTE_ADMISSION_TYPES).to_numpy()
    if admission_source is not None:
        sources = pd.Series(np.asarray(admission_source, dtype=object))
        acute = acute | (types.isna().to_numpy() & (sources == "emergency_room").to_numpy())
    return np.where(acute, 3, 0).astype(np.int64)


def comorbidity_points(charlson_index) -> np.ndarray:
    c = pd.to_numeric(pd.Series(np.asarray(charlson_index, dtype=object)), errors="coerce").to_numpy(dtype=np.float64)
    points = np.where(c >= 4, 5, np.clip(c, 0, 3))
    return np.where(np.isnan(c), 0, points).astype(np.int64)


def ed_points(emergency_visits) -> np.ndarray:
    e = pd.to_numeric(pd.Series(np.asarray(emergency_visits, dtype=object)), errors="coerce").to_numpy(dtype=np.float64)
    return np.where(np.isnan(e), 0, np.clip(e, 0, ED_CAP)).astype(np.int64)


def lace_components(records: pd.DataFrame) -> pd.DataFrame:
    """L, A, C, E points and the total for feature rows (`core.features` columns) or canonical
    encounters that carry a `charlson_index` column."""
    source = records["admission_source"] if "admission_source" in records else None
    out = pd.DataFrame({
        "L": length_of_stay_points(records["length_of_stay_days"]),
        "A": acuity_points(records["admission_type"], source),
        "C": comorbidity_points(records["charlson_index"]),
        "E": ed_points(records["prior_emergency_visits"]),
    }, index=records.index)
    out["lace"] = out[["L", "A", "C", "E"]].sum(axis=1)
    return out


def lace_score(records: pd.DataFrame) -> np.ndarray:
    return lace_components(records)["lace"].to_numpy(dtype=np.int64)


@dataclass(frozen=True)
class LaceModel:
    """LACE score -> probability of 30-day readmission: logistic(intercept + slope * score)."""
    intercept: float
    slope: float
    n_train: int = 0

    @classmethod
    def fit(cls, scores, y) -> "LaceModel":
        """Fit on the TRAIN split only (eligible encounters with a known label)."""
        scores = np.asarray(scores, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if y.size == 0 or y.min() == y.max():
            raise ValueError("LACE calibration needs both readmitted and not readmitted training rows")
        intercept, slope = fit_logistic(scores, y)
        return cls(float(intercept), float(slope), int(y.size))

    def predict_proba(self, scores) -> np.ndarray:
        eta = self.intercept + self.slope * np.asarray(scores, dtype=np.float64)
        return 1.0 / (1.0 + np.exp(-eta))

    def to_dict(self) -> dict[str, Any]:
        return {"intercept": self.intercept, "slope": self.slope, "n_train": self.n_train,
                "fitted_on": "train split"}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> "LaceModel":
        return cls(float(state["intercept"]), float(state["slope"]), int(state.get("n_train", 0)))
