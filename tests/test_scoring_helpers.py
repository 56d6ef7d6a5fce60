"""Helpers (no tests) for the scoring tests: a tiny randomly initialised model behind the predictor interface.

The encoding state is fitted here with pandas the way `etl.encoding_fit` fits it with Spark (levels
with >= min_count rows kept, StringIndexer frequencyDesc order, numeric mean / sample std of the
transformed values), so the scoring tests need no Spark session.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from core import icd
from core.encoding import TRANSFORMS, Preprocessing, collapse_levels
from core.features import (FEATURE_SPEC_VERSION, CATEGORICAL_FEATURES, CATEGORICAL_NAMES, CODE_FEATURES, CODE_MIN_COUNT, NUMERIC_FEATURES,
                           NUMERIC_NAMES, build_features)
from core.sources import diabetes130



def read_diabetes(path: Path, nrows: int) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False, nrows=nrows)


def fit_preprocessing(features: pd.DataFrame) -> Preprocessing:
    numeric = {}
    for spec in NUMERIC_FEATURES:
        values = TRANSFORMS[spec.transform](pd.to_numeric(features[spec.name], errors="coerce").to_numpy(float))
        values = values[~np.isnan(values)]
        numeric[spec.name] = {"transform": spec.transform,
                              "mean": float(values.mean()) if len(values) else 0.0,
                              "std": float(values.std(ddof=1)) if len(values) > 1 else 1.0}
    categorical = {}
    for spec in CATEGORICAL_FEATURES:
        counts = features[spec.name].dropna().value_counts()
        kept = sorted(counts[counts >= spec.min_count].index)
        levels = collapse_levels(features[spec.name], kept).value_counts()
        categorical[spec.name] = sorted(levels.index, key=lambda v: (-levels[v], v))

    def frequent(columns):
        stacked = pd.concat([features[c] for c in columns]).dropna()
        counts = stacked.value_counts()
        counts = counts[counts >= CODE_MIN_COUNT]
        return sorted(counts.index, key=lambda v: (-counts[v], v))

    codes = {"code_labels": frequent(list(CODE_FEATURES)),
             "category_labels": frequent([f"{c}_category" for c in CODE_FEATURES]),
             "chapter_labels": list(icd.CHAPTERS)}
    return Preprocessing.from_dict({"feature_spec_version": FEATURE_SPEC_VERSION,
                                    "numeric": numeric, "categorical": {k: {"labels": v} for k, v in categorical.items()},
                                    "codes": codes})


def tiny_model(prep: Preprocessing, seed: int = 0, hidden: int = 16, layers: int = 1, scale: float = 0.2):
    import models  # noqa: F401  registers the Auto classes
    from models.configuration_readmit import ReadmitTransformerConfig
    from models.modeling_readmit import ReadmitTransformerForSequenceClassification
    torch.manual_seed(seed)
    config = ReadmitTransformerConfig(numeric_feature_names=NUMERIC_NAMES, categorical_feature_names=CATEGORICAL_NAMES,
                                      categorical_cardinalities=prep.cardinalities(),
                                      code_vocab_sizes=prep.code_vocab_sizes(), hidden_size=hidden,
                                      num_hidden_layers=layers, num_attention_heads=2, initializer_range=scale)
    model = ReadmitTransformerForSequenceClassification(config).eval()
    return model


THRESHOLDS = {"tiers": [{"name": "Very high", "min_risk": 0.4}, {"name": "High", "min_risk": 0.25},
                        {"name": "Medium", "min_risk": 0.12}, {"name": "Low", "min_risk": 0.0}],
              "risk_quantiles": {"values": [0.0, 0.1, 0.2, 0.4, 1.0], "probabilities": [0.0, 0.5, 0.8, 0.95, 1.0]}}


def make_predictor(prep: Preprocessing, seed: int = 0, **model_kwargs):
    """A real `models.inference.ReadmitPredictor` around a tiny random model."""
    from models.calibration import Calibrator
    from models.inference import ReadmitPredictor
    model = tiny_model(prep, seed=seed, **model_kwargs)
    return ReadmitPredictor(Path("."), model, model.config, prep, Calibrator("platt", {"a": 0.8, "b": -1.2}),
                            THRESHOLDS, f"tiny-test-model-{seed}")


def save_model_folder(predictor, folder: Path) -> Path:
    """Write a predictor as a model folder `ReadmitPredictor.load` reads."""
    import json
    folder.mkdir(parents=True, exist_ok=True)
    predictor.model.save_pretrained(str(folder))
    predictor.preprocessing.save(folder)
    predictor.calibrator.save(folder)
    (folder / "thresholds.json").write_text(json.dumps(predictor.thresholds))
    return folder


def tiny_setup(diabetes_csv: Path, nrows: int = 3000, seed: int = 0, **model_kwargs):
    """(raw rows, canonical encounters, features, preprocessing, predictor) from the real file's head."""
    raw = read_diabetes(diabetes_csv, nrows)
    canonical = diabetes130.to_canonical(raw)
    features = build_features(canonical)
    prep = fit_preprocessing(features)
    predictor = make_predictor(prep, seed=seed, **model_kwargs)
    return raw, canonical, features, prep, predictor
