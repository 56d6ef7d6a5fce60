"""`readmit evaluate` end to end on a tiny warehouse (real Diabetes 130 rows) with a stub predictor.

The stub stands in for the trained transformer so this test does not depend on a trained model:
it encodes rows with `core.encoding.encode` exactly as the real predictor does and returns a fixed
function of the encoded inputs.
"""
from __future__ import annotations

import json
import zlib

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

import models.evaluate as evaluate_module
from cli.main import main
from core import icd
from core.encoding import EncodedBatch, Preprocessing, encode
from core.errors import UserError
from core.features import CATEGORICAL_NAMES, NUMERIC_FEATURES, NUMERIC_NAMES, build_features
from core.lace import LaceModel, lace_score
from core.sources.diabetes130 import to_canonical
from core.warehouse import write_pointer
from models.evaluate import decision_thresholds, evaluate, format_table
from serving.figures import all_figures
from tests.test_card import headline as card_headline


class StubPredictor:
    model_version = "stub-1"

    def __init__(self, preprocessing: Preprocessing):
        self.preprocessing = preprocessing
        self.thresholds = {"best_f1": {"risk_cutoff": 0.15}, "capacity": [{"top_percent": 10, "risk_cutoff": 0.2}]}

    def risk(self, batch: EncodedBatch) -> np.ndarray:
        inpatient = batch.numeric[:, NUMERIC_NAMES.index("prior_inpatient_visits")]
        los = batch.numeric[:, NUMERIC_NAMES.index("length_of_stay_days")]
        return 1 / (1 + np.exp(-(-2.2 + 0.5 * inpatient + 0.1 * los)))


@pytest.fixture(scope="module")
def tiny_warehouse(tmp_path_factory, diabetes_csv):
    root = tmp_path_factory.mktemp("warehouse")
    raw = pd.read_csv(diabetes_csv, dtype=str, keep_default_na=False, nrows=3000)
    features = build_features(to_canonical(raw))
    bucket = features["patient_id"].map(lambda pid: zlib.crc32(pid.encode()) % 10)
    features["split"] = np.select([bucket < 6, bucket < 8], ["train", "validation"], "test")
    folder = root / "tables" / "features" / "v1"
    folder.mkdir(parents=True)
    features.to_parquet(folder / "part-0.parquet", index=False)
    write_pointer(root, {"tables": {"features": "v1"}})
    train = features[features["split"] == "train"]
    prep = Preprocessing(
        numeric={s.name: {"transform": s.transform, "mean": 0.0, "std": 1.0} for s in NUMERIC_FEATURES},
        categorical={n: ["__missing__", "__other__"] + sorted(train[n].dropna().unique().tolist())
                     for n in CATEGORICAL_NAMES},
        codes={"code_labels": [], "category_labels": [], "chapter_labels": list(icd.CHAPTERS)})
    return root, features, StubPredictor(prep)


def _evaluable(features: pd.DataFrame, split: str) -> pd.DataFrame:
    rows = features[(features["split"] == split) & features["eligible"] & features["readmitted_30d"].notna()]
    return rows.sort_values("encounter_id")


def test_evaluate_writes_metrics_the_figures_are_drawn_from(tmp_path, tiny_warehouse):
    root, features, predictor = tiny_warehouse
    test_rows = _evaluable(features, "test")
    # an "MLlib" model given as predictions for validation + test (here: a noisy copy of the LACE score)
    both = pd.concat([_evaluable(features, "validation"), test_rows])
    rng = np.random.default_rng(0)
    extra = pd.DataFrame({"encounter_id": both["encounter_id"], "patient_id": both["patient_id"],
                          "split": both["split"], "label": both["readmitted_30d"].astype(float),
                          "probability": 1 / (1 + np.exp(-(lace_score(both) / 5 - 3 + rng.normal(0, .3, len(both)))))})
    report = evaluate(root, tmp_path, split="test", extra={"mllib_toy": extra}, predictor=predictor, n_boot=200)

    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["comparison"] == report["comparison"]
    assert [r["model"] for r in saved["comparison"]] == ["transformer", "lace", "mllib_toy"]
    y = test_rows["readmitted_30d"].astype(bool).astype(int).to_numpy()
    assert saved["rows"]["evaluated"] == len(test_rows) and saved["rows"]["positives"] == int(y.sum())
    for model in saved["models"].values():
        assert model["overall"]["n"] == len(test_rows)            # same rows for every model

    expected = predictor.risk(encode(test_rows, predictor.preprocessing))
    assert saved["models"]["transformer"]["overall"]["auroc"] == pytest.approx(roc_auc_score(y, expected))
    assert saved["models"]["transformer"]["thresholds"]["best_f1"]["threshold"] == 0.15
    assert "validation_top_10pct" in saved["models"]["transformer"]["thresholds"]

    # LACE: probability map fitted on the labelled train rows only
    train = _evaluable(features, "train")
    lace_model = LaceModel.fit(lace_score(train), train["readmitted_30d"].astype(bool).astype(int))
    assert saved["model_info"]["lace"]["n_train"] == len(train)
    assert saved["models"]["lace"]["overall"]["brier"] == pytest.approx(
        np.mean((lace_model.predict_proba(lace_score(test_rows)) - y) ** 2))
    assert saved["models"]["lace"]["overall"]["auroc"] == pytest.approx(roc_auc_score(y, lace_score(test_rows)))

    assert {r["level"] for r in saved["models"]["transformer"]["subgroups"]["sex"]} <= {"Female", "Male", "unknown"}
    drawn = all_figures(saved["models"], primary="transformer", threshold="best_f1")
    for name in ("roc", "pr", "reliability", "capacity", "confusion_matrix", "subgroup_race_auroc"):
        assert len(drawn[name].data) >= 1
    assert "transformer" in format_table(report["comparison"])


def test_evaluate_refuses_baseline_missing_rows(tmp_path, tiny_warehouse):
    root, features, predictor = tiny_warehouse
    test_rows = _evaluable(features, "test").iloc[:-3]
    partial = pd.DataFrame({"encounter_id": test_rows["encounter_id"], "split": "test", "probability": 0.1})
    with pytest.raises(UserError, match="same rows"):
        evaluate(root, tmp_path, extra={"partial": partial}, predictor=predictor, n_boot=10, include_lace=False)


def test_cli_evaluate_prints_table_and_writes_files(tmp_path, tiny_warehouse, monkeypatch, capsys):
    root, _, predictor = tiny_warehouse
    monkeypatch.setattr(evaluate_module, "load_predictor", lambda model_dir: predictor)
    assert main(["evaluate", "--warehouse", str(root), "--model", str(tmp_path), "--skip-mllib",
                 "--n-boot", "50"]) == 0
    printed = capsys.readouterr().out
    assert "AUROC [95% CI]" in printed and "transformer" in printed and "lace" in printed
    assert (tmp_path / "metrics.json").exists() and not (tmp_path / "figures").exists()
    # the card is re-rendered from the metrics.json just written, so the two never disagree
    assert "re-rendered the model card" in printed
    overall = json.loads((tmp_path / "metrics.json").read_text())["models"]["transformer"]["overall"]
    assert card_headline((tmp_path / "README.md").read_text()) == {
        key: round(overall[key], 3) for key in ("auroc", "auprc", "brier", "ece")}


def test_cli_evaluate_elsewhere_leaves_the_model_card_alone(tmp_path, tiny_warehouse, monkeypatch, capsys):
    root, _, predictor = tiny_warehouse
    monkeypatch.setattr(evaluate_module, "load_predictor", lambda model_dir: predictor)
    model, out = tmp_path / "model", tmp_path / "out"
    model.mkdir()
    assert main(["evaluate", "--warehouse", str(root), "--model", str(model), "--out", str(out), "--skip-mllib",
                 "--n-boot", "20"]) == 0
    assert (out / "metrics.json").exists() and not (model / "README.md").exists() and not (out / "README.md").exists()
    assert "re-rendered" not in capsys.readouterr().out


def test_cli_evaluate_missing_warehouse_is_a_user_error(tmp_path, capsys):
    assert main(["evaluate", "--warehouse", str(tmp_path / "none"), "--model", str(tmp_path), "--skip-mllib"]) == 2
    assert "error" in capsys.readouterr().err


def test_decision_thresholds_read_the_model_folder_format():
    saved = {"basis": "calibrated risk on the validation split", "n_validation": 12620,
             "validation_prevalence": 0.111, "best_f1": {"risk_cutoff": 0.14, "f1": 0.3},
             "capacity": [{"top_percent": 5, "risk_cutoff": 0.24}, {"top_percent": 10, "risk_cutoff": 0.21}],
             "tiers": [{"name": "High", "min_risk": 0.17}, {"name": "Low", "min_risk": 0.0}]}
    assert decision_thresholds(saved) == {"best_f1": 0.14, "validation_top_5pct": 0.24,
                                          "validation_top_10pct": 0.21, "tier_High": 0.17}
    assert decision_thresholds({"flag": 0.2, "count": 7}) == {"flag": 0.2}
    assert decision_thresholds(None) == {}
