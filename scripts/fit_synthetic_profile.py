"""Fit the synthetic generator's profile from aggregate statistics of the real Diabetes 130 file.

    .venv/bin/python scripts/fit_synthetic_profile.py \
        --input ../shared/data/diabetes130/diabetic_data_dev.csv --output core/data/synthetic_profile.json

Only aggregates leave this script: frequencies of categories and binned counts, conditional on at
most one other variable, and the coefficients of one logistic model. Every stored cell holds at least
MIN_CELL encounters (or patients): rarer categories are dropped (rare ICD codes first pooled into
their 3-character category), rarer numeric values are merged with their neighbours into a bin
represented by its rounded mean. No row, identifier or extreme value is written.
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from core import icd
from core.sources import diabetes130
from core.synthetic_profile import (
    AGE_GROUP_EDGES,
    INPATIENT_BUCKETS,
    READMISSION_TERMS,
    STAY_BUCKETS,
    band_midpoint_years,
    bucket,
    cell_key,
    readmission_design,
)

MIN_CELL = 20
STAY_COLUMNS = ("num_lab_procedures", "num_procedures", "num_medications", "number_diagnoses")
CATEGORICAL_COLUMNS = ("sex", "race", "age_band", "payer", "admitting_specialty", "a1c_result", "glucose_result")
TERMINAL_DISPOSITIONS = ("expired", "hospice")


def _none_if_missing(value: Any) -> Any:
    return None if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)) else value


def level_table(values: Iterable[Any]) -> dict[str, list]:
    """Frequencies of each level (None = missing) with levels under MIN_CELL dropped."""
    counts = pd.Series([_none_if_missing(v) for v in values], dtype="object").value_counts(dropna=False)
    kept = [(_none_if_missing(level), int(n)) for level, n in counts.items() if n >= MIN_CELL]
    kept.sort(key=lambda item: (-item[1], str(item[0])))
    return {"levels": [level for level, _ in kept], "counts": [n for _, n in kept]}


def merged_bins(values: Iterable[float]) -> dict[str, list]:
    """Integer values and frequencies; runs of neighbouring values are merged until each bin holds at
    least MIN_CELL, a merged bin being represented by its rounded mean (a remainder joins the last bin)."""
    counts = pd.Series(list(values)).dropna().astype(np.int64).value_counts().sort_index()
    bins: list[list[tuple[int, int]]] = []
    current: list[tuple[int, int]] = []
    for value, n in counts.items():
        current.append((int(value), int(n)))
        if sum(c for _, c in current) >= MIN_CELL:
            bins.append(current)
            current = []
    if current and bins:
        bins[-1] += current
    out_values, out_counts = [], []
    for members in bins:
        total = sum(c for _, c in members)
        out_values.append(int(round(sum(v * c for v, c in members) / total)))
        out_counts.append(total)
    return {"values": out_values, "counts": out_counts}


def or_fallback(table: dict[str, list], fallback: dict[str, list]) -> dict[str, list]:
    """A conditional table, or the coarser one when suppression left it empty."""
    return table if table["counts"] else fallback


def code_table(codes: Iterable[str | None]) -> dict[str, list]:
    """ICD code frequencies: codes under MIN_CELL pooled into their 3-character category, pools under
    MIN_CELL dropped; missing codes ignored."""
    counts = pd.Series([c for c in codes if c], dtype="object").value_counts()
    frequent = counts[counts >= MIN_CELL]
    rare = counts[counts < MIN_CELL]
    pooled = rare.groupby(rare.index.map(icd.category)).sum()
    merged = frequent.add(pooled[pooled >= MIN_CELL], fill_value=0).astype(np.int64)
    return level_table(np.repeat(merged.index.to_numpy(dtype=object), merged.to_numpy()))


def with_history(canonical: pd.DataFrame) -> pd.DataFrame:
    """Encounters in patient order (Diabetes 130 has no dates: encounter_id order) with position flags."""
    out = canonical.assign(_order=pd.to_numeric(canonical["encounter_id"]))
    out = out.sort_values(["patient_id", "_order"], kind="mergesort").drop(columns="_order")
    position = out.groupby("patient_id", sort=False).cumcount()
    size = out.groupby("patient_id", sort=False)["encounter_id"].transform("size")
    return out.assign(_position=position.to_numpy(), _is_last=(position + 1 == size).to_numpy())


def principal_groups(canonical: pd.DataFrame) -> pd.Series:
    codes = [icd.normalize_code(d[0]) if len(d) else None for d in canonical["diagnoses"]]
    return pd.Series([icd.clinical_group(c) for c in codes], index=canonical.index, dtype="object")


def fit_readmission(canonical: pd.DataFrame, group: pd.Series) -> dict[str, Any]:
    """Logistic model of readmitted_30d on READMISSION_TERMS, on eligible encounters with a label."""
    known = canonical["eligible"].astype(bool) & canonical["readmitted_30d"].notna()
    design = readmission_design(canonical[known], group[known])
    target = canonical.loc[known, "readmitted_30d"].astype(bool).to_numpy()
    mean, std = design.mean(axis=0), design.std(axis=0)
    std[std == 0] = 1.0
    model = LogisticRegression(C=1.0, max_iter=2000).fit((design - mean) / std, target)
    coefficients = model.coef_[0] / std
    intercept = float(model.intercept_[0] - (coefficients * mean).sum())
    probability = 1.0 / (1.0 + np.exp(-(intercept + design @ coefficients)))
    return {"terms": list(READMISSION_TERMS), "coefficients": [round(float(c), 5) for c in coefficients],
            "intercept": round(intercept, 5), "encounters": int(known.sum()),
            "auroc_in_sample": round(float(roc_auc_score(target, probability)), 4)}


def fit_profile(canonical: pd.DataFrame) -> dict[str, Any]:
    """The generator's profile from canonical Diabetes 130 encounters (aggregates only)."""
    enc = with_history(canonical)
    group = principal_groups(enc)
    groups = level_table(group.dropna())["levels"]
    in_group = {g: (group == g).to_numpy() for g in groups}
    stay = bucket(enc["length_of_stay_days"], STAY_BUCKETS)
    age_group = bucket(band_midpoint_years(enc["age_band"]), AGE_GROUP_EDGES)
    last = enc["_is_last"].to_numpy()
    labels = enc.loc[enc["eligible"].astype(bool), "readmitted_30d"].dropna().astype(bool)

    def stay_tables(name: str) -> dict[str, dict[str, list]]:
        pooled = merged_bins(enc[name])
        return {cell_key(g, k): or_fallback(merged_bins(enc.loc[in_group[g] & (stay == k), name]),
                                            or_fallback(merged_bins(enc.loc[in_group[g], name]), pooled))
                for g in groups for k in range(len(STAY_BUCKETS))}

    def prior_tables(rows: np.ndarray) -> dict[str, Any]:
        visits = enc.loc[rows]
        inpatient = bucket(visits["prior_inpatient_visits"], INPATIENT_BUCKETS)
        tables: dict[str, Any] = {"prior_inpatient_visits": merged_bins(visits["prior_inpatient_visits"])}
        for name in ("prior_emergency_visits", "prior_outpatient_visits"):
            pooled = merged_bins(visits[name])
            tables[name] = {str(k): or_fallback(merged_bins(visits.loc[inpatient == k, name]), pooled)
                            for k in range(len(INPATIENT_BUCKETS))}
        return tables

    def disposition_tables(rows: np.ndarray, exclude: tuple[str, ...]) -> dict[str, dict[str, list]]:
        # Required in the canonical schema (uploads without it are rejected): known values only.
        values = enc["discharge_disposition"]
        keep = rows & values.notna().to_numpy() & ~values.isin(exclude).to_numpy()
        pooled = level_table(values[keep])
        return {str(k): or_fallback(level_table(values[keep & (age_group == k)]), pooled)
                for k in range(len(AGE_GROUP_EDGES))}

    def code_tables(position: int) -> dict[str, dict[str, list]]:
        codes = enc["diagnoses"].map(lambda d: icd.normalize_code(d[position]) if len(d) > position else None)
        pooled = code_table(codes)
        return {g: or_fallback(code_table(codes[in_group[g]]), pooled) for g in groups}

    return {
        "format": 2,
        "min_cell": MIN_CELL,
        "encounters_per_patient": merged_bins(enc.groupby("patient_id", sort=False).size()),
        "categorical": {**{name: level_table(enc[name]) for name in CATEGORICAL_COLUMNS},
                        "principal_group": level_table(group.dropna())},
        "admission": level_table((_none_if_missing(t), _none_if_missing(s))
                                 for t, s in zip(enc["admission_type"], enc["admission_source"])),
        # A patient who died or went to hospice has no later stay: those only end a history.
        "disposition": {"not_last": disposition_tables(~last, TERMINAL_DISPOSITIONS),
                        "last": disposition_tables(last, ())},
        "length_of_stay_days": {g: merged_bins(enc.loc[in_group[g], "length_of_stay_days"]) for g in groups},
        "stay_numeric": {name: stay_tables(name) for name in STAY_COLUMNS},
        "prior_visits": {"first": prior_tables((enc["_position"] == 0).to_numpy()),
                         "later": prior_tables((enc["_position"] > 0).to_numpy())},
        "diagnosis_count": merged_bins(enc["diagnoses"].map(len).loc[lambda n: n > 0]),
        "codes": {f"dx_{i + 1}": code_tables(i) for i in range(3)},
        "medications": medication_tables(enc["medication_changes"]),
        "readmission": fit_readmission(enc, group),
        "rates": {"readmitted_30d": round(float(labels.mean()), 4),
                  "ineligible": round(float((~enc["eligible"].astype(bool)).mean()), 4),
                  "patients_per_encounter": round(float(last.mean()), 4)},
    }


def medication_tables(changes: pd.Series) -> dict[str, dict[str, list]]:
    """Per drug, frequencies of no/steady/up/down at discharge; drugs left with only "no" are dropped."""
    tables = {}
    for drug in diabetes130.DRUG_COLUMNS:
        prefix = f"{drug}:"
        status = changes.map(lambda items, prefix=prefix: next(
            (i[len(prefix):] for i in items if i.startswith(prefix)), "no"))
        table = level_table(status)
        if any(level != "no" for level in table["levels"]):
            tables[drug] = table
    return tables


def read_canonical(path: Path) -> pd.DataFrame:
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in diabetes130.REQUIRED_COLUMNS if c not in raw.columns]
    if missing:
        raise SystemExit(f"{path}: not a Diabetes 130 file, missing columns {missing}")
    return diabetes130.to_canonical(raw)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, required=True, help="diabetic_data.csv (or the dev subset)")
    parser.add_argument("--output", type=Path, default=Path("core/data/synthetic_profile.json"))
    args = parser.parse_args(argv)
    profile = fit_profile(read_canonical(args.input))
    profile["fitted_from"] = {"source": diabetes130.SOURCE, "file": args.input.name,
                              "sha256": hashlib.sha256(args.input.read_bytes()).hexdigest()}
    args.output.write_text(json.dumps(profile, indent=1, sort_keys=True) + "\n")
    model = profile["readmission"]
    print(f"wrote {args.output}: readmission model on {model['encounters']} encounters, "
          f"in-sample AUROC {model['auroc_in_sample']}, rates {profile['rates']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
