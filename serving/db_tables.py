"""Tables of the operational database (SQLAlchemy 2 declarative).

The schema in a database comes from the migrations in `serving/migrations`, never from
`Base.metadata.create_all`; a test checks that both agree on SQLite and PostgreSQL. Every time
is stored in UTC and read back timezone-aware.
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Optional

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SOURCE_LEN = 32
ID_LEN = 64
USER_LEN = 256
NOTE_LEN = 1000
VERSION_LEN = 128

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite autoincrements only an `INTEGER PRIMARY KEY`; elsewhere a log table gets 64-bit ids.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware time, stored in UTC; naive times are refused (their zone is unknown).

    PostgreSQL keeps the zone (`timestamptz`); SQLite stores the UTC wall time as text, read back as UTC.
    """
    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Optional[dt.datetime], dialect: Dialect) -> Optional[dt.datetime]:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("a time for the operational database must be timezone-aware")
        return value.astimezone(dt.timezone.utc)

    def process_result_value(self, value: Optional[dt.datetime], dialect: Dialect) -> Optional[dt.datetime]:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dt.datetime: UTCDateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}


class OutreachEvent(Base):
    """One outreach attempt or decision about one encounter. Append-only (triggers refuse UPDATE/DELETE);
    an encounter's current status is its event with the highest id."""
    __tablename__ = "outreach_event"
    __table_args__ = (Index("ix_outreach_event_source_encounter_id_id", "source", "encounter_id", "id"),
                      {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(SOURCE_LEN))
    encounter_id: Mapped[str] = mapped_column(String(ID_LEN))
    patient_id: Mapped[str] = mapped_column(String(ID_LEN))
    status: Mapped[str] = mapped_column(String(32))
    note: Mapped[Optional[str]] = mapped_column(String(NOTE_LEN))
    recorded_by: Mapped[str] = mapped_column(String(USER_LEN))
    recorded_at: Mapped[dt.datetime] = mapped_column(default=utc_now)


class CallList(Base):
    """A day's call list as built (a day may have several; all are kept)."""
    __tablename__ = "call_list"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    list_date: Mapped[dt.date] = mapped_column(Date)
    capacity: Mapped[int] = mapped_column(Integer)
    built_at: Mapped[dt.datetime] = mapped_column(default=utc_now)
    built_by: Mapped[str] = mapped_column(String(USER_LEN))
    model_version: Mapped[str] = mapped_column(String(VERSION_LEN))
    as_of: Mapped[dt.datetime] = mapped_column()  # the time of the data the list was built from


class CallListEntry(Base):
    __tablename__ = "call_list_entry"

    call_list_id: Mapped[int] = mapped_column(ForeignKey("call_list.id"), primary_key=True)
    rank: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(SOURCE_LEN))
    encounter_id: Mapped[str] = mapped_column(String(ID_LEN))
    patient_id: Mapped[str] = mapped_column(String(ID_LEN))
    risk: Mapped[float] = mapped_column(Float)
    risk_tier: Mapped[str] = mapped_column(String(16))


class UploadedDischarge(Base):
    """A discharge uploaded by a user; `record` is the canonical encounter (core.schema fields) as JSON."""
    __tablename__ = "uploaded_discharge"
    __table_args__ = (UniqueConstraint("source", "encounter_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(SOURCE_LEN))
    encounter_id: Mapped[str] = mapped_column(String(ID_LEN))
    patient_id: Mapped[str] = mapped_column(String(ID_LEN))
    record: Mapped[dict[str, Any]] = mapped_column()
    uploaded_by: Mapped[str] = mapped_column(String(USER_LEN))
    uploaded_at: Mapped[dt.datetime] = mapped_column(default=utc_now)
    upload_name: Mapped[str] = mapped_column(String(USER_LEN))


class UploadedScore(Base):
    """One scoring of an uploaded discharge (rescoring under a new model adds a row)."""
    __tablename__ = "uploaded_score"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    uploaded_discharge_id: Mapped[int] = mapped_column(ForeignKey("uploaded_discharge.id"), index=True)
    model_version: Mapped[str] = mapped_column(String(VERSION_LEN))
    risk: Mapped[Optional[float]] = mapped_column(Float)
    risk_tier: Mapped[Optional[str]] = mapped_column(String(16))
    risk_percentile: Mapped[Optional[float]] = mapped_column(Float)
    reasons: Mapped[list[Any]] = mapped_column()
    contributions: Mapped[dict[str, Any]] = mapped_column()
    scored_at: Mapped[dt.datetime] = mapped_column(default=utc_now)


class PredictionLog(Base):
    """Every prediction served, whatever the channel (api, upload, cli, warehouse). Ids are absent when
    a caller scored a record without them."""
    __tablename__ = "prediction_log"
    __table_args__ = (Index("ix_prediction_log_source_encounter_id", "source", "encounter_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    logged_at: Mapped[dt.datetime] = mapped_column(default=utc_now, index=True)
    channel: Mapped[str] = mapped_column(String(16))
    model_version: Mapped[str] = mapped_column(String(VERSION_LEN))
    source: Mapped[Optional[str]] = mapped_column(String(SOURCE_LEN))
    encounter_id: Mapped[Optional[str]] = mapped_column(String(ID_LEN))
    patient_id: Mapped[Optional[str]] = mapped_column(String(ID_LEN))
    risk: Mapped[Optional[float]] = mapped_column(Float)
    risk_tier: Mapped[Optional[str]] = mapped_column(String(16))
    features: Mapped[dict[str, Any]] = mapped_column()


class Outcome(Base):
    """What happened after discharge: from the ETL or an uploaded outcomes file (`origin`)."""
    __tablename__ = "outcome"

    source: Mapped[str] = mapped_column(String(SOURCE_LEN), primary_key=True)
    encounter_id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    readmitted_30d: Mapped[Optional[bool]] = mapped_column(Boolean)
    readmission_date: Mapped[Optional[dt.date]] = mapped_column(Date)
    recorded_at: Mapped[dt.datetime] = mapped_column(default=utc_now)
    origin: Mapped[str] = mapped_column(String(8))
