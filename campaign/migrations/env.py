"""Alembic environment: runs on the connection `Ledger.migrate` hands over, or on the URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from campaign.store.db import make_engine
from campaign.store.models import Base

config = context.config
target_metadata = Base.metadata


def _include_name(name: str | None, type_: str, _parents: object) -> bool:
    # APScheduler's job store creates and owns this table; it is not one of our models.
    return not (type_ == "table" and name == "apscheduler_jobs")


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_name=_include_name,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.begin() as conn:
        _run(conn)
