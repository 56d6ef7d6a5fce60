"""Spark MLlib baselines: LogisticRegression and GBTClassifier on the warehouse features.

The path that scales to a cluster: the features table is read by Spark, encoded with the ETL's
fitted `PipelineModel` (saved under `preprocessing/<version>/pipeline_model`, fitted on the train
split only: collapsed levels -> StringIndexer -> OneHotEncoder, numeric transform -> median Imputer
-> StandardScaler, assembled into `features_vector`), models are fitted on the train split, a small
grid is tuned on the validation split (AUROC), and the chosen models' probabilities on validation
and test come back as pandas frames (encounter_id, patient_id, split, label, probability).

Only eligible encounters with a known label are used. The test split is never looked at while
choosing parameters.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import pandas as pd
from pyspark.ml import PipelineModel
from pyspark.ml.classification import GBTClassifier, LogisticRegression
from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from core.metrics import auroc
from core.warehouse import Warehouse, preprocessing_path

log = logging.getLogger(__name__)

PIPELINE_DIR = "pipeline_model"
FEATURES_VECTOR = "features_vector"
LABEL = "label"

LOGISTIC_GRID: tuple[dict[str, float], ...] = (
    {"regParam": 0.01, "elasticNetParam": 0.0},
    {"regParam": 0.03, "elasticNetParam": 0.0},
    {"regParam": 0.1, "elasticNetParam": 0.0},
    {"regParam": 0.3, "elasticNetParam": 0.0},
    {"regParam": 1.0, "elasticNetParam": 0.0},
    {"regParam": 0.001, "elasticNetParam": 0.5},
    {"regParam": 0.003, "elasticNetParam": 0.5},
    {"regParam": 0.01, "elasticNetParam": 0.5},
)
GBT_GRID: tuple[dict[str, Any], ...] = (
    {"maxDepth": 3, "maxIter": 80, "stepSize": 0.1},
    {"maxDepth": 5, "maxIter": 50, "stepSize": 0.1},
)
MODEL_NAMES = {"logistic": "mllib_logistic", "gbt": "mllib_gbt"}


@dataclass
class BaselineResult:
    name: str
    params: dict[str, Any]
    validation_auroc: float
    grid: list[dict[str, Any]]
    predictions: pd.DataFrame = field(repr=False)   # encounter_id, patient_id, split, label, probability
    fit_seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params, "validation_auroc": self.validation_auroc,
                "grid": self.grid, "fit_seconds": self.fit_seconds,
                "tuned_on": "validation split (AUROC)", "trained_on": "train split"}


def read_features(spark: SparkSession, root: str) -> DataFrame:
    return spark.read.parquet(Warehouse(str(root)).table_path("features"))


def load_pipeline(root: str) -> PipelineModel:
    path = Path(preprocessing_path(root)) / PIPELINE_DIR
    return PipelineModel.load(str(path))


def labelled(features: DataFrame) -> DataFrame:
    """Eligible encounters with a known label, label as double."""
    return (features.filter(F.col("eligible") & F.col("readmitted_30d").isNotNull())
            .withColumn(LABEL, F.col("readmitted_30d").cast("double")))


def encode(features: DataFrame, pipeline: PipelineModel) -> DataFrame:
    """Apply the fitted pipeline; keep only what the models need."""
    out = pipeline.transform(features)
    if FEATURES_VECTOR not in out.columns:
        raise ValueError(f"the pipeline model produced no '{FEATURES_VECTOR}' column "
                         f"(columns: {', '.join(out.columns)})")
    return out.select("encounter_id", "patient_id", "split", LABEL, FEATURES_VECTOR)


def _probabilities(model, data: DataFrame) -> pd.DataFrame:
    scored = model.transform(data).select(
        "encounter_id", "patient_id", "split", LABEL,
        vector_to_array(F.col("probability")).getItem(1).alias("probability"))
    return scored.toPandas()


def _estimator(kind: str, params: dict[str, Any], seed: int):
    common = {"featuresCol": FEATURES_VECTOR, "labelCol": LABEL}
    if kind == "logistic":
        return LogisticRegression(**{"maxIter": 200, **common, **params})
    if kind == "gbt":
        return GBTClassifier(**{"seed": seed, "subsamplingRate": 0.8, **common, **params})
    raise ValueError(kind)


def tune(kind: str, train: DataFrame, evaluation: DataFrame, grid: Sequence[dict[str, Any]],
         seed: int = 42) -> BaselineResult:
    """Fit each grid point on train, pick the best validation AUROC, return its validation+test predictions."""
    validation = evaluation.filter(F.col("split") == "validation")
    tried, best = [], None
    started = time.time()
    for params in grid:
        t0 = time.time()
        model = _estimator(kind, dict(params), seed).fit(train)
        scored = _probabilities(model, validation)
        score = auroc(scored[LABEL].to_numpy(), scored["probability"].to_numpy())
        tried.append({"params": dict(params), "validation_auroc": score, "seconds": round(time.time() - t0, 1)})
        log.info("%s %s: validation AUROC %.4f (%.0fs)", kind, params, score, time.time() - t0)
        if best is None or score > best[0]:
            best = (score, dict(params), model)
    assert best is not None, "empty grid"
    predictions = _probabilities(best[2], evaluation)
    return BaselineResult(MODEL_NAMES[kind], best[1], best[0], tried, predictions, round(time.time() - started, 1))


def run_baselines(spark: SparkSession, root: str, *, pipeline: Optional[PipelineModel] = None,
                  features: Optional[DataFrame] = None, logistic_grid: Sequence[dict] = LOGISTIC_GRID,
                  gbt_grid: Sequence[dict] = GBT_GRID, seed: int = 42) -> dict[str, BaselineResult]:
    """Train and tune both baselines; predictions for the validation and test splits.

    `pipeline` and `features` default to the warehouse's fitted PipelineModel and features table.
    """
    features = features if features is not None else read_features(spark, root)
    pipeline = pipeline if pipeline is not None else load_pipeline(root)
    # one Parquet file reads as one partition: spread the rows over the cluster's cores
    partitions = max(2, spark.sparkContext.defaultParallelism)
    data = encode(labelled(features), pipeline).repartition(partitions).cache()
    try:
        train = data.filter(F.col("split") == "train").cache()
        evaluation = data.filter(F.col("split").isin("validation", "test")).cache()
        if train.limit(1).count() == 0:
            raise ValueError("no labelled training rows in the features table")
        results = {}
        if logistic_grid:
            results["mllib_logistic"] = tune("logistic", train, evaluation, logistic_grid, seed)
        if gbt_grid:
            results["mllib_gbt"] = tune("gbt", train, evaluation, gbt_grid, seed)
        return results
    finally:
        data.unpersist()
