"""Scoring the warehouse on Spark gives the single-process numbers and words: the same risks and
reasons on local[2], on a standalone cluster and in `serving.scoring.ScoringService`."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_etl_cluster import ENV, READMIT, standalone_cluster  # noqa: F401 (a fixture)

from core.intake import from_warehouse_frame
from core.warehouse import Warehouse, read_pointer
from etl.pipeline import EtlOptions, run_etl
from etl.score import score_warehouse, spark_scoring, worker_scorer
from models.manifest import verify_manifest
from serving.scoring import ScoringService

pytestmark = pytest.mark.spark
CHAMPION = Path(__file__).resolve().parent.parent / "models" / "champion"
TEXT = ["encounter_id", "patient_id", "risk_tier", "reason_1", "reason_2", "reason_3", "model_version",
        "ineligible_reason", "problem"]


@pytest.fixture(scope="module")
def etl_warehouse(spark, tmp_path_factory) -> Path:
    """A few hundred synthetic encounters through the ETL, not yet scored (copy it before scoring)."""
    root = tmp_path_factory.mktemp("etl") / "warehouse"
    run_etl(EtlOptions(source="synthetic", input=None, warehouse=str(root), rows=400, seed=11), spark)
    return root


@pytest.fixture(scope="module")
def single_process(etl_warehouse) -> pd.DataFrame:
    """`readmit score --warehouse` in one process: the encounters table scored by the service."""
    encounters = from_warehouse_frame(Warehouse(str(etl_warehouse)).query("SELECT * FROM encounters"))
    return ScoringService.load(CHAMPION).score_encounters(encounters)


def _copy(warehouse: Path, to: Path) -> Path:
    shutil.copytree(warehouse, to)
    return to


def _predictions(root: Path) -> pd.DataFrame:
    return Warehouse(str(root)).query("SELECT * FROM predictions")


def _assert_same(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Same rows, equal words, numbers equal to 1e-9 (attributions: to their stored 6 decimals)."""
    actual = actual.sort_values("encounter_id").reset_index(drop=True)
    expected = expected.sort_values("encounter_id").reset_index(drop=True)
    assert len(actual) == len(expected)
    for column in TEXT:
        pd.testing.assert_series_equal(actual[column].astype(object).where(actual[column].notna(), None),
                                       expected[column].astype(object).where(expected[column].notna(), None))
    for column in ("risk", "risk_percentile", "base_risk"):
        np.testing.assert_allclose(actual[column].to_numpy(float), expected[column].to_numpy(float), atol=1e-9)
    assert actual["eligible"].astype(bool).tolist() == expected["eligible"].astype(bool).tolist()
    for a, e in zip(actual["attributions"], expected["attributions"]):
        assert (a is None) == (e is None)
        if a is not None:
            a, e = json.loads(a), json.loads(e)
            assert a.keys() == e.keys() and all(abs(a[k] - e[k]) <= 2e-6 for k in a)


def test_local_spark_equals_single_process(spark, etl_warehouse, single_process, tmp_path):
    root = _copy(etl_warehouse, tmp_path / "local")
    record = score_warehouse(spark, str(root), str(CHAMPION))
    predictions = _predictions(root)
    _assert_same(predictions, single_process)
    assert predictions["risk"].notna().sum() > 0 and predictions["reason_1"].notna().all()
    assert (predictions["eligible"] == False).any()  # noqa: E712 (died / hospice rows, with their reason)
    pointer = read_pointer(root)
    assert pointer["tables"]["predictions"] == record["version"]
    assert record["encounters_version"] == pointer["tables"]["encounters"] and record["rows"] == len(predictions)
    assert Warehouse(str(root)).predictions_problem is None


def test_the_model_loads_once_per_worker():
    version = verify_manifest(CHAMPION)
    first = worker_scorer(str(CHAMPION.resolve()), version, False)
    assert worker_scorer(str(CHAMPION.resolve()), version, False) is first


def test_spark_above_the_row_threshold_or_with_a_master():
    assert spark_scoring(10, "local[2]") and spark_scoring(10_000_000, None) and not spark_scoring(10, None)


@pytest.mark.slow
def test_standalone_cluster_equals_local(standalone_cluster, spark, etl_warehouse, single_process,  # noqa: F811
                                         tmp_path):
    cluster = _copy(etl_warehouse, tmp_path / "cluster")
    result = subprocess.run([READMIT, "score", "--warehouse", str(cluster), "--model", str(CHAMPION),
                             "--master", standalone_cluster, "--driver-memory", "1g"],
                            capture_output=True, text=True, env=ENV, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    local = _copy(etl_warehouse, tmp_path / "local")
    score_warehouse(spark, str(local), str(CHAMPION))
    _assert_same(_predictions(cluster), _predictions(local))
    _assert_same(_predictions(cluster), single_process)
    assert Warehouse(str(cluster)).manifest("predictions")["spark"]["master"] == standalone_cluster
