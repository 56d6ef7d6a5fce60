"""The feature spec and the one function that computes features, for training and serving alike.

`build_features(encounters)` turns canonical encounters into model features. The Spark ETL runs it
inside `mapInPandas` on partitions that hold all of a patient's encounters, sorted; the scorer runs
it on an uploaded file. Same function, same features.

Patient history uses only encounters that come *before* the current one (by admission time where
dates exist, else by encounter id). Nothing from later encounters is ever used: a count of future
encounters inflates AUROC on Diabetes 130 from about 0.69 to 0.82.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain
from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np
import pandas as pd

from core import icd

FEATURE_SPEC_VERSION = "2026.11-1"

MISSING_LEVEL = "__missing__"
OTHER_LEVEL = "__other__"


@dataclass(frozen=True)
class NumericFeature:
    name: str
    label: str          # plain words, used in explanations ("inpatient stays in the past year")
    transform: Literal["identity", "log1p"] = "identity"
    unit: str = ""


@dataclass(frozen=True)
class CategoricalFeature:
    name: str
    label: str
    min_count: int = 20  # levels rarer than this in training collapse to OTHER_LEVEL


NUMERIC_FEATURES: tuple[NumericFeature, ...] = (
    NumericFeature("age_years_est", "age", unit="years"),
    NumericFeature("length_of_stay_days", "length of stay", "log1p", "days"),
    NumericFeature("num_lab_procedures", "lab tests during the stay", "log1p"),
    NumericFeature("num_procedures", "procedures during the stay", "log1p"),
    NumericFeature("num_medications", "medications during the stay", "log1p"),
    NumericFeature("number_diagnoses", "diagnoses recorded"),
    NumericFeature("prior_outpatient_visits", "outpatient visits in the past year", "log1p"),
    NumericFeature("prior_emergency_visits", "emergency visits in the past year", "log1p"),
    NumericFeature("prior_inpatient_visits", "inpatient stays in the past year", "log1p"),
    NumericFeature("prior_visits_total", "visits of any kind in the past year", "log1p"),
    NumericFeature("diabetes_meds_given", "diabetes medications given", "log1p"),
    NumericFeature("diabetes_meds_changed", "diabetes medications changed in dose", "log1p"),
    NumericFeature("charlson_index", "Charlson comorbidity index", "log1p"),
    NumericFeature("encounter_seq", "hospital stays on record including this one", "log1p"),
    NumericFeature("prior_stays_los_days", "days in hospital in earlier stays on record", "log1p"),
    NumericFeature("prior_readmissions_30d", "earlier stays followed by a 30-day readmission", "log1p"),
    NumericFeature("days_since_last_discharge", "days since the previous discharge", "log1p", "days"),
) + tuple(NumericFeature(f"cc_{name}", name.replace("_", " ")) for name in icd.CHARLSON_CONDITIONS)

CATEGORICAL_FEATURES: tuple[CategoricalFeature, ...] = (
    CategoricalFeature("sex", "sex"),
    CategoricalFeature("race", "race"),
    CategoricalFeature("age_band", "age band"),
    CategoricalFeature("admission_type", "admission type"),
    CategoricalFeature("admission_source", "admitted from"),
    CategoricalFeature("discharge_disposition", "discharged to"),
    CategoricalFeature("payer", "payer"),
    CategoricalFeature("admitting_specialty", "admitting specialty"),
    CategoricalFeature("a1c_result", "HbA1c result"),
    CategoricalFeature("glucose_result", "serum glucose result"),
    CategoricalFeature("insulin", "insulin at discharge"),
    CategoricalFeature("metformin", "metformin at discharge"),
    CategoricalFeature("diabetes_med", "on diabetes medication"),
    CategoricalFeature("principal_group", "main diagnosis group"),
    CategoricalFeature("dx_1_category", "main diagnosis"),
    CategoricalFeature("dx_2_category", "second diagnosis"),
    CategoricalFeature("dx_3_category", "third diagnosis"),
    CategoricalFeature("discharge_weekday", "discharge day of week"),
)

CODE_FEATURES: tuple[str, ...] = ("dx_1", "dx_2", "dx_3")
CODE_CHAPTERS: tuple[str, ...] = tuple(f"{name}_chapter" for name in CODE_FEATURES)
CODE_MIN_COUNT = 10

NUMERIC_NAMES = tuple(f.name for f in NUMERIC_FEATURES)
CATEGORICAL_NAMES = tuple(f.name for f in CATEGORICAL_FEATURES)
ID_COLUMNS = ("encounter_id", "patient_id", "source", "readmitted_30d", "eligible")
FEATURE_COLUMNS = NUMERIC_NAMES + CATEGORICAL_NAMES + CODE_FEATURES + CODE_CHAPTERS
OUTPUT_COLUMNS = ID_COLUMNS + FEATURE_COLUMNS
FEATURE_LABELS = {f.name: f.label for f in NUMERIC_FEATURES + CATEGORICAL_FEATURES} | {
    "dx_1": "main diagnosis code", "dx_2": "second diagnosis code", "dx_3": "third diagnosis code"}
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

_AGE_BAND = re.compile(r"^\[(\d+)-(\d+)\)$")


_ORDER_COLUMNS = ["patient_id", "_admit_order", "_id_number", "encounter_id"]


def _datetimes(values: pd.Series) -> pd.Series:
    """`pd.to_datetime(values)`; a column that already holds datetimes is returned as it is (pandas would
    first turn thousands of them into Timestamp objects to decide whether to cache)."""
    return values if values.dtype.kind == "M" or isinstance(values.dtype, pd.DatetimeTZDtype) \
        else pd.to_datetime(values)


def sort_for_history(encounters: pd.DataFrame) -> pd.DataFrame:
    """Encounters ordered within each patient: by admission time, then numeric encounter id."""
    out = encounters.copy()
    out["_admit_order"] = _datetimes(out["admit_time"])
    out["_id_number"] = pd.to_numeric(out["encounter_id"], errors="coerce")
    out = out.sort_values(_ORDER_COLUMNS, na_position="last", kind="mergesort")
    return out.drop(columns=["_admit_order", "_id_number"])


def add_patient_history(encounters: pd.DataFrame) -> pd.DataFrame:
    """Fill `encounter_seq` and `days_since_last_discharge` and add prior-stay aggregates.

    Expects every encounter of each patient present and sorted (see `sort_for_history`). Uses only
    earlier encounters of the same patient.
    """
    out = encounters.copy()
    by_patient = out.groupby("patient_id", sort=False)
    out["encounter_seq"] = (by_patient.cumcount() + 1).astype("int64")
    los = pd.to_numeric(out["length_of_stay_days"], errors="coerce").fillna(0.0)
    out["prior_stays_los_days"] = los.groupby(out["patient_id"], sort=False).cumsum() - los
    known_positive = pd.Series(np.fromiter((v is True for v in out["readmitted_30d"]), dtype=np.float64, count=len(out)),
                               index=out.index)
    out["prior_readmissions_30d"] = (known_positive.groupby(out["patient_id"], sort=False).cumsum()
                                     - known_positive)
    previous_discharge = _datetimes(out["discharge_time"]).groupby(out["patient_id"], sort=False).shift(1)
    gap = (_datetimes(out["admit_time"]) - previous_discharge).dt.total_seconds() / 86400.0
    out["days_since_last_discharge"] = gap.where(gap >= 0)
    return out


@lru_cache(maxsize=1024)
def _band_mid(band: str) -> float:
    match = _AGE_BAND.search(band)
    return (float(match.group(1)) + float(match.group(2))) / 2.0 if match else np.nan


# --- one Python call per distinct value --------------------------------------------------------
# The ICD helpers and other per-value rules of `core.icd` are plain Python functions. A batch of
# many patients holds few distinct codes, bands and medication entries, so each function runs once
# per distinct value (found by pandas' hashing) and the results are gathered back by index.
# The costly ICD rules are also cached across calls: the scoring API meets the same codes again and again.

SMALL_BATCH = 256  # up to this many values a dict finds the distinct ones faster than pandas


def _missing(value) -> bool:
    """What `pd.factorize` counts as missing: None, NaN, NaT, NA."""
    return value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and value != value)


def _factorized(values) -> tuple[np.ndarray, list]:
    """(index of each value into `distinct`, distinct values + [None]): missing values index the None."""
    values = np.asarray(values, dtype=object)
    if len(values) > SMALL_BATCH:
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
        distinct = list(uniques) + [None]
        return np.where(codes < 0, len(distinct) - 1, codes), distinct
    first: dict = {}
    index = [-1 if _missing(v) else first.setdefault(v, len(first)) for v in values.tolist()]
    return np.array([len(first) if i < 0 else i for i in index], dtype=np.int64), list(first) + [None]


def _gathered(results: list, index: np.ndarray) -> np.ndarray:
    out = np.empty(len(results), dtype=object)
    out[:] = results
    return out[index]


def _by_value(fn: Callable[[Any], Any], values) -> np.ndarray:
    """`[fn(v) for v in values]` (missing values as None), computed once per distinct value."""
    index, distinct = _factorized(values)
    return _gathered([fn(v) for v in distinct], index)


def _by_pair(fn: Callable[[Any, Any], Any], first, second) -> np.ndarray:
    """`[fn(a, b) for a, b in zip(first, second)]`, computed once per distinct pair."""
    a_index, a_distinct = _factorized(first)
    b_index, b_distinct = _factorized(second)
    pairs, index = np.unique(a_index * len(b_distinct) + b_index, return_inverse=True)
    return _gathered([fn(a_distinct[p // len(b_distinct)], b_distinct[p % len(b_distinct)]) for p in pairs],
                     index.reshape(-1))


@dataclass(frozen=True)
class _Flat:
    """A column of lists flattened: every item with its row and its position in the row's list."""
    items: list
    row: np.ndarray
    position: np.ndarray
    lengths: np.ndarray      # -1 for a missing list

    @classmethod
    def of(cls, lists) -> "_Flat":
        lengths = np.fromiter((-1 if items is None else len(items) for items in lists), dtype=np.int64,
                              count=len(lists))
        sizes = np.maximum(lengths, 0)
        items = list(chain.from_iterable(items for items in lists if items is not None))
        row = np.repeat(np.arange(len(lists)), sizes)
        position = np.arange(len(items)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        return cls(items, row, position, lengths)

    def at(self, values: np.ndarray, position: int) -> np.ndarray:
        """Per row, the value of its item at `position` (None where the list is shorter or missing)."""
        out = np.full(len(self.lengths), None, dtype=object)
        hit = self.position == position
        out[self.row[hit]] = values[hit]
        return out


def _age_estimate(age_years, age_band) -> np.ndarray:
    """Age in years, else the middle of the age band (`str.extract(_AGE_BAND)` mean, once per distinct band)."""
    band_mid = _by_value(lambda b: np.nan if b is None else _band_mid(str(b)), age_band).astype(np.float64)
    years = _float_values(age_years)
    return np.where(np.isnan(years), band_mid, years)


def _drug_status(changes: _Flat, drug: str) -> np.ndarray:
    """Per row, the status of the first '<drug>:<status>' entry, "no" when there is none."""
    prefix = f"{drug}:"
    status = _by_value(lambda item: item[len(prefix):] if item is not None and item.startswith(prefix) else None,
                       changes.items)
    out = np.full(len(changes.lengths), "no", dtype=object)
    hit = np.flatnonzero(status != None)  # noqa: E711 (elementwise on an object array)
    rows, first = np.unique(changes.row[hit], return_index=True)
    out[rows] = status[hit[first]]
    return out


def _changed_counts(changes: _Flat) -> np.ndarray:
    """Per row, the entries whose dose changed (not ':steady'); NaN for a missing list."""
    changed = _by_value(lambda item: item is not None and not item.endswith(":steady"), changes.items).astype(np.float64)
    counts = np.bincount(changes.row, weights=changed, minlength=len(changes.lengths))
    return np.where(changes.lengths < 0, np.nan, counts)


def _version(value) -> int:
    """ICD version of a row; Diabetes-era data without one is ICD-9."""
    return int(value) if pd.notna(value) else 9


_normalized_code = lru_cache(maxsize=65536, typed=True)(icd.normalize_code)


@lru_cache(maxsize=65536)
def _code_conditions(code, version: int) -> int:
    """Charlson conditions of one normalized code, as bits in CHARLSON_CONDITIONS order."""
    return sum(1 << icd.CHARLSON_CONDITIONS.index(c) for c in icd.charlson_conditions([code], version))


@lru_cache(maxsize=65536)
def _row_conditions(codes: tuple, version: int) -> frozenset:
    return frozenset(icd.charlson_conditions(codes, version))


def _charlson(codes: _Flat, normalized: np.ndarray, versions: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Charlson flags and index of every row, as `icd.charlson_conditions` over each row's normalized codes.

    A row's conditions depend only on the union of its codes' conditions (the mild/severe rule then
    applies to the union), so each distinct code is matched once and each distinct union once, on the
    codes of the first row that has it."""
    names = icd.CHARLSON_CONDITIONS
    code_mask = _by_pair(_code_conditions, normalized, versions[codes.row]).astype(np.int64)
    row_mask = np.zeros(len(codes.lengths), dtype=np.int64)
    np.bitwise_or.at(row_mask, codes.row, code_mask)
    masks, first, inverse = np.unique(row_mask, return_index=True, return_inverse=True)
    starts = np.cumsum(np.maximum(codes.lengths, 0)) - np.maximum(codes.lengths, 0)
    found = [_row_conditions(tuple(normalized[starts[r]:starts[r] + max(codes.lengths[r], 0)]), int(versions[r]))
             for r in first]
    flags = {f"cc_{name}": np.array([1.0 if name in f else 0.0 for f in found])[inverse.reshape(-1)]
             for name in names}
    index = np.array([float(icd.charlson_index(f)) for f in found])[inverse.reshape(-1)]
    return flags, index


def _float_values(values) -> np.ndarray:
    """What `_typed` does to a numeric column: `to_numeric(errors="coerce").astype(float64)`."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "biuf":  # from `_small_history`
        return values.astype(np.float64, copy=False)
    if isinstance(values, list):  # lists built here hold only floats (NaN for missing)
        return np.array(values, dtype=np.float64)
    dtype = values.dtype
    if dtype == np.float64:
        return values.to_numpy()
    if isinstance(dtype, np.dtype) and dtype.kind in "biu":
        return values.to_numpy().astype(np.float64)
    if isinstance(dtype, (pd.Int64Dtype, pd.Int32Dtype, pd.Float64Dtype, pd.Float32Dtype)):
        return values.to_numpy(dtype=np.float64, na_value=np.nan)
    return pd.to_numeric(values, errors="coerce").astype("float64").to_numpy()


def _object_values(values) -> np.ndarray:
    """What `_typed` does to a text column: object dtype, every missing value (NaN, NA, NaT) as None."""
    if isinstance(values, pd.Series):
        if values.dtype == object:
            out = values.to_numpy(copy=True)
        elif isinstance(values.dtype, pd.StringDtype):
            out = values.to_numpy(dtype=object, copy=True)
        else:
            out = values.astype("object").to_numpy(copy=True)
    else:
        out = np.empty(len(values), dtype=object)
        out[:] = values
    out[pd.isna(out)] = None
    return out


def _yes_no(diabetes_med) -> np.ndarray:
    if getattr(diabetes_med, "dtype", None) == np.bool_:
        return np.where(np.asarray(diabetes_med), "yes", "no").astype(object)
    return _by_value({True: "yes", False: "no"}.get, diabetes_med)


def _days(times) -> np.ndarray:
    """Calendar days (datetime64[D], NaT where missing) of a datetime column or of a list of datetimes;
    an aware column counts its own local days, as `Series.dt` does."""
    if isinstance(times, pd.Series):
        times = _datetimes(times)
        if isinstance(times.dtype, pd.DatetimeTZDtype):
            times = times.dt.tz_localize(None)
        return times.to_numpy().astype("datetime64[D]")
    return np.array([None if pd.isna(t) else t for t in times], dtype="datetime64[us]").astype("datetime64[D]")


def _weekdays(discharge) -> np.ndarray:
    days = _days(discharge)
    names = np.array(WEEKDAYS + (None,), dtype=object)
    weekday = (days.astype(np.int64) + 3) % 7  # 1970-01-01, day 0, was a Thursday
    return names[np.where(np.isnat(days), len(WEEKDAYS), weekday)]


def _as_list(values) -> list:
    return values.tolist() if hasattr(values, "tolist") else list(values)


def feature_columns(history: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The FEATURE_COLUMNS of encounters that already carry their patient history, one numpy array each.

    `history` maps canonical column names (plus the history columns `add_patient_history` fills) to
    equally long columns: a DataFrame, or plain lists for a few records (`first_stay_features`)."""
    diagnoses = _Flat.of(_as_list(history["diagnoses"]))
    versions = _by_value(_version, history["icd_version"]).astype(np.int64)
    changes = _Flat.of(_as_list(history["medication_changes"]))
    normalized = _by_pair(_normalized_code, diagnoses.items, versions[diagnoses.row])
    codes = {name: diagnoses.at(normalized, i) for i, name in enumerate(CODE_FEATURES)}
    prior = {name: _float_values(history[name])
             for name in ("prior_outpatient_visits", "prior_emergency_visits", "prior_inpatient_visits")}
    flags, charlson = _charlson(diagnoses, normalized, versions)
    numeric = {
        "age_years_est": _age_estimate(history["age_years"], history["age_band"]),
        "length_of_stay_days": history["length_of_stay_days"],
        "num_lab_procedures": history["num_lab_procedures"],
        "num_procedures": history["num_procedures"],
        "num_medications": history["num_medications"],
        "number_diagnoses": history["number_diagnoses"],
        **prior,
        # Sum only when all three are known: a missing count is not zero.
        "prior_visits_total": (prior["prior_outpatient_visits"] + prior["prior_emergency_visits"]
                               + prior["prior_inpatient_visits"]),
        "diabetes_meds_given": np.where(changes.lengths < 0, np.nan, changes.lengths.astype(np.float64)),
        "diabetes_meds_changed": _changed_counts(changes),
        "charlson_index": charlson,
        "encounter_seq": history["encounter_seq"],
        "prior_stays_los_days": history["prior_stays_los_days"],
        "prior_readmissions_30d": history["prior_readmissions_30d"],
        "days_since_last_discharge": history["days_since_last_discharge"],
        **flags,
    }
    text = {
        "sex": history["sex"],
        "race": history["race"],
        "age_band": history["age_band"],
        "admission_type": history["admission_type"],
        "admission_source": history["admission_source"],
        "discharge_disposition": history["discharge_disposition"],
        "payer": history["payer"],
        "admitting_specialty": history["admitting_specialty"],
        "a1c_result": history["a1c_result"],
        "glucose_result": history["glucose_result"],
        "insulin": _drug_status(changes, "insulin"),
        "metformin": _drug_status(changes, "metformin"),
        "principal_group": _by_pair(icd.clinical_group, codes["dx_1"], versions),
        "dx_1_category": _by_value(icd.category, codes["dx_1"]),
        "dx_2_category": _by_value(icd.category, codes["dx_2"]),
        "dx_3_category": _by_value(icd.category, codes["dx_3"]),
        "discharge_weekday": _weekdays(history["discharge_time"]),
        **codes,
        **{f"{name}_chapter": _by_pair(icd.chapter, codes[name], versions) for name in CODE_FEATURES},
    }
    columns = {name: _float_values(numeric[name]) for name in NUMERIC_NAMES}
    for name in CATEGORICAL_NAMES + CODE_FEATURES + CODE_CHAPTERS:
        columns[name] = _yes_no(history["diabetes_med"]) if name == "diabetes_med" else _object_values(text[name])
    return columns


def encounter_features(history: pd.DataFrame) -> pd.DataFrame:
    """Row-level features (OUTPUT_COLUMNS) of encounters that already carry their patient history."""
    columns = {
        "encounter_id": history["encounter_id"].astype("string").array,
        "patient_id": history["patient_id"].astype("string").array,
        "source": history["source"].array,
        "readmitted_30d": _object_values(history["readmitted_30d"]),
        "eligible": history["eligible"].astype(bool).to_numpy(),
        **feature_columns(history),
    }
    assert len(columns) == len(OUTPUT_COLUMNS) and all(len(v) == len(history) for v in columns.values())
    return pd.DataFrame(columns, index=history.index, columns=list(OUTPUT_COLUMNS), copy=True)


# --- first stays: no patient history ------------------------------------------------------------
# An encounter whose patient has no other encounter in the input gets what `add_patient_history`
# gives a patient's first stay. These constants are that, without sorting or grouping.
FIRST_STAY_HISTORY: dict[str, float] = {"encounter_seq": 1.0, "prior_stays_los_days": 0.0,
                                        "prior_readmissions_30d": 0.0, "days_since_last_discharge": np.nan}
_RECORD_INPUTS = ("diagnoses", "icd_version", "medication_changes", "prior_outpatient_visits",
                  "prior_emergency_visits", "prior_inpatient_visits", "age_years", "age_band", "length_of_stay_days",
                  "num_lab_procedures", "num_procedures", "num_medications", "number_diagnoses", "sex", "race",
                  "admission_type", "admission_source", "discharge_disposition", "payer", "admitting_specialty",
                  "a1c_result", "glucose_result", "diabetes_med", "discharge_time")  # what `feature_columns` reads


def first_stay_features(records: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """FEATURE_COLUMNS of independent canonical records, each a first stay (its own record only).

    The scoring API's path: plain dicts to numpy columns, no DataFrame. `build_features` gives the
    same values for the same records when no patient has two of them (tests/test_features.py)."""
    n = len(records)
    history: dict[str, Any] = {name: np.full(n, value) for name, value in FIRST_STAY_HISTORY.items()}
    for name in _RECORD_INPUTS:
        history[name] = [record.get(name) for record in records]
    return feature_columns(history)


def _first_stays(encounters: pd.DataFrame) -> pd.DataFrame:
    """`add_patient_history(sort_for_history(encounters))` when every patient has one encounter:
    ordered by patient, with the first-stay history."""
    order = np.argsort(encounters["patient_id"].to_numpy(dtype=object), kind="stable")
    out = encounters.iloc[order].copy()
    for name, value in FIRST_STAY_HISTORY.items():
        out[name] = np.full(len(out), value)
    return out


def _typed(features: pd.DataFrame) -> pd.DataFrame:
    out = features.copy()
    for name in NUMERIC_NAMES:
        out[name] = pd.to_numeric(out[name], errors="coerce").astype("float64")
    for name in CATEGORICAL_NAMES + CODE_FEATURES + CODE_CHAPTERS:
        out[name] = out[name].astype("object").where(out[name].notna(), None)
    out["readmitted_30d"] = out["readmitted_30d"].astype("object").where(out["readmitted_30d"].notna(), None)
    return out


def build_features(encounters: pd.DataFrame) -> pd.DataFrame:
    """Canonical encounters (all encounters of each patient present) to one feature row each.

    When no patient has two encounters (a batch of current discharges) there is no history to order
    or group: the rows take the first-stay history directly, with the same result."""
    if encounters.empty:
        return _typed(pd.DataFrame({c: pd.Series(dtype="object") for c in OUTPUT_COLUMNS}))
    if encounters["patient_id"].is_unique:
        return encounter_features(_first_stays(encounters))
    return encounter_features(add_patient_history(sort_for_history(encounters)))
