"""Databases for one measurement: a fresh SQLite file, or a fresh PostgreSQL schema dropped afterwards."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

from sqlalchemy import create_engine, text

Database = Callable[[Path], AbstractContextManager[str]]
"""Given a scratch folder, a context manager yielding a database URL for one measurement."""


@contextlib.contextmanager
def sqlite(folder: Path) -> Iterator[str]:
    yield f"sqlite:///{folder / 'scheduler.db'}"


def postgres(base: str) -> Database:
    """Each measurement gets a schema of its own on ``base`` (search_path set in the URL), dropped afterwards."""

    @contextlib.contextmanager
    def schema(_folder: Path) -> Iterator[str]:
        name = f"bench_{uuid.uuid4().hex[:12]}"
        admin = create_engine(base)
        try:
            with admin.begin() as connection:
                connection.execute(text(f'CREATE SCHEMA "{name}"'))
            separator = "&" if "?" in base else "?"
            try:
                yield f"{base}{separator}options=-csearch_path%3D{name}"
            finally:
                with admin.begin() as connection:
                    connection.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
        finally:
            admin.dispose()

    return schema
