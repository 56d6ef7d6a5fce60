"""Every dependency of the routes, with its `Annotated` alias (routes import only from here)."""
from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Annotated, Any, Optional, Protocol

import anyio
import pandas as pd
from fastapi import Depends, HTTPException, Request, status
from pydantic import BaseModel

from api.metrics import ApiMetrics
from api.schemas import API_SOURCE, to_canonical_frame
from api.security import ApiSettings, require_api_key
from core.validation import naive_utc


class Scorer(Protocol):
    """What the API needs from `serving.scoring.ScoringService` (which serializes its own model calls)."""
    model_version: str
    warehouse: Optional[str]  # patient history source; None: every record is scored from itself only

    def score_encounters(self, canonical: pd.DataFrame, explain: bool = True, top_reasons: int = 3
                         ) -> pd.DataFrame: ...

    def score_records(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]: ...

    def explain_one(self, canonical: pd.DataFrame) -> dict[str, Any]: ...


def canonical_record(encounter: BaseModel) -> dict[str, Any]:
    """A validated request as one canonical record: the values `to_canonical_frame` puts in its row."""
    record = encounter.model_dump()
    for name in ("admit_time", "discharge_time"):
        if record.get(name) is not None:
            record[name] = naive_utc(record[name])
    record["source"] = API_SOURCE
    return record


@dataclass
class _Row:
    """One distinct request (validated record + options) and every caller waiting for its row."""
    encounter: Any
    explain: bool
    futures: list[asyncio.Future]

    @property
    def live(self) -> bool:
        return not all(f.done() for f in self.futures)  # every client gone: skip the row

    def deliver(self, row: Optional[dict[str, Any]] = None, error: Optional[BaseException] = None) -> None:
        for future in self.futures:
            if future.done():
                continue
            if error is None:
                future.set_result(row)
            else:
                future.set_exception(error)


def distinct_rows(items: list[tuple[Any, bool, asyncio.Future]]) -> list[_Row]:
    """Requests with the same validated record and options share one row: identical inputs score identically.
    The key is the record's JSON (exact, so hash collisions cannot merge different records)."""
    rows: dict[tuple[bool, str], _Row] = {}
    for encounter, explain, future in items:
        key = (explain, encounter.model_dump_json())
        if key in rows:
            rows[key].futures.append(future)
        else:
            rows[key] = _Row(encounter, explain, [future])
    return list(rows.values())


class MicroBatcher:
    """Scores concurrent `/predict` requests together, in as few scoring calls as it safely can.

    Most of a small score is fixed per-call cost. The loop takes every request waiting when the previous
    call finishes (no artificial delay: an idle server scores a lone request at once), and
    - identical requests (same validated record, same options) share one row;
    - when the scorer takes no history from a warehouse, a request without reasons is scored from its own
      record only (`score_records`), so requests of one patient share a call like any others;
    - otherwise (warehouse history, or reasons through `score_encounters`) encounters of one patient in
      one call would be each other's history, so two of one patient (or encounter) never share a call.
    Every request is scored exactly as if alone. If a combined call fails, each row is retried alone, so
    one bad row cannot fail its neighbours.

    With `on_scored` (the prediction log), each call's inputs, prediction rows and the feature values the
    scorer built are handed over as soon as the call is scored; when it returns a Future (durable logging),
    the call's requests are answered only once that Future is done (their rows committed), while the loop
    goes on scoring the next requests: the commit of one call overlaps the scoring of the next, and the
    log's thread writes every call waiting in one transaction.
    """

    def __init__(self, scorer: Any, max_rows: int = 64, on_call: Optional[Any] = None,
                 on_scored: Optional[Any] = None) -> None:
        self.scorer = scorer
        self.on_call = on_call  # called with the row count of every scoring call (metrics)
        # called with (canonical records or frame, prediction rows, features or None) of every call; may
        # return a concurrent Future that the call's answers wait for (durable logging)
        self.on_scored = on_scored
        self._delivering: set[asyncio.Task] = set()
        self.max_rows = max_rows
        self.independent = getattr(scorer, "warehouse", None) is None  # no history: records stand alone
        self._queue: Optional[asyncio.Queue] = None
        self._task: Optional[asyncio.Task] = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name="readmit-microbatcher")

    async def stop(self) -> None:
        if self._delivering:  # answers waiting for their log rows: let them go out first
            await asyncio.wait(set(self._delivering), timeout=30)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def score(self, encounter: Any, explain: bool = False) -> dict[str, Any]:
        """One validated request -> its prediction row (a dict of the scorer's columns); reasons only
        with `explain`."""
        if self._queue is None:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail="model not loaded")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((encounter, explain, future))
        return await future

    def _alone(self, row: _Row) -> bool:
        """Whether the row is scored from its own record only (`score_records`)."""
        return self.independent and not row.explain

    def _calls(self, rows: list[_Row]) -> list[list[_Row]]:
        """Rows grouped into scoring calls of at most `max_rows`, one kind of call per group."""
        alone = [row for row in rows if self._alone(row)]
        calls = [alone[i:i + self.max_rows] for i in range(0, len(alone), self.max_rows)]
        for explain in (False, True):
            calls += self._without_shared_patients([r for r in rows if r.explain == explain and not self._alone(r)])
        return calls

    def _without_shared_patients(self, rows: list[_Row]) -> list[list[_Row]]:
        groups: list[tuple[set, list]] = []
        for row in rows:
            keys = {("p", row.encounter.patient_id), ("e", row.encounter.encounter_id)}
            for used, members in groups:
                if not keys & used and len(members) < self.max_rows:
                    used |= keys
                    members.append(row)
                    break
            else:
                groups.append((set(keys), [row]))
        return [members for _, members in groups]

    def _score_rows(self, rows: list[_Row]) -> tuple[list[dict[str, Any]], Optional[Future]]:
        """One scoring call: its prediction rows, and the log's Future when the answers must wait for it."""
        features: Any = None
        if self._alone(rows[0]):
            inputs: Any = [canonical_record(row.encounter) for row in rows]
            with_features = getattr(self.scorer, "score_records_with_features", None)
            if with_features is not None and self.on_scored is not None:
                scored, positions, columns = with_features(inputs)
                features = (positions, columns)
            else:
                scored = self.scorer.score_records(inputs)
            logged: Any = scored
        else:
            inputs = to_canonical_frame([row.encounter for row in rows])
            with_features = getattr(self.scorer, "score_encounters_with_features", None)
            if with_features is not None and self.on_scored is not None:
                logged, features = with_features(inputs, explain=rows[0].explain, top_reasons=3)
            else:
                logged = self.scorer.score_encounters(inputs, explain=rows[0].explain, top_reasons=3)
            scored = logged.to_dict(orient="records")
        pending = self.on_scored(inputs, logged, features) if self.on_scored is not None else None
        return scored, pending if isinstance(pending, Future) else None

    async def _deliver(self, live: list[_Row], scored: list[dict[str, Any]], pending: Optional[Future]) -> None:
        if pending is not None:
            await asyncio.wrap_future(pending)  # True or False: a failed write is counted, the answer goes out
        for row, result in zip(live, scored):
            row.deliver(result)

    def _deliver_later(self, live: list[_Row], scored: list[dict[str, Any]], pending: Future) -> None:
        task = asyncio.create_task(self._deliver(live, scored, pending))
        self._delivering.add(task)
        task.add_done_callback(self._delivering.discard)

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            items = [await self._queue.get()]
            while not self._queue.empty() and len(items) < 4 * self.max_rows:
                items.append(self._queue.get_nowait())
            for call in self._calls(distinct_rows(items)):
                live = [row for row in call if row.live]
                if not live:
                    continue
                if self.on_call is not None:
                    self.on_call(len(live))
                try:
                    scored, pending = await anyio.to_thread.run_sync(self._score_rows, live)
                except Exception:
                    for row in live:
                        try:
                            one, pending = await anyio.to_thread.run_sync(self._score_rows, [row])
                        except Exception as error:
                            row.deliver(error=error)
                            continue
                        if pending is None:
                            row.deliver(one[0])
                        else:
                            self._deliver_later([row], one, pending)
                    continue
                if pending is None:
                    await self._deliver(live, scored, None)
                else:
                    self._deliver_later(live, scored, pending)


# The dependencies are `async def` although none of them awaits: FastAPI runs a plain `def` dependency in
# its thread pool, and three thread round trips per request cost more than the route's own work.
async def get_api_settings(request: Request) -> ApiSettings:
    return request.app.state.api_settings


async def get_scorer(request: Request) -> Scorer:
    scorer = getattr(request.app.state, "scorer", None)
    if scorer is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail="model not loaded")
    return scorer


async def get_optional_scorer(request: Request) -> Optional[Scorer]:
    return getattr(request.app.state, "scorer", None)


async def get_batcher(request: Request) -> MicroBatcher:
    batcher = getattr(request.app.state, "batcher", None)
    if batcher is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail="model not loaded")
    return batcher


async def get_metrics(request: Request) -> ApiMetrics:
    return request.app.state.metrics


async def get_prediction_log(request: Request) -> Any:
    """A callable (canonical inputs, prediction rows or frame, features or None) that logs served predictions
    and returns a Future to wait for before answering (durable logging), or None."""
    return getattr(request.app.state, "log_scored", None) or (lambda inputs, scored, features=None: None)


SettingsDep = Annotated[ApiSettings, Depends(get_api_settings)]
ScorerDep = Annotated[Scorer, Depends(get_scorer)]
OptionalScorerDep = Annotated[Optional[Scorer], Depends(get_optional_scorer)]
BatcherDep = Annotated[MicroBatcher, Depends(get_batcher)]
MetricsDep = Annotated[ApiMetrics, Depends(get_metrics)]
PredictionLogDep = Annotated[Any, Depends(get_prediction_log)]
PROTECTED: list[Any] = [Depends(require_api_key)]  # router-level guard: 401 without a valid key
AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or invalid API key"},
    429: {"description": "too many wrong API keys from this address: retry after `Retry-After` seconds"}}
