"""Fit the encoding on the training split only, in Spark, and save it two ways.

- `preprocessing.json` (`core.encoding.Preprocessing`): what the scorer and the transformer apply
  with numpy, no Spark needed.
- `pipeline_model/`: a Spark ML `PipelineModel` (level collapsing + `StringIndexer(handleInvalid=
  "keep", frequencyDesc)` + `OneHotEncoder`, numeric transform + `Imputer` + `VectorAssembler` +
  `StandardScaler`) for MLlib baselines and for checking that both encodings agree.

Categorical levels are collapsed exactly as `core.encoding.collapse_levels` does: null ->
MISSING_LEVEL, a level seen at least `min_count` times in train -> itself, anything else -> OTHER_LEVEL.
"""
from __future__ import annotations

from typing import Any

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.feature import Imputer, OneHotEncoder, SQLTransformer, StandardScaler, StringIndexer, VectorAssembler
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from core import icd
from core.encoding import Preprocessing
from core.features import (
    CATEGORICAL_FEATURES,
    CODE_FEATURES,
    CODE_MIN_COUNT,
    MISSING_LEVEL,
    NUMERIC_FEATURES,
    NUMERIC_NAMES,
    OTHER_LEVEL,
)

PIPELINE_DIR = "pipeline_model"
LEVEL_SUFFIX, INDEX_SUFFIX, ONEHOT_SUFFIX, NUMERIC_SUFFIX = "__level", "__index", "__onehot", "__x"
FEATURES_VECTOR = "features_vector"


def kept_levels(train: DataFrame) -> dict[str, list[str]]:
    """Per categorical feature, the non-null levels with at least `min_count` training rows (sorted).

    One Spark job: all (feature, value) pairs are counted together."""
    pairs = F.explode(F.array(*[F.struct(F.lit(spec.name).alias("feature"), F.col(spec.name).alias("value"))
                                for spec in CATEGORICAL_FEATURES]))
    counts = (train.select(pairs.alias("pair")).select("pair.*").filter(F.col("value").isNotNull())
              .groupBy("feature", "value").count().collect())
    min_counts = {spec.name: spec.min_count for spec in CATEGORICAL_FEATURES}
    kept: dict[str, list[str]] = {spec.name: [] for spec in CATEGORICAL_FEATURES}
    for row in counts:
        if row["count"] >= min_counts[row["feature"]]:
            kept[row["feature"]].append(row["value"])
    return {name: sorted(levels) for name, levels in kept.items()}


def _sql_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _collapse_sql(name: str, kept: list[str]) -> str:
    kept_clause = (f"WHEN `{name}` IN ({', '.join(_sql_string(v) for v in kept)}) THEN `{name}` " if kept else "")
    return (f"CASE WHEN `{name}` IS NULL THEN {_sql_string(MISSING_LEVEL)} {kept_clause}"
            f"ELSE {_sql_string(OTHER_LEVEL)} END AS `{name}{LEVEL_SUFFIX}`")


def _transform_sql(name: str, transform: str) -> str:
    value = f"CAST(`{name}` AS DOUBLE)"
    expr = value if transform == "identity" else f"LOG1P(GREATEST({value}, 0D))"
    return f"{expr} AS `{name}{NUMERIC_SUFFIX}`"


def build_pipeline(kept: dict[str, list[str]]) -> Pipeline:
    """The Spark ML pipeline; its first stage makes the same levels and numeric transforms as core."""
    selects = [_collapse_sql(spec.name, kept[spec.name]) for spec in CATEGORICAL_FEATURES]
    selects += [_transform_sql(spec.name, spec.transform) for spec in NUMERIC_FEATURES]
    prepare = SQLTransformer(statement=f"SELECT *, {', '.join(selects)} FROM __THIS__")
    levels = [f"{spec.name}{LEVEL_SUFFIX}" for spec in CATEGORICAL_FEATURES]
    indices = [f"{spec.name}{INDEX_SUFFIX}" for spec in CATEGORICAL_FEATURES]
    onehots = [f"{spec.name}{ONEHOT_SUFFIX}" for spec in CATEGORICAL_FEATURES]
    numeric = [f"{spec.name}{NUMERIC_SUFFIX}" for spec in NUMERIC_FEATURES]
    imputed = [f"{name}_imputed" for name in numeric]
    return Pipeline(stages=[
        prepare,
        StringIndexer(inputCols=levels, outputCols=indices, handleInvalid="keep", stringOrderType="frequencyDesc"),
        OneHotEncoder(inputCols=indices, outputCols=onehots, handleInvalid="keep"),
        Imputer(inputCols=numeric, outputCols=imputed, strategy="median"),
        VectorAssembler(inputCols=imputed, outputCol="numeric_vector", handleInvalid="keep"),
        StandardScaler(inputCol="numeric_vector", outputCol="numeric_scaled", withMean=True, withStd=True),
        VectorAssembler(inputCols=onehots + ["numeric_scaled"], outputCol=FEATURES_VECTOR),
    ])


MEDIAN_ACCURACY = 10_000
"""`percentile_approx` accuracy of the recorded median: exact below about this many rows, else within
1/10,000 of the rank. Spark's exact median keeps every distinct value in one task's memory (millions
at scale); the median is recorded for reading, the encoding uses mean and std only."""


def numeric_stats(train: DataFrame) -> dict[str, dict[str, Any]]:
    """Mean, sample standard deviation and median of each transformed numeric feature on train.

    Missing values are left out of every statistic (missing is flagged, not imputed into the mean).
    """
    exprs = []
    for spec in NUMERIC_FEATURES:
        value = F.col(spec.name).cast("double")
        x = value if spec.transform == "identity" else F.log1p(F.greatest(value, F.lit(0.0)))
        exprs += [F.mean(x).alias(f"{spec.name}|mean"), F.stddev_samp(x).alias(f"{spec.name}|std"),
                  F.percentile_approx(x, 0.5, MEDIAN_ACCURACY).alias(f"{spec.name}|median"),
                  F.avg(F.when(value.isNull(), 1.0).otherwise(0.0)).alias(f"{spec.name}|missing_rate")]
    row = train.agg(*exprs).collect()[0].asDict()
    return {spec.name: {"transform": spec.transform,
                        **{stat: (float(row[f"{spec.name}|{stat}"]) if row[f"{spec.name}|{stat}"] is not None else None)
                           for stat in ("mean", "std", "median", "missing_rate")}}
            for spec in NUMERIC_FEATURES}


def _frequent(train: DataFrame, columns: list[str], min_count: int) -> list[str]:
    """Values pooled over `columns` with at least `min_count` training rows, most frequent first."""
    stacked = None
    for name in columns:
        part = train.select(F.col(name).alias("value")).filter(F.col("value").isNotNull())
        stacked = part if stacked is None else stacked.unionByName(part)
    rows = (stacked.groupBy("value").count().filter(F.col("count") >= min_count)
            .orderBy(F.desc("count"), "value").collect())
    return [r["value"] for r in rows]


def code_vocabularies(train: DataFrame) -> dict[str, list[str]]:
    """Diagnosis vocabularies over all code positions: full codes and categories seen at least
    CODE_MIN_COUNT times in train; chapters: the fixed list of `core.icd.CHAPTERS`."""
    return {"code_labels": _frequent(train, list(CODE_FEATURES), CODE_MIN_COUNT),
            "category_labels": _frequent(train, [f"{name}_category" for name in CODE_FEATURES], CODE_MIN_COUNT),
            "chapter_labels": list(icd.CHAPTERS)}


FITTED_COLUMNS = tuple(spec.name for spec in CATEGORICAL_FEATURES) + NUMERIC_NAMES + CODE_FEATURES


def fit_encoding(train: DataFrame) -> tuple[Preprocessing, PipelineModel]:
    """Fit both encodings on the training rows (only the columns they encode are read)."""
    train = train.select(*FITTED_COLUMNS)
    kept = kept_levels(train)
    model = build_pipeline(kept).fit(train)
    indexer = model.stages[1]
    categorical = {spec.name: list(labels) for spec, labels in zip(CATEGORICAL_FEATURES, indexer.labelsArray)}
    prep = Preprocessing(numeric=numeric_stats(train), categorical=categorical, codes=code_vocabularies(train))
    return prep, model

