"""Apply the fitted preprocessing state to feature rows, exactly as training saw them.

The state is fitted once, on the training split, by the Spark ETL (`StringIndexer` labels,
numeric means and deviations) and saved as `preprocessing.json` in the warehouse and in every
model folder. This module only *applies* it, with numpy, so the scorer needs no Spark. A test checks
that these indices equal the Spark `PipelineModel`'s on the same rows.

Rules shared with the ETL:
- categorical: null -> MISSING_LEVEL; a level kept in training -> itself; anything else -> OTHER_LEVEL;
  then the StringIndexer index, with unseen labels in the extra "keep" bucket (index = len(labels)).
- numeric: transform (identity or log1p), standardize with training mean/std, clip to +-CLIP_Z;
  missing values become 0 with a separate missing flag (never silently 0 as a value).
- codes: per diagnosis position three ids (full code, category, chapter): 0 = no code,
  1 = code not seen in training, 2+ = vocabulary index.
"""
from __future__ import annotations

import json
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Union

import numpy as np
import pandas as pd

from core import icd
from core.features import (
    CATEGORICAL_NAMES,
    CODE_FEATURES,
    FEATURE_SPEC_VERSION,
    MISSING_LEVEL,
    NUMERIC_FEATURES,
    NUMERIC_NAMES,
    OTHER_LEVEL,
)

Features = Union[pd.DataFrame, Mapping[str, np.ndarray]]
"""Feature rows: `build_features`' DataFrame, or `first_stay_features`' numpy columns (no DataFrame)."""

PREPROCESSING_FILE = "preprocessing.json"
CLIP_Z = 5.0
CODE_PAD, CODE_UNKNOWN, CODE_OFFSET = 0, 1, 2
TRANSFORMS = {"identity": lambda x: x, "log1p": lambda x: np.log1p(np.clip(x, 0, None))}


def collapse_levels(values: pd.Series, kept: list[str] | set[str]) -> pd.Series:
    """Categorical values as the StringIndexer saw them: missing and rare levels made explicit."""
    kept_set = set(kept)
    return values.map(lambda v: MISSING_LEVEL if v is None or (isinstance(v, float) and np.isnan(v))
                      else (v if v in kept_set else OTHER_LEVEL))


@dataclass(frozen=True)
class Preprocessing:
    """Fitted state: numeric stats and categorical / code vocabularies."""
    numeric: dict[str, dict[str, Any]]
    categorical: dict[str, list[str]]
    codes: dict[str, list[str]]
    feature_spec_version: str = FEATURE_SPEC_VERSION

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> "Preprocessing":
        if state.get("feature_spec_version") != FEATURE_SPEC_VERSION:
            raise ValueError(f"preprocessing was fitted for feature spec {state.get('feature_spec_version')}, "
                             f"this code computes {FEATURE_SPEC_VERSION}: rerun `readmit etl`")
        return cls(numeric=state["numeric"], categorical={k: list(v["labels"]) for k, v in state["categorical"].items()},
                   codes=state["codes"], feature_spec_version=state["feature_spec_version"])

    @classmethod
    def load(cls, folder: str | Path) -> "Preprocessing":
        return cls.from_dict(json.loads((Path(folder) / PREPROCESSING_FILE).read_text()))

    def to_dict(self) -> dict[str, Any]:
        return {"feature_spec_version": self.feature_spec_version, "numeric": self.numeric,
                "categorical": {k: {"labels": v} for k, v in self.categorical.items()}, "codes": self.codes}

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / PREPROCESSING_FILE
        path.write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True))
        return path

    def cardinalities(self) -> list[int]:
        """Embedding sizes per categorical feature (labels + the keep bucket)."""
        return [len(self.categorical[name]) + 1 for name in CATEGORICAL_NAMES]

    def code_vocab_sizes(self) -> tuple[int, int, int]:
        return tuple(len(self.codes[key]) + CODE_OFFSET
                     for key in ("code_labels", "category_labels", "chapter_labels"))  # type: ignore[return-value]


@dataclass(frozen=True)
class EncodedBatch:
    numeric: np.ndarray          # float32 [n, n_numeric], standardized, 0 where missing
    numeric_missing: np.ndarray  # bool    [n, n_numeric]
    categorical: np.ndarray      # int64   [n, n_categorical]
    codes: np.ndarray            # int64   [n, n_code_positions, 3]

    def __len__(self) -> int:
        return self.numeric.shape[0]

    def take(self, rows: np.ndarray) -> "EncodedBatch":
        return EncodedBatch(self.numeric[rows], self.numeric_missing[rows], self.categorical[rows], self.codes[rows])


_LOOKUPS: dict[int, tuple[weakref.ref, dict[str, Any]]] = {}


def _lookups(prep: Preprocessing) -> dict[str, Any]:
    """Label -> index dictionaries of one `Preprocessing`, built once (it is frozen) and reused."""
    entry = _LOOKUPS.get(id(prep))
    if entry is not None and entry[0]() is prep:
        return entry[1]
    categorical = {}
    for name in CATEGORICAL_NAMES:
        labels = prep.categorical[name]
        categorical[name] = ({label: i for i, label in enumerate(labels)},
                             {label for label in labels if label not in (MISSING_LEVEL, OTHER_LEVEL)}, len(labels))
    codes = [{label: i + CODE_OFFSET for i, label in enumerate(prep.codes[key])}
             for key in ("code_labels", "category_labels", "chapter_labels")]
    numeric = []
    for spec in NUMERIC_FEATURES:
        stats = prep.numeric[spec.name]
        # a feature no training row recorded has no mean: its values are centred on 0 (the models never saw it)
        numeric.append((TRANSFORMS[stats["transform"]], stats["mean"] if stats["mean"] is not None else 0.0,
                        stats["std"] if stats["std"] and stats["std"] > 0 else 1.0))
    lookups = {"categorical": categorical, "codes": codes, "numeric": numeric}
    if len(_LOOKUPS) > 64:
        _LOOKUPS.clear()
    key = id(prep)
    _LOOKUPS[key] = (weakref.ref(prep, lambda _, key=key: _LOOKUPS.pop(key, None)), lookups)
    return lookups


def _row_count(features: Features) -> int:
    return len(features[NUMERIC_NAMES[0]])


def categorical_indices(features: Features, prep: Preprocessing) -> np.ndarray:
    lookups = _lookups(prep)["categorical"]
    columns = []
    for name in CATEGORICAL_NAMES:
        lookup, kept, unseen = lookups[name]
        values = features[name]
        if values.dtype == object:
            # collapse_levels + lookup, on plain Python values
            columns.append(np.fromiter(
                (lookup.get(MISSING_LEVEL if v is None or (isinstance(v, float) and np.isnan(v))
                            else (v if v in kept else OTHER_LEVEL), unseen) for v in values.tolist()),
                dtype=np.int64, count=len(values)))
        else:
            collapsed = collapse_levels(values, kept)
            columns.append(collapsed.map(lookup).fillna(unseen).to_numpy(dtype=np.int64))
    return np.stack(columns, axis=1) if columns else np.zeros((_row_count(features), 0), dtype=np.int64)


def numeric_matrix(features: Features, prep: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    columns = [features[name] for name in NUMERIC_NAMES]
    if all(column.dtype == np.float64 for column in columns):
        # same values and the same (column-major) layout as DataFrame.to_numpy below
        raw = np.array([np.asarray(column) for column in columns], dtype=np.float64).T
    else:
        raw = features[list(NUMERIC_NAMES)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    missing = np.isnan(raw)
    out = np.zeros_like(raw)
    for j, (transform, mean, std) in enumerate(_lookups(prep)["numeric"]):
        transformed = transform(raw[:, j])
        out[:, j] = np.clip((transformed - mean) / std, -CLIP_Z, CLIP_Z)
    out[missing] = 0.0
    return out.astype(np.float32), missing


def code_indices(features: Features, prep: Preprocessing) -> np.ndarray:
    vocabularies = _lookups(prep)["codes"]
    out = np.zeros((_row_count(features), len(CODE_FEATURES), 3), dtype=np.int64)
    for position, name in enumerate(CODE_FEATURES):
        for row, (code, chapter) in enumerate(zip(features[name].tolist(), features[f"{name}_chapter"].tolist())):
            if code is None or (isinstance(code, float) and np.isnan(code)):
                continue
            levels = (code, icd.category(code), chapter)
            out[row, position] = [vocab.get(level, CODE_UNKNOWN) for vocab, level in zip(vocabularies, levels)]
    return out


def encode(features: Features, prep: Preprocessing) -> EncodedBatch:
    """Feature rows (from `core.features.build_features` or `first_stay_features`) to model inputs."""
    numeric, missing = numeric_matrix(features, prep)
    return EncodedBatch(numeric=numeric, numeric_missing=missing,
                        categorical=categorical_indices(features, prep), codes=code_indices(features, prep))
