"""A model folder proves itself: manifest.json seals every file that can change a score, the weights load
strictly, calibration and thresholds are validated, and every refusal is one line naming the file.

Each tampering a tester found is applied to a copy of the shipped champion and must be refused at load;
the content checks must also hold on their own, after the tampered folder is resealed."""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from cli.main import main as readmit
from core.encoding import EncodedBatch
from models.calibration import Calibrator
from models.inference import ReadmitPredictor
from models.manifest import MANIFEST_FILE, ModelFolderError, covered_files, verify_manifest, write_manifest

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parent.parent
CHAMPION = REPO / "models" / "champion"
BIAS = "classifier.bias"


def random_batch(config, n: int = 200, seed: int = 3) -> EncodedBatch:
    """Encoded rows within the champion's vocabularies (the model's inputs, no feature pipeline needed)."""
    rng = np.random.default_rng(seed)
    n_numeric = len(config.numeric_feature_names)
    missing = rng.random((n, n_numeric)) < 0.2
    numeric = np.where(missing, 0.0, rng.normal(size=(n, n_numeric))).astype(np.float32)
    categorical = np.stack([rng.integers(0, c, n) for c in config.categorical_cardinalities], axis=1)
    codes = np.stack([rng.integers(0, v, (n, config.n_code_positions)) for v in config.code_vocab_sizes], axis=2)
    return EncodedBatch(numeric, missing, categorical.astype(np.int64), codes.astype(np.int64))


@pytest.fixture(scope="module")
def original():
    predictor = ReadmitPredictor.load(CHAMPION)
    return predictor, random_batch(predictor.config)


@pytest.fixture()
def folder(tmp_path) -> Path:
    return Path(shutil.copytree(CHAMPION, tmp_path / "champion"))


def tensor_range(path: Path, name: str) -> tuple[int, int]:
    """Byte range of a tensor in a safetensors file: an 8-byte little-endian header length, the JSON header,
    then the data, the header's `data_offsets` counting from the start of the data."""
    raw = path.read_bytes()
    (header_length,) = struct.unpack("<Q", raw[:8])
    start, end = json.loads(raw[8:8 + header_length])[name]["data_offsets"]
    return 8 + header_length + start, 8 + header_length + end


def edit_json(path: Path, change) -> None:
    state = json.loads(path.read_text())
    change(state)
    path.write_text(json.dumps(state, indent=1))


def flip_bias_byte(folder: Path) -> None:
    path = folder / "model.safetensors"
    _, end = tensor_range(path, BIAS)
    raw = bytearray(path.read_bytes())
    raw[end - 1] = 0x4F  # sign/exponent byte of the "readmitted" float32 bias: -0.03 becomes about +2e9
    path.write_bytes(bytes(raw))


def rename_tensor(folder: Path) -> None:
    tensors = load_file(folder / "model.safetensors")
    tensors[f"{BIAS}_renamed"] = tensors.pop(BIAS)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def reshape_tensor(folder: Path) -> None:
    tensors = load_file(folder / "model.safetensors")
    tensors[BIAS] = torch.zeros(3)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def add_layer(folder: Path) -> None:
    edit_json(folder / "config.json", lambda c: c.update(num_hidden_layers=c["num_hidden_layers"] + 1))


def delete_calibration(folder: Path) -> None:
    (folder / "calibration.json").unlink()


def calibration_nan(folder: Path) -> None:
    edit_json(folder / "calibration.json", lambda c: c["params"].update(a=float("nan")))


def break_calibration_json(folder: Path) -> None:
    path = folder / "calibration.json"
    path.write_text(path.read_text()[:100])


def unknown_calibration_method(folder: Path) -> None:
    edit_json(folder / "calibration.json", lambda c: c.update(method="magic"))


def tiers_not_increasing(folder: Path) -> None:
    def swap(t):
        t["tiers"][0]["min_risk"], t["tiers"][1]["min_risk"] = t["tiers"][1]["min_risk"], t["tiers"][0]["min_risk"]
    edit_json(folder / "thresholds.json", swap)


def quantile_out_of_range(folder: Path) -> None:
    edit_json(folder / "thresholds.json", lambda t: t["risk_quantiles"]["values"].__setitem__(-1, 1.5))


def extra_weights_file(folder: Path) -> None:
    shutil.copyfile(folder / "model.safetensors", folder / "model-00002-of-00002.safetensors")


def delete_manifest(folder: Path) -> None:
    (folder / MANIFEST_FILE).unlink()


def edit_manifest_hash(folder: Path) -> None:
    edit_json(folder / MANIFEST_FILE, lambda m: m["files"]["thresholds.json"].update(sha256="0" * 64))


# tampering -> the file the refusal must name
TAMPERING = {
    flip_bias_byte: "model.safetensors", rename_tensor: "model.safetensors", add_layer: "config.json",
    delete_calibration: "calibration.json", calibration_nan: "calibration.json",
    break_calibration_json: "calibration.json", tiers_not_increasing: "thresholds.json",
    extra_weights_file: "model-00002-of-00002.safetensors", delete_manifest: MANIFEST_FILE,
    edit_manifest_hash: MANIFEST_FILE,
}
# refused by the content checks alone, even after the tampered folder is resealed
CONTENT = {
    rename_tensor: "classifier.bias_renamed",
    reshape_tensor: "shape mismatches: classifier.bias [3] in the file, [2] in config.json",
    add_layer: "missing tensors: layers.2.", delete_calibration: "calibration.json: missing",
    calibration_nan: "calibration.json: invalid calibration (a must be a finite number",
    break_calibration_json: "calibration.json: not valid JSON",
    unknown_calibration_method: "unknown calibration method 'magic'",
    tiers_not_increasing: "thresholds.json: invalid thresholds (tier cut-offs must increase",
    quantile_out_of_range: "thresholds.json: invalid thresholds (risk_quantiles values[1000]",
}


def refusal(folder: Path) -> str:
    with pytest.raises(ModelFolderError) as caught:
        ReadmitPredictor.load(folder)
    message = str(caught.value)
    assert "\n" not in message and str(folder) in message
    return message


@pytest.mark.parametrize("tamper", TAMPERING, ids=lambda f: f.__name__)
def test_tampered_folder_is_refused_with_one_line_naming_the_file(folder, tamper):
    tamper(folder)
    assert f"{folder}/{TAMPERING[tamper]}" in refusal(folder)


@pytest.mark.parametrize("tamper", CONTENT, ids=lambda f: f.__name__)
def test_content_checks_hold_without_the_manifest(folder, tamper):
    tamper(folder)
    write_manifest(folder)
    assert CONTENT[tamper] in refusal(folder)


def test_untouched_copy_loads_and_scores_identically(folder, original):
    predictor, batch = original
    copy = ReadmitPredictor.load(folder)
    assert copy.model_version == predictor.model_version
    assert np.array_equal(copy.logits(batch), predictor.logits(batch))
    assert np.array_equal(copy.risk(batch), predictor.risk(batch))
    assert copy.tier(copy.risk(batch)) == predictor.tier(predictor.risk(batch))


def test_records_and_hidden_files_are_not_sealed(folder, original):
    (folder / "README.md").write_text("# edited card\n")
    edit_json(folder / "metrics.json", lambda m: m.update(note="edited"))
    (folder / "training.json").unlink()
    (folder / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    (folder / "figures").mkdir(exist_ok=True)
    (folder / "figures" / "roc.json").write_text("{}")
    assert ReadmitPredictor.load(folder).model_version == original[0].model_version


def test_champion_manifest_version_is_in_metrics_and_card(original):
    predictor = original[0]
    manifest = json.loads((CHAMPION / MANIFEST_FILE).read_text())
    assert sorted(manifest["files"]) == covered_files(CHAMPION) == [
        "calibration.json", "config.json", "explain_background.safetensors", "model.safetensors",
        "preprocessing.json", "thresholds.json"]
    assert predictor.model_version == f"readmit-transformer@{verify_manifest(CHAMPION)}"
    metrics = json.loads((CHAMPION / "metrics.json").read_text())
    assert metrics["model_version"] == metrics["model_info"]["transformer"]["model_version"] == predictor.model_version
    assert metrics["models"]["transformer"]["overall"]["auroc"] > 0.6  # the evaluated numbers are still there
    card = (CHAMPION / "README.md").read_text()
    assert f"Model version `{predictor.model_version}`" in card and "Stale" not in card


def test_flipped_bias_byte_changes_every_risk_so_only_the_manifest_stops_it(folder, original):
    predictor, batch = original
    flip_bias_byte(folder)
    tampered = ReadmitPredictor.load(folder, check_manifest=False)
    with np.errstate(over="ignore"):
        assert np.all(tampered.risk(batch) > 0.999) and np.all(predictor.risk(batch) < 0.9)
    assert "model.safetensors: differs from manifest.json" in refusal(folder)


def test_recalibrating_a_sealed_folder_reseals_it(folder, original):
    predictor, batch = original
    Calibrator("platt", {"a": 1.0, "b": -1.0}).save(folder, {"chosen": "platt"})
    recalibrated = ReadmitPredictor.load(folder)
    assert recalibrated.model_version != predictor.model_version
    assert not np.allclose(recalibrated.risk(batch), predictor.risk(batch))
    with pytest.raises(ValueError, match="finite"):
        Calibrator("platt", {"a": float("nan"), "b": 0.0}).save(folder)


def test_recalibration_never_seals_earlier_tampering(folder):
    flip_bias_byte(folder)
    before = (folder / "calibration.json").read_text()
    with pytest.raises(ModelFolderError, match="model.safetensors: differs"):
        Calibrator("platt", {"a": 1.0, "b": -1.0}).save(folder)
    assert (folder / "calibration.json").read_text() == before


def test_seal_after_a_deliberate_change_and_never_on_broken_content(folder, original, capsys):
    edit_json(folder / "thresholds.json", lambda t: t["tiers"][0].update(description="top 5%, reviewed"))
    refusal(folder)
    assert readmit(["seal", "--model", str(folder)]) == 0
    sealed = ReadmitPredictor.load(folder)
    assert sealed.model_version != original[0].model_version
    card = (folder / "README.md").read_text()
    assert f"Model version `{sealed.model_version}`" in card and "**Stale**" in card  # metrics measured the old one
    manifest = (folder / MANIFEST_FILE).read_text()
    add_layer(folder)
    capsys.readouterr()
    assert readmit(["seal", "--model", str(folder)]) == 2
    assert "missing tensors" in capsys.readouterr().err
    assert (folder / MANIFEST_FILE).read_text() == manifest


def test_readmit_score_on_a_tampered_folder_prints_one_line_and_fails(folder, tmp_path):
    flip_bias_byte(folder)
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "score", "--input", str(REPO / "tests/fixtures/app/upload_one_bad_row.csv"),
         "--output", str(tmp_path / "out.csv"), "--model", str(folder), "--no-explain"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("readmit score: error: ")
    assert f"{folder}/model.safetensors: differs from manifest.json" in lines[0]
    assert not (tmp_path / "out.csv").exists()
