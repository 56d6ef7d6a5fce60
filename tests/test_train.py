"""`readmit train` end to end on a small synthetic warehouse (random feature rows written as Parquet in
the warehouse layout, encoded with the shipped model's Spark-fitted preprocessing state): the model folder's files, the
from_pretrained round trip, calibration, thresholds, tiers, percentiles and the model card.
A tiny search (hidden 32, 1-2 layers, 2 epochs): this checks the plumbing, not accuracy."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from transformers import AutoModelForSequenceClassification

import models  # noqa: F401
import models.train as train_module
from cli.main import build_parser
from core.errors import UserError
from models.card import render_card
from models.data import to_tensors
from models.inference import ReadmitPredictor
from models.train import TrainOptions, train

torch.set_num_threads(1)

from core.encoding import Preprocessing, encode  # noqa: E402
from core.features import (  # noqa: E402
    CATEGORICAL_NAMES,
    CODE_FEATURES,
    MISSING_LEVEL,
    NUMERIC_FEATURES,
    OTHER_LEVEL,
    OUTPUT_COLUMNS,
)
from core.warehouse import write_pointer  # noqa: E402

CODES = ["250.01", "250.02", "428", "414.01", "786", "V58", "996.81", "276", "401.9", "599"]
CHAPTERS = {"250": "endocrine", "428": "circulatory", "414": "circulatory", "786": "symptoms",
            "V58": "supplementary", "996": "injury", "276": "endocrine", "401": "circulatory", "599": "genitourinary"}


# The shipped model's fitted encoding state (fitted by the Spark ETL on Diabetes 130 training rows):
# tests use it rather than re-implementing the fit.
CHAMPION_PREPROCESSING = Preprocessing.load(Path(__file__).resolve().parent.parent / "models" / "champion")


def _common_levels(name: str, k: int = 4) -> list[str]:
    """The k most frequent real levels of a categorical feature (StringIndexer order is by frequency)."""
    return [v for v in CHAMPION_PREPROCESSING.categorical[name] if v not in (MISSING_LEVEL, OTHER_LEVEL)][:k]


def synthetic_features(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    data: dict[str, object] = {"encounter_id": [f"e{seed}-{i:05d}" for i in range(n)],
                               "patient_id": [f"p{seed}-{i // 2:05d}" for i in range(n)],
                               "source": ["synthetic"] * n, "eligible": rng.random(n) > 0.03}
    signal = np.zeros(n)
    for j, spec in enumerate(NUMERIC_FEATURES):
        values = rng.poisson(2.0, n).astype(float)
        values[rng.random(n) < 0.1] = np.nan
        data[spec.name] = values
        if j < 3:
            signal += np.nan_to_num(values, nan=2.0) - 2.0
    for name in CATEGORICAL_NAMES:
        levels = np.array(_common_levels(name) + [None], dtype=object)
        data[name] = levels[rng.integers(0, len(levels), n)]
    for name in CODE_FEATURES:
        codes = np.array(CODES + [None], dtype=object)[rng.integers(0, len(CODES) + 1, n)]
        data[name] = codes
        data[f"{name}_chapter"] = [CHAPTERS[c.split(".")[0]] if c else None for c in codes]
    signal += np.where(pd.Series(data["dx_1"]).eq("428").to_numpy(), 1.5, 0.0)
    label = rng.random(n) < 1 / (1 + np.exp(-(0.6 * signal - 2.0)))
    data["readmitted_30d"] = np.where(rng.random(n) < 0.02, None, label).astype(object)
    frame = pd.DataFrame(data)
    return frame[list(OUTPUT_COLUMNS)]


def make_warehouse(root: Path, sizes=(1500, 600, 600)) -> Path:
    frames = []
    for seed, (split, n) in enumerate(zip(("train", "validation", "test"), sizes)):
        frame = synthetic_features(n, seed)
        frame["split"] = split
        frames.append(frame)
    features = pd.concat(frames, ignore_index=True)
    table = root / "tables" / "features" / "v1"
    table.mkdir(parents=True)
    features.to_parquet(table / "part-00000.parquet", index=False)
    (table / "_manifest.json").write_text(json.dumps({"source": "synthetic test", "rows": len(features)}))
    prep_dir = root / "preprocessing" / "v1"
    prep_dir.mkdir(parents=True)
    CHAMPION_PREPROCESSING.save(prep_dir)
    write_pointer(root, {"tables": {"features": "v1"}, "preprocessing": "v1"})
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = make_warehouse(tmp_path_factory.mktemp("warehouse"))
    out = tmp_path_factory.mktemp("models") / "tiny"
    original = train_module.DEFAULT_TRIAL, train_module.SEARCH_SPACE
    train_module.DEFAULT_TRIAL = {"hidden_size": 32, "num_hidden_layers": 2, "learning_rate": 2e-3,
                                  "dropout": 0.1, "weight_decay": 0.01}
    train_module.SEARCH_SPACE = {"hidden_size": [32], "num_hidden_layers": [1], "learning_rate": [1e-3],
                                 "dropout": [0.0], "weight_decay": [0.0]}
    try:
        summary = train(TrainOptions(warehouse=str(root), out=str(out), time_budget_minutes=5, seed=7,
                                     max_epochs=2, n_trials=2, batch_size=256))
    finally:
        train_module.DEFAULT_TRIAL, train_module.SEARCH_SPACE = original
    return root, out, summary


def test_model_folder_has_hugging_face_layout_and_no_pickles(trained):
    _, out, summary = trained
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessing.json", "calibration.json", "thresholds.json",
            "training.json", "README.md"} <= names
    assert not [p for p in out.rglob("*") if p.suffix in (".pkl", ".pickle", ".bin", ".pt")]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".tiny")]  # staging cleaned up
    assert len(summary["search"]["trials"]) == 2
    assert summary["data"]["splits"]["train"]["rows"] > 1000
    assert summary["data"]["features_manifest"]["source"] == "synthetic test"
    training = json.loads((out / "training.json").read_text())
    assert training["chosen_trial"] in (0, 1) and training["hyperparameters"]["best_epoch"] in (1, 2)


def test_only_eligible_labelled_rows_are_used(trained):
    root, _, summary = trained
    frame = pd.read_parquet(next((root / "tables" / "features" / "v1").glob("*.parquet")))
    expected = frame[(frame.split == "train") & frame.eligible & frame.readmitted_30d.notna()]
    assert summary["data"]["splits"]["train"]["rows"] == len(expected)


def test_from_pretrained_restores_identical_outputs(trained):
    root, out, _ = trained

    features = synthetic_features(50, seed=11)
    predictor = ReadmitPredictor.load(out)
    batch = encode(features, predictor.preprocessing)
    reloaded = AutoModelForSequenceClassification.from_pretrained(out).eval()
    with torch.no_grad():
        direct = reloaded(**to_tensors(batch)).logits.numpy()
    assert np.array_equal(direct, predictor.logits(batch))
    again = ReadmitPredictor.load(out)
    assert np.array_equal(predictor.risk(batch), again.risk(batch))
    assert predictor.model_version.startswith("readmit-transformer@") and predictor.model_version == again.model_version


def test_predictor_risk_tiers_and_percentiles(trained):
    _, out, _ = trained
    predictor = ReadmitPredictor.load(out)
    batch = encode(synthetic_features(200, seed=12), predictor.preprocessing)
    raw = predictor.raw_probability(batch)
    risk = predictor.risk(batch)
    assert risk.shape == (200,) and np.all((risk >= 0) & (risk <= 1))
    order = np.argsort(raw)
    assert np.all(np.diff(risk[order]) >= -1e-12)  # calibration keeps the ranking
    tiers = predictor.tier(risk)
    assert set(tiers) <= {"Very high", "High", "Medium", "Low"}
    pct = predictor.percentile(risk)
    assert np.all((pct >= 0) & (pct <= 100))
    assert np.all(np.diff(pct[np.argsort(risk)]) >= -1e-9)
    assert predictor.tier([1.0])[0] == "Very high" and predictor.tier([0.0])[0] == "Low"
    assert predictor.percentile([1.0])[0] == 100.0 and predictor.percentile([-1.0])[0] == 0.0


def test_thresholds_capacity_f1_and_tiers(trained):
    _, out, _ = trained
    thresholds = json.loads((out / "thresholds.json").read_text())
    capacity = {c["top_percent"]: c for c in thresholds["capacity"]}
    assert set(capacity) == {5, 10, 20, 30}
    cutoffs = [capacity[k]["risk_cutoff"] for k in (5, 10, 20, 30)]
    assert cutoffs == sorted(cutoffs, reverse=True)
    assert [t["name"] for t in thresholds["tiers"]] == ["Very high", "High", "Medium", "Low"]
    tier_cutoffs = [t["min_risk"] for t in thresholds["tiers"]]
    assert tier_cutoffs == sorted(tier_cutoffs, reverse=True)
    assert 0 < thresholds["best_f1"]["f1"] <= 1
    values = thresholds["risk_quantiles"]["values"]
    assert values == sorted(values)
    calibration = json.loads((out / "calibration.json").read_text())
    assert calibration["method"] in ("temperature", "platt", "isotonic")
    assert calibration["selection"]["chosen"] == calibration["method"]


def test_model_card_has_metadata_and_sections(trained):
    _, out, _ = trained
    text = (out / "README.md").read_text()
    assert text.startswith("---\n")
    metadata = yaml.safe_load(text.split("---\n")[1])
    assert metadata["license"] == "cc-by-4.0" and "model-index" in metadata and metadata["datasets"]
    assert metadata["model-index"][0]["results"][0]["metrics"]
    for section in ("## Intended use and users", "## Data and licence", "## Label definition and exclusions",
                    "## Metrics", "## Subgroups", "## Calibration", "## Limitations", "## How to reproduce",
                    "Strack", "CC BY 4.0"):
        assert section in text


def test_card_renders_metrics_json_when_present(trained, tmp_path):
    _, out, _ = trained

    folder = tmp_path / "m"
    shutil.copytree(out, folder)
    evaluation = {"overall": {"n": 100, "auroc": 0.7, "auroc_ci": [0.65, 0.75], "auprc": 0.2, "brier": 0.09,
                              "ece": 0.01, "slope": 1.0, "intercept": 0.0},
                  "reliability": [{"mean_predicted": 0.1, "observed": 0.11, "n": 10}],
                  "subgroups": {"sex": [{"level": "Female", "n": 60, "positives": 7, "auroc": 0.71,
                                         "auroc_ci": [0.6, 0.8], "ece": 0.02, "small": False}]}}
    (folder / "metrics.json").write_text(json.dumps({"test": {"transformer": evaluation,
                                                              "lace": {"overall": {"n": 100, "auroc": 0.58}}}}))
    text = render_card(folder)
    assert "0.700 (0.650–0.750)" in text and "test/lace" in text and "Female" in text


def test_train_command_is_registered():
    args = build_parser().parse_args(["train", "--warehouse", "W", "--out", "D", "--time-budget-minutes", "3",
                                      "--seed", "5", "--max-epochs", "4"])
    assert args.command == "train" and args.time_budget_minutes == 3 and args.seed == 5 and args.max_epochs == 4
    assert callable(args.handler)


def test_train_without_warehouse_is_a_clear_user_error(tmp_path):
    with pytest.raises(UserError, match="readmit etl"):
        train(TrainOptions(warehouse=str(tmp_path / "none"), out=str(tmp_path / "out")))


def test_card_renders_evaluate_report_layout(trained, tmp_path):
    _, out, _ = trained

    folder = tmp_path / "m2"
    shutil.copytree(out, folder)
    report = {"split": "test", "models": {
        "transformer": {"overall": {"n": 10, "auroc": 0.69, "auroc_ci": [0.67, 0.71], "ece": 0.01}, "subgroups": {}},
        "lace": {"overall": {"n": 10, "auroc": 0.58, "auroc_ci": [0.56, 0.6]}}}, "comparison": [{"model": "x"}]}
    (folder / "metrics.json").write_text(json.dumps(report))
    text = render_card(folder)
    assert "| transformer | 10 | 0.690 (0.670–0.710)" in text and "| lace | 10 | 0.580" in text
    assert "`test` split" in text and "value: 0.69" in text
