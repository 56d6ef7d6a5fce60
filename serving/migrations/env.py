"""Alembic environment: migrations run only on the connection that `serving.database.migrate` hands over.

That function opens the transaction and takes the cross-process lock; this file only points Alembic
at the declarative metadata (for `compare_metadata` and hand-checked new revisions).
"""
from alembic import context

from serving.db_tables import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through serving.database.migrate(engine), not the alembic command")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    compare_type=True,
    # SQLite cannot ALTER most things in place: later migrations copy-and-move the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
