"""Source-agnostic Spark steps between the adapters and the load: read, check, dedup, clean,
patient history, features and the patient split.

Row logic is never rewritten for Spark: the pure pandas functions of `core` run inside
`mapInArrow` (Arrow batches in; out, Arrow batches of exactly the Spark schema, so nullable ints,
lists and timestamps keep their types). Steps that need all of a patient's encounters (history, features)
hash-partition by `patient_id`, sort within partitions and stream Arrow batches through
`whole_patient_frames`, which holds back only the last patient of a batch, so memory stays bounded.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.types import to_arrow_schema

from core.errors import RowError, UserError
from core.features import add_patient_history, build_features, sort_for_history
from core.schema import COLUMNS, ENCOUNTER_FIELDS
from core.validation import ColumnRule, missing_columns, null_invalid_values, rules_from_fields, validate_frame
from core.warehouse import is_remote
from etl.spark import profiled
from etl.spark_schema import encounter_struct, feature_struct

ORDER_COLUMN = "_row"          # deterministic input order, used to keep the first of duplicates
SPLITS = ("train", "validation", "test")
DEFAULT_RATIOS = (0.7, 0.15, 0.15)
DEFAULT_SALT = "readmit-split-v1"
_HASH_DIGITS = 13              # 52 bits of sha256: exact in a double


# --- extract helpers ---------------------------------------------------------------------------

def local_path(path: str) -> Optional[Path]:
    """The local file behind `path`, or None for a remote URI."""
    if is_remote(path):
        return None
    return Path(path[len("file://"):] if path.startswith("file://") else path)


def read_text_csv(spark: SparkSession, path: str, rules: Sequence[ColumnRule], what: str) -> DataFrame:
    """A CSV with every column as text (no type inference), plus its input order.

    Fails with one line on a missing file, an empty file, a header without the required columns
    (which is also how a non-CSV file shows up) and a header without data rows."""
    local = local_path(path)
    if local is not None:
        if not local.exists():
            raise UserError(f"{path}: file not found")
        if local.is_file() and local.stat().st_size == 0:
            raise UserError(f"{path}: the file is empty")
    raw = (spark.read.option("header", True).option("inferSchema", False).option("encoding", "UTF-8")
           .option("mode", "PERMISSIVE").csv(path))
    if not raw.columns:
        raise UserError(f"{path}: the file is empty")
    require_header(raw.columns, rules, path, what)
    if raw.limit(1).count() == 0:
        raise UserError(f"{path}: the file has a header but no data rows")
    return raw.withColumn(ORDER_COLUMN, F.monotonically_increasing_id())


def require_header(columns: Sequence[str], rules: Sequence[ColumnRule], path: str, what: str) -> None:
    """One clear line when required columns are missing (this also catches non-CSV files)."""
    missing = missing_columns(columns, rules)
    if missing:
        raise UserError(f"{path}: not a {what} file: required column '{missing[0]}' is missing"
                        + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                        + f"; the header has {len(columns)} columns (a file without a header row reads its first "
                          "row as the header: its values are not shown)")


_ERROR_STRUCT = T.StructType([T.StructField("order", T.LongType()), T.StructField("column", T.StringType()),
                              T.StructField("problem", T.StringType())])


def find_invalid_cells(raw: DataFrame, rules: Sequence[ColumnRule], missing_tokens: Sequence[str],
                       check_bounds: bool) -> DataFrame:
    """Every cell problem `core.validation.validate_frame` finds, computed in Spark, in input order."""
    def problems(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            frame = batch_frame(batch)
            errors = validate_frame(frame.drop(columns=[ORDER_COLUMN]), rules, missing_tokens, check_bounds,
                                    first_row=0, max_errors=1000)
            rows = [e.row for e in errors]
            found = pd.DataFrame({"order": frame[ORDER_COLUMN].to_numpy()[rows].astype("int64"),
                                  "column": [e.column for e in errors], "problem": [e.problem for e in errors]})
            yield from arrow_batches(found, _ERROR_STRUCT)
    return raw.mapInArrow(problems, _ERROR_STRUCT)


def raise_first_invalid(raw: DataFrame, path: str, rules: Sequence[ColumnRule], missing_tokens: Sequence[str],
                        check_bounds: bool) -> None:
    """Stop with one line naming file, row and column when any cell is invalid; never the value.

    Spark finds the first problem in input order; its 1-based row number is the count of rows before
    it (the order column follows the file), counted on this error path only, for local and remote
    files alike.
    """
    invalid = find_invalid_cells(raw, rules, missing_tokens, check_bounds)
    first = invalid.orderBy("order", "column").limit(1).collect()
    if not first:
        return
    more = invalid.count() - 1
    suffix = f" ({more} more problem{'s' if more != 1 else ''} in the file)" if more else ""
    row = raw.filter(F.col(ORDER_COLUMN) < first[0]["order"]).count() + 1
    raise UserError(RowError(row, first[0]["column"], first[0]["problem"]).as_text(str(path)) + suffix)


# --- typed Arrow batches -----------------------------------------------------------------------

def batch_frame(batch: pa.RecordBatch) -> pd.DataFrame:
    """An Arrow batch from Spark as the pandas frame `core` expects: list cells as Python lists,
    timestamps as naive UTC."""
    lists = [f.name for f in batch.schema if pa.types.is_list(f.type)]
    frame = batch.drop_columns(lists).to_pandas(use_threads=False)
    for name in lists:  # Arrow builds the Python lists itself, much faster than list() per numpy cell
        frame.insert(batch.schema.get_field_index(name), name, batch.column(name).to_pylist())
    for field_ in batch.schema:
        if pa.types.is_timestamp(field_.type) and field_.type.tz is not None:
            frame[field_.name] = frame[field_.name].dt.tz_convert("UTC").dt.tz_localize(None)
    return frame


def arrow_table(frame: pd.DataFrame, schema: T.StructType) -> pa.Table:
    """A pandas frame as an Arrow table of exactly the Spark schema (nulls stay nulls).

    `safe=False` lets pandas' nanosecond timestamps become Spark's microseconds."""
    arrow = to_arrow_schema(schema, timezone="UTC")
    return pa.Table.from_pandas(frame[[f.name for f in schema.fields]], schema=arrow, preserve_index=False, safe=False,
                                nthreads=1)  # one Python worker per core: threads would only contend


def arrow_batches(frame: pd.DataFrame, schema: T.StructType) -> Iterator[pa.RecordBatch]:
    """`arrow_table` as record batches."""
    yield from arrow_table(frame, schema).to_batches()


def with_order(schema: T.StructType) -> T.StructType:
    return T.StructType(schema.fields + [T.StructField(ORDER_COLUMN, T.LongType())])


def map_rows_to_canonical(raw: DataFrame, to_canonical: Callable[[pd.DataFrame], pd.DataFrame]) -> DataFrame:
    """Run a source's pure pandas row mapping on every batch, carrying the input order along."""
    schema = with_order(encounter_struct())

    def mapped(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            frame = batch_frame(batch)
            out = to_canonical(frame.drop(columns=[ORDER_COLUMN]))
            out[ORDER_COLUMN] = frame[ORDER_COLUMN].to_numpy()
            yield from arrow_batches(out, schema)
    return raw.mapInArrow(mapped, schema)


# --- clean ---------------------------------------------------------------------------------------

def ensure_order(encounters: DataFrame) -> DataFrame:
    """Give sources without a file order (joins, generators) a content-based deterministic one."""
    if ORDER_COLUMN in encounters.columns:
        return encounters
    return encounters.withColumn(ORDER_COLUMN, F.xxhash64(*COLUMNS))


COPIES_COLUMN = "_copies"      # rows the input had with the kept row's encounter_id (1: no duplicate)


def drop_duplicate_encounters(encounters: DataFrame) -> DataFrame:
    """Keep the first row of each encounter_id in input order (ties broken by content); `COPIES_COLUMN`
    says how many rows it stands for, so the extract count needs no pass of its own."""
    encounters = ensure_order(encounters)
    same_id = Window.partitionBy("encounter_id")
    order = same_id.orderBy(ORDER_COLUMN, F.xxhash64(*COLUMNS))
    return (encounters.withColumn("_rank", F.row_number().over(order))
            .withColumn(COPIES_COLUMN, F.count(F.lit(1)).over(same_id))
            .filter(F.col("_rank") == 1).drop("_rank"))


BOUNDED_FIELDS = tuple(f for f in ENCOUNTER_FIELDS if f.bounds is not None and f.kind in ("int", "float"))
FULL_RULE_SOURCES = ("discharges",)  # canonical input: every rule uploads and the API apply
_FULL_RULES = rules_from_fields(ENCOUNTER_FIELDS)
_BOUNDS_RULES = tuple(ColumnRule(f.name, f.kind, bounds=f.bounds) for f in BOUNDED_FIELDS)
NULLED_COLUMN = "_nulled"      # bit i set: ENCOUNTER_FIELDS[i] was set to null (a long, cheap to count)
_FIELD_BITS = {f.name: 1 << i for i, f in enumerate(ENCOUNTER_FIELDS)}
assert len(_FIELD_BITS) < 63


def _nulled_mask(nulled: pd.DataFrame) -> np.ndarray:
    """Per row, the `NULLED_COLUMN` bits of its True columns."""
    bits = np.array([_FIELD_BITS[name] for name in nulled.columns], dtype=np.int64)
    return nulled.to_numpy(dtype=np.int64) @ bits if len(bits) else np.zeros(len(nulled), dtype=np.int64)


def _numeric_bounds_nulled(frame: pd.DataFrame) -> Optional[pd.DataFrame]:
    """What `null_invalid_values(frame, _BOUNDS_RULES, row_rules=False)` nulls, with numpy: a present
    number is nulled when it is not finite, not whole for an int rule, or outside the bounds
    (`core.validation.rules._number_problem`). None when a bounded column is not of a numeric dtype (text,
    bool, object): then the per-value rule decides."""
    nulled = {}
    for rule in _BOUNDS_RULES:
        if rule.name not in frame.columns:
            continue
        column = frame[rule.name]
        dtype = column.dtype
        if pd.api.types.is_bool_dtype(dtype) or not pd.api.types.is_numeric_dtype(dtype):
            return None
        present = column.notna().to_numpy(dtype=bool)
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
        with np.errstate(invalid="ignore"):
            fine = np.isfinite(values) & (values >= rule.bounds[0]) & (values <= rule.bounds[1])
            if rule.kind == "int":
                fine &= values == np.floor(values)
        nulled[rule.name] = present & ~fine
    return pd.DataFrame(nulled, index=frame.index, columns=[r.name for r in _BOUNDS_RULES if r.name in nulled])


def _null_implausible(frame: pd.DataFrame) -> pd.DataFrame:
    """`core.validation.null_invalid_values` per source, plus the nulled columns of each row.

    Sources other than the discharges template get only the numeric bounds, checked with numpy
    (`_numeric_bounds_nulled`: the same cells, without a Python call per value)."""
    parts = []
    for source, part in frame.groupby("source", dropna=False, sort=False):
        full = source in FULL_RULE_SOURCES
        nulled = None if full else _numeric_bounds_nulled(part)
        if nulled is None:
            cleaned, nulled = null_invalid_values(part, _FULL_RULES if full else _BOUNDS_RULES, row_rules=full)
        else:
            cleaned = part.copy()
            for column in nulled.columns[nulled.to_numpy().any(axis=0)]:  # most batches null nothing
                cleaned[column] = cleaned[column].where(~nulled[column], None)
        cleaned[NULLED_COLUMN] = _nulled_mask(nulled)
        parts.append(cleaned)
    if len(parts) == 1:
        return parts[0]
    return pd.concat(parts).loc[frame.index] if parts else frame.assign(**{NULLED_COLUMN: np.zeros(0, np.int64)})


def null_out_of_bounds(encounters: DataFrame) -> DataFrame:
    """Set implausible values to null, marking each row's nulled columns in `NULLED_COLUMN` (counted by
    `nulled_counts`). The ETL applies the same rule inside `patient_pass`; this step on its own is for
    sources whose patient-level step needs the cleaned data first (discharges: its last date).

    Every source: numbers outside their documented plausible range. The discharges template (input
    in the canonical schema) also gets every other rule of `core.validation` that uploads and the API
    refuse a row for: a date outside 1900-01-01..tomorrow, text over its length limit, and the value a
    row rule blames (a discharge before its admission, a stay that contradicts its dates, an age
    band that does not hold the age, an ICD version the codes contradict). The encounter is kept.
    Flagged, not clipped: a stay of 900 days is a data error, not a very long stay, and clipping
    would turn it into a believable number.
    """
    schema = T.StructType(encounters.schema.fields + [T.StructField(NULLED_COLUMN, T.LongType())])

    def clean(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            yield from arrow_batches(_null_implausible(batch_frame(batch)), schema)
    return encounters.mapInArrow(profiled(clean), schema)


def nulled_counts() -> list[F.Column]:
    """Aggregate expressions over a `NULLED_COLUMN`: per canonical column, the rows where it was set to
    null (aliased `nulled:<column>`)."""
    return [F.sum(F.shiftright(NULLED_COLUMN, i).bitwiseAND(1)).alias(f"nulled:{name}")
            for name, i in ((name, bit.bit_length() - 1) for name, bit in _FIELD_BITS.items())]


# --- patient-grouped passes ----------------------------------------------------------------------

def whole_patient_frames(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Re-cut a stream of frames sorted by patient so that no patient is split across two frames.

    The last patient of each frame is held back and prepended to the next one; at most one
    patient's rows are buffered beyond the current batch.
    """
    carry: Optional[pd.DataFrame] = None
    for frame in frames:
        if carry is not None:
            frame = pd.concat([carry, frame], ignore_index=True)
        if frame.empty:
            carry = frame
            continue
        last = frame["patient_id"].iloc[-1]
        tail = (frame["patient_id"] == last).to_numpy()
        carry = frame[tail]
        if (~tail).any():
            yield frame[~tail].reset_index(drop=True)
    if carry is not None and not carry.empty:
        yield carry.reset_index(drop=True)


def map_patients(df: DataFrame, fn: Callable[[pd.DataFrame], pa.Table], schema: T.StructType,
                 partitions: int) -> DataFrame:
    """Apply a function to whole patients: hash-partition, sort, stream whole-patient frames; `fn`
    returns an Arrow table of `schema`."""
    grouped = (df.repartition(partitions, "patient_id")
               .sortWithinPartitions("patient_id", F.col("encounter_id")))

    def mapped(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        frames = (batch_frame(batch) for batch in batches)
        for whole in whole_patient_frames(frames):
            yield from fn(whole).to_batches()
    return grouped.mapInArrow(profiled(mapped), schema)


def fill_history(encounters: pd.DataFrame) -> pd.DataFrame:
    """`encounter_seq` and `days_since_last_discharge` of canonical encounters (a source's own
    `days_since_last_discharge` wins where it has one)."""
    ordered = sort_for_history(encounters)
    history = add_patient_history(ordered)
    out = ordered.copy()
    out["encounter_seq"] = history["encounter_seq"]
    out["days_since_last_discharge"] = (pd.to_numeric(ordered["days_since_last_discharge"], errors="coerce")
                                        .fillna(history["days_since_last_discharge"]))
    return out


def with_history(encounters: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
    """`fill_history` from the feature rows `build_features(encounters)` already computed (same index):
    rows stay in their order (the tables are sorted when written), nothing is sorted or grouped again."""
    out = encounters.copy()
    out["encounter_seq"] = features["encounter_seq"].to_numpy(dtype=np.int64)
    out["days_since_last_discharge"] = (pd.to_numeric(encounters["days_since_last_discharge"], errors="coerce")
                                        .fillna(features["days_since_last_discharge"]))
    return out


FEATURE_PREFIX = "_f_"         # `patient_pass` columns of the feature row: flat, so Spark reads only those it needs
FIRST_COLUMN = "_first"        # 1 on each patient's first eligible encounter: patients counted without a distinct


def _first_eligible(patient_ids: pd.Series, eligible: np.ndarray) -> np.ndarray:
    """1 on the first eligible row of each patient (rows of a patient together), else 0."""
    return (eligible & ~patient_ids.where(eligible).duplicated().to_numpy()).astype(np.int64)


def patient_pass(encounters: DataFrame, partitions: int,
                 patient_fn: Optional[Callable[[pd.DataFrame], pd.DataFrame]] = None) -> DataFrame:
    """Clean, history and features of whole patients in one shuffle.

    Per whole-patient frame: implausible values set to null (`null_out_of_bounds`' rule, marked in
    `NULLED_COLUMN`), a source's own patient-level step (e.g. labels derived from dates), the
    per-patient columns filled (`with_history`, from `core.features.build_features` over those
    encounters, which computes the history once). Each output row is the filled encounter, its feature
    row as `FEATURE_PREFIX` columns, `FIRST_COLUMN`, and the input's other `_`-prefixed bookkeeping
    columns. Both tables come from it (`encounters_of`, `features_of`): cleaning, history and features
    used to be three passes, two of them shuffling every encounter by patient."""
    carried = [f for f in encounters.schema.fields if f.name not in COLUMNS and f.name not in
               (ORDER_COLUMN, NULLED_COLUMN)]
    row_schema = T.StructType(encounter_struct().fields + carried
                              + [T.StructField(NULLED_COLUMN, T.LongType()), T.StructField(FIRST_COLUMN, T.LongType())])
    features_schema = feature_struct()
    schema = T.StructType(row_schema.fields + [T.StructField(FEATURE_PREFIX + f.name, f.dataType)
                                               for f in features_schema.fields])

    def complete(frame: pd.DataFrame) -> pa.Table:
        cleaned = _null_implausible(frame)
        prepared = (patient_fn(cleaned) if patient_fn else cleaned).reset_index(drop=True)
        # The history is computed once, by build_features; the encounter row takes its sequence and gap.
        features = build_features(prepared).loc[prepared.index]
        filled = with_history(prepared, features)
        filled[FIRST_COLUMN] = _first_eligible(filled["patient_id"], features["eligible"].to_numpy(dtype=bool))
        table = arrow_table(filled, row_schema)
        for name, column in zip(features_schema.names, arrow_table(features, features_schema).columns):
            table = table.append_column(FEATURE_PREFIX + name, column)
        return table
    return map_patients(encounters.select(*COLUMNS, *[f.name for f in carried]), complete, schema, partitions)


def encounters_of(passed: DataFrame) -> DataFrame:
    """The `encounters` table rows of `patient_pass`."""
    return passed.select(*COLUMNS)


def features_of(passed: DataFrame, *extra: str) -> DataFrame:
    """The feature rows of `patient_pass` (every encounter, eligible or not), plus `extra` columns."""
    return passed.select(*[F.col(FEATURE_PREFIX + name).alias(name) for name in feature_struct().names], *extra)


# --- split ---------------------------------------------------------------------------------------

def parse_ratios(text: str) -> tuple[float, float, float]:
    """'0.7,0.15,0.15' -> three non-negative ratios summing to 1 (train, validation, test)."""
    try:
        parts = tuple(float(p) for p in text.split(","))
    except ValueError:
        raise UserError(f"--ratios '{text}': expected three numbers like 0.7,0.15,0.15") from None
    if len(parts) != 3 or min(parts) < 0 or abs(sum(parts) - 1.0) > 1e-6 or parts[0] == 0:
        raise UserError(f"--ratios '{text}': need train,validation,test >= 0 summing to 1 with train > 0")
    return parts  # type: ignore[return-value]


def patient_fraction(salt: str) -> F.Column:
    """A uniform number in [0, 1) from sha256(salt + patient_id): the same on every run and cluster."""
    digest = F.sha2(F.concat(F.lit(salt), F.col("patient_id")), 256)
    return F.conv(F.substring(digest, 1, _HASH_DIGITS), 16, 10).cast("double") / float(16 ** _HASH_DIGITS)


def _split_of(position: F.Column, ratios: Sequence[float]) -> F.Column:
    train, validation, _ = ratios
    return (F.when(position < train, SPLITS[0]).when(position < train + validation, SPLITS[1])
            .otherwise(SPLITS[2]))


def with_split(encounters: DataFrame, by: str, ratios: Sequence[float], salt: str = DEFAULT_SALT) -> DataFrame:
    """`encounters` with each patient's `split` column. By patient, a column expression (no shuffle, no
    join); by time, joined from `patient_splits`."""
    if by == "patient":
        return encounters.withColumn("split", _split_of(patient_fraction(salt), ratios))
    return encounters.join(patient_splits(encounters, by, ratios, salt), "patient_id")


def patient_splits(encounters: DataFrame, by: str, ratios: Sequence[float], salt: str = DEFAULT_SALT
                   ) -> DataFrame:
    """One row per patient with its split.

    by="patient": from the salted hash. by="time": patients ordered by their last discharge, the
    earliest `train` share to train, then validation, the latest to test (needs discharge dates).
    """
    patients = encounters.groupBy("patient_id").agg(F.max("discharge_time").alias("_last_discharge"))
    patients = patients.withColumn("_u", patient_fraction(salt))
    if by == "patient":
        return patients.select("patient_id", _split_of(F.col("_u"), ratios).alias("split"))
    if by != "time":
        raise UserError(f"--split-by '{by}': expected patient or time")
    if patients.filter(F.col("_last_discharge").isNull()).limit(1).count():
        raise UserError("--split-by time needs a discharge date for every patient; this source has none "
                        "(use --split-by patient)")
    # One global ordering over patients (not encounters): fine up to tens of millions of patients.
    rank = F.percent_rank().over(Window.orderBy("_last_discharge", "_u", "patient_id"))
    return patients.select("patient_id", _split_of(rank, ratios).alias("split"))
