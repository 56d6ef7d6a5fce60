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
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.json as pa_json
from sqlalchemy import Engine, and_, insert, select

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
    with engine.begin() as connection:
        for start in range(0, len(rows), chunk):
            connection.execute(insert(_TABLE), rows[start:start + chunk])
    log.info("prediction log: %d rows from channel %s, model %s", len(rows), channel, model_version)
    return len(rows)


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


# --- logging off the request path ---------------------------------------------------------------------

Frames = tuple[pd.DataFrame, Optional[pd.DataFrame]]
OUTCOMES = ("logged", "dropped", "failed")
MERGE_ROWS = 5_000


@dataclass
class _Job:
    channel: str
    model_version: str
    rows: int
    parts: list
    build: Callable[[list], Frames]

    def key(self) -> tuple:
        return (self.channel, self.model_version, self.build)


class PredictionLogWriter:
    """Writes prediction-log calls for a server: `submit` hands over the raw parts of a call and a function
    that turns parts into (predictions, features) frames, so even the features are computed off the request
    path. One background thread writes in order (waiting `linger` seconds after a first call, so that the
    calls of that moment join it); calls waiting together with the same channel, model version
    and `build` are merged (up to 5,000 rows) into one `build` and one transaction (`log_predictions`): under
    load, many one-row requests cost one DataFrame build and one commit, not one each.

    Bounded: at most `max_pending_rows` rows wait. A call that would exceed it is refused, never silently:
    its rows are counted as `dropped` (`on_rows("dropped", n)`, the API's /metrics) and a warning with the
    count (never an identifier) is logged. A call whose write fails is counted as `failed`, logged by
    exception type only (a database error's text can hold the inserted values). With `synchronous` the call
    is written in `submit` itself, before it returns (durable before the caller answers).
    """

    def __init__(self, engine: Engine, *, max_pending_rows: int = 50_000, synchronous: bool = False,
                 on_rows: Optional[Callable[[str, int], None]] = None, linger: float = 0.0) -> None:
        self.engine = engine
        self.linger = linger  # seconds the thread waits after a first call, so that more merge into its write
        self._closing = False
        self.max_pending_rows = max_pending_rows
        self.synchronous = synchronous
        self.on_rows = on_rows
        self.counts = {outcome: 0 for outcome in OUTCOMES}
        self._jobs: deque[Optional[_Job]] = deque()
        self._pending = 0
        self._cond = threading.Condition()
        self._thread: Optional[threading.Thread] = None
        if not synchronous:
            self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
            self._thread.start()

    @property
    def pending_rows(self) -> int:
        return self._pending

    def _count(self, outcome: str, rows: int) -> None:
        with self._cond:
            self.counts[outcome] += rows
        if self.on_rows is not None and rows:
            self.on_rows(outcome, rows)

    def submit(self, channel: str, model_version: str, rows: int, parts: list,
               build: Callable[[list], Frames]) -> bool:
        """Log `rows` predictions whose (predictions, features) `build(parts)` returns. False when refused."""
        if channel not in CHANNELS:
            raise ValueError(f"unknown channel {channel!r} (choose from {', '.join(CHANNELS)})")
        job = _Job(channel, str(model_version), rows, list(parts), build)
        if self.synchronous:
            self._write(job)
            return True
        with self._cond:
            if self._thread is None or self._pending + rows > self.max_pending_rows:
                refused = True
            else:
                refused = False
                self._pending += rows
                self._jobs.append(job)
                self._cond.notify_all()
        if refused:
            self._count("dropped", rows)
            log.warning("prediction log: %d rows dropped (%d waiting, limit %d; %d dropped in all)", rows,
                        self._pending, self.max_pending_rows, self.counts["dropped"])
            return False
        return True

    def _write(self, job: _Job) -> None:
        try:
            predictions, features = job.build(job.parts)
            written = log_predictions(self.engine, job.channel, predictions, features, job.model_version)
        except Exception as error:  # counted and logged by type; the server goes on
            self._count("failed", job.rows)
            log.error("prediction log: %d rows not written (%s)", job.rows, type(error).__name__)
            return
        self._count("logged", written)

    def _next(self) -> Optional[_Job]:
        """The next job, merged with the waiting jobs of the same kind behind it (under the lock)."""
        job = self._jobs.popleft()
        if job is None:
            return None
        while self._jobs and self._jobs[0] is not None and self._jobs[0].key() == job.key() \
                and job.rows + self._jobs[0].rows <= MERGE_ROWS:
            following = self._jobs.popleft()
            job = _Job(job.channel, job.model_version, job.rows + following.rows, job.parts + following.parts,
                       job.build)
        return job

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._jobs:
                    self._cond.wait()
                if self.linger and not self._closing and self._pending < MERGE_ROWS:
                    self._cond.wait_for(lambda: self._closing or self._pending >= MERGE_ROWS, self.linger)
                job = self._next()
            if job is None:
                return
            try:
                self._write(job)
            finally:
                with self._cond:
                    self._pending -= job.rows
                    self._cond.notify_all()

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait until every submitted call is written (or failed); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Write what waits (up to `timeout` seconds), then stop the thread; later calls are refused."""
        if self._thread is None:
            return
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self.flush(timeout)
        with self._cond:
            self._jobs.append(None)
            self._cond.notify_all()
        self._thread.join(timeout)
        with self._cond:
            left = self._pending
            self._thread = None
        if left:
            self._count("dropped", left)
            log.warning("prediction log: %d rows not written before shutdown", left)


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
