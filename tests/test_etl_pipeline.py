"""The whole ETL job on small fixtures: tables, pointer, manifest, preprocessing, reruns, bad input."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from core.encoding import Preprocessing, encode
from core.errors import UserError
from core.warehouse import MANIFEST_FILE, POINTER_FILE, Warehouse, preprocessing_path, read_pointer, write_pointer
from etl.encoding_fit import PIPELINE_DIR
from etl.load import prune_versions
from etl.pipeline import EtlOptions, run_etl

pytestmark = pytest.mark.spark
FIXTURES = Path(__file__).parent / "fixtures" / "etl"
D130_SMALL = FIXTURES / "diabetes130_small.csv"
DISCHARGES = FIXTURES / "discharges_dates.csv"
ALL_TRAIN = (1.0, 0.0, 0.0)  # four patients: a hash split could leave train empty


def _options(warehouse: Path, source: str = "diabetes130", input_path: Path = D130_SMALL, **kw) -> EtlOptions:
    return EtlOptions(source=source, input=str(input_path), warehouse=str(warehouse), ratios=ALL_TRAIN, **kw)


@pytest.fixture(scope="module")
def warehouse(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("wh")
    summary = run_etl(_options(root), spark)
    return root, summary


def test_tables_pointer_and_counts(warehouse):
    root, summary = warehouse
    wh = Warehouse(str(root))
    assert wh.query("SELECT count(*) AS n FROM encounters")["n"][0] == 6
    features = wh.query("SELECT encounter_id, split, readmitted_30d FROM features ORDER BY encounter_id")
    assert list(features["encounter_id"]) == ["100", "200", "300", "600"]  # died / hospice left out
    assert set(features["split"]) == {"train"}
    assert list(features["readmitted_30d"]) == [True, False, False, False]
    pointer = read_pointer(root)
    assert pointer["tables"] == {"encounters": summary["version"], "features": summary["version"]}
    assert pointer["preprocessing"] == summary["version"]


def test_manifest_counts_every_step(warehouse):
    root, summary = warehouse
    manifest = Warehouse(str(root)).manifest("features")
    steps = {s["step"]: s for s in manifest["steps"]}
    assert steps["extract"]["rows_out"] == 7
    assert steps["deduplicate"]["dropped"] == {"duplicate encounter_id": 1}
    assert steps["features"]["dropped"] == {"ineligible: died": 1, "ineligible: hospice": 1}
    assert steps["features"]["rows_out"] == 4
    assert manifest["input_sha256"] and len(manifest["input_sha256"]) == 64
    assert manifest["feature_spec_version"] and manifest["spark"]["master"].startswith("local")
    assert manifest["split"]["counts"]["train"] == {"encounters": 4, "patients": 2, "labelled": 4, "positives": 1}


def test_preprocessing_state_loads_and_encodes(warehouse):
    root, _ = warehouse
    folder = preprocessing_path(root)
    prep = Preprocessing.load(folder)
    assert (folder / PIPELINE_DIR / "metadata").exists()
    features = Warehouse(str(root)).query("SELECT * FROM features")
    batch = encode(features, prep)
    assert len(batch) == 4 and batch.categorical.shape[1] == len(prep.categorical)
    # min_count 20 on 4 rows: every level collapses, but the missing/other levels are explicit
    assert set(prep.categorical["sex"]) <= {"__missing__", "__other__"}


def test_rerun_gives_identical_data(spark, warehouse):
    root, first = warehouse
    second = run_etl(_options(root), spark)["version"]
    for table in ("encounters", "features"):
        frames = [pd.read_parquet(root / "tables" / table / v) for v in (first["version"], second)]
        pd.testing.assert_frame_equal(frames[0], frames[1])  # same rows in the same order
    states = [(root / "preprocessing" / v / "preprocessing.json").read_text() for v in (first["version"], second)]
    assert states[0] == states[1]


def test_prune_keeps_the_newest_three_and_the_current_version(spark, tmp_path):
    for version in ("v1", "v2", "v3", "v4", "v5"):
        for folder in (tmp_path / "tables" / "features" / version, tmp_path / "preprocessing" / version):
            folder.mkdir(parents=True)
            (folder / MANIFEST_FILE).write_text("{}")  # complete versions: the manifest is written last
    write_pointer(tmp_path, {"tables": {"features": "v1"}, "preprocessing": "v5"})
    deleted = prune_versions(spark, str(tmp_path))
    assert sorted(p.name for p in (tmp_path / "tables" / "features").iterdir()) == ["v1", "v3", "v4", "v5"]
    assert sorted(p.name for p in (tmp_path / "preprocessing").iterdir()) == ["v3", "v4", "v5"]
    assert len(deleted) == 3


def test_discharges_source_end_to_end(spark, tmp_path):
    summary = run_etl(_options(tmp_path, "discharges", DISCHARGES), spark)
    wh = Warehouse(str(tmp_path))
    labels = wh.query("SELECT encounter_id, readmitted_30d FROM encounters ORDER BY encounter_id")
    labels = labels.astype(object).where(labels.notna(), None)
    assert dict(zip(labels["encounter_id"], labels["readmitted_30d"])) == {
        "E1": True, "E2": True, "E3": False, "E4": None, "E5": False, "E6": None, "E7": False, "E8": False}
    assert summary["tables"] == {"encounters": 8, "features": 7}


def _write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _small_lines() -> list[str]:
    return D130_SMALL.read_text().splitlines()


BAD_INPUTS = {
    "missing column": (lambda d: _write(d / "bad.csv", "\n".join(
        ",".join(p for i, p in enumerate(line.split(",")) if i != 1) for line in _small_lines()) + "\n"),
        "bad.csv: not a Diabetes 130 CSV file: required column 'patient_nbr' is missing"),
    "wrong type": (lambda d: _write(d / "bad.csv", "\n".join(
        _small_lines()[:3] + [_small_lines()[3].replace(",4,?,?,40,", ",four,?,?,40,")] + _small_lines()[4:]) + "\n"),
        "bad.csv, row 3, column 'time_in_hospital': must be a whole number"),
    "empty": (lambda d: _write(d / "bad.csv", ""), "bad.csv: the file is empty"),
    "header only": (lambda d: _write(d / "bad.csv", _small_lines()[0] + "\n"),
                    "bad.csv: the file has a header but no data rows"),
    "not utf-8": (lambda d: _write(d / "bad.csv", ("\n".join(_small_lines()) + "\n").replace(
        "InternalMedicine", "Intern\u00e9").encode("latin-1")), "bad.csv, row 1, column 'medical_specialty': "
                                                               "must be valid UTF-8 text"),
    "not a csv": (lambda d: _write(d / "bad.csv", b"PAR1\x00\x01\x02binary\x00"), "not a Diabetes 130 CSV file"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_one_clear_line_and_previous_warehouse_untouched(spark, warehouse, tmp_path, case):
    root, _ = warehouse
    before_pointer = (root / POINTER_FILE).read_text()
    before_folders = sorted(p.name for p in (root / "tables" / "encounters").iterdir())
    make, message = BAD_INPUTS[case]
    bad = make(tmp_path)
    with pytest.raises(UserError) as caught:
        run_etl(_options(root, input_path=bad), spark)
    text = str(caught.value)
    assert "\n" not in text and message in text and str(tmp_path) in text
    assert (root / POINTER_FILE).read_text() == before_pointer
    assert sorted(p.name for p in (root / "tables" / "encounters").iterdir()) == before_folders


def test_unknown_source_fails_before_spark(tmp_path):
    with pytest.raises(UserError, match="unknown source 'nope'"):
        run_etl(EtlOptions(source="nope", input="x", warehouse=str(tmp_path)), spark=None)
