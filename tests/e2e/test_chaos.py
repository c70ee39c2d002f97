"""Chaos: the real daemon killed and restarted against a faulty Cekura, and replicas dying on one PostgreSQL.

Whatever happens, each scheduled slot is submitted at most once and ends up recorded: finished (with the result
Cekura created, if it created one) or skipped with a reason. These tests run real processes (``python -m
scheduler run``) against the simulator over HTTP on 127.0.0.1 and read the database behind the daemon's back.

The daemon is killed at random moments, and on purpose just as it writes the claims of the slots it missed while it
was down (catch-up), which is when a kill is most likely to leave a slot neither submitted nor skipped.

Jobs fire every second and their results take a second or two, so while the jobs are enabled something is always
in flight. To reach a state where every slot must be settled, each test ends with a *drain*: the daemon started
once more on the same database with every job disabled, which fires nothing new but takes over, settles and
follows whatever the earlier processes left behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from scheduler.simulator import Simulator, Submission
from scheduler.store import fresh_schema_url
from tests.conftest import API_KEY, POSTGRES_URL, DaemonProcess, run_environment, wait_until

JOBS = ("alpha", "bravo", "charlie")
SLOT = timedelta(seconds=1)
UNSETTLED = ("claimed", "submitted")


def jobs_toml(*, enabled: bool = True) -> str:
    """Jobs firing every second; with ``enabled = false`` the daemon only settles what is left in the database."""
    jobs = "\n".join(f'[jobs.{name}]\nevery = "1s"\nscenarios = [101]\n' for name in JOBS)
    return f"""
[daemon]
lease = "2s"
poll_interval = "1s"
poll_max_interval = "1s"
max_concurrent_submissions = 10

[defaults]
agent = 12
catch_up = "all"
catch_up_window = "1h"
overlap = "allow"
result_timeout = "3s"    # short: results taken over after a kill are often past their deadline
enabled = {"true" if enabled else "false"}

{jobs}"""


@dataclass(frozen=True)
class Row:
    """One row of the fires table, as the test reads it behind the daemon's back."""

    id: int
    job: str
    slot: datetime
    state: str
    skip_reason: str | None
    result_id: int | None
    submission_name: str
    owner: str | None
    outcome: str | None
    error: str | None


_COLUMNS = "id, job, slot, state, skip_reason, result_id, submission_name, owner, outcome, error"


def _row(values: Sequence[object]) -> Row:
    id_, job, slot, state, skip_reason, result_id, name, owner, outcome, error = values
    if isinstance(slot, str):  # SQLite keeps naive UTC text
        slot = datetime.fromisoformat(slot)
    assert isinstance(slot, datetime)
    slot = slot.replace(tzinfo=UTC) if slot.tzinfo is None else slot.astimezone(UTC)
    return Row(id_, job, slot, state, skip_reason, result_id, name, owner, outcome, error)  # type: ignore[arg-type]


def sqlite_fires(database: Path) -> list[Row]:
    """Every fire in a SQLite file (none while the daemon is still creating the schema)."""
    if not database.exists():
        return []
    try:
        with contextlib.closing(sqlite3.connect(database, timeout=30)) as connection:
            return [_row(values) for values in connection.execute(f"SELECT {_COLUMNS} FROM fires ORDER BY id")]
    except sqlite3.OperationalError:
        return []


def postgres_fires(engine: Engine) -> list[Row]:
    """Every fire in the PostgreSQL schema (none while the replicas are still creating it)."""
    with engine.connect() as connection:
        exists = connection.execute(text("SELECT to_regclass('fires')")).scalar()
        if exists is None:
            return []
        return [_row(tuple(values)) for values in connection.execute(text(f"SELECT {_COLUMNS} FROM fires ORDER BY id"))]


def unsettled(rows: list[Row]) -> list[Row]:
    return [row for row in rows if row.state in UNSETTLED]


def environment(config: Path, database_url: str, simulator: Simulator) -> dict[str, str]:
    return run_environment(config, database_url, simulator)  # replicas on one machine: each its own free port


@contextlib.contextmanager
def cleaning_up() -> Iterator[list[DaemonProcess]]:
    """A list to put daemons in; whichever still runs at the end is killed, whatever happened."""
    daemons: list[DaemonProcess] = []
    try:
        yield daemons
    finally:
        for daemon in daemons:
            daemon.cleanup()


def drain(start: Callable[[Path], DaemonProcess], fires: Callable[[], list[Row]], log: Path) -> None:
    """Start the daemon with every job disabled until nothing is claimed or submitted; stop it cleanly."""
    daemon = start(log)
    daemon.wait_started()
    try:
        wait_until(lambda: not unsettled(fires()), timeout=60, interval=0.25)
    except AssertionError:
        left = unsettled(fires())
        raise AssertionError(f"still unsettled after 60s of drain: {left}\n{daemon.output()}") from None
    daemon.terminate()


def passed_at_cekura(simulator: Simulator, result_ids: Iterable[int]) -> set[int]:
    """The results that passed as the simulator tells it over HTTP: completed, every run completed with success."""
    simulator.config = dataclasses.replace(simulator.config, error_429_rate=0, error_500_rate=0, latency=0)
    passed = set()
    with httpx.Client(base_url=simulator.base_url, headers={"X-CEKURA-API-KEY": API_KEY}, timeout=10) as http:
        for result_id in result_ids:
            detail = http.get(f"/test_framework/v2/results/{result_id}/").json()
            runs = list(detail["runs"].values())
            if detail["status"] == "completed" and runs and all(run.get("success") is True for run in runs):
                passed.add(result_id)
    return passed


def accounting_problems(
    rows: list[Row], submissions: list[Submission], logs: str, *, passed: set[int] | None = None
) -> list[str]:
    """What breaks the guarantees, all of it rather than the first thing, so that a failure tells the whole story.

    No slot submitted twice; every slot between a job's first and last recorded exactly once, finished or skipped
    with a reason; every result Cekura created recorded on its fire; no fire whose result passed at Cekura
    recorded as failed (``passed``: those results); no daemon task crashed.
    """
    problems: list[str] = []
    created = [entry for entry in submissions if entry.result_id is not None]
    twice = {name: count for name, count in Counter(entry.name for entry in created).items() if count > 1}
    if twice:
        problems.append(f"submitted more than once (name: results created): {twice}")

    if left := unsettled(rows):
        problems.append(f"fires never settled: {left}")
    if odd := [row for row in rows if row.state not in ("finished", "skipped")]:
        problems.append(f"fires in an unknown state: {odd}")
    if unexplained := [row for row in rows if row.state == "skipped" and not row.skip_reason]:
        problems.append(f"skipped without a reason: {unexplained}")
    for job in JOBS:
        slots = Counter(row.slot for row in rows if row.job == job)
        if not slots:
            problems.append(f"{job} never fired")
            continue
        first, last = min(slots), max(slots)
        expected = [first + n * SLOT for n in range(int((last - first) / SLOT) + 1)]
        if missing := [slot.isoformat() for slot in expected if slot not in slots]:
            problems.append(f"{job}: slots never accounted for (no row, neither submitted nor skipped): {missing}")
        if off := sorted(set(slots) - set(expected)):
            problems.append(f"{job}: slots off the 1s grid: {off}")
        if repeated := [slot for slot, count in slots.items() if count > 1]:
            problems.append(f"{job}: slots with several rows: {repeated}")

    by_name = {row.submission_name: row for row in rows}
    orphans = []
    for entry in created:
        fire = by_name.get(entry.name or "")
        if fire is None or fire.result_id != entry.result_id or fire.state != "finished":
            orphans.append((entry.name, entry.result_id, fire))
    if orphans:
        problems.append(f"results Cekura created that the scheduler did not record: {orphans}")
    if passed is not None:
        false_failures = [row for row in rows if row.result_id in passed and row.outcome != "passed"]
        if false_failures:
            problems.append(f"results that passed at Cekura recorded otherwise: {false_failures}")

    crashes = [
        line
        for line in logs.splitlines()
        if "a daemon task failed" in line or "Traceback" in line or line.find("background task") >= 0
    ]
    if crashes:
        problems.append("daemon crashes:\n" + "\n".join(crashes))
    if "check for a duplicate" in logs:
        problems.append("a daemon recorded a submission on a fire settled elsewhere (check for a duplicate)")
    return problems


def test_chaos_kill_and_restart_never_submits_twice_and_accounts_for_every_slot(
    tmp_path: Path, simulator: Simulator
) -> None:
    simulator.config.drop_rate = 0.15  # the result is created, then the connection is dropped
    simulator.config.error_500_rate = 0.1
    simulator.config.error_429_rate = 0.1
    simulator.config.latency = 0.05
    simulator.config.run_duration = 1.0
    database = tmp_path / "scheduler.db"
    (tmp_path / "jobs.toml").write_text(jobs_toml())
    (tmp_path / "drain.toml").write_text(jobs_toml(enabled=False))
    url = f"sqlite:///{database}"
    rng = random.Random(1234)
    kills = kills_in_flight = 0

    def start(log: Path, config: str = "jobs.toml") -> DaemonProcess:
        daemon = DaemonProcess(environment(tmp_path / config, url, simulator), log)
        daemons.append(daemon)
        return daemon

    with cleaning_up() as daemons:
        for round_ in range(8):
            # Down a while: a few slots per job to catch up at the next start. Before an odd round, long enough
            # that a slot surely passes while no daemon runs (a quick restart may find nothing to catch up).
            time.sleep(rng.uniform(1.5, 3.0) if round_ % 2 else rng.uniform(0.0, 2.0))
            daemon = start(tmp_path / f"round-{round_}.log")
            if round_ % 2:
                # Killed as the first claim of its catch-up lands in the database, the others still being written.
                known = len(sqlite_fires(database))
                daemon.wait_for("slots were missed", interval=0.01)
                wait_until(lambda: len(sqlite_fires(database)) > known, timeout=10, interval=0.002)  # noqa: B023
            else:
                daemon.wait_started()
                time.sleep(rng.uniform(1.0, 3.0))
            kills_in_flight += bool(unsettled(sqlite_fires(database)))  # best effort: it may change meanwhile
            daemon.kill()
            kills += 1
        # Once more with the jobs on, catching up what the last kill missed, and a clean SIGTERM in the middle.
        final = start(tmp_path / "final.log")
        final.wait_started()
        time.sleep(3)
        final.terminate()
        drain(lambda log: start(log, "drain.toml"), lambda: sqlite_fires(database), tmp_path / "drain.log")

    rows = sqlite_fires(database)
    submissions = list(simulator.submissions)
    logs = "\n".join(daemon.output() for daemon in daemons)
    dropped = [entry for entry in submissions if entry.status_code is None and entry.result_id is not None]
    print(
        f"\n{len(rows)} fires ({Counter(row.state for row in rows)}), {len(submissions)} submissions "
        f"({Counter(entry.status_code for entry in submissions)}), {len(dropped)} dropped after creating a result, "
        f"{kills} kills, {kills_in_flight} with fires in flight, "
        f"{logs.count('found as result')} adopted by name, {logs.count('claimed but never sent')} resent after a kill"
    )
    assert dropped, "no connection was dropped after creating a result: the faults were not exercised"
    assert any(entry.status_code == 500 for entry in submissions)
    assert any(entry.status_code == 429 for entry in submissions)
    assert kills == 8 and kills_in_flight >= 1, "no kill happened while a fire was claimed or submitted"
    assert "found as result" in logs  # a lost answer was adopted by name rather than sent again
    passed = passed_at_cekura(simulator, [entry.result_id for entry in submissions if entry.result_id is not None])
    assert passed, "no result passed at the simulator: the verdicts were not exercised"
    problems = accounting_problems(rows, submissions, logs, passed=passed)
    assert not problems, "\n".join(problems)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL schema, dropped afterwards."""
    if not POSTGRES_URL:
        pytest.skip("SCHEDULER_TEST_POSTGRES_URL is not set")
    with fresh_schema_url(POSTGRES_URL) as url:
        yield url


def _pid(owner: str | None) -> int | None:
    """The process id in an owner, ``<hostname>:<pid>:<hex>``."""
    match = re.fullmatch(r".*:(\d+):[0-9a-f]+", owner or "")
    return int(match.group(1)) if match else None


def test_three_replicas_on_postgresql_submit_each_slot_once_and_survive_one_dying(
    tmp_path: Path, simulator: Simulator, postgres_url: str
) -> None:
    simulator.config.drop_rate = 0.1
    simulator.config.run_duration = 2.0  # results are still running when a replica dies
    (tmp_path / "jobs.toml").write_text(jobs_toml())
    (tmp_path / "drain.toml").write_text(jobs_toml(enabled=False))
    engine = create_engine(postgres_url)

    def fires() -> list[Row]:
        return postgres_fires(engine)

    def start(log: Path, config: str = "jobs.toml") -> DaemonProcess:
        daemon = DaemonProcess(environment(tmp_path / config, postgres_url, simulator), log)
        daemons.append(daemon)
        return daemon

    try:
        with cleaning_up() as daemons:
            replicas = [start(tmp_path / f"replica-{n}.log") for n in range(3)]
            for replica in replicas:
                replica.wait_started()
            time.sleep(5)

            # Kill the replica that has the most results in flight, and remember what it owned.
            rows = fires()
            in_flight = Counter(_pid(row.owner) for row in rows if row.state == "submitted")
            victim = max(replicas, key=lambda replica: in_flight.get(replica.pid, 0))
            owned = {row.id for row in unsettled(rows) if _pid(row.owner) == victim.pid}
            victim.kill()
            survivors = [replica for replica in replicas if replica is not victim]
            survivor_pids = {replica.pid for replica in survivors}
            assert owned, f"the killed replica owned nothing in flight: {rows}"

            time.sleep(5)
            # The survivors take over what the dead replica left once its lease runs out.
            wait_until(
                lambda: all(row.state not in UNSETTLED for row in fires() if row.id in owned), timeout=40, interval=0.25
            )
            settled = {row.id: row for row in fires() if row.id in owned}
            taken_over = [
                row for row in settled.values() if row.state == "finished" and _pid(row.owner) in survivor_pids
            ]
            for survivor in survivors:
                survivor.terminate()
            drain(lambda log: start(log, "drain.toml"), fires, tmp_path / "drain.log")

        rows = fires()
    finally:
        engine.dispose()

    submissions = list(simulator.submissions)
    logs = "\n".join(daemon.output() for daemon in daemons)
    print(
        f"\n{len(rows)} fires ({Counter(row.state for row in rows)}), {len(submissions)} submissions "
        f"({Counter(entry.status_code for entry in submissions)}); killed replica owned {len(owned)} unsettled "
        f"fires, {len(taken_over)} finished by a survivor"
    )
    passed = passed_at_cekura(simulator, [entry.result_id for entry in submissions if entry.result_id is not None])
    problems = accounting_problems(rows, submissions, logs, passed=passed)
    assert not problems, "\n".join(problems)
    assert taken_over, f"no fire of the killed replica was finished by a survivor: {settled}"
