"""The operational database on SQLite (a temporary file) and PostgreSQL 15 (a throwaway cluster)."""
from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Engine, Integer, MetaData, inspect, select, text, update
from sqlalchemy.exc import DBAPIError

from core.config import REPO_ROOT, get_settings
from core.errors import UserError
from serving import database, outreach
from serving.database import alembic_config, current_revision, engine_for, get_engine, head_revision, migrate
from serving.db_tables import Base, OutreachEvent

# One worker process: waits for "go" on stdin so that both start together, then migrates the (possibly
# fresh) database and, in "record" mode, appends 500 events over 50 encounters.
WORKER = """
import sys
from serving.database import engine_for, migrate
from serving.outreach import STATUSES, record_event

url, mode, worker = sys.argv[1], sys.argv[2], int(sys.argv[3])
engine = engine_for(url)
print("ready", flush=True)
sys.stdin.readline()
migrate(engine)
if mode == "record":
    for i in range(500):
        n = i % 50
        record_event(engine, "diabetes130", f"E{n:03d}", f"P{n:03d}", STATUSES[(i + worker) % len(STATUSES)],
                     note=f"worker {worker} event {i}", by=f"worker-{worker}")
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of a new, empty database on each backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'operational.sqlite3'}"
    else:
        url = request.getfixturevalue("postgres_database")
    yield url
    engine_for(url).dispose()


@pytest.fixture
def engine(db_url: str) -> Engine:
    migrated = engine_for(db_url)
    migrate(migrated)
    return migrated


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    migrated = engine_for(f"sqlite:///{tmp_path / 'operational.sqlite3'}")
    migrate(migrated)
    yield migrated
    migrated.dispose()


def run_at_once(url: str, mode: str, workers: int = 2) -> float:
    """Start the workers, release them together, wait; returns the seconds from release to the last exit."""
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, url, mode, str(n)], cwd=REPO_ROOT, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for n in range(workers)]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    started = time.perf_counter()
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    outputs = [proc.communicate(timeout=300) for proc in procs]
    elapsed = time.perf_counter() - started
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    return elapsed


def schema_diff(engine: Engine, metadata: MetaData = Base.metadata) -> list:
    with engine.connect() as connection:
        return compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), metadata)


# --- migrations -----------------------------------------------------------------------------------------

def test_migrated_schema_matches_the_declarative_tables(engine: Engine):
    assert schema_diff(engine) == []


def test_schema_comparison_notices_a_difference(engine: Engine):
    changed = MetaData()
    for table in Base.metadata.tables.values():
        table.to_metadata(changed)
    changed.tables["outcome"].append_column(Column("extra", Integer))
    assert [diff[0] for diff in schema_diff(engine, changed)] == ["add_column"]


def test_migrate_is_idempotent(engine: Engine):
    migrate(engine)
    migrate(engine)
    assert current_revision(engine) == head_revision() == "0001"
    assert schema_diff(engine) == []


def test_downgrade_to_base_and_upgrade_again(engine: Engine):
    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), "base")
    assert current_revision(engine) is None
    with engine.connect() as connection:
        assert inspect(connection).get_table_names() == ["alembic_version"]
    migrate(engine)
    assert schema_diff(engine) == []


def test_two_processes_migrate_a_fresh_database_at_once(db_url: str):
    run_at_once(db_url, "migrate")
    engine = engine_for(db_url)
    assert current_revision(engine) == head_revision()
    assert schema_diff(engine) == []


def test_sqlite_connections_use_wal_a_busy_timeout_and_foreign_keys(sqlite_engine: Engine):
    with sqlite_engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_get_engine_creates_and_migrates_the_configured_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "nested" / "ops.sqlite3"
    monkeypatch.setenv("READMIT_DATABASE_URL", f"sqlite:///{path}")
    get_settings.cache_clear()
    try:
        engine = get_engine()
        assert get_engine() is engine
        assert path.exists() and current_revision(engine) == head_revision()
    finally:
        get_settings.cache_clear()
        engine_for(f"sqlite:///{path}").dispose()


def test_the_default_database_is_a_sqlite_file_in_data(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("READMIT_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    try:
        assert database.database_url() == f"sqlite:///{REPO_ROOT / 'data' / 'operational.sqlite3'}"
    finally:
        get_settings.cache_clear()


def test_a_plain_postgresql_url_uses_psycopg_3_and_a_bad_url_is_a_user_error():
    assert database.database_url("postgresql://ops:s3cret@db:5432/readmit") == \
        "postgresql+psycopg://ops:s3cret@db:5432/readmit"
    assert database.database_url("sqlite:///x.sqlite3") == "sqlite:///x.sqlite3"
    with pytest.raises(UserError, match="not a SQLAlchemy URL") as refused:
        database.database_url("ops:s3cret@db/readmit")
    assert "s3cret" not in str(refused.value)


# --- outreach -------------------------------------------------------------------------------------------

def test_two_processes_record_1000_events_at_once_and_none_is_lost(db_url: str):
    elapsed = run_at_once(db_url, "record")
    assert elapsed < 60, f"two processes x 500 events took {elapsed:.1f} s"  # ~1 s here when quiet
    engine = engine_for(db_url)
    with engine.connect() as connection:
        rows = connection.execute(select(OutreachEvent.id, OutreachEvent.encounter_id, OutreachEvent.status,
                                         OutreachEvent.note)).all()
    assert len(rows) == 1000
    assert {row.note for row in rows} == {f"worker {w} event {i}" for w in range(2) for i in range(500)}
    latest = {}
    for row in sorted(rows, key=lambda r: r.id):
        latest[row.encounter_id] = row
    keys = [("diabetes130", f"E{n:03d}", f"P{n:03d}") for n in range(50)]
    current = outreach.current_status(engine, keys)
    assert len(current) == 50
    for (_, encounter_id), record in current.items():
        assert (record.id, record.status) == (latest[encounter_id].id, latest[encounter_id].status)
        assert not record.patient_mismatch


def test_current_status_is_the_latest_event_and_history_is_in_order(engine: Engine):
    outreach.record_event(engine, "cms", "E1", "P1", "no_answer", by="nurse@example.org")
    outreach.record_event(engine, "cms", "E1", "P1", "reached", note="  Booked for Monday.  ", by="nurse@example.org")
    outreach.record_event(engine, "cms", "E2", "P2", "not_contacted", by="nurse@example.org")
    current = outreach.current_status(engine, [("cms", "E1", "P1"), ("cms", "E2", "P2"), ("cms", "E3", "P3")])
    assert {key: record.status for key, record in current.items()} == {("cms", "E1"): "reached",
                                                                        ("cms", "E2"): "not_contacted"}
    assert current[("cms", "E1")].closing and current[("cms", "E1")].label == "Reached"
    assert not current[("cms", "E2")].closing
    steps = outreach.history(engine, "cms", "E1", "P1")
    assert [step.status for step in steps] == ["no_answer", "reached"]
    assert steps[1].note == "Booked for Monday."
    assert steps[1].recorded_at.tzinfo == dt.timezone.utc
    assert abs((dt.datetime.now(dt.timezone.utc) - steps[1].recorded_at).total_seconds()) < 60


def test_current_status_of_many_keys_and_sources_queries_in_chunks(sqlite_engine: Engine,
                                                                   monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(outreach, "KEYS_PER_QUERY", 7)
    sources = ("cms", "mimic4")
    for n in range(0, 40, 3):
        outreach.record_event(sqlite_engine, sources[n % 2], f"E{n}", f"P{n}", "declined", by="nurse")
    keys = [outreach.EncounterKey(source, f"E{n}", f"P{n}") for n in range(40) for source in sources]
    current = outreach.current_status(sqlite_engine, keys)
    assert sorted(current) == sorted((sources[n % 2], f"E{n}") for n in range(0, 40, 3))


def test_an_event_of_another_patient_is_flagged_not_reattached(engine: Engine):
    outreach.record_event(engine, "mimic4", "E9", "P-old", "no_answer", by="nurse")
    current = outreach.current_status(engine, [("mimic4", "E9", "P-new")])[("mimic4", "E9")]
    assert current.patient_mismatch and current.patient_id == "P-old"
    assert [step.patient_mismatch for step in outreach.history(engine, "mimic4", "E9", "P-new")] == [True]
    assert not outreach.current_status(engine, [("mimic4", "E9", "P-old")])[("mimic4", "E9")].patient_mismatch


def test_outreach_events_are_append_only(engine: Engine):
    outreach.record_event(engine, "cms", "E1", "P1", "reached", by="nurse")
    for statement in (update(OutreachEvent).values(status="declined"), text("DELETE FROM outreach_event")):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
            connection.execute(statement)
    assert [step.status for step in outreach.history(engine, "cms", "E1")] == ["reached"]


def test_statuses_labels_and_closing():
    assert outreach.STATUSES == ("not_contacted", "no_answer", "reached", "follow_up_booked", "declined",
                                 "not_needed")
    assert [outreach.STATUS_LABELS[s] for s in outreach.STATUSES] == [
        "Not contacted", "No answer", "Reached", "Follow-up booked", "Declined", "Not needed"]
    assert outreach.CLOSING == {"reached", "follow_up_booked", "declined", "not_needed"}


@pytest.mark.parametrize(("change", "message"), [
    ({"status": "called"}, "unknown status 'called'"),
    ({"note": "x" * 1001}, "at most 1,000"),
    ({"encounter_id": "  "}, "encounter id is missing or blank"),
    ({"patient_id": ""}, "patient id is missing or blank"),
    ({"source": None}, "source is missing or blank"),
    ({"by": " "}, "recorded by is missing or blank"),
    ({"encounter_id": "E" * 65}, "longer than 64"),
])
def test_bad_events_are_refused_with_a_clear_message(sqlite_engine: Engine, change: dict, message: str):
    event = {"source": "cms", "encounter_id": "E1", "patient_id": "P1", "status": "reached", "by": "nurse"} | change
    with pytest.raises(UserError, match=message):
        outreach.record_event(sqlite_engine, **event)
    assert outreach.history(sqlite_engine, "cms", "E1") == []


def test_a_note_of_1000_characters_is_kept(sqlite_engine: Engine):
    record = outreach.record_event(sqlite_engine, "cms", "E1", "P1", "reached", note="x" * 1000, by="nurse")
    assert outreach.history(sqlite_engine, "cms", "E1") == [record]
