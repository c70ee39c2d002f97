"""Alembic environment: runs on the connection the scheduler hands over, or on SCHEDULER_DATABASE_URL."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection

from scheduler.store import Base, create_db_engine

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    # Run by hand (`alembic -c pyproject.toml ...`): the database is the scheduler's own setting.
    url = os.environ.get("SCHEDULER_DATABASE_URL", "sqlite:///scheduler.db")
    engine = create_db_engine(url)
    try:
        with engine.begin() as connection:
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run `cekura-scheduler db upgrade`")
run_migrations_online()
