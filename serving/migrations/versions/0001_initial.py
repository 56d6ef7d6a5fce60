"""Initial operational schema: outreach, call lists, uploads, prediction log, outcomes.

Written by hand (kept equal to serving/db_tables.py by tests/test_database.py).

Revision ID: 0001
Revises:
Create Date: 2025-11-29
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

SOURCE = sa.String(32)
ID = sa.String(64)
USER = sa.String(256)
VERSION = sa.String(128)
TIME = sa.DateTime(timezone=True)

# outreach_event is append-only: the database itself refuses UPDATE, DELETE (and TRUNCATE).
POSTGRES_APPEND_ONLY = [
    """CREATE FUNCTION outreach_event_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN RAISE EXCEPTION 'outreach_event is append-only'; END $$""",
    """CREATE TRIGGER outreach_event_append_only BEFORE UPDATE OR DELETE ON outreach_event
       FOR EACH ROW EXECUTE FUNCTION outreach_event_append_only()""",
    """CREATE TRIGGER outreach_event_no_truncate BEFORE TRUNCATE ON outreach_event
       FOR EACH STATEMENT EXECUTE FUNCTION outreach_event_append_only()""",
]
SQLITE_APPEND_ONLY = [
    """CREATE TRIGGER outreach_event_no_update BEFORE UPDATE ON outreach_event
       BEGIN SELECT RAISE(ABORT, 'outreach_event is append-only'); END""",
    """CREATE TRIGGER outreach_event_no_delete BEFORE DELETE ON outreach_event
       BEGIN SELECT RAISE(ABORT, 'outreach_event is append-only'); END""",
]


def upgrade() -> None:
    op.create_table(
        "outreach_event",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("source", SOURCE, nullable=False),
        sa.Column("encounter_id", ID, nullable=False),
        sa.Column("patient_id", ID, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("note", sa.String(1000), nullable=True),
        sa.Column("recorded_by", USER, nullable=False),
        sa.Column("recorded_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_outreach_event"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_outreach_event_source_encounter_id_id", "outreach_event", ["source", "encounter_id", "id"])

    op.create_table(
        "call_list",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("list_date", sa.Date(), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("built_at", TIME, nullable=False),
        sa.Column("built_by", USER, nullable=False),
        sa.Column("model_version", VERSION, nullable=False),
        sa.Column("as_of", TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_call_list"),
    )
    op.create_table(
        "call_list_entry",
        sa.Column("call_list_id", sa.Integer(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("source", SOURCE, nullable=False),
        sa.Column("encounter_id", ID, nullable=False),
        sa.Column("patient_id", ID, nullable=False),
        sa.Column("risk", sa.Float(), nullable=False),
        sa.Column("risk_tier", sa.String(16), nullable=False),
        sa.ForeignKeyConstraint(["call_list_id"], ["call_list.id"], name="fk_call_list_entry_call_list_id_call_list"),
        sa.PrimaryKeyConstraint("call_list_id", "rank", name="pk_call_list_entry"),
    )

    op.create_table(
        "uploaded_discharge",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("source", SOURCE, nullable=False),
        sa.Column("encounter_id", ID, nullable=False),
        sa.Column("patient_id", ID, nullable=False),
        sa.Column("record", sa.JSON(), nullable=False),
        sa.Column("uploaded_by", USER, nullable=False),
        sa.Column("uploaded_at", TIME, nullable=False),
        sa.Column("upload_name", USER, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_uploaded_discharge"),
        sa.UniqueConstraint("source", "encounter_id", name="uq_uploaded_discharge_source_encounter_id"),
    )
    op.create_table(
        "uploaded_score",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("uploaded_discharge_id", sa.Integer(), nullable=False),
        sa.Column("model_version", VERSION, nullable=False),
        sa.Column("risk", sa.Float(), nullable=True),
        sa.Column("risk_tier", sa.String(16), nullable=True),
        sa.Column("risk_percentile", sa.Float(), nullable=True),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("contributions", sa.JSON(), nullable=False),
        sa.Column("scored_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(["uploaded_discharge_id"], ["uploaded_discharge.id"],
                                name="fk_uploaded_score_uploaded_discharge_id_uploaded_discharge"),
        sa.PrimaryKeyConstraint("id", name="pk_uploaded_score"),
    )
    op.create_index("ix_uploaded_score_uploaded_discharge_id", "uploaded_score", ["uploaded_discharge_id"])

    op.create_table(
        "prediction_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("logged_at", TIME, nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("model_version", VERSION, nullable=False),
        sa.Column("source", SOURCE, nullable=True),
        sa.Column("encounter_id", ID, nullable=True),
        sa.Column("patient_id", ID, nullable=True),
        sa.Column("risk", sa.Float(), nullable=True),
        sa.Column("risk_tier", sa.String(16), nullable=True),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_prediction_log"),
    )
    op.create_index("ix_prediction_log_logged_at", "prediction_log", ["logged_at"])
    op.create_index("ix_prediction_log_source_encounter_id", "prediction_log", ["source", "encounter_id"])

    op.create_table(
        "outcome",
        sa.Column("source", SOURCE, nullable=False),
        sa.Column("encounter_id", ID, nullable=False),
        sa.Column("readmitted_30d", sa.Boolean(), nullable=True),
        sa.Column("readmission_date", sa.Date(), nullable=True),
        sa.Column("recorded_at", TIME, nullable=False),
        sa.Column("origin", sa.String(8), nullable=False),
        sa.PrimaryKeyConstraint("source", "encounter_id", name="pk_outcome"),
    )

    for statement in _append_only_statements(op.get_bind().dialect.name):
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION outreach_event_append_only() CASCADE")
    for table in ("outcome", "prediction_log", "uploaded_score", "uploaded_discharge", "call_list_entry",
                  "call_list", "outreach_event"):
        op.drop_table(table)


def _append_only_statements(dialect: str) -> list[str]:
    return {"postgresql": POSTGRES_APPEND_ONLY, "sqlite": SQLITE_APPEND_ONLY}.get(dialect, [])
