"""Migrations: an empty database upgrades to head, and the result matches the models exactly."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from scheduler.store import Base, create_db_engine, upgrade_database


def test_upgrade_to_head_matches_the_models(database_url: str) -> None:
    engine = create_db_engine(database_url)
    try:
        upgrade_database(engine)
        upgrade_database(engine)  # running it again on every start is harmless
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
            assert {"fires", "runs", "alembic_version"} <= set(inspect(connection).get_table_names())
    finally:
        engine.dispose()
