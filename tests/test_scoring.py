"""The scoring service, `readmit score` and the predictions table, on real Diabetes 130 rows.

The model is a tiny randomly initialised transformer (the real model class, the real predictor class)
with an encoding fitted on the same rows: these tests check plumbing and contracts, not accuracy.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from fixtures.tiny_model import save_model_folder, tiny_setup

import core.warehouse
from cli.main import main
from core.encoding import encode
from core.errors import UserError
from core.features import build_features
from core.intake import detect_format
from core.predictions import KEEP_VERSIONS, write_predictions
from core.schema import arrow_schema, template_columns, template_example_row
from core.sources import diabetes130
from core.warehouse import Warehouse, read_pointer, write_pointer
from models.explain_background import build_background, save_background
from serving.scoring import ScoringService

torch.set_num_threads(1)
N_ROWS = 600


@pytest.fixture(scope="module")
def setup(diabetes_csv):
    raw, canonical, features, prep, predictor = tiny_setup(diabetes_csv, nrows=5000)
    background = build_background(encode(features[features["eligible"]], prep), k=8)
    service = ScoringService.from_predictor(predictor, background=background)
    return {"raw": raw, "canonical": canonical, "features": features, "prep": prep, "predictor": predictor,
            "service": service, "background": background}


def _slice(raw: pd.DataFrame) -> pd.DataFrame:
    """The file's first rows plus a few hospice discharges from further down (in file order)."""
    hospice = raw.index[raw["discharge_disposition_id"].isin(["13", "14"])]
    extra = [i for i in hospice if i >= N_ROWS - 10][:10]
    return raw.loc[sorted(set(range(N_ROWS - len(extra))) | set(extra))].reset_index(drop=True)


@pytest.fixture()
def slice_csv(setup, tmp_path) -> Path:
    path = tmp_path / "slice.csv"
    _slice(setup["raw"]).to_csv(path, index=False)
    return path


def test_score_file_on_real_rows(setup, slice_csv):
    predictions, errors = setup["service"].score_file(slice_csv)
    raw = _slice(setup["raw"])
    assert errors == []
    assert predictions["encounter_id"].tolist() == raw["encounter_id"].tolist()
    assert predictions["patient_id"].tolist() == raw["patient_nbr"].tolist()
    eligible = predictions[predictions["eligible"].astype(bool)]
    assert eligible["risk"].between(0, 1).all()
    assert set(eligible["risk_tier"]) <= {"Very high", "High", "Medium", "Low"}
    assert eligible["reason_1"].notna().all()
    assert (eligible["reason_1"].str.contains(r"\b(?:raises|lowers) risk\b")
            | eligible["reason_1"].str.startswith("Risk close to the average")).all()
    for _, row in eligible.head(50).iterrows():
        attributions = json.loads(row["attributions"])
        assert abs(row["base_risk"] + sum(attributions.values()) - row["risk"]) < 1e-5  # 20 values rounded to 1e-6
    assert (predictions["model_version"] == setup["predictor"].model_version).all()


def test_ineligible_rows_get_no_risk_and_a_reason(setup, slice_csv):
    predictions, _ = setup["service"].score_file(slice_csv)
    raw = _slice(setup["raw"])
    died = raw["discharge_disposition_id"].isin(["11", "19", "20", "21"]).to_numpy()
    hospice = raw["discharge_disposition_id"].isin(["13", "14"]).to_numpy()
    assert died.any() and hospice.any()
    assert predictions.loc[died | hospice, "risk"].isna().all()
    assert (predictions.loc[died, "ineligible_reason"] == "died").all()
    assert (predictions.loc[hospice, "ineligible_reason"] == "hospice").all()
    assert predictions.loc[died, "reason_1"].str.startswith("Not scored").all()
    assert predictions.loc[~(died | hospice), "risk"].notna().all()


def test_format_detection(setup, tmp_path):
    assert detect_format(list(setup["raw"].columns)) == "diabetes130"
    assert detect_format(template_columns()) == "discharges"
    assert detect_format(["a", "b", "c"]) is None
    template = tmp_path / "template.csv"
    pd.DataFrame([template_example_row()]).to_csv(template, index=False)
    predictions, errors = setup["service"].score_file(template)
    assert errors == []
    assert len(predictions) == 1 and predictions["risk"].notna().all()
    with pytest.raises(UserError, match="lacks columns|required"):
        setup["service"].score_file(template, fmt="diabetes130")


@pytest.mark.parametrize("content, message", [
    (b"", "empty"),
    (b"   \n\n", "empty"),
    (None, "no data rows"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "binary"),
    (b"encounter_id,patient_nbr\n1,\xff\xfe\n", "not UTF-8"),
    (b"name,age,colour\nAnn,3,red\n", "unrecognised header"),
    (b"just one line of prose without commas\nand another\n", "CSV"),
])
def test_bad_files_are_refused_with_one_line(setup, tmp_path, content, message):
    path = tmp_path / "bad.csv"
    if content is None:
        content = (",".join(setup["raw"].columns) + "\n").encode()
    path.write_bytes(content)
    with pytest.raises(UserError, match=message) as error:
        setup["service"].score_file(path)
    assert "\n" not in str(error.value)


def test_bad_rows_are_reported_and_the_rest_scored(setup, tmp_path):
    raw = setup["raw"].head(50).copy()
    raw.loc[3, "num_lab_procedures"] = "lots"
    raw.loc[7, "time_in_hospital"] = "999"
    raw.loc[9, "encounter_id"] = raw.loc[8, "encounter_id"]
    raw.loc[12, "age"] = "[130-140)"
    path = tmp_path / "rows.csv"
    raw.to_csv(path, index=False)
    predictions, errors = setup["service"].score_file(path)
    where = {(e.row, e.column) for e in errors}
    assert {(4, "num_lab_procedures"), (8, "time_in_hospital"), (10, "encounter_id"), (13, "age")} == where
    assert len(predictions) == 46
    assert raw.loc[[3, 7, 9, 12], "encounter_id"].isin(predictions["encounter_id"]).sum() == 1  # 9 duplicates 8
    everything, _ = setup["service"].score_file(path, include_invalid=True)
    assert len(everything) == 50
    assert everything["encounter_id"].tolist() == raw["encounter_id"].tolist()
    assert everything.loc[[3, 7, 9, 12], "risk"].isna().all()
    assert everything.loc[[3, 7, 9, 12], "problem"].notna().all()
    assert everything.loc[3, "problem"] == "num_lab_procedures: must be a whole number"  # the column, not the value


def test_impossible_canonical_values_are_not_scored(setup):
    canonical = setup["canonical"].head(5).copy()
    canonical.loc[1, "prior_inpatient_visits"] = 900
    predictions = setup["service"].score_encounters(canonical)
    assert np.isnan(predictions.loc[1, "risk"])
    assert "prior_inpatient_visits" in predictions.loc[1, "problem"]
    assert predictions.drop(index=1)["risk"].notna().sum() == canonical.drop(index=1)["eligible"].sum()


def _patient_with_two_encounters(canonical: pd.DataFrame) -> pd.DataFrame:
    counts = canonical[canonical["eligible"]].groupby("patient_id")["encounter_id"].count()
    patient = counts[counts >= 2].index[0]
    rows = canonical[(canonical["patient_id"] == patient) & canonical["eligible"]].copy()
    return rows.sort_values("encounter_id", key=lambda s: s.astype(int)).head(2)


def test_history_from_earlier_rows_in_the_file(setup):
    both = _patient_with_two_encounters(setup["canonical"])
    service = setup["service"]
    together = service.features_for(both)
    alone = service.features_for(both.iloc[[1]])
    assert together["encounter_seq"].tolist() == [1.0, 2.0]
    assert alone["encounter_seq"].tolist() == [1.0]
    assert together["prior_stays_los_days"].iloc[1] == both["length_of_stay_days"].iloc[0]
    # Row order in the input does not matter; later encounters never feed earlier ones.
    reversed_order = service.features_for(both.iloc[::-1])
    assert reversed_order["encounter_seq"].tolist() == [2.0, 1.0]
    predictions = service.score_encounters(both)
    assert predictions["encounter_id"].tolist() == both["encounter_id"].tolist()


def test_same_risk_through_file_encounters_and_predictor(setup, slice_csv):
    from_file, _ = setup["service"].score_file(slice_csv)
    canonical = diabetes130.to_canonical(_slice(setup["raw"]))
    from_frame = setup["service"].score_encounters(canonical)
    no_explain = setup["service"].score_encounters(canonical, explain=False)
    np.testing.assert_array_equal(from_file["risk"].to_numpy(), from_frame["risk"].to_numpy())
    np.testing.assert_allclose(no_explain["risk"].to_numpy(), from_frame["risk"].to_numpy(), rtol=0, atol=1e-12)
    features = build_features(canonical).set_index("encounter_id").loc[canonical["encounter_id"]].reset_index()
    eligible = features["eligible"].to_numpy()
    direct = setup["predictor"].risk(encode(features[eligible], setup["prep"]))
    np.testing.assert_allclose(from_frame["risk"].to_numpy()[eligible], direct, rtol=0, atol=1e-12)
    # A single row scored on its own gets the score it gets in a batch (float32 matrix products differ
    # with the batch shape in the last bits: about 1e-8 here).
    first = setup["service"].score_encounters(canonical.iloc[[0]])
    assert first["risk"].iloc[0] == pytest.approx(from_frame["risk"].iloc[0], abs=1e-6)


def _write_table(root: Path, table: str, frame: pd.DataFrame, schema: pa.Schema, version: str = "v1") -> None:
    folder = root / "tables" / table / version
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False), folder / "part-0.parquet")
    pointer = read_pointer(root)
    pointer.setdefault("tables", {})[table] = version
    write_pointer(root, pointer)


def _canonical_for_arrow(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for name in ("admit_time", "discharge_time"):
        out[name] = pd.to_datetime(out[name])
    for name in ("encounter_seq", "number_diagnoses", "num_procedures", "num_lab_procedures", "num_medications",
                 "prior_outpatient_visits", "prior_emergency_visits", "prior_inpatient_visits", "icd_version"):
        out[name] = pd.array(pd.to_numeric(out[name]), dtype="Int64")
    return out[arrow_schema().names]


def test_history_from_the_warehouse(setup, tmp_path):
    both = _patient_with_two_encounters(setup["canonical"])
    root = tmp_path / "warehouse"
    _write_table(root, "encounters", _canonical_for_arrow(both.iloc[[0]]), arrow_schema())
    service = setup["service"]
    with_history = service.score_encounters(both.iloc[[1]], warehouse=str(root))
    assert with_history["encounter_id"].tolist() == [both["encounter_id"].iloc[1]]  # history rows never emitted
    features = service.features_for(both.iloc[[1]], warehouse=str(root))
    assert features["encounter_seq"].tolist() == [2.0]
    in_file = service.score_encounters(both)
    assert with_history["risk"].iloc[0] == pytest.approx(in_file["risk"].iloc[1], abs=1e-6)


def test_predictions_table_written_atomically_and_readable(setup, tmp_path):
    root = tmp_path / "warehouse"
    canonical = setup["canonical"].head(40)
    _write_table(root, "encounters", _canonical_for_arrow(canonical), arrow_schema(), version="e1")
    predictions = setup["service"].score_encounters(canonical)
    first = write_predictions(root, predictions)
    warehouse = Warehouse(str(root))
    assert warehouse.current_tables() == {"encounters": "e1", "predictions": first}
    back = warehouse.query("SELECT * FROM predictions ORDER BY encounter_id")
    assert len(back) == 40 and back["scored_at"].notna().all()
    merged = predictions.merge(back, on="encounter_id", suffixes=("", "_back"))
    np.testing.assert_allclose(merged["risk"], merged["risk_back"], equal_nan=True)
    assert warehouse.query("SELECT count(*) AS n FROM predictions WHERE risk IS NULL")["n"].iloc[0] == \
        int((~predictions["eligible"].astype(bool)).sum())
    # A run that dies before switching the pointer leaves the previous version current and whole.

    def crash(*_args, **_kwargs):
        raise RuntimeError("killed")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(core.warehouse, "write_pointer", crash)
        with pytest.raises(RuntimeError):
            write_predictions(root, predictions.head(3))
    assert Warehouse(str(root)).current_tables()["predictions"] == first
    assert len(Warehouse(str(root)).query("SELECT * FROM predictions")) == 40
    assert not list((root / "tables" / "predictions").glob(".*.tmp"))


@pytest.fixture(scope="module")
def model_dir(setup, tmp_path_factory) -> Path:
    folder = save_model_folder(setup["predictor"], tmp_path_factory.mktemp("model") / "tiny")
    save_background(folder, setup["background"])
    return folder


def test_load_from_folder_gives_the_same_scores(setup, model_dir, slice_csv):
    loaded = ScoringService.load(model_dir)
    assert loaded.background_source == "explain_background.safetensors"
    a, _ = loaded.score_file(slice_csv)
    b, _ = setup["service"].score_file(slice_csv)
    np.testing.assert_allclose(a["risk"], b["risk"], rtol=0, atol=1e-9, equal_nan=True)
    assert a["reason_1"].tolist() == b["reason_1"].tolist()


def test_cli_score_file(model_dir, setup, tmp_path, capsys):
    raw = setup["raw"].head(30).copy()
    raw.loc[2, "number_inpatient"] = "-4"
    source = tmp_path / "in.csv"
    raw.to_csv(source, index=False)
    output = tmp_path / "out.csv"
    assert main(["score", "--input", str(source), "--output", str(output), "--model", str(model_dir)]) == 0
    result = pd.read_csv(output, dtype={"encounter_id": str, "patient_id": str})
    assert result["encounter_id"].tolist() == raw["encounter_id"].tolist()
    assert {"encounter_id", "patient_id", "risk", "risk_tier", "reason_1", "reason_2", "reason_3",
            "model_version"} <= set(result.columns)
    assert np.isnan(result.loc[2, "risk"])
    err = capsys.readouterr().err
    assert "row 3, column 'number_inpatient'" in err
    errors = pd.read_csv(tmp_path / "out.errors.csv")
    assert errors[["row", "column"]].values.tolist() == [[3, "number_inpatient"]]
    # a bad file: one line, exit 2
    (tmp_path / "empty.csv").write_text("")
    assert main(["score", "--input", str(tmp_path / "empty.csv"), "--output", str(output),
                 "--model", str(model_dir)]) == 2
    assert "error" in capsys.readouterr().err


def test_cli_score_warehouse(model_dir, setup, tmp_path):
    root = tmp_path / "warehouse"
    canonical = setup["canonical"].head(60)
    _write_table(root, "encounters", _canonical_for_arrow(canonical), arrow_schema(), version="e1")
    assert main(["score", "--warehouse", str(root), "--model", str(model_dir)]) == 0
    warehouse = Warehouse(str(root))
    back = warehouse.query("SELECT * FROM predictions")
    assert len(back) == 60 and back.loc[back["eligible"], "reason_1"].notna().all()
    expected = setup["service"].score_encounters(canonical)
    merged = expected.merge(back, on="encounter_id", suffixes=("", "_back"))
    np.testing.assert_allclose(merged["risk"], merged["risk_back"], rtol=0, atol=1e-9, equal_nan=True)


def test_old_prediction_versions_are_pruned(setup, tmp_path):
    root = tmp_path / "warehouse"
    predictions = setup["service"].score_encounters(setup["canonical"].head(5), explain=False)
    versions = [write_predictions(root, predictions) for _ in range(KEEP_VERSIONS + 2)]
    left = sorted(p.name for p in (root / "tables" / "predictions").iterdir())
    assert left == versions[-KEEP_VERSIONS:]
    assert Warehouse(str(root)).current_tables()["predictions"] == versions[-1]
