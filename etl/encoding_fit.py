"""Fit the encoding on the training split only, in Spark, and save it two ways.

- `preprocessing.json` (`core.encoding.Preprocessing`): what the scorer and the transformer apply
  with numpy, no Spark needed.
- `pipeline_model/`: a Spark ML `PipelineModel` (level collapsing + per feature a `StringIndexerModel`
  (handleInvalid="keep") with the labels `StringIndexer(frequencyDesc)` fits, read from the one
  value-count job + `OneHotEncoder`, numeric transform + `Imputer` + `VectorAssembler` +
  `StandardScaler`) for MLlib baselines and for checking that both encodings agree.

Categorical levels are collapsed exactly as `core.encoding.collapse_levels` does: null ->
MISSING_LEVEL, a level seen at least `min_count` times in train -> itself, anything else -> OTHER_LEVEL.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Optional

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.feature import (
    Imputer,
    ImputerModel,
    OneHotEncoder,
    SQLTransformer,
    StandardScaler,
    StringIndexer,
    StringIndexerModel,
    VectorAssembler,
)
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from core import icd
from core.encoding import Preprocessing
from core.features import (
    CATEGORICAL_FEATURES,
    CATEGORICAL_NAMES,
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


def level_counts(train: DataFrame) -> dict[str, dict[Optional[str], int]]:
    """Training rows per value (None: missing) of every categorical feature and diagnosis code column.

    One Spark job: all (column, value) pairs are counted together; the kept levels, the indexer's
    labels and the code vocabularies are all read from these counts."""
    columns = CATEGORICAL_NAMES + CODE_FEATURES
    pairs = F.explode(F.array(*[F.struct(F.lit(name).alias("feature"), F.col(name).alias("value"))
                                for name in columns]))
    rows = train.select(pairs.alias("pair")).select("pair.*").groupBy("feature", "value").count().collect()
    counts: dict[str, dict[Optional[str], int]] = {name: {} for name in columns}
    for row in rows:
        counts[row["feature"]][row["value"]] = int(row["count"])
    return counts


def kept_levels(counts: dict[str, dict[Optional[str], int]]) -> dict[str, list[str]]:
    """Per categorical feature, the non-null levels with at least `min_count` training rows (sorted)."""
    return {spec.name: sorted(value for value, n in counts[spec.name].items()
                              if value is not None and n >= spec.min_count)
            for spec in CATEGORICAL_FEATURES}


def _most_frequent_first(counts: dict[str, int]) -> list[str]:
    """Values by count, largest first, ties in alphabetical order: StringIndexer's `frequencyDesc`."""
    return [value for value, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]


def indexer_labels(counts: dict[str, dict[Optional[str], int]], kept: dict[str, list[str]]) -> list[list[str]]:
    """Per categorical feature, the labels `StringIndexer(stringOrderType="frequencyDesc")` fits on its
    collapsed levels (`_collapse_sql`), from the counts: no pass over the data of its own."""
    labels = []
    for spec in CATEGORICAL_FEATURES:
        kept_set, collapsed = set(kept[spec.name]), Counter()
        for value, n in counts[spec.name].items():
            collapsed[MISSING_LEVEL if value is None else value if value in kept_set else OTHER_LEVEL] += n
        labels.append(_most_frequent_first(collapsed))
    return labels


def _sql_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _collapse_sql(name: str, kept: list[str]) -> str:
    kept_clause = (f"WHEN `{name}` IN ({', '.join(_sql_string(v) for v in kept)}) THEN `{name}` " if kept else "")
    return (f"CASE WHEN `{name}` IS NULL THEN {_sql_string(MISSING_LEVEL)} {kept_clause}"
            f"ELSE {_sql_string(OTHER_LEVEL)} END AS `{name}{LEVEL_SUFFIX}`")


def _transform_sql(name: str, transform: str, never_recorded: bool = False) -> str:
    """The transformed numeric column; a constant for a feature no training row records (Spark's Imputer
    cannot fit a median of nothing, and such a feature carries no information for the baselines)."""
    value = f"CAST(`{name}` AS DOUBLE)"
    expr = value if transform == "identity" else f"LOG1P(GREATEST({value}, 0D))"
    return f"{'0D' if never_recorded else expr} AS `{name}{NUMERIC_SUFFIX}`"


def build_pipeline(kept: dict[str, list[str]], labels: Optional[list[list[str]]] = None,
                   never_recorded: frozenset[str] = frozenset()) -> Pipeline:
    """The Spark ML pipeline; its first stage makes the same levels and numeric transforms as core.

    With `labels` (`indexer_labels`) one indexer per feature is built from them (PySpark's multi-column
    `from_arrays_of_labels` pads unequal label lists with nulls), else one is fitted."""
    selects = [_collapse_sql(spec.name, kept[spec.name]) for spec in CATEGORICAL_FEATURES]
    selects += [_transform_sql(spec.name, spec.transform, spec.name in never_recorded) for spec in NUMERIC_FEATURES]
    prepare = SQLTransformer(statement=f"SELECT *, {', '.join(selects)} FROM __THIS__")
    levels = [f"{spec.name}{LEVEL_SUFFIX}" for spec in CATEGORICAL_FEATURES]
    indices = [f"{spec.name}{INDEX_SUFFIX}" for spec in CATEGORICAL_FEATURES]
    onehots = [f"{spec.name}{ONEHOT_SUFFIX}" for spec in CATEGORICAL_FEATURES]
    numeric = [f"{spec.name}{NUMERIC_SUFFIX}" for spec in NUMERIC_FEATURES]
    imputed = [f"{name}_imputed" for name in numeric]
    indexers = ([StringIndexer(inputCols=levels, outputCols=indices, handleInvalid="keep",
                               stringOrderType="frequencyDesc")] if labels is None else
                [StringIndexerModel.from_labels(column_labels, inputCol=level, outputCol=index, handleInvalid="keep")
                 for column_labels, level, index in zip(labels, levels, indices)])
    return Pipeline(stages=[
        prepare,
        *indexers,
        OneHotEncoder(inputCols=indices, outputCols=onehots, handleInvalid="keep"),
        Imputer(inputCols=numeric, outputCols=imputed, strategy="median"),
        VectorAssembler(inputCols=imputed, outputCol="numeric_vector", handleInvalid="keep"),
        StandardScaler(inputCol="numeric_vector", outputCol="numeric_scaled", withMean=True, withStd=True),
        VectorAssembler(inputCols=onehots + ["numeric_scaled"], outputCol=FEATURES_VECTOR),
    ])


def numeric_stats(train: DataFrame) -> dict[str, dict[str, Any]]:
    """Mean, sample standard deviation and share missing of each transformed numeric feature on train,
    in one job; "median" is left None for `fit_encoding` to fill from the fitted Imputer.

    Missing values are left out of every statistic (missing is flagged, not imputed into the mean).
    """
    exprs = []
    for spec in NUMERIC_FEATURES:
        value = F.col(spec.name).cast("double")
        x = value if spec.transform == "identity" else F.log1p(F.greatest(value, F.lit(0.0)))
        exprs += [F.mean(x).alias(f"{spec.name}|mean"), F.stddev_samp(x).alias(f"{spec.name}|std"),
                  F.avg(F.when(value.isNull(), 1.0).otherwise(0.0)).alias(f"{spec.name}|missing_rate")]
    row = {**train.agg(*exprs).collect()[0].asDict(), **{f"{name}|median": None for name in NUMERIC_NAMES}}
    return {spec.name: {"transform": spec.transform,
                        **{stat: (float(row[f"{spec.name}|{stat}"]) if row[f"{spec.name}|{stat}"] is not None else None)
                           for stat in ("mean", "std", "median", "missing_rate")}}
            for spec in NUMERIC_FEATURES}


def imputer_medians(model: PipelineModel) -> dict[str, Optional[float]]:
    """The training medians the pipeline's Imputer fills in, per numeric feature (transformed values;
    Spark's approxQuantile, relative rank error 0.001; None when a feature is always missing).

    Recorded in preprocessing.json for reading (the encoding uses mean and std): Spark's exact median
    keeps every distinct value in one task's memory, millions at scale, and takes a pass of its own."""
    imputer = next(stage for stage in model.stages if isinstance(stage, ImputerModel))
    row = imputer.surrogateDF.collect()[0].asDict()
    return {spec.name: row[f"{spec.name}{NUMERIC_SUFFIX}"] for spec in NUMERIC_FEATURES}


def _frequent(counts: list[dict[Optional[str], int]], min_count: int) -> list[str]:
    """Values pooled over several columns' counts with at least `min_count` training rows, most frequent first."""
    pooled: Counter = Counter()
    for column in counts:
        pooled.update({value: n for value, n in column.items() if value is not None})
    return _most_frequent_first({value: n for value, n in pooled.items() if n >= min_count})


def code_vocabularies(counts: dict[str, dict[Optional[str], int]]) -> dict[str, list[str]]:
    """Diagnosis vocabularies over all code positions: full codes and categories seen at least
    CODE_MIN_COUNT times in train; chapters: the fixed list of `core.icd.CHAPTERS`."""
    return {"code_labels": _frequent([counts[name] for name in CODE_FEATURES], CODE_MIN_COUNT),
            "category_labels": _frequent([counts[f"{name}_category"] for name in CODE_FEATURES], CODE_MIN_COUNT),
            "chapter_labels": list(icd.CHAPTERS)}


FITTED_COLUMNS = tuple(spec.name for spec in CATEGORICAL_FEATURES) + NUMERIC_NAMES + CODE_FEATURES


def fit_encoding(train: DataFrame) -> tuple[Preprocessing, PipelineModel]:
    """Fit both encodings on the training rows, reading only the columns they encode, in four jobs:
    value counts (levels, indexer labels, code vocabularies), numeric statistics, and the Imputer's and
    the StandardScaler's fits."""
    train = train.select(*FITTED_COLUMNS)
    counts = level_counts(train)
    kept = kept_levels(counts)
    labels = indexer_labels(counts, kept)
    numeric = numeric_stats(train)
    never_recorded = frozenset(name for name, stats in numeric.items() if stats["mean"] is None)
    model = build_pipeline(kept, labels, never_recorded).fit(train)
    medians = imputer_medians(model)
    for name, stats in numeric.items():
        stats["median"] = None if name in never_recorded else medians[name]
    categorical = {spec.name: column_labels for spec, column_labels in zip(CATEGORICAL_FEATURES, labels)}
    prep = Preprocessing(numeric=numeric, categorical=categorical, codes=code_vocabularies(counts))
    return prep, model

