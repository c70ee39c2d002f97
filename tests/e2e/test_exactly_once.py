"""One test per fault the daemon must survive without submitting a slot twice or losing one.

The daemon runs in-process against the simulator on 127.0.0.1, with a real SQLite file (or the real PostgreSQL
where the fault is PostgreSQL's). A dead process is played by rows it left behind: a claim whose lease ran out.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from scheduler.clock import SystemClock
from scheduler.schedules import submission_name
from scheduler.simulator import Simulator
from scheduler.store import Fire, Store, fresh_schema_url
from tests.conftest import (
    API_KEY,
    HEADER,
    POSTGRES_URL,
    AlertInbox,
    cekura_http,
    claim_slot,
    eventually,
    finished,
    make_daemon,
    prepare,
    run_daemon,
    run_environment,
    submissions_by_name,
    wait_until,
)

HOURLY = """
[jobs.hourly]
every = "1h"
agent = 12
scenarios = [101]
"""


def claim_as_dead_process(store: Store, slot: datetime, job: str = "hourly") -> int:
    """The row a process leaves when it is killed between its claim and the recorded answer."""
    fire = claim_slot(
        store,
        job,
        slot,
        endpoint="run_scenarios_livekit_v2",
        owner="dead:1:0",
        lease_until=datetime.now(UTC) - timedelta(seconds=1),
    )
    assert fire is not None
    return fire.id


def submitted_by_dead_process(
    store: Store, simulator: Simulator, slot: datetime, *, deadline: datetime, job: str = "hourly"
) -> tuple[int, int]:
    """The rows of a process killed while it followed a result: its POST reached Cekura, its answer is recorded."""
    fire_id = claim_as_dead_process(store, slot, job)
    answer = httpx.post(
        f"{simulator.base_url}/test_framework/v1/scenarios/run_scenarios_livekit_v2/",
        headers={"X-CEKURA-API-KEY": API_KEY},
        json={"name": submission_name(job, slot), "agent": 12, "scenarios": [{"scenario": 101}]},
    )
    assert answer.status_code == 200
    result_id = answer.json()["id"]
    assert store.record_submitted(
        fire_id, result_id=result_id, status="pending", runs=[], at=slot, poll_deadline=deadline
    )
    return fire_id, result_id


def result_status(simulator: Simulator, result_id: int) -> str:
    answer = httpx.get(
        f"{simulator.base_url}/test_framework/v2/results/{result_id}/", headers={"X-CEKURA-API-KEY": API_KEY}
    )
    status: str = answer.json()["status"]
    return status


def this_hour() -> datetime:
    """The hourly job's current slot: it is within the catch-up window and there is no newer slot yet."""
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


def settled(fire_id: int) -> Callable[[Store], bool]:
    def check(store: Store) -> bool:
        fire = store.get_fire(fire_id)
        return fire is not None and fire.state in ("finished", "skipped")

    return check


def test_a_claim_whose_post_never_arrived_is_submitted_after_a_restart(
    tmp_path: Path, simulator: Simulator, alert_inbox: AlertInbox, sqlite_url: str
) -> None:
    _, store = prepare(tmp_path, HOURLY, inbox=alert_inbox, database_url=sqlite_url)
    slot = this_hour()
    fire_id = claim_as_dead_process(store, slot)

    store = run_daemon(
        tmp_path, HOURLY, simulator=simulator, inbox=alert_inbox, database_url=sqlite_url, until=settled(fire_id)
    )

    fire = store.get_fire(fire_id)
    assert fire is not None and fire.outcome == "passed" and fire.result_id is not None
    assert submissions_by_name(simulator) == {submission_name("hourly", slot): 1}


@pytest.mark.parametrize("sparse", [False, True], ids=["full-hits", "sparse-hits"])
def test_a_claim_whose_post_did_arrive_is_adopted_not_sent_again(
    tmp_path: Path, simulator: Simulator, alert_inbox: AlertInbox, sqlite_url: str, sparse: bool
) -> None:
    # Sparse: the search hit has only an id and a name (no status, run summaries without ids), as the document allows.
    simulator.config.sparse_search = sparse
    _, store = prepare(tmp_path, HOURLY, inbox=alert_inbox, database_url=sqlite_url)
    slot = this_hour()
    fire_id = claim_as_dead_process(store, slot)
    # The dead process's POST reached Cekura; only its answer was lost with the process.
    answer = httpx.post(
        f"{simulator.base_url}/test_framework/v1/scenarios/run_scenarios_livekit_v2/",
        headers={"X-CEKURA-API-KEY": API_KEY},
        json={"name": submission_name("hourly", slot), "agent": 12, "scenarios": [{"scenario": 101}]},
    )
    assert answer.status_code == 200

    store = run_daemon(
        tmp_path, HOURLY, simulator=simulator, inbox=alert_inbox, database_url=sqlite_url, until=settled(fire_id)
    )

    fire = store.get_fire(fire_id)
    assert fire is not None and fire.result_id == answer.json()["id"] and fire.outcome == "passed"
    assert submissions_by_name(simulator) == {submission_name("hourly", slot): 1}


def test_a_claim_lost_too_long_ago_is_skipped_and_alerted(
    tmp_path: Path, simulator: Simulator, alert_inbox: AlertInbox, sqlite_url: str
) -> None:
    _, store = prepare(tmp_path, HOURLY, inbox=alert_inbox, database_url=sqlite_url)
    slot = this_hour() - timedelta(hours=2)  # catch_up_window is 1h
    fire_id = claim_as_dead_process(store, slot)

    store = run_daemon(
        tmp_path,
        HOURLY,
        simulator=simulator,
        inbox=alert_inbox,
        database_url=sqlite_url,
        until=lambda s: settled(fire_id)(s) and bool(alert_inbox.received),
    )

    fire = store.get_fire(fire_id)
    assert fire is not None and (fire.state, fire.skip_reason) == ("skipped", "lost-before-submit")
    assert submission_name("hourly", slot) not in submissions_by_name(simulator)
    assert "[cekura-scheduler] SKIPPED hourly: lost-before-submit" in alert_inbox.titles()


@pytest.mark.parametrize(("behaviour", "outcome"), [("pass", "passed"), ("fail", "failed")])
def test_a_result_taken_over_after_its_deadline_gets_cekuras_verdict_not_a_timeout(
    tmp_path: Path, simulator: Simulator, alert_inbox: AlertInbox, sqlite_url: str, behaviour: str, outcome: str
) -> None:
    # Its follower died; by the time this daemon takes it over, the deadline has passed but the result has ended.
    simulator.config.behaviours = {101: [behaviour]}
    _, store = prepare(tmp_path, HOURLY, inbox=alert_inbox, database_url=sqlite_url)
    slot = this_hour()
    past = datetime.now(UTC) - timedelta(minutes=1)
    fire_id, result_id = submitted_by_dead_process(store, simulator, slot, deadline=past)
    wait_until(lambda: result_status(simulator, result_id) == "completed")

    store = run_daemon(
        tmp_path,
        HOURLY,
        simulator=simulator,
        inbox=alert_inbox,
        database_url=sqlite_url,
        until=lambda s: settled(fire_id)(s) and (outcome == "passed" or bool(alert_inbox.received)),
    )

    fire = store.get_fire(fire_id)
    assert fire is not None and (fire.outcome, fire.result_status) == (outcome, "completed")
    assert simulator.ended_calls == []  # nothing was cut short
    if outcome == "passed":
        assert fire.error is None and store.outbox() == []  # no alert at all
    else:
        assert fire.error == f"run {fire.runs[0].run_id} failed"
        assert alert_inbox.titles() == [f"[cekura-scheduler] FAILED hourly: run {fire.runs[0].run_id} failed"]


def test_a_verdict_that_cannot_be_written_is_kept_and_written_once_the_database_is_back(
    tmp_path: Path,
    simulator: Simulator,
    alert_inbox: AlertInbox,
    postgres_behind_a_proxy: tuple[str, TcpProxy],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, proxy = postgres_behind_a_proxy
    simulator.config.run_duration = 1.5
    config, store = prepare(tmp_path, HOURLY, inbox=alert_inbox, database_url=url)
    fire_id, result_id = submitted_by_dead_process(
        store, simulator, this_hour(), deadline=datetime.now(UTC) + timedelta(minutes=10)
    )

    def owner() -> str | None:
        fire = store.get_fire(fire_id)
        return fire.owner if fire is not None else None

    async def scenario() -> None:
        async with cekura_http() as http:
            daemon = make_daemon(config, store, http, simulator)
            stop = asyncio.Event()
            task = asyncio.create_task(daemon.run(stop))
            await eventually(lambda: owner() == daemon.owner)  # taken over: it follows the result
            proxy.cut()
            # The result ends while the database is unreachable: the verdict cannot be written.
            await eventually(lambda: any("cannot record the outcome" in r.getMessage() for r in caplog.records))
            proxy.restore()
            await eventually(lambda: settled(fire_id)(store))
            stop.set()
            await task

    asyncio.run(scenario())

    fire = store.get_fire(fire_id)
    assert fire is not None and (fire.outcome, fire.result_status, fire.result_id) == ("passed", "completed", result_id)
    assert simulator.ended_calls == []
    assert not tracebacks(caplog)


def test_an_answer_that_arrives_while_the_database_is_down_is_kept_and_recorded_once_it_is_back(
    tmp_path: Path,
    simulator: Simulator,
    alert_inbox: AlertInbox,
    postgres_behind_a_proxy: tuple[str, TcpProxy],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, proxy = postgres_behind_a_proxy
    # A lease longer than the test: no sweep can rescue the claim, only the process holding the answer.
    header = HEADER.replace("[daemon]\n", '[daemon]\nlease = "10m"\n')
    config, store = prepare(tmp_path, HOURLY, inbox=alert_inbox, database_url=url, header=header)
    # Cekura has created the result; the database goes away before its answer reaches the daemon.
    simulator.on_submission = lambda entry: proxy.cut()

    async def scenario() -> Fire:
        async with cekura_http() as http:
            daemon = make_daemon(config, store, http, simulator)
            triggered = asyncio.create_task(daemon.trigger("hourly", wait=True))
            await eventually(lambda: any("cannot record the answer to" in r.getMessage() for r in caplog.records))
            simulator.on_submission = None
            proxy.restore()
            async with asyncio.timeout(30):
                return await triggered

    fire = asyncio.run(scenario())

    (entry,) = simulator.submissions  # one POST, never sent again
    assert (fire.state, fire.outcome, fire.result_id) == ("finished", "passed", entry.result_id)
    recorded = store.get_fire(fire.id)
    assert recorded is not None and (recorded.outcome, recorded.result_id) == ("passed", entry.result_id)
    assert any("database unreachable" in title for title in alert_inbox.titles())
    assert not tracebacks(caplog)


def test_overlap_looks_at_the_previous_result_before_skipping_a_slot(
    tmp_path: Path, simulator: Simulator, alert_inbox: AlertInbox, sqlite_url: str
) -> None:
    # Results end in 0.3 s but are polled every 10 minutes: the database still says "running" at the next slot.
    simulator.config.run_duration = 0.3
    header = HEADER.replace('"1s"', '"10m"')
    jobs = '\n[jobs.quick]\nevery = "2s"\nagent = 12\nscenarios = [101]\noverlap = "skip"\n'
    store = run_daemon(
        tmp_path,
        jobs,
        simulator=simulator,
        inbox=alert_inbox,
        database_url=sqlite_url,
        header=header,
        clock=SystemClock(),
        until=lambda s: len(finished(s, "quick")) >= 2,
    )

    fires = sorted(store.recent_fires(job="quick", limit=100), key=lambda fire: fire.slot)
    assert [fire.skip_reason for fire in fires if fire.state == "skipped"] == []
    done = finished(store, "quick")
    assert len(done) >= 2 and all((fire.outcome, fire.result_status) == ("passed", "completed") for fire in done)
    for earlier, later in itertools.pairwise(fires):
        assert earlier.finished_at is not None and earlier.finished_at <= later.fired_at


def test_slots_missed_while_down_are_submitted_within_the_window_and_recorded_skipped_beyond_it(
    tmp_path: Path, simulator: Simulator, alert_inbox: AlertInbox, sqlite_url: str
) -> None:
    """A restart after ten hourly slots went by: the ones within catch_up_window are submitted, the rest recorded.

    The job's minute is half an hour away from now, so no slot and no window edge comes near the test's own time
    (the policies themselves are checked at exact instants in tests/unit/test_missed.py).
    """
    now = datetime.now(UTC)
    minute = (now.minute + 30) % 60
    latest = now.replace(minute=minute, second=0, microsecond=0)
    if latest > now:
        latest -= timedelta(hours=1)
    missed = [latest - timedelta(hours=n) for n in range(9, -1, -1)]  # the daemon was down for these 10 slots
    within = [slot for slot in missed if now - slot <= timedelta(hours=4)]
    jobs = (
        f'\n[jobs.hourly]\ncron = "{minute} * * * *"\nagent = 12\nscenarios = [101]\n'
        'catch_up = "all"\ncatch_up_window = "4h"\n'
    )
    _, store = prepare(tmp_path, jobs, inbox=alert_inbox, database_url=sqlite_url)
    last = missed[0] - timedelta(hours=1)
    claim_slot(store, "hourly", last)  # the last slot recorded before the daemon went down

    def accounted(s: Store) -> bool:
        fires = [s.find_fire("hourly", slot) for slot in missed]
        return all(fire is not None for fire in fires) and all(
            (fire := s.find_fire("hourly", slot)) is not None and fire.state == "finished" for slot in within
        )

    store = run_daemon(tmp_path, jobs, simulator=simulator, inbox=alert_inbox, database_url=sqlite_url, until=accounted)

    assert len(within) == 4
    assert set(submissions_by_name(simulator)) == {submission_name("hourly", slot) for slot in within}
    recorded = [store.find_fire("hourly", slot) for slot in missed]
    skips = [fire for fire in recorded if fire is not None and fire.state == "skipped"]
    assert [fire.slot for fire in skips] == missed[: len(missed) - len(within)]
    assert {fire.skip_reason for fire in skips} == {"catch_up_window"}


def test_a_slot_due_while_the_previous_result_runs_is_skipped_as_overlap(
    run: Callable[..., Store], simulator: Simulator
) -> None:
    simulator.config.run_duration = 2.5
    jobs = '\n[jobs.slow]\nevery = "1s"\nagent = 12\nscenarios = [101]\noverlap = "skip"\n'
    store = run(
        jobs=jobs,
        until=lambda s: (
            any(f.skip_reason == "overlap" for f in s.recent_fires(job="slow"))
            and any(f.outcome for f in s.recent_fires(job="slow"))
        ),
    )

    fires = sorted(store.recent_fires(job="slow", limit=100), key=lambda fire: fire.slot)
    submitted = [fire for fire in fires if fire.result_id is not None]
    # Skipped only on Cekura's word, and the skip says which result was still going.
    overlaps = [fire for fire in fires if fire.skip_reason == "overlap"]
    assert all(
        re.fullmatch(
            r"the previous result \d+ is still (pending|running|evaluating)|" + "a submission of the job "
            r"is still in flight",
            fire.error or "",
        )
        for fire in overlaps
    ), [fire.error for fire in overlaps]
    assert any((fire.error or "").startswith("the previous result") for fire in overlaps)
    assert all(fire.state in ("finished", "submitted", "skipped") for fire in fires)
    # Never two results of the job running at once: each submission comes after the previous one finished.
    for earlier, later in itertools.pairwise(submitted):
        assert earlier.finished_at is not None and earlier.finished_at <= later.fired_at


def test_insufficient_balance_is_one_daemon_alert(
    run: Callable[..., Store], simulator: Simulator, alert_inbox: AlertInbox
) -> None:
    simulator.config.balance = 0
    store = run(until=lambda s: len([f for f in s.recent_fires(job="smoke") if f.outcome]) >= 3)

    fires = [f for f in store.recent_fires(job="smoke") if f.outcome]
    assert all(f.error_status_code == 402 and "Insufficient balance" in (f.error or "") for f in fires)
    assert alert_inbox.titles() == ["[cekura-scheduler] insufficient Cekura balance"]


class TcpProxy:
    """A TCP relay to a real server that a test can cut, as a restart or a network failure would."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = True
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets |= {client, server}
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with self._lock:
                    self._sockets.discard(end)
                end.close()

    def cut(self) -> None:
        self.up = False
        with self._lock:
            for end in list(self._sockets):
                # Connections in use die as at a server restart (shutdown sends the FIN and wakes the pump
                # blocked in recv; close alone does neither, and a client waited on it forever); new ones are
                # refused.
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.cut()
        self.listener.close()


@pytest.fixture
def postgres_behind_a_proxy() -> Iterator[tuple[str, TcpProxy]]:
    if not POSTGRES_URL:
        pytest.skip("SCHEDULER_TEST_POSTGRES_URL is not set")
    from sqlalchemy.engine import make_url

    with fresh_schema_url(POSTGRES_URL) as url:
        parsed = make_url(url)
        proxy = TcpProxy((parsed.host or "127.0.0.1", parsed.port or 5432))
        yield parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False), proxy
        proxy.close()


def test_an_unreachable_database_stops_submissions_alerts_and_recovers(
    tmp_path: Path,
    simulator: Simulator,
    alert_inbox: AlertInbox,
    postgres_behind_a_proxy: tuple[str, TcpProxy],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, proxy = postgres_behind_a_proxy
    jobs = '\n[jobs.smoke]\nevery = "1s"\nagent = 12\nscenarios = [101]\ncatch_up = "all"\n'
    config, store = prepare(tmp_path, jobs, inbox=alert_inbox, database_url=url)
    outage: dict[str, datetime] = {}

    def slots_between(start: datetime, end: datetime) -> list[datetime]:
        first = start.replace(microsecond=0) + timedelta(seconds=1)
        return [first + timedelta(seconds=n) for n in range(int((end - first).total_seconds()))]

    def caught_up(start: datetime, end: datetime) -> bool:
        return all(store.find_fire("smoke", slot) is not None for slot in slots_between(start, end))

    async def scenario() -> None:
        async with cekura_http() as http:
            daemon = make_daemon(config, store, http, simulator)
            stop = asyncio.Event()
            task = asyncio.create_task(daemon.run(stop))
            await eventually(lambda: len(finished(store, "smoke")) >= 2)
            proxy.cut()
            outage["start"] = datetime.now(UTC)
            # Two slots come while the database is away: neither can be claimed, so neither is submitted.
            await eventually(lambda: len([r for r in caplog.records if "cannot claim the slot" in r.getMessage()]) >= 2)
            outage["end"] = datetime.now(UTC)
            proxy.restore()
            await eventually(lambda: caught_up(outage["start"], outage["end"]) and not task_crashed(store))
            stop.set()
            await task

    asyncio.run(scenario())

    assert any("database unreachable" in title for title in alert_inbox.titles())
    assert not task_crashed(store)
    # Nothing was submitted that is not recorded, and every slot of the outage was caught up (catch_up = all).
    recorded = {fire.submission_name for fire in store.recent_fires(job="smoke", limit=1000)}
    assert set(submissions_by_name(simulator)) <= recorded
    assert all(count == 1 for count in submissions_by_name(simulator).values())
    during = slots_between(outage["start"], outage["end"])
    assert during and all(store.find_fire("smoke", slot) is not None for slot in during)
    store.engine.dispose()


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the daemon logged of a task that died, or of any error with its traceback: none is expected."""
    return [r.getMessage() for r in caplog.records if "a daemon task failed" in r.getMessage() or r.exc_info]


def task_crashed(store: Store) -> bool:
    """Whether anything was left half-done: a claim nobody settled is the trace of a crashed task."""
    return any(fire.state == "claimed" for fire in store.recent_fires(limit=1000))


def test_sigterm_lets_submissions_in_flight_record_their_answer_and_hands_back_results(
    tmp_path: Path, simulator: Simulator
) -> None:
    simulator.config.latency = 2.0  # every answer takes 2 s: the signal arrives while a POST is in flight
    simulator.config.run_duration = 30.0
    (tmp_path / "jobs.toml").write_text('[jobs.smoke]\nevery = "1s"\nagent = 12\nscenarios = [101]\n')
    database = tmp_path / "s.db"
    env = run_environment(tmp_path / "jobs.toml", f"sqlite:///{database}", simulator)

    def claimed() -> list[int]:
        try:
            with sqlite3.connect(database) as connection:
                return [row[0] for row in connection.execute("SELECT id FROM fires WHERE state = 'claimed'")]
        except sqlite3.OperationalError:
            return []

    process = subprocess.Popen([sys.executable, "-m", "scheduler", "run"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: bool(claimed()), timeout=20)
        in_flight = claimed()
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    assert time.monotonic() - started < 35  # bounded: at most the 30 s grace for submissions in flight
    assert re.search(r"waiting up to 30s for \d+ submissions in flight", stderr) and "daemon stopped:" in stderr

    with sqlite3.connect(database) as connection:
        rows = connection.execute(
            f"SELECT state, result_id, lease_until FROM fires WHERE id IN ({','.join('?' * len(in_flight))})",
            in_flight,
        ).fetchall()
    for state, result_id, lease_until in rows:
        assert state == "submitted" and result_id is not None  # the answer that was in flight got recorded
        assert datetime.fromisoformat(lease_until).replace(tzinfo=UTC) <= datetime.now(UTC)  # handed back
    assert claimed() == []
