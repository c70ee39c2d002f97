"""Migrations: an empty database upgrades to head, and the result matches the models exactly."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from scheduler.store import Base, create_db_engine, migrations_dir, upgrade_database
from scheduler.store.database import head_revision


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


def test_the_newest_migration_is_known_without_alembic() -> None:
    """A command on a current schema skips Alembic (0.2 s): it must take for newest what Alembic takes."""
    assert head_revision() == ScriptDirectory(str(migrations_dir())).get_current_head()
