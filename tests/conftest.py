"""Shared fixtures: the simulator on 127.0.0.1, real databases (SQLite file, PostgreSQL), an alert inbox."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import Engine

from scheduler.alerts import Alert, Delivery
from scheduler.cekura import CekuraClient
from scheduler.clock import Clock, SystemClock, VirtualClock
from scheduler.config import AlertChannel, Config, ConfigSource, Job, load_config
from scheduler.daemon import Daemon
from scheduler.daemon.runtime import Runtime
from scheduler.delivery import AppriseSender
from scheduler.metrics import Metrics
from scheduler.schedules import submission_name
from scheduler.simulator import Simulator, SimulatorConfig, running_simulator
from scheduler.simulator.inbox import AlertInbox as AlertInbox  # re-exported: the tests import it from here
from scheduler.store import Fire, Store, create_db_engine, fresh_schema_url, upgrade_database
from scheduler.transport import AiohttpTransport

POSTGRES_URL = os.environ.get("SCHEDULER_TEST_POSTGRES_URL")
API_KEY = "test-key"


WORKERS = 4  # pytest-xdist's -n in pyproject.toml


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/e2e/ ``e2e`` (``pytest -m "not e2e"`` runs the fast layer alone), and deal the
    tests out so that each of the workers' first shares holds its part of the slow end-to-end tests.

    pytest-xdist gives each worker a contiguous share of the list to start with; as collected, the first share
    would hold every e2e test (they wait on real processes and sockets) and the others only fast unit tests.
    """
    for item in items:
        if item.path.parent.name == "e2e":
            item.add_marker(pytest.mark.e2e)
    ordered = [item for share in range(WORKERS) for item in items[share::WORKERS]]
    items[:] = ordered


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    """The Cekura simulator on 127.0.0.1, with fast results; tests change ``simulator.config`` as they need."""
    with running_simulator(SimulatorConfig(api_key=API_KEY, run_duration=0.5, seed=7)) as sim:
        yield sim


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[Simulator]:
    """A simulator on a clock the test moves (``clock``), with its default key ``sim-key``."""
    with running_simulator(SimulatorConfig(run_duration=10.0, seed=7), clock=clock) as simulator:
        yield simulator


@pytest.fixture
def client(sim: Simulator) -> Iterator[httpx.Client]:
    """An HTTP client to ``sim``, with its key."""
    with httpx.Client(base_url=sim.base_url, headers={"X-CEKURA-API-KEY": "sim-key"}, timeout=5.0) as http:
        yield http


def cekura_http(timeout: float = 5.0) -> httpx.AsyncClient:
    """An HTTP client to the simulator over the daemon's own transport (``scheduler.transport``)."""
    return httpx.AsyncClient(timeout=timeout, transport=AiohttpTransport(max_connections=60))


def clean_environment(**settings: str) -> dict[str, str]:
    """This process's environment without the machine's own CEKURA_* and SCHEDULER_* settings, plus ``settings``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("CEKURA_", "SCHEDULER_"))}
    env.update(settings)
    return env


def cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m scheduler ARGS`` (what ``cekura-scheduler ARGS`` is), its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "scheduler", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def run_environment(config: Path, database_url: str, simulator: Simulator, **settings: str) -> dict[str, str]:
    """The environment of ``python -m scheduler run`` in a test: this simulator, this database, HTTP on a free port
    (tests and replicas run side by side), plus ``settings``."""
    defaults = {
        "CEKURA_API_KEY": API_KEY,
        "CEKURA_BASE_URL": simulator.base_url,
        "SCHEDULER_CONFIG": str(config),
        "SCHEDULER_DATABASE_URL": database_url,
        "SCHEDULER_HTTP_ADDR": "127.0.0.1:0",
    }
    return clean_environment(**{**defaults, **settings})


def claim_slot(
    store: Store,
    job: str = "nightly",
    slot: datetime = datetime(2026, 11, 29, 3, 0, tzinfo=UTC),
    *,
    fired_at: datetime | None = None,
    endpoint: str = "run_scenarios",
    runs_requested: int = 1,
    owner: str | None = None,
    lease_until: datetime | None = None,
) -> Fire | None:
    """Claim a job's scheduled slot as the daemon does before it submits; None when it was claimed already."""
    return store.claim(
        job=job,
        slot=slot,
        trigger="schedule",
        fired_at=fired_at or slot,
        submission_name=submission_name(job, slot),
        endpoint=endpoint,
        runs_requested=runs_requested,
        owner=owner,
        lease_until=lease_until,
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file, and a PostgreSQL schema when SCHEDULER_TEST_POSTGRES_URL is set."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'scheduler.db'}"
        return
    if not POSTGRES_URL:
        pytest.skip("SCHEDULER_TEST_POSTGRES_URL is not set")
    with fresh_schema_url(POSTGRES_URL) as url:
        yield url


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


# -- running the daemon in-process against the simulator --------------------------------------------------

HEADER = """
[daemon]
max_concurrent_submissions = 10
poll_interval = "1s"
poll_max_interval = "1s"
alerts = ["ops"]

[defaults]
alerts = ["team"]
result_timeout = "1m"
overlap = "allow"    # jobs fire every second here, faster than results end

[alerts.team]
url = "${INBOX}"

[alerts.ops]
url = "${INBOX}/ops"
"""


JOB = """
[jobs.smoke]
every = "1s"
agent = 12
scenarios = [101, {{ id = 102, publish_data_message = {{ lang = "en" }} }}]
{extra}
"""


class QuickClock(SystemClock):
    """The real clock, with each sleep (polls, back-offs, restarts) cut to at most 0.2 s, so tests get there sooner."""

    async def sleep(self, seconds: float) -> None:
        await super().sleep(min(seconds, 0.2))


def prepare(
    tmp_path: Path, jobs: str, *, inbox: AlertInbox, database_url: str, header: str = HEADER
) -> tuple[Config, Store]:
    path = tmp_path / "jobs.toml"
    path.write_text(header + jobs)
    config = load_config(path, env={"INBOX": inbox.url})
    engine = create_db_engine(database_url)
    _engines.append(engine)
    upgrade_database(engine)
    return config, Store(engine=engine)


_engines: list[Engine] = []


@pytest.fixture(autouse=True)
def _dispose_engines() -> Iterator[None]:
    yield
    while _engines:
        _engines.pop().dispose()


def make_daemon(
    config: Config,
    store: Store,
    http: httpx.AsyncClient,
    simulator: Simulator,
    api_key: str = API_KEY,
    clock: Clock | None = None,
    config_source: ConfigSource | None = None,
    release_memory: Callable[[], None] | None = None,
) -> Daemon:
    return Daemon(
        config=config,
        store=store,
        cekura=CekuraClient(http=http, base_url=simulator.base_url, api_key=SecretStr(api_key)),
        alerts=AppriseSender(),
        clock=clock or QuickClock(),
        alert_backoff=timedelta(milliseconds=100),
        config_source=config_source,
        release_memory=release_memory,
    )


def run_daemon(
    tmp_path: Path,
    jobs: str,
    *,
    simulator: Simulator,
    inbox: AlertInbox,
    database_url: str,
    until: Callable[[Store], bool],
    timeout: float = 20.0,
    api_key: str = API_KEY,
    header: str = HEADER,
    clock: Clock | None = None,
) -> Store:
    """Run a daemon on ``jobs`` until ``until(store)`` holds (or time runs out), then stop it cleanly."""
    config, store = prepare(tmp_path, jobs, inbox=inbox, database_url=database_url, header=header)

    async def main() -> None:
        async with cekura_http() as http:
            daemon = make_daemon(config, store, http, simulator, api_key, clock)
            stop = asyncio.Event()
            task = asyncio.create_task(daemon.run(stop))
            deadline = asyncio.get_running_loop().time() + timeout
            while not await asyncio.to_thread(until, store):
                if asyncio.get_running_loop().time() > deadline:
                    stop.set()
                    await task
                    raise AssertionError("the daemon did not get there in time")
                await asyncio.sleep(0.1)
            stop.set()
            await task

    asyncio.run(main())
    return store


@pytest.fixture
def run(tmp_path: Path, simulator: Simulator, alert_inbox: AlertInbox, sqlite_url: str) -> Callable[..., Store]:
    """``run(until=..., jobs=...)``: the daemon on this test's simulator, inbox and SQLite file."""

    def go(*, until: Callable[[Store], bool], jobs: str = JOB.format(extra=""), **options: Any) -> Store:
        return run_daemon(
            tmp_path, jobs, simulator=simulator, inbox=alert_inbox, database_url=sqlite_url, until=until, **options
        )

    return go


def finished(store: Store, job: str) -> list[Fire]:
    return [fire for fire in reversed(store.recent_fires(job=job, limit=100)) if fire.state == "finished"]


async def eventually(condition: Callable[[], bool], within: float = 20.0) -> None:
    """Inside a test's event loop: wait until a condition of the database or a server holds (checked off the loop)."""
    async with asyncio.timeout(within):
        while not await asyncio.to_thread(condition):  # noqa: ASYNC110 - the condition lives outside this loop
            await asyncio.sleep(0.05)


def submissions_by_name(simulator: Simulator) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in simulator.submissions:
        if entry.result_id is not None and entry.name is not None:
            counts[entry.name] = counts.get(entry.name, 0) + 1
    return counts


class DaemonProcess:
    """``python -m scheduler run`` as a child process, its stdout and stderr in a log file."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "scheduler", "run"],
                env=env,
                cwd=log.parent,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, line: str, *, timeout: float = 30.0, interval: float = 0.05) -> None:
        """Wait until the daemon logs ``line``; fail at once if it exits instead."""
        wait_until(lambda: line in self.output() or self.process.poll() is not None, timeout, interval)
        assert self.process.poll() is None, f"the daemon exited before logging {line!r}:\n{self.output()}"

    def wait_started(self) -> None:
        self.wait_for("daemon started")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no lease handed back."""
        assert self.process.poll() is None, f"the daemon died on its own before being killed:\n{self.output()}"
        self.process.kill()
        self.process.wait(timeout=10)

    def terminate(self, timeout: float = 45.0) -> None:
        """SIGTERM and a clean exit: code 0 and the one-line summary."""
        assert self.process.poll() is None, f"the daemon died on its own before SIGTERM:\n{self.output()}"
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=timeout)
        output = self.output()
        assert self.process.returncode == 0, output
        assert "daemon stopped:" in output, output

    def cleanup(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


# -- the daemon's parts on a virtual clock (tests/unit) ------------------------------------------------------


class RecordingSender:
    """The alert sender, faked: keeps each alert it is given, as (channel name, alert), and says it went out."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Alert]] = []

    async def send(self, channel: AlertChannel, alert: Alert) -> Delivery:
        self.sent.append((channel.name, alert))
        return Delivery(True)

    def titles(self) -> list[str]:
        return [alert.title for _, alert in self.sent]


UNIT_HEADER = """
[daemon]
alerts = ["ops"]

[defaults]
alerts = ["team"]

[alerts.team]
url = "json://127.0.0.1:9/team"

[alerts.ops]
url = "json://127.0.0.1:9/ops"
"""


@dataclass
class Parts:
    """What a part of the daemon is built from in a unit test: a real store and simulator, a virtual clock."""

    runtime: Runtime
    clock: VirtualClock
    store: Store
    sender: RecordingSender

    def job(self, name: str) -> Job:
        return self.runtime.config.jobs[name]


@contextlib.asynccontextmanager
async def daemon_parts(
    tmp_path: Path,
    jobs: str,
    simulator: Simulator,
    clock: VirtualClock,
    *,
    database_url: str | None = None,
    owner: str = "replica-a",
    header: str = UNIT_HEADER,
) -> AsyncIterator[Parts]:
    """A ``Runtime`` on a jobs.toml of ``jobs``, a SQLite file (or ``database_url``) and ``simulator`` (whose own
    clock should be ``clock.now``, so results end in virtual time too)."""
    path = tmp_path / "jobs.toml"
    path.write_text(header + jobs)
    config = load_config(path, env={})
    engine = create_db_engine(database_url or f"sqlite:///{tmp_path / 'scheduler.db'}")
    _engines.append(engine)
    upgrade_database(engine)
    store = Store(engine=engine)
    sender = RecordingSender()
    async with cekura_http() as http:
        cekura = CekuraClient(http=http, base_url=simulator.base_url, api_key=SecretStr(simulator.config.api_key or ""))
        runtime = Runtime(
            config=config,
            store=store,
            cekura=cekura,
            alerts=sender,
            clock=clock,
            metrics=Metrics(),
            owner=owner,
            alert_backoff=timedelta(seconds=5),
        )
        try:
            yield Parts(runtime, clock, store, sender)
        finally:
            for task in list(runtime.tasks):
                task.cancel()
            await asyncio.gather(*runtime.tasks, return_exceptions=True)


@pytest.fixture
def virtual_clock() -> VirtualClock:
    return VirtualClock(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))


@pytest.fixture
def virtual_simulator(virtual_clock: VirtualClock) -> Iterator[Simulator]:
    """The simulator on the test's virtual clock: results take ``run_duration`` seconds of virtual time."""
    with running_simulator(SimulatorConfig(api_key=API_KEY, run_duration=30.0, seed=7), clock=virtual_clock.now) as sim:
        yield sim
