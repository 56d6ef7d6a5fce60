"""The operational database: what people write (outreach, call lists, uploads, served predictions, outcomes).

Any SQLAlchemy URL in `READMIT_DATABASE_URL`; unset, a SQLite file `data/operational.sqlite3` in WAL mode.
The schema comes only from the Alembic migrations in `serving/migrations`, applied on first use by
`get_engine()` (no alembic.ini, no `alembic` command needed at run time). Two processes migrating a fresh
database at once are serialized: SQLite by an fcntl lock on a file beside the database, PostgreSQL by a
transaction-scoped advisory lock.
"""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Optional

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import URL, Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session

from core.config import REPO_ROOT, get_settings
from core.errors import UserError

DEFAULT_DATABASE = REPO_ROOT / "data" / "operational.sqlite3"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
# Any constant signed 64-bit key works as long as every process uses the same one: b"readmit" as an integer.
MIGRATION_LOCK_KEY = int.from_bytes(b"readmit", "big")


def database_url(url: Optional[str] = None) -> str:
    """The URL to use: the argument, else `READMIT_DATABASE_URL`, else the SQLite file in data/."""
    chosen = url or get_settings().database_url
    if not chosen:
        DEFAULT_DATABASE.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{DEFAULT_DATABASE}"
    return _with_installed_driver(chosen)


def _with_installed_driver(url: str) -> str:
    """A plain `postgresql://` URL means psycopg2 to SQLAlchemy; the driver installed here is psycopg 3."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        # The message never repeats the URL: it may hold a password.
        raise UserError("READMIT_DATABASE_URL is not a SQLAlchemy URL; examples: postgresql+psycopg://"
                        "user:password@host:5432/readmit, sqlite:////srv/readmit/ops.sqlite3") from None
    if parsed.drivername != "postgresql":
        return url
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def sqlite_file(url: str | URL) -> Optional[Path]:
    """The database file of a SQLite URL; None for an in-memory database or another backend."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def engine_for(url: Optional[str] = None) -> Engine:
    """One engine per URL and process (see `database_url` for the default)."""
    return _engine(database_url(url))


@lru_cache(maxsize=None)
def _engine(url: str) -> Engine:
    # hide_parameters: a failed statement's message (which may reach a log) never carries patient ids.
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        path = sqlite_file(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, hide_parameters=True)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, hide_parameters=True, pool_pre_ping=backend == "postgresql")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Per connection: wait up to 30 s for a lock (first, so the WAL switch can wait too), WAL, foreign keys.

    WAL lets readers go on while one writer commits; the driver's default (legacy) transaction control
    begins a transaction only at the first INSERT/UPDATE/DELETE, so a write transaction takes the write
    lock on its first statement and `busy_timeout` applies to it.
    """
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def alembic_config(connection: Optional[Connection] = None) -> Config:
    """An Alembic Config built in code; migrations run on `connection` (see migrations/env.py)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    config.attributes["connection"] = connection
    return config


def head_revision() -> Optional[str]:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> Optional[str]:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def migrate(engine: Engine) -> None:
    """Upgrade the database to the newest migration; a no-op when it is there already.

    All steps run in one transaction (SQLite too: BEGIN IMMEDIATE), so a process killed mid-way
    leaves the database as it was. Safe when several processes call it at once.
    """
    with _migration_lock(engine), engine.begin() as connection:
        backend = connection.dialect.name
        if backend == "sqlite":
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        elif backend == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        command.upgrade(alembic_config(connection), "head")


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """SQLite files only: an exclusive fcntl lock on `<database>.migrate.lock`, held while migrating.

    The database file may not exist yet, so the lock cannot live inside it. PostgreSQL locks in the
    migration transaction itself (`migrate`); other backends are not locked.
    """
    path = sqlite_file(engine.url)
    if path is None:
        yield
        return
    lock_path = path.with_name(path.name + ".migrate.lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One ORM session in one transaction: committed when the block ends, rolled back on an exception.

    Objects stay readable after the commit (`expire_on_commit=False`), so callers may return them.
    """
    with Session(engine, expire_on_commit=False) as session, session.begin():
        yield session


def get_engine() -> Engine:
    """The engine of the configured database, created and migrated once per process and URL."""
    return _migrated_engine(database_url())


@lru_cache(maxsize=None)
def _migrated_engine(url: str) -> Engine:
    engine = engine_for(url)
    migrate(engine)
    return engine

