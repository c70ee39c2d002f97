"""Databases for one measurement: a fresh SQLite file, or a fresh PostgreSQL schema dropped afterwards."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scheduler.store import fresh_schema_url

Database = Callable[[Path], AbstractContextManager[str]]
"""Given a scratch folder, a context manager yielding a database URL for one measurement."""


@contextlib.contextmanager
def sqlite(folder: Path) -> Iterator[str]:
    yield f"sqlite:///{folder / 'scheduler.db'}"


def postgres(base: str) -> Database:
    """Each measurement gets a schema of its own on ``base`` (search_path set in the URL), dropped afterwards."""
    return lambda _folder: fresh_schema_url(base, prefix="bench")


def sqlite_rows(path: Path, query: str, *params: object) -> list[tuple[Any, ...]]:
    """The rows of one query on a daemon's SQLite file, read-only, while it runs (WAL: readers do not block it)."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as connection:
        return connection.execute(query, params).fetchall()


def sqlite_stamp(epoch: float) -> str:
    """An instant as the store keeps it in SQLite (naive UTC text), comparable with ``<`` in a query."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def sqlite_epoch(stamp: str) -> float:
    """The other way: a stored instant (naive UTC text) as epoch seconds."""
    return datetime.fromisoformat(stamp).replace(tzinfo=UTC).timestamp()
