"""Shared fixtures: the simulator on 127.0.0.1, real databases (SQLite file, PostgreSQL), an alert inbox."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from scheduler.simulator import Simulator, SimulatorConfig, running_simulator
from scheduler.store import Store, create_db_engine, upgrade_database

POSTGRES_URL = os.environ.get("SCHEDULER_TEST_POSTGRES_URL")
API_KEY = "test-key"


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    """The Cekura simulator on 127.0.0.1, with fast results; tests change ``simulator.config`` as they need."""
    with running_simulator(SimulatorConfig(api_key=API_KEY, run_duration=0.5, seed=7)) as sim:
        yield sim


def _postgres_schema_url(base: str) -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in base else "?"
    try:
        yield f"{base}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file, and a PostgreSQL schema when SCHEDULER_TEST_POSTGRES_URL is set."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'scheduler.db'}"
        return
    if not POSTGRES_URL:
        pytest.skip("SCHEDULER_TEST_POSTGRES_URL is not set")
    yield from _postgres_schema_url(POSTGRES_URL)


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    """A store on an upgraded database (both backends)."""
    engine = create_db_engine(database_url)
    upgrade_database(engine)
    yield Store(engine=engine)
    engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'scheduler.db'}"


class AlertInbox:
    """A local HTTP endpoint that keeps what Apprise's json:// target posts to it."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.fail_next = 0
        self._lock = threading.Lock()
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with inbox._lock:
                    if inbox.fail_next > 0:
                        inbox.fail_next -= 1
                        self.send_response(500)
                        self.end_headers()
                        return
                    inbox.received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"json://127.0.0.1:{self.server.server_address[1]}/alerts"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def titles(self) -> list[str]:
        with self._lock:
            return [message.get("title", "") for message in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def alert_inbox() -> Iterator[AlertInbox]:
    inbox = AlertInbox()
    yield inbox
    inbox.close()


def wait_until(condition: Callable[[], bool], timeout: float = 15.0, interval: float = 0.05) -> None:
    """Poll a condition of the outside world (another process, a server) until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)
