"""Every dependency of the routes, with its `Annotated` alias (routes import only from here)."""
from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Any, Optional, Protocol

import anyio
import pandas as pd
from fastapi import Depends, HTTPException, Request, status

from api.metrics import ApiMetrics
from api.schemas import to_canonical_frame
from api.security import ApiSettings, require_api_key


class Scorer(Protocol):
    """What the API needs from `serving.scoring.ScoringService` (which serializes its own model calls)."""
    model_version: str

    def score_encounters(self, canonical: pd.DataFrame, explain: bool = True, top_reasons: int = 3
                         ) -> pd.DataFrame: ...

    def explain_one(self, canonical: pd.DataFrame) -> dict[str, Any]: ...


class MicroBatcher:
    """Scores concurrent `/predict` requests together, in one call to the scoring service.

    Most of a single-row score is fixed per-call cost (pandas feature building, encoding); one call
    for 20 rows costs little more than one call for one. The loop takes every request waiting when
    the previous call finishes (no artificial delay: an idle server scores a lone request at once),
    and never puts two requests of the same patient (or encounter) in one call, because encounters
    of one patient in one call are each other's history: every request is scored exactly as if alone.
    If a combined call fails, each request is retried alone, so one bad row cannot fail its neighbours.
    """

    def __init__(self, scorer: Any, max_rows: int = 64, on_call: Optional[Any] = None) -> None:
        self.scorer = scorer
        self.on_call = on_call  # called with the row count of every scoring call (metrics)
        self.max_rows = max_rows
        self._queue: Optional[asyncio.Queue] = None
        self._task: Optional[asyncio.Task] = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name="readmit-microbatcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def score(self, encounter: Any) -> dict[str, Any]:
        """One validated request -> its prediction row (a dict of the scorer's columns)."""
        if self._queue is None:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail="model not loaded")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((encounter, future))
        return await future

    def _groups(self, items: list) -> list[list]:
        groups: list[tuple[set, list]] = []
        for item in items:
            keys = {("p", item[0].patient_id), ("e", item[0].encounter_id)}
            for used, members in groups:
                if not keys & used and len(members) < self.max_rows:
                    used |= keys
                    members.append(item)
                    break
            else:
                groups.append((set(keys), [item]))
        return [members for _, members in groups]

    def _score_rows(self, encounters: list) -> list[dict[str, Any]]:
        scored = self.scorer.score_encounters(to_canonical_frame(encounters), explain=True, top_reasons=3)
        return scored.to_dict(orient="records")

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            items = [await self._queue.get()]
            while not self._queue.empty() and len(items) < 4 * self.max_rows:
                items.append(self._queue.get_nowait())
            for group in self._groups(items):
                live = [item for item in group if not item[1].done()]  # client gone: skip
                if not live:
                    continue
                if self.on_call is not None:
                    self.on_call(len(live))
                try:
                    rows = await anyio.to_thread.run_sync(self._score_rows, [e for e, _ in live])
                    results = list(zip(live, rows))
                except Exception:
                    results = []
                    for item in live:
                        try:
                            results.append((item, (await anyio.to_thread.run_sync(self._score_rows, [item[0]]))[0]))
                        except Exception as error:
                            if not item[1].done():
                                item[1].set_exception(error)
                for (_, future), row in results:
                    if not future.done():
                        future.set_result(row)


def get_api_settings(request: Request) -> ApiSettings:
    return request.app.state.api_settings


def get_scorer(request: Request) -> Scorer:
    scorer = getattr(request.app.state, "scorer", None)
    if scorer is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail="model not loaded")
    return scorer


def get_optional_scorer(request: Request) -> Optional[Scorer]:
    return getattr(request.app.state, "scorer", None)


def get_batcher(request: Request) -> MicroBatcher:
    batcher = getattr(request.app.state, "batcher", None)
    if batcher is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail="model not loaded")
    return batcher


def get_metrics(request: Request) -> ApiMetrics:
    return request.app.state.metrics


SettingsDep = Annotated[ApiSettings, Depends(get_api_settings)]
ScorerDep = Annotated[Scorer, Depends(get_scorer)]
OptionalScorerDep = Annotated[Optional[Scorer], Depends(get_optional_scorer)]
BatcherDep = Annotated[MicroBatcher, Depends(get_batcher)]
MetricsDep = Annotated[ApiMetrics, Depends(get_metrics)]
PROTECTED: list[Any] = [Depends(require_api_key)]  # router-level guard: 401 without a valid key
AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or invalid API key"},
    429: {"description": "too many wrong API keys from this address: retry after `Retry-After` seconds"}}
