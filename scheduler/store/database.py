"""Engines, schema upgrades and sessions: how the store reaches its database."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from scheduler.errors import StoreError


def migrations_dir() -> Path:
    """Where the Alembic scripts are: inside the installed package, or at the top of a source checkout."""
    here = Path(__file__).resolve().parent.parent  # the scheduler package
    for candidate in (here / "migrations", here.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise StoreError(
        "the database migrations are missing from this installation (reinstall cekura-scheduler)", permanent=True
    )


SQLITE_STATEMENTS = 32  # prepared statements sqlite3 keeps per connection (its default: 128)
SQLITE_CACHE_KIB = 256  # pages SQLite keeps per connection, in KiB (its default: 2,000)

_PG_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 60_000,  # milliseconds
}
# Text is UTF-8 whatever the database's encoding: on a SQL_ASCII database (no encoding at all) psycopg would
# otherwise hand back bytes for text, and the first query a migration reads failed with a TypeError.
_PG_CONNECTION = {**_PG_KEEPALIVES, "client_encoding": "utf8"}


def create_db_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite files get WAL, a busy timeout and foreign keys, and their folder is made;
    PostgreSQL connections get TCP keepalives and UTF-8 text."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in ("psycopg", "psycopg2"):
        # A server that vanished without closing the connection (a host gone, a firewall dropping it) would
        # otherwise leave a query waiting forever: TCP keepalives notice it within ~1 min when idle, and the
        # user timeout when data sent is never acknowledged. Settings in the URL's query win.
        defaults = {k: v for k, v in _PG_CONNECTION.items() if k not in parsed.query}
        return create_engine(url, pool_pre_ping=True, connect_args=defaults)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    # sqlite3 keeps each connection's last 128 prepared statements, in native memory. A statement with an IN list
    # (leases of the results in flight, the runs of a batch of verdicts) is a new text for each length, and at a
    # few hundred ids weighs ~80 KB: the caches grew RSS by ~100 MB/h as new lengths came (the soak benchmark). The hot
    # statements are about twenty; 32 keeps them prepared and bounds what the one-off ones hold.
    engine = create_engine(url, connect_args={"timeout": 30, "cached_statements": SQLITE_STATEMENTS})

    @event.listens_for(engine, "connect")
    def _pragmas(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        # In WAL mode a connection drops its whole page cache when another one has committed since its last
        # transaction, and the pool's connections take turns: a 2 MB cache was refilled and freed page by page
        # (4 KB blocks from malloc) on most transactions, and that churn fragmented the heap, which grew RSS by
        # 20-40 MB/h in the soak benchmark. A transaction of the daemon touches a few dozen pages; 64 hold them,
        # and the history queries measured no slower on a million fires.
        cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        cursor.close()

    return engine


# A migration script's own revision and its parent, as the template writes them: `revision = "0006"`.
_REVISION_LINE = re.compile(r"""^(down_revision|revision) = (None|"[^"\\]*")$""", re.MULTILINE)


def head_revision() -> str | None:
    """The newest migration's revision, read from the scripts' text; None when they do not say it plainly."""
    revisions, parents = set(), set()
    for script in (migrations_dir() / "versions").glob("*.py"):
        found = dict(_REVISION_LINE.findall(script.read_text(encoding="utf-8")))
        if not found.get("revision", "None").startswith('"') or "down_revision" not in found:
            return None
        revisions.add(found["revision"].strip('"'))
        parents.add(found["down_revision"].strip('"'))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def _at_head(engine: Engine) -> bool:
    """Whether the schema is at the newest migration already: one query, no Alembic."""
    head = head_revision()
    with engine.connect() as connection:
        if head is None or not inspect(connection).has_table("alembic_version"):
            return False
        return list(connection.execute(text("SELECT version_num FROM alembic_version")).scalars()) == [head]


def upgrade_database(engine: Engine, *, revision: str = "head") -> None:
    """Bring the database schema to the newest migration, or to ``revision`` (safe to run on every start).

    A schema at the newest migration already is told by one query: Alembic, 0.2 s of start-up, is imported only
    when there is something to upgrade (or to refuse).
    """
    try:
        if revision == "head" and _at_head(engine):
            return
    except SQLAlchemyError as error:
        raise StoreError(f"cannot upgrade the database schema: {_describe(error)}") from error
    from alembic import command
    from alembic.config import Config as AlembicConfig
    from alembic.util import CommandError

    config = AlembicConfig()
    config.set_main_option("script_location", str(migrations_dir()))
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # Replicas starting together upgrade one at a time (released at commit).
                connection.execute(text("SELECT pg_advisory_xact_lock(7294113)"))
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    except SQLAlchemyError as error:
        raise StoreError(f"cannot upgrade the database schema: {_describe(error)}") from error
    except CommandError as error:  # e.g. a revision of a newer version, during a rolling upgrade
        raise StoreError(
            f"cannot upgrade the database schema: {error} (a newer cekura-scheduler upgraded it: run that version)",
            permanent=True,
        ) from error


@contextmanager
def fresh_schema_url(base: str, *, prefix: str = "test") -> Iterator[str]:
    """A PostgreSQL URL on ``base`` whose search_path is a new, empty schema, dropped on exit.

    For tests and benchmarks: each gets a database of its own on one server, without creating databases.
    """
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base)
    try:
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        separator = "&" if "?" in base else "?"
        try:
            yield f"{base}{separator}options=-csearch_path%3D{schema}"
        finally:
            with admin.begin() as connection:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        admin.dispose()


def _describe(error: SQLAlchemyError) -> str:
    original = getattr(error, "orig", None)
    return str(original or error).strip().splitlines()[0]


class Sessions:
    """The engine and its short transactions, which every group of the store's queries builds on."""

    def __init__(self, *, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @contextmanager
    def _session(self, what: str) -> Iterator[Session]:
        """One transaction; a database failure becomes a ``StoreError`` saying ``what`` was being done.

        An ``IntegrityError`` passes through as it is: callers read it as "taken already".
        """
        try:
            with self._sessions.begin() as session:
                yield session
        except IntegrityError:
            raise
        except SQLAlchemyError as error:
            raise StoreError(f"database error while {what}: {_describe(error)}") from error
