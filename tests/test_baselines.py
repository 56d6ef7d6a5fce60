"""MLlib baselines on a tiny warehouse-like features DataFrame (real Diabetes 130 rows, kept small)."""
from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from core.features import CATEGORICAL_FEATURES, build_features
from core.metrics import auroc
from core.sources.diabetes130 import to_canonical
from etl.baselines import labelled, run_baselines
from etl.encoding_fit import build_pipeline
from etl.spark_schema import feature_struct

pytestmark = pytest.mark.spark


def tiny_features(diabetes_csv, rows: int = 800) -> pd.DataFrame:
    """Feature rows of the first `rows` encounters, split by patient (a hash: 60/20/20)."""
    raw = pd.read_csv(diabetes_csv, dtype=str, keep_default_na=False, nrows=rows)
    features = build_features(to_canonical(raw))
    bucket = features["patient_id"].map(lambda pid: zlib.crc32(pid.encode()) % 10)
    features["split"] = np.select([bucket < 6, bucket < 8], ["train", "validation"], "test")
    return features.reset_index(drop=True)


@pytest.fixture(scope="module")
def spark_features(spark, diabetes_csv):
    frame = tiny_features(diabetes_csv)
    schema = T.StructType(feature_struct().fields + [T.StructField("split", T.StringType())])
    rows = frame[[f.name for f in schema.fields]].astype(object).where(frame.notna(), None)
    return frame, spark.createDataFrame(rows.values.tolist(), schema)


def test_baselines_train_on_train_tune_on_validation(spark, spark_features):


    frame, df = spark_features
    train = labelled(df).filter(F.col("split") == "train")
    # levels kept as the ETL keeps them (>= min_count training rows), counted here in pandas to save Spark jobs
    train_rows = frame[(frame["split"] == "train") & frame["eligible"] & frame["readmitted_30d"].notna()]
    kept = {spec.name: sorted(level for level, count in train_rows[spec.name].value_counts().items()
                              if count >= spec.min_count) for spec in CATEGORICAL_FEATURES}
    pipeline = build_pipeline(kept).fit(train)
    results = run_baselines(spark, "unused", pipeline=pipeline, features=df,
                            logistic_grid=[{"regParam": 0.01, "maxIter": 15}, {"regParam": 1.0, "maxIter": 15}],
                            gbt_grid=[{"maxDepth": 2, "maxIter": 3, "stepSize": 0.3}])
    assert set(results) == {"mllib_logistic", "mllib_gbt"}

    evaluable = frame[frame["eligible"] & frame["readmitted_30d"].notna()]
    expected = evaluable[evaluable["split"].isin(["validation", "test"])]
    for result in results.values():
        preds = result.predictions
        # exactly the labelled validation + test encounters, each once, never a training row
        assert sorted(preds["encounter_id"]) == sorted(expected["encounter_id"])
        assert set(preds["split"]) == {"validation", "test"}
        assert preds["probability"].between(0, 1).all()
        labels = expected.set_index("encounter_id").loc[preds["encounter_id"], "readmitted_30d"].astype(float)
        assert np.array_equal(preds["label"].to_numpy(), labels.to_numpy())
        # the reported validation AUROC is that of the chosen model's validation predictions
        val = preds[preds["split"] == "validation"]
        assert result.validation_auroc == pytest.approx(auroc(val["label"], val["probability"]))
        assert result.validation_auroc == max(g["validation_auroc"] for g in result.grid)
    assert len(results["mllib_logistic"].grid) == 2
