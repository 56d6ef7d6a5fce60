"""The prediction log: one row per scored encounter, whatever the channel, kept for monitoring.

    log_predictions(engine, "api", predictions, features, model_version)   # one transaction, durable on return
    for chunk in read_log(engine, start, end): ...                          # DataFrames, oldest first
    log_warehouse_predictions(engine, "data/warehouse")                     # a batch scoring run

`predictions` is what `ScoringService.score_encounters` returns (one row per input encounter, scored or
not); `features` the feature rows the model saw (`ScoringService.features_for`), matched by
`encounter_id`. A `source` column of `features` sets each row's source, and a `discharge_time` column
is logged too: monitoring periods follow discharge dates. A prediction without a feature row (an
invalid upload row) is logged with its status only.

The `features` JSON holds every feature value the model saw (`core.features.FEATURE_COLUMNS`; null
when missing) and three context keys, which start with an underscore so they never collide with a
feature: `_discharge_time` (ISO), `_eligible` (false for died / hospice) and `_invalid` (not scored for
impossible values). Nothing here writes an identifier to the application log.

Batch runs of the warehouse are logged here too (channel "warehouse"), rather than read back from the
warehouse's `predictions` versions: the warehouse keeps only the last few versions and joins them to
the current encounters, while the log is append-only, keeps what each run saw, and one reader serves
every channel (docs/monitoring.md).
"""
from __future__ import annotations

import datetime as dt
import io
import json
import logging
from contextlib import contextmanager
from typing import Any, Iterator, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.json as pa_json
from sqlalchemy import Connection, Engine, and_, insert, select

from core.features import FEATURE_COLUMNS, NUMERIC_NAMES, first_stay_features
from core.warehouse import Warehouse
from serving.db_tables import PredictionLog

log = logging.getLogger(__name__)

CHANNELS = ("api", "upload", "cli", "warehouse")
CONTEXT_KEYS = ("_discharge_time", "_eligible", "_invalid")
WRITE_CHUNK = 5_000
READ_CHUNK = 100_000
LOG_COLUMNS = ("id", "logged_at", "channel", "model_version", "source", "encounter_id", "patient_id", "risk",
               "risk_tier", "features")
_TABLE = PredictionLog.__table__


def feature_schema(names: Sequence[str] = FEATURE_COLUMNS) -> pa.Schema:
    """Arrow types of the logged JSON keys: numbers as float64, every other feature as text."""
    numeric = set(NUMERIC_NAMES)
    fields = [pa.field(name, pa.float64() if name in numeric else pa.string()) for name in names]
    return pa.schema(fields + [pa.field("_discharge_time", pa.string()), pa.field("_eligible", pa.bool_()),
                               pa.field("_invalid", pa.bool_())])


# --- writing ----------------------------------------------------------------------------------------

def _feature_columns(predictions: pd.DataFrame, features: Optional[pd.DataFrame]) -> dict[str, np.ndarray]:
    """The JSON keys of every prediction row as columns (numbers float64 with NaN, text object with None)."""
    n = len(predictions)
    ids = predictions["encounter_id"].astype(str).to_numpy()
    columns: dict[str, np.ndarray] = {}
    if features is not None and len(features):
        unique = features.drop_duplicates("encounter_id", keep="last")
        matched = unique.set_index(unique["encounter_id"].astype(str)).reindex(ids)
        for name in FEATURE_COLUMNS:
            if name in matched.columns:
                columns[name] = matched[name].to_numpy(dtype=np.float64 if name in NUMERIC_NAMES else object)
        if "discharge_time" in matched.columns:
            stamps = pd.to_datetime(matched["discharge_time"], errors="coerce")
            columns["_discharge_time"] = stamps.dt.strftime("%Y-%m-%dT%H:%M:%S").to_numpy(dtype=object)
    eligible = predictions["eligible"] if "eligible" in predictions else pd.Series(True, index=predictions.index)
    columns["_eligible"] = eligible.astype("boolean").fillna(True).astype(bool).to_numpy()
    problem = predictions["problem"] if "problem" in predictions else pd.Series(None, index=predictions.index)
    columns["_invalid"] = problem.notna().to_numpy()
    assert all(len(column) == n for column in columns.values())
    return columns


SMALL_CALL = 200  # rows: below, plain Python builds the objects (pandas' fixed cost per call is the bigger)


def _json_value(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (float, np.floating)):
        return round(float(value), 10) if np.isfinite(value) else None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, float) or (not isinstance(value, str) and pd.isna(value)):
        return None
    return str(value)


def feature_objects(predictions: pd.DataFrame, features: Optional[pd.DataFrame]) -> list[dict[str, Any]]:
    """One JSON-ready dict per prediction row (in order): the feature values and the context keys."""
    if len(predictions) >= SMALL_CALL:
        return [json.loads(text) for text in feature_payloads(predictions, features)]
    columns = {name: [_json_value(v) for v in values]
               for name, values in _feature_columns(predictions, features).items()}
    return [{name: values[i] for name, values in columns.items()} for i in range(len(predictions))]


def feature_payloads(predictions: pd.DataFrame, features: Optional[pd.DataFrame]) -> list[str]:
    """One JSON object per prediction row (in order), through pandas' C encoder (fast for big runs)."""
    n = len(predictions)
    frame = pd.DataFrame(_feature_columns(predictions, features), index=range(n))
    text = frame.to_json(orient="records", lines=True, double_precision=10)
    return text.splitlines() if n else []


def _text(values: pd.Series) -> np.ndarray:
    out = values.astype(object).to_numpy()
    return np.where(pd.isna(out) | (out == ""), None, out.astype(str)).astype(object)


def log_rows(predictions: pd.DataFrame, features: Optional[pd.DataFrame], channel: str, model_version: str,
             logged_at: Optional[dt.datetime] = None, source: Optional[str] = None) -> list[dict[str, Any]]:
    """The prediction_log rows of one call (pure: nothing written)."""
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r} (choose from {', '.join(CHANNELS)})")
    logged_at = logged_at or dt.datetime.now(dt.timezone.utc)
    n = len(predictions)
    sources = np.full(n, source, dtype=object)
    if source is None and features is not None and "source" in features.columns and len(features):
        by_id = features.drop_duplicates("encounter_id", keep="last").set_index("encounter_id")["source"]
        sources = _text(by_id.reindex(predictions["encounter_id"].astype(str).to_numpy()).reset_index(drop=True))
    risk = pd.to_numeric(predictions["risk"], errors="coerce").to_numpy(dtype=np.float64)
    columns = {"encounter_id": _text(predictions["encounter_id"]), "patient_id": _text(predictions["patient_id"]),
               "risk_tier": _text(predictions["risk_tier"]) if "risk_tier" in predictions else np.full(n, None)}
    objects = feature_objects(predictions.reset_index(drop=True), features)
    return [{"logged_at": logged_at, "channel": channel, "model_version": str(model_version),
             "source": sources[i], "encounter_id": columns["encounter_id"][i], "patient_id": columns["patient_id"][i],
             "risk": float(risk[i]) if np.isfinite(risk[i]) else None, "risk_tier": columns["risk_tier"][i],
             "features": objects[i]} for i in range(n)]


def log_predictions(engine: Engine, channel: str, predictions_frame: pd.DataFrame,
                    features_frame: Optional[pd.DataFrame], model_version: str, *,
                    logged_at: Optional[dt.datetime] = None, source: Optional[str] = None,
                    chunk: int = WRITE_CHUNK) -> int:
    """Append one row per prediction, all in one transaction (committed, so durable, when this returns;
    nothing is written if it fails). Returns the number of rows logged."""
    rows = log_rows(predictions_frame, features_frame, channel, model_version, logged_at, source)
    insert_rows(engine, rows, chunk)
    log.info("prediction log: %d rows from channel %s, model %s", len(rows), channel, model_version)
    return len(rows)


def insert_rows(engine: Engine | Connection, rows: Sequence[Mapping[str, Any]], chunk: int = WRITE_CHUNK) -> int:
    """Append prediction_log rows (`log_rows`, `record_log_rows`) in one transaction (on the engine, or on a
    connection outside a transaction): committed, so durable, when this returns; nothing written if it fails."""
    if not rows:
        return 0
    with (engine.begin() if isinstance(engine, Engine) else _transaction(engine)) as connection:
        for start in range(0, len(rows), chunk):
            connection.execute(insert(_TABLE), list(rows[start:start + chunk]))
    return len(rows)


@contextmanager
def _transaction(connection: Connection) -> Iterator[Connection]:
    with connection.begin():
        yield connection


def log_warehouse_predictions(engine: Engine, root: str, *, since: Optional[dt.date] = None,
                              chunk: int = 50_000) -> int:
    """Log the warehouse's current `predictions` (channel "warehouse") with the feature rows and discharge
    times they were computed from; only discharges on or after `since` when given (the go-live date).

    A run is logged once: its rows carry the predictions' `scored_at` as their time, and a second call for
    the same run logs nothing. Returns the number of rows logged."""
    warehouse = Warehouse(root).pinned()
    manifest = warehouse.manifest("predictions")
    stamp = manifest.get("scored_at") or warehouse.query("SELECT max(scored_at) AS t FROM predictions")["t"].iloc[0]
    if stamp is None or pd.isna(stamp):
        raise ValueError(f"warehouse {root}: its predictions say not when they were scored")
    scored_at = pd.Timestamp(stamp)
    scored_at = (scored_at.tz_localize("UTC") if scored_at.tzinfo is None else scored_at.tz_convert("UTC")).to_pydatetime()
    with engine.connect() as connection:
        done = connection.execute(select(_TABLE.c.id).where(and_(
            _TABLE.c.channel == "warehouse", _TABLE.c.logged_at == scored_at)).limit(1)).first()
    if done is not None:
        return 0
    model_version = str(manifest.get("model_version") or "unknown")
    where, params = ("WHERE e.discharge_time >= ?", [pd.Timestamp(since)]) if since else ("", [])
    frame = warehouse.query(
        "SELECT p.*, e.source, e.discharge_time, "
        "f.* EXCLUDE (encounter_id, patient_id, source, readmitted_30d, eligible) "
        "FROM predictions p JOIN encounters e USING (encounter_id) LEFT JOIN features f USING (encounter_id) "
        f"{where} ORDER BY e.discharge_time, p.encounter_id", params)
    logged = 0
    for start in range(0, len(frame), chunk):
        part = frame.iloc[start:start + chunk]
        logged += log_predictions(engine, "warehouse", part, part, str(part["model_version"].iloc[0] or model_version),
                                  logged_at=scored_at)
    return logged


def record_features(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Feature rows of independent canonical records (each a first stay, as the API's `score_records`
    scores them), with the `encounter_id`, `source` and `discharge_time` the log keys on."""
    frame = pd.DataFrame(first_stay_features(records))
    frame["encounter_id"] = [str(record.get("encounter_id")) for record in records]
    frame["source"] = [record.get("source") for record in records]
    frame["discharge_time"] = [record.get("discharge_time") for record in records]
    return frame


def _iso(value: Any) -> Optional[str]:
    """A discharge time as the log writes it (`_feature_columns`: seconds, no zone); None when unknown."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    stamp = value if isinstance(value, dt.datetime) else pd.to_datetime(value, errors="coerce")
    return None if stamp is None or pd.isna(stamp) else stamp.strftime("%Y-%m-%dT%H:%M:%S")


def _json_column(name: str, values: np.ndarray) -> list[Any]:
    """One feature column as JSON-ready Python values, as `_json_value` gives them, in bulk."""
    if name in _NUMERIC:
        numbers = np.round(np.asarray(values, dtype=np.float64), 10)
        finite = np.isfinite(numbers)
        out = numbers.tolist()
        return out if finite.all() else [v if ok else None for v, ok in zip(out, finite.tolist())]
    return [v if v is None or isinstance(v, str) else _json_value(v) for v in np.asarray(values, dtype=object).tolist()]


_NUMERIC = frozenset(NUMERIC_NAMES)


def record_log_rows(calls: Sequence[tuple[Sequence[Mapping[str, Any]], Sequence[Mapping[str, Any]], Sequence[int],
                                          Mapping[str, np.ndarray]]],
                    channel: str, model_version: str, logged_at: Optional[dt.datetime] = None) -> list[dict[str, Any]]:
    """The prediction_log rows of `ScoringService.score_records_with_features` calls, each given as (canonical
    records, prediction rows, scored positions, feature columns): the feature values the scorer built are
    logged as they are, not built again (records it did not score get theirs from `first_stay_features`).
    The same rows as `log_rows(predictions, record_features(records), ...)`, without a DataFrame: the API's
    per-request path."""
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r} (choose from {', '.join(CHANNELS)})")
    logged_at = logged_at or dt.datetime.now(dt.timezone.utc)
    version = str(model_version)
    out: list[dict[str, Any]] = []
    for records, predictions, positions, features in calls:
        n = len(records)
        objects: list[dict[str, Any]] = [{} for _ in range(n)]
        missing = sorted(set(range(n)) - set(positions))
        for where, columns in ((list(positions), features),
                               (missing, first_stay_features([records[i] for i in missing]) if missing else {})):
            if not where:
                continue
            for name in FEATURE_COLUMNS:
                if name in columns:
                    for i, value in zip(where, _json_column(name, columns[name])):
                        objects[i][name] = value
        for i, (record, row) in enumerate(zip(records, predictions)):
            obj = objects[i]
            obj["_discharge_time"] = _iso(record.get("discharge_time"))
            eligible = row.get("eligible")
            obj["_eligible"] = True if eligible is None or (not isinstance(eligible, (bool, np.bool_))
                                                             and pd.isna(eligible)) else bool(eligible)
            obj["_invalid"] = row.get("problem") is not None
            risk = row.get("risk")
            risk = None if risk is None else float(risk)
            source, tier = record.get("source"), row.get("risk_tier")
            out.append({"logged_at": logged_at, "channel": channel, "model_version": version,
                        "source": None if source in (None, "") else str(source),
                        "encounter_id": _id_text(row.get("encounter_id")),
                        "patient_id": _id_text(row.get("patient_id")),
                        "risk": risk if risk is not None and np.isfinite(risk) else None,
                        "risk_tier": None if tier in (None, "") else str(tier), "features": obj})
    return out


def _id_text(value: Any) -> Optional[str]:
    return None if value is None or value == "" or (not isinstance(value, str) and pd.isna(value)) else str(value)


def with_context(features: pd.DataFrame, canonical: pd.DataFrame) -> pd.DataFrame:
    """Feature rows (`ScoringService.features_for`) with the `source` and `discharge_time` of their canonical
    encounters, matched by encounter id: what the log keys periods and sources on."""
    out = features.copy()
    by_id = canonical.drop_duplicates("encounter_id", keep="last")
    by_id = by_id.set_index(by_id["encounter_id"].astype(str))
    ids = out["encounter_id"].astype(str)
    for name in ("source", "discharge_time"):
        if name in by_id.columns:
            out[name] = by_id[name].reindex(ids).to_numpy()
    return out


# --- reading ----------------------------------------------------------------------------------------

def parse_features(payloads: Sequence[Any], names: Sequence[str] = FEATURE_COLUMNS,
                   categorical: bool = False) -> pd.DataFrame:
    """The logged JSON objects (UTF-8 bytes, text or dicts) as typed columns: `names` and the context keys; text
    columns as pandas categoricals with `categorical` (a million rows then hold a few codes, not
    millions of strings).

    Text goes through Arrow's JSON reader (C++, multi-threaded): a million rows parse in seconds."""
    schema = feature_schema(names)
    if not len(payloads):
        return schema.empty_table().to_pandas(strings_to_categorical=categorical)
    if isinstance(payloads[0], (bytes, bytearray)):  # UTF-8 from the driver as is: no decoding, no encoding
        lines = b"\n".join(payloads)
    else:
        texts = payloads if isinstance(payloads[0], str) else [json.dumps(p) for p in payloads]  # one type a column
        lines = "\n".join(texts).encode()
    options = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    table = pa_json.read_json(io.BytesIO(lines), parse_options=options,
                              read_options=pa_json.ReadOptions(block_size=1 << 24))
    return table.to_pandas(strings_to_categorical=categorical)


def _time_filter(statement, start: Optional[dt.datetime], end: Optional[dt.datetime]):
    if start is not None:
        statement = statement.where(_TABLE.c.logged_at >= start)
    if end is not None:
        statement = statement.where(_TABLE.c.logged_at < end)
    return statement


def read_log(engine: Engine, start: Optional[dt.datetime] = None, end: Optional[dt.datetime] = None,
             chunk: int = READ_CHUNK, *, channel: Optional[str] = None, expand: bool = True) -> Iterator[pd.DataFrame]:
    """The log rows logged in [start, end) (timezone-aware times; None: unbounded), oldest first, as
    DataFrames of at most `chunk` rows. With `expand` the JSON becomes one column per key
    (`parse_features`); otherwise `features` holds the dicts."""
    statement = _time_filter(select(*[_TABLE.c[name] for name in LOG_COLUMNS]), start, end)
    if channel is not None:
        statement = statement.where(_TABLE.c.channel == channel)
    statement = statement.order_by(_TABLE.c.id)
    with engine.connect() as connection:
        result = connection.execution_options(yield_per=chunk).execute(statement)
        for part in result.partitions():
            frame = pd.DataFrame(part, columns=list(LOG_COLUMNS))
            if expand:
                parsed = parse_features(frame["features"].tolist())
                frame = pd.concat([frame.drop(columns="features"), parsed], axis=1)
            yield frame
