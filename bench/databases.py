"""Databases for one measurement: a fresh SQLite file, or a fresh PostgreSQL schema dropped afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

from scheduler.store import fresh_schema_url

Database = Callable[[Path], AbstractContextManager[str]]
"""Given a scratch folder, a context manager yielding a database URL for one measurement."""


@contextlib.contextmanager
def sqlite(folder: Path) -> Iterator[str]:
    yield f"sqlite:///{folder / 'scheduler.db'}"


def postgres(base: str) -> Database:
    """Each measurement gets a schema of its own on ``base`` (search_path set in the URL), dropped afterwards."""
    return lambda _folder: fresh_schema_url(base, prefix="bench")
