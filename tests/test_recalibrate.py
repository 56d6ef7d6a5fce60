"""Recalibration under the change plan (`readmit recalibrate`) and promotion (`readmit promote`): only the
calibration changes, the change is recorded and checked, and serving switches only when promoted."""
from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

import pytest

from cli import app_commands
from cli.main import main
from core import metrics
from core.config import get_settings
from core.encoding import encode
from core.errors import UserError
from models.inference import ReadmitPredictor
from models.manifest import sha256_file, verify_manifest
from serving import monitoring
from tests.test_monitoring import AS_OF, SHIFT, Logged, logged_warehouse


@pytest.fixture(scope="module")
def drift(tmp_path_factory) -> Logged:
    return logged_warehouse(tmp_path_factory.mktemp("recalibrate"), 20_000, seed=7, scenario="drift")


@pytest.fixture()
def database(drift, monkeypatch, tmp_path):
    monkeypatch.setenv("READMIT_DATABASE_URL", drift.url)
    monkeypatch.setenv("READMIT_PROMOTION_FILE", str(tmp_path / "promoted_model.json"))
    monkeypatch.delenv("READMIT_MODEL_DIR", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def post_shift_ece(root: Path, model_dir: Path) -> tuple[float, int]:
    """ECE of a model folder on the pooled matured outcomes after the shift, and how many there are."""
    predictor = ReadmitPredictor.load(model_dir)
    rows = monitoring.recalibration_rows(str(root), SHIFT, None, AS_OF)
    risk = predictor.calibrate(predictor.raw_probability(encode(rows, predictor.preprocessing)))
    return metrics.ece(rows["label"].to_numpy(), risk), len(rows)


def test_recalibration_after_the_shift_brings_ece_under_002(drift, database, tmp_path, capsys):
    out = tmp_path / "recalibrated"
    assert main(["recalibrate", "--warehouse", str(drift.root), "--model", str(drift.model_dir), "--since",
                 SHIFT.isoformat(), "--as-of", AS_OF.isoformat(), "--out", str(out), "--reason",
                 "calibration alert of the monitoring report", "--by", "quality team"]) == 0
    assert "readmit promote" in capsys.readouterr().err
    before, n = post_shift_ece(drift.root, drift.model_dir)
    after, _ = post_shift_ece(drift.root, out)
    assert n >= 3000
    assert before > 0.03 and after < 0.02, (before, after)


def test_only_the_calibration_changes_and_the_change_is_recorded(drift, database, tmp_path):
    out = tmp_path / "recalibrated"
    record = monitoring.recalibrate(str(drift.root), drift.model_dir, SHIFT, out, as_of=AS_OF, reason="drift",
                                    by="qa")
    for name in ("model.safetensors", "config.json", "preprocessing.json", "thresholds.json"):
        assert sha256_file(out / name) == sha256_file(drift.model_dir / name), name
    assert sha256_file(out / "calibration.json") != sha256_file(drift.model_dir / "calibration.json")
    assert verify_manifest(out) != verify_manifest(drift.model_dir)
    assert record["to_version"] != record["from_version"]
    changes = [json.loads(line) for line in (out / "changes.jsonl").read_text().splitlines()]
    assert changes[-1]["reason"] == "drift" and changes[-1]["by"] == "qa" and changes[-1]["accepted"]
    assert set(changes[-1]["plan"]) == {"what_may_change", "when", "data", "how_checked", "release"}
    assert changes[-1]["after_held_out"]["ece"] < changes[-1]["before"]["ece"]
    assert len(changes) == 2, "the go-live recalibration is recorded before this one"
    card = (out / "README.md").read_text()
    assert "## Recalibration" in card and "Why: drift (by qa)" in card
    reference = json.loads((out / "monitoring_reference.json").read_text())
    original = json.loads((drift.model_dir / "monitoring_reference.json").read_text())
    assert reference["features"] == original["features"] and reference["risk"]["mean"] > original["risk"]["mean"]


def test_nothing_is_written_when_the_plan_is_not_met(drift, database, tmp_path):
    out = tmp_path / "too-soon"
    with pytest.raises(UserError, match="the change plan needs"):
        monitoring.recalibrate(str(drift.root), drift.model_dir, AS_OF - dt.timedelta(days=40), out, as_of=AS_OF,
                               reason="too soon")
    assert not out.exists()
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "something").write_text("x")
    with pytest.raises(UserError, match="not empty"):
        monitoring.recalibrate(str(drift.root), drift.model_dir, SHIFT, taken, as_of=AS_OF, reason="x")


def test_serving_switches_only_when_promoted(drift, database, tmp_path):
    args = argparse.Namespace(warehouse=None, model=None)
    assert "READMIT_MODEL_DIR" not in app_commands._environment(args), "nothing promoted: the configured default"
    out = tmp_path / "recalibrated"
    monitoring.recalibrate(str(drift.root), drift.model_dir, SHIFT, out, as_of=AS_OF, reason="drift")
    assert "READMIT_MODEL_DIR" not in app_commands._environment(args), "recalibrated is not promoted"
    assert main(["promote", str(out), "--by", "quality lead"]) == 0
    assert app_commands._environment(args)["READMIT_MODEL_DIR"] == str(out.resolve())
    record = monitoring.promotion_record()
    assert record["promoted_by"] == "quality lead" and record["previous"] is None
    assert record["model_version"] == ReadmitPredictor.load(out).model_version
    assert main(["promote", str(drift.model_dir)]) == 0
    history = (Path(monitoring.promotion_file()).with_name("model_promotions.jsonl")).read_text().splitlines()
    assert len(history) == 2 and json.loads(history[-1])["previous"]["model_dir"] == str(out.resolve())


def test_a_changed_folder_cannot_be_promoted(drift, database, tmp_path):
    out = tmp_path / "recalibrated"
    monitoring.recalibrate(str(drift.root), drift.model_dir, SHIFT, out, as_of=AS_OF, reason="drift")
    calibration = json.loads((out / "calibration.json").read_text())
    calibration["params"]["b"] += 1.0
    (out / "calibration.json").write_text(json.dumps(calibration))
    with pytest.raises(UserError, match="differs from manifest.json"):
        monitoring.promote(out)
    assert monitoring.promotion_record() is None
