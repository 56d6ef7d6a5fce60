"""The shipped champion folder (models/champion): complete, small, no pickles, loads through the Auto
classes and the predictor with identical outputs. Checks the artefact, not its accuracy (that is
`readmit evaluate`'s job)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification

import models  # noqa: F401
from core.encoding import encode
from models.data import to_tensors
from models.inference import ReadmitPredictor
from tests.test_train import synthetic_features

torch.set_num_threads(1)

CHAMPION = Path(__file__).resolve().parent.parent / "models" / "champion"
REQUIRED = ("config.json", "model.safetensors", "preprocessing.json", "calibration.json", "thresholds.json",
            "training.json", "README.md")


def test_champion_folder_is_complete_small_and_pickle_free():
    for name in REQUIRED:
        assert (CHAMPION / name).exists(), f"models/champion/{name} missing"
    assert (CHAMPION / "model.safetensors").stat().st_size < 10 * 1024 * 1024
    assert not [p for p in CHAMPION.rglob("*") if p.suffix in (".pkl", ".pickle", ".bin", ".pt", ".joblib")]
    config = json.loads((CHAMPION / "config.json").read_text())
    assert config["model_type"] == "readmit-transformer"
    training = json.loads((CHAMPION / "training.json").read_text())
    assert training["search"]["trials"] and training["data"]["splits"]["train"]["rows"] > 0


def test_champion_loads_with_identical_outputs_and_scores_rows():


    predictor = ReadmitPredictor.load(CHAMPION)
    assert not predictor.model.training and torch.get_num_threads() == 1
    features = synthetic_features(300, seed=5)
    batch = encode(features, predictor.preprocessing)
    reloaded = AutoModelForSequenceClassification.from_pretrained(CHAMPION).eval()
    with torch.no_grad():
        assert np.array_equal(reloaded(**to_tensors(batch)).logits.numpy(), predictor.logits(batch))
    raw, risk = predictor.raw_probability(batch), predictor.risk(batch)
    assert np.all(np.diff(risk[np.argsort(raw)]) >= -1e-12)
    assert set(predictor.tier(risk)) <= {"Very high", "High", "Medium", "Low"}
    assert predictor.model_version.startswith("readmit-transformer@")
