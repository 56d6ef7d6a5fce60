"""The API's prediction-log writer: durable before the answer (group commit), or off the request path.

`serving.prediction_log` builds and inserts the rows; this module decides when, on which thread and in which
transaction, and counts every call it could not write (never an identifier in the log).
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

import pandas as pd
from sqlalchemy import Connection, Engine

from serving.prediction_log import CHANNELS, insert_rows, log_rows

log = logging.getLogger(__name__)


Frames = tuple[pd.DataFrame, Optional[pd.DataFrame]]
Built = Union[Frames, list]  # (predictions, features) frames for `log_rows`, or ready rows (`record_log_rows`)
OUTCOMES = ("logged", "dropped", "failed")
MERGE_ROWS = 5_000


@dataclass
class _Job:
    channel: str
    model_version: str
    rows: int
    parts: list
    build: Callable[[list], Built]
    done: Optional[Future] = None  # set to True (logged) or False (dropped, failed) once the job is over

    def key(self) -> tuple:
        return (self.channel, self.model_version, self.build)

    def rows_of(self) -> list[dict[str, Any]]:
        built = self.build(self.parts)
        if isinstance(built, list):
            return built
        return log_rows(built[0], built[1], self.channel, self.model_version)


def _settle(jobs: Sequence[_Job], outcome: bool) -> None:
    for job in jobs:
        if job.done is not None and not job.done.done():
            job.done.set_result(outcome)


class PredictionLogWriter:
    """Writes prediction-log calls for a server. `submit` hands over the raw parts of a call and a function
    (`build`) that turns parts into rows to insert (`record_log_rows`) or into (predictions, features) frames
    (`log_rows`), so even the rows are built off the request path. One background thread writes.

    - `wait_for` (the API's default, durable): `submit_waiting` returns a Future that becomes True once the
      call's rows are committed (False if the write failed). The thread takes every call waiting when the
      previous commit ends and writes them in one transaction (group commit, up to 5,000 rows): under load,
      many requests share one commit, while an idle server writes a lone request at once. The caller
      answers only after the Future is done, so a served prediction is on disk before its answer.
    - background (`async`): `submit` returns at once; the thread waits `linger` seconds after a first call
      so that the calls of that moment join its write. Calls not yet written when the process dies are
      lost (up to about `linger` seconds of them).
    - `synchronous`: the call is written in `submit` itself, on the caller's thread.

    Bounded: at most `max_pending_rows` rows wait. A call that would exceed it is refused, never silently:
    its rows are counted as `dropped` (`on_rows("dropped", n)`, the API's /metrics) and a warning with the
    count (never an identifier) is logged. A call whose write fails is counted as `failed`, logged by
    exception type only (a database error's text can hold the inserted values).
    """

    def __init__(self, engine: Engine, *, max_pending_rows: int = 50_000, synchronous: bool = False,
                 on_rows: Optional[Callable[[str, int], None]] = None, linger: float = 0.0) -> None:
        self.engine = engine
        self.linger = linger  # seconds the thread waits after a first background call, so more merge into it
        self._closing = False
        self.max_pending_rows = max_pending_rows
        self.synchronous = synchronous
        self.on_rows = on_rows
        self.counts = {outcome: 0 for outcome in OUTCOMES}
        self._jobs: deque[Optional[_Job]] = deque()
        self._pending = 0
        self._cond = threading.Condition()
        self._thread: Optional[threading.Thread] = None
        self._connection: Optional[Connection] = None  # the thread's own (`_writer_connection`)
        self._restore: Any = None
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
               build: Callable[[list], Built]) -> bool:
        """Log `rows` predictions whose rows `build(parts)` gives. False when refused."""
        return self._submit(_Job(channel, str(model_version), rows, list(parts), build))

    def submit_waiting(self, channel: str, model_version: str, rows: int, parts: list,
                       build: Callable[[list], Built]) -> Future:
        """Like `submit`, but returns a Future: True once the rows are committed (durable), False when they
        were refused or their write failed (counted either way). The next write starts at once (no linger)."""
        job = _Job(channel, str(model_version), rows, list(parts), build, Future())
        self._submit(job)
        return job.done

    def _submit(self, job: _Job) -> bool:
        if job.channel not in CHANNELS:
            raise ValueError(f"unknown channel {job.channel!r} (choose from {', '.join(CHANNELS)})")
        if self.synchronous:
            return self._write([job])
        with self._cond:
            if self._thread is None or self._pending + job.rows > self.max_pending_rows:
                refused = True
            else:
                refused = False
                self._pending += job.rows
                self._jobs.append(job)
                self._cond.notify_all()
        if refused:
            self._count("dropped", job.rows)
            _settle([job], False)
            log.warning("prediction log: %d rows dropped (%d waiting, limit %d; %d dropped in all)", job.rows,
                        self._pending, self.max_pending_rows, self.counts["dropped"])
            return False
        return True

    def _write(self, jobs: list[_Job]) -> bool:
        """Build and insert the jobs' rows in one transaction; a job whose build fails fails alone."""
        rows: list[dict[str, Any]] = []
        built: list[_Job] = []
        for job in jobs:
            try:
                rows += job.rows_of()
                built.append(job)
            except Exception as error:  # counted and logged by type; the server goes on
                self._failed([job], error)
        if not built:
            return False
        try:
            written = insert_rows(self._writer_connection(), rows)
        except Exception as error:
            self._drop_connection()
            self._failed(built, error)
            return False
        self._count("logged", written)
        _settle(built, True)
        return True

    def _failed(self, jobs: list[_Job], error: BaseException) -> None:
        rows = sum(job.rows for job in jobs)
        self._count("failed", rows)
        log.error("prediction log: %d rows not written (%s)", rows, type(error).__name__)
        _settle(jobs, False)

    def _next(self) -> Optional[list[_Job]]:
        """The next write (under the lock): every waiting job when the first waits for its commit (group
        commit), else the first merged with the waiting jobs of the same kind behind it; None: stop."""
        job = self._jobs.popleft()
        if job is None:
            return None
        group, rows = [job], job.rows
        while self._jobs and self._jobs[0] is not None and rows + self._jobs[0].rows <= MERGE_ROWS:
            following = self._jobs[0]
            if job.done is None and following.done is None and following.key() == job.key():
                job = _Job(job.channel, job.model_version, job.rows + following.rows, job.parts + following.parts,
                           job.build)
                group = [job]
            elif job.done is not None:
                group.append(following)
            else:
                break
            rows += following.rows
            self._jobs.popleft()
        return group

    def _writer_connection(self) -> Engine | Connection:
        """Where the writes go: on the writer's thread, one connection held for its lifetime (no pool checkout
        per commit). On SQLite that connection commits with `synchronous = NORMAL` (WAL mode: the commit is
        in the WAL file, and survives a crash of the process, when it returns; the WAL is synced to disk at
        checkpoints, so a power loss may lose the last commits) and gets the database's own setting back
        before it returns to the pool. In `synchronous` mode (the caller's thread) the engine's pool."""
        if threading.current_thread() is not self._thread:
            return self.engine
        if self._connection is None:
            connection = self.engine.connect()
            if connection.dialect.name == "sqlite":
                self._restore = connection.exec_driver_sql("PRAGMA synchronous").scalar()
                connection.exec_driver_sql("PRAGMA synchronous = NORMAL")
                connection.commit()
            self._connection = connection
        return self._connection

    def _drop_connection(self, reuse: bool = False) -> None:
        """Close the writer's connection: back to the pool with its setting restored, else discarded."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            if reuse and self._restore is not None:
                connection.exec_driver_sql(f"PRAGMA synchronous = {int(self._restore)}")
                connection.commit()
            if not reuse:
                connection.invalidate()
            connection.close()
        except Exception as error:  # closing only: nothing to write is lost
            log.warning("prediction log: connection not closed cleanly (%s)", type(error).__name__)

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self._drop_connection(reuse=True)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._jobs:
                    self._cond.wait()
                first = self._jobs[0]
                if self.linger and first is not None and first.done is None and not self._closing \
                        and self._pending < MERGE_ROWS:
                    self._cond.wait_for(lambda: self._closing or self._pending >= MERGE_ROWS, self.linger)
                group = self._next()
            if group is None:
                return
            try:
                self._write(group)
            finally:
                with self._cond:
                    self._pending -= sum(job.rows for job in group)
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
            waiting = [job for job in self._jobs if job is not None]
            self._thread = None
        if left:
            self._count("dropped", left)
            _settle(waiting, False)
            log.warning("prediction log: %d rows not written before shutdown", left)
