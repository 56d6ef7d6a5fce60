"""Spark StructTypes derived from the canonical definitions in `core` (never written by hand)."""
from __future__ import annotations

from pyspark.sql import types as T

from core.features import CATEGORICAL_NAMES, CODE_CHAPTERS, CODE_FEATURES, NUMERIC_NAMES
from core.schema import ENCOUNTER_FIELDS

_SPARK_TYPES = {
    "string": T.StringType(),
    "int": T.LongType(),
    "float": T.DoubleType(),
    "bool": T.BooleanType(),
    "timestamp": T.TimestampType(),
    "string_list": T.ArrayType(T.StringType(), containsNull=True),
}


def encounter_struct() -> T.StructType:
    """The canonical encounter as a Spark schema."""
    return T.StructType([T.StructField(f.name, _SPARK_TYPES[f.kind], nullable=True) for f in ENCOUNTER_FIELDS])


def feature_struct() -> T.StructType:
    """Output of `core.features.build_features` as a Spark schema."""
    fields = [T.StructField("encounter_id", T.StringType()), T.StructField("patient_id", T.StringType()),
              T.StructField("source", T.StringType()), T.StructField("readmitted_30d", T.BooleanType()),
              T.StructField("eligible", T.BooleanType())]
    fields += [T.StructField(name, T.DoubleType()) for name in NUMERIC_NAMES]
    fields += [T.StructField(name, T.StringType()) for name in CATEGORICAL_NAMES + CODE_FEATURES + CODE_CHAPTERS]
    return T.StructType(fields)
