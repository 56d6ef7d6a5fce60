"""Outreach after discharge: who was called, with what result. An append-only event log per encounter.

An encounter's current status is its latest event (the highest id); one with no event has not been
contacted. Events are never updated or deleted. An event recorded under another patient id than the one
the caller now has for that encounter is returned with `patient_mismatch=True`, never reattached.
Nothing here logs: identifiers and notes must not reach the application log.
"""
from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, NamedTuple, Optional, Sequence

from sqlalchemy import Engine, Select, and_, func, or_, select

from core.errors import UserError
from serving.database import session_scope
from serving.db_tables import ID_LEN, NOTE_LEN, SOURCE_LEN, USER_LEN, OutreachEvent

STATUS_LABELS = {
    "not_contacted": "Not contacted",
    "no_answer": "No answer",
    "reached": "Reached",
    "follow_up_booked": "Follow-up booked",
    "declined": "Declined",
    "not_needed": "Not needed",
}
STATUSES = tuple(STATUS_LABELS)
# After one of these, the encounter leaves the worklist's open calls.
CLOSING = frozenset({"reached", "follow_up_booked", "declined", "not_needed"})
MAX_NOTE_CHARS = NOTE_LEN
# Encounters per query (one bound parameter each): well under every backend's limit on parameters.
KEYS_PER_QUERY = 400


class EncounterKey(NamedTuple):
    """An encounter as the caller knows it now; its `patient_id` (when given) is checked against the events."""
    source: str
    encounter_id: str
    patient_id: Optional[str] = None


@dataclass(frozen=True)
class OutreachRecord:
    id: int
    source: str
    encounter_id: str
    patient_id: str
    status: str
    note: Optional[str]
    recorded_by: str
    recorded_at: dt.datetime
    patient_mismatch: bool = False

    @property
    def label(self) -> str:
        return STATUS_LABELS[self.status]

    @property
    def closing(self) -> bool:
        return self.status in CLOSING


def record_event(engine: Engine, source: str, encounter_id: str, patient_id: str, status: str,
                 note: Optional[str] = None, *, by: str) -> OutreachRecord:
    """Append one event in its own transaction and return it; bad input raises `UserError`."""
    row = OutreachEvent(source=_required("source", source, SOURCE_LEN),
                        encounter_id=_required("encounter id", encounter_id, ID_LEN),
                        patient_id=_required("patient id", patient_id, ID_LEN),
                        status=_checked_status(status), note=_checked_note(note),
                        recorded_by=_required("recorded by", by, USER_LEN))
    with session_scope(engine) as session:
        session.add(row)
    return _record(row, patient_id=None)


def current_status(engine: Engine,
                   keys: Iterable[EncounterKey | tuple[str, ...]]) -> dict[tuple[str, str], OutreachRecord]:
    """The latest event of each encounter in `keys`, by (source, encounter_id); encounters without any
    event are absent. One query per `KEYS_PER_QUERY` encounters, served by the (source, encounter_id, id)
    index."""
    wanted = {(key.source, key.encounter_id): key.patient_id for key in map(_key, keys)}
    pairs = list(wanted)
    latest: dict[tuple[str, str], OutreachRecord] = {}
    with session_scope(engine) as session:
        for start in range(0, len(pairs), KEYS_PER_QUERY):
            for row in session.scalars(_latest_events(pairs[start:start + KEYS_PER_QUERY])):
                pair = (row.source, row.encounter_id)
                latest[pair] = _record(row, patient_id=wanted[pair])
    return latest


def history(engine: Engine, source: str, encounter_id: str, patient_id: Optional[str] = None) -> list[OutreachRecord]:
    """Every event of one encounter, oldest first; flagged where its patient id differs from `patient_id`."""
    query = (select(OutreachEvent)
             .where(OutreachEvent.source == source, OutreachEvent.encounter_id == encounter_id)
             .order_by(OutreachEvent.id))
    with session_scope(engine) as session:
        return [_record(row, patient_id=patient_id) for row in session.scalars(query)]


def histories(engine: Engine,
              keys: Iterable[EncounterKey | tuple[str, ...]]) -> dict[tuple[str, str], list[OutreachRecord]]:
    """Every event of each encounter in `keys`, oldest first, by (source, encounter_id); encounters without
    any event are absent. The last event of a list is the encounter's current status (`current_status`)."""
    wanted = {(key.source, key.encounter_id): key.patient_id for key in map(_key, keys)}
    pairs = list(wanted)
    events: dict[tuple[str, str], list[OutreachRecord]] = defaultdict(list)
    with session_scope(engine) as session:
        for start in range(0, len(pairs), KEYS_PER_QUERY):
            query = select(OutreachEvent).where(_pairs_clause(pairs[start:start + KEYS_PER_QUERY])) \
                .order_by(OutreachEvent.id)
            for row in session.scalars(query):
                pair = (row.source, row.encounter_id)
                events[pair].append(_record(row, patient_id=wanted[pair]))
    return dict(events)


def latest_event_id(engine: Engine) -> int:
    """The id of the newest event (0 when none): changes whenever an event is recorded, so callers can key
    caches of statuses on it."""
    with session_scope(engine) as session:
        return int(session.scalar(select(func.max(OutreachEvent.id))) or 0)


def _pairs_clause(pairs: Sequence[tuple[str, str]]):
    """`source = ? AND encounter_id IN (...)` per source: both SQLite and PostgreSQL seek the
    (source, encounter_id, id) index with it (a row-value IN scans it on SQLite)."""
    by_source: dict[str, list[str]] = defaultdict(list)
    for source, encounter_id in pairs:
        by_source[source].append(encounter_id)
    return or_(*(and_(OutreachEvent.source == source, OutreachEvent.encounter_id.in_(ids))
                 for source, ids in by_source.items()))


def _latest_events(pairs: Sequence[tuple[str, str]]) -> Select[tuple[OutreachEvent]]:
    """The latest event of each pair."""
    newest = (select(func.max(OutreachEvent.id)).where(_pairs_clause(pairs))
              .group_by(OutreachEvent.source, OutreachEvent.encounter_id))
    return select(OutreachEvent).where(OutreachEvent.id.in_(newest))


def _record(row: OutreachEvent, patient_id: Optional[str]) -> OutreachRecord:
    return OutreachRecord(id=row.id, source=row.source, encounter_id=row.encounter_id, patient_id=row.patient_id,
                          status=row.status, note=row.note, recorded_by=row.recorded_by,
                          recorded_at=row.recorded_at,
                          patient_mismatch=patient_id is not None and row.patient_id != patient_id)


def _key(key: EncounterKey | tuple[str, ...]) -> EncounterKey:
    return key if isinstance(key, EncounterKey) else EncounterKey(*key)


def _required(what: str, value: object, max_len: int) -> str:
    """A non-blank text identifier, stored as given. The message never repeats the value (it may identify
    a patient)."""
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"Outreach: the {what} is missing or blank; every event needs a source, encounter id, "
                        "patient id and who recorded it.")
    if len(value) > max_len:
        raise UserError(f"Outreach: the {what} is longer than {max_len} characters.")
    return value


def _checked_status(status: object) -> str:
    if status not in STATUS_LABELS:
        raise UserError(f"Outreach: unknown status {str(status)[:40]!r}; use one of: {', '.join(STATUSES)}.")
    return status


def _checked_note(note: Optional[str]) -> Optional[str]:
    """The note without surrounding blanks; an empty one is no note."""
    text = (note or "").strip()
    if len(text) > MAX_NOTE_CHARS:
        raise UserError(f"Outreach: the note has {len(text):,} characters; at most {MAX_NOTE_CHARS:,} are kept. "
                        "Shorten it and record the event again.")
    return text or None
