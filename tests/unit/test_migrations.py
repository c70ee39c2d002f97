"""Migrations: an empty database upgrades to head, and the result matches the models exactly."""

from __future__ import annotations

import uuid

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from scheduler.store import Base, Store, create_db_engine, migrations_dir, upgrade_database
from scheduler.store.database import head_revision
from tests.conftest import POSTGRES_URL, claim_slot


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


def test_a_postgresql_database_without_an_encoding_holds_the_schema_and_reads_text_back() -> None:
    """A database created with ENCODING 'SQL_ASCII' (an old default): text must still come back as text."""
    if not POSTGRES_URL:
        pytest.skip("SCHEDULER_TEST_POSTGRES_URL is not set")
    server = make_url(POSTGRES_URL)
    name = f"test_sql_ascii_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(
            text(f"CREATE DATABASE {name} ENCODING 'SQL_ASCII' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'")
        )
    try:
        engine = create_db_engine(server.set(database=name).render_as_string(hide_password=False))
        upgrade_database(engine)  # it failed here, on bytes where Alembic reads the version as text
        store = Store(engine=engine)
        fire = claim_slot(store, job="café-checkout")
        assert fire is not None and store.recent_fires(job="café-checkout")[0].job == "café-checkout"
        engine.dispose()
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()
