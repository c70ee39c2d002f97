"""Supervised loops: a loop that fails is logged by name with its traceback, restarted, alerted when it keeps
failing, and shown as down (then up again) in its health, which /healthz reads."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from scheduler import memory
from scheduler.clock import VirtualClock
from scheduler.config import Config
from scheduler.daemon import Daemon
from scheduler.simulator import Simulator
from scheduler.store import Store
from scheduler.supervision import FAILURES_BEFORE_ALERT, Supervisor
from tests.conftest import AlertInbox, eventually, make_daemon, prepare


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_a_loop_that_raises_once_is_logged_by_name_restarted_and_healthy_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    pauses: list[float] = []
    seen_down: list[bool] = []

    async def no_wait(seconds: float) -> None:
        pauses.append(seconds)
        seen_down.append(supervisor.health()[0].down)  # while it waits to start again

    supervisor = Supervisor(clock=clock, sleep=no_wait)
    turns = 0
    done = asyncio.Event()

    async def body(tick: Callable[[], None]) -> None:
        nonlocal turns
        turns += 1
        tick()
        if turns == 1:
            raise RuntimeError("the reminder step broke")
        done.set()

    async def main() -> None:
        task = supervisor.start("sweep", body, stale_after=timedelta(seconds=30))
        await done.wait()
        await task

    asyncio.run(main())
    [record] = [r for r in caplog.records if "failed" in r.getMessage()]
    assert record.getMessage() == "background task 'sweep' failed (1 in a row); restarting it in 1s"
    assert record.exc_info is not None and "the reminder step broke" in str(record.exc_info[1])
    assert (turns, pauses, seen_down) == (2, [1.0], [True])
    [health] = supervisor.health()
    assert health.ok(clock()) and health.failures == 0 and health.last_error == "RuntimeError: the reminder step broke"


def test_a_loop_that_keeps_failing_is_alerted_once_and_solved_when_it_turns_again() -> None:
    clock = Clock()
    problems: list[str] = []
    solved: list[str] = []

    async def problem(title: str, detail: str) -> None:
        problems.append(f"{title}: {detail}")

    async def solve(title: str) -> None:
        solved.append(title)

    async def no_wait(seconds: float) -> None:
        await asyncio.sleep(0)

    supervisor = Supervisor(clock=clock, sleep=no_wait, problem=problem, solved=solve)
    failures = FAILURES_BEFORE_ALERT + 2
    turns = 0

    async def body(tick: Callable[[], None]) -> None:
        nonlocal turns
        turns += 1
        if turns <= failures:
            raise ValueError(f"failure {turns}")
        tick()

    async def main() -> None:
        await supervisor.start("outbox", body, stale_after=timedelta(seconds=30))
        await asyncio.sleep(0)  # the solved notice is its own task

    asyncio.run(main())
    assert len(problems) == 1 and problems[0].startswith("background task outbox keeps failing: ")
    assert f"failed {FAILURES_BEFORE_ALERT} times in a row" in problems[0]
    assert solved == ["background task outbox keeps failing"]


def test_a_loop_that_stops_turning_is_stale() -> None:
    clock = Clock()
    supervisor = Supervisor(clock=clock)
    release = asyncio.Event()

    async def body(tick: Callable[[], None]) -> None:
        tick()
        await release.wait()  # stuck

    async def main() -> None:
        task = supervisor.start("heartbeat", body, stale_after=timedelta(seconds=30))
        await asyncio.sleep(0)
        assert supervisor.stale() == []
        clock.now += timedelta(seconds=31)
        assert supervisor.stale() == ["heartbeat"]
        assert supervisor.health()[0].as_dict(clock())["ok"] is False
        release.set()
        await task

    asyncio.run(main())


def _hourly_job(tmp_path: Path, inbox: AlertInbox, database_url: str) -> tuple[Config, Store]:
    jobs = '\n[jobs.hourly]\nevery = "1h"\nagent = 12\nscenarios = [101]\n'
    return prepare(tmp_path, jobs, inbox=inbox, database_url=database_url)


def test_the_daemon_runs_every_loop_under_supervision(
    tmp_path: Path, simulator: Simulator, alert_inbox: AlertInbox, sqlite_url: str
) -> None:
    config, store = _hourly_job(tmp_path, alert_inbox, sqlite_url)

    async def scenario() -> set[str]:
        async with httpx.AsyncClient(timeout=5.0) as http:
            daemon = make_daemon(config, store, http, simulator)
            stop = asyncio.Event()
            task = asyncio.create_task(daemon.run(stop))
            await eventually(
                lambda: (
                    all(loop.last_tick is not None for loop in daemon.loop_health()) and len(daemon.loop_health()) >= 6
                )
            )
            names = {loop.name for loop in daemon.loop_health()}
            assert not daemon.supervisor.stale()
            assert {task.get_name() for task in asyncio.all_tasks()} >= names  # named tasks, for the log
            stop.set()
            await task
            return names

    names = asyncio.run(scenario())
    assert names == {"timer", "sweep", "heartbeat", "outbox", "prune", "key-check"}


def test_the_process_hands_free_memory_back_every_minute_in_a_loop_of_its_own(
    tmp_path: Path, simulator: Simulator, alert_inbox: AlertInbox, sqlite_url: str
) -> None:
    config, store = _hourly_job(tmp_path, alert_inbox, sqlite_url)
    released: list[datetime] = []

    async def scenario() -> None:
        async with httpx.AsyncClient(timeout=5.0) as http:
            daemon: Daemon | None = None

            def release() -> None:
                assert daemon is not None
                released.append(daemon.clock.now())
                memory.release_free_memory()

            daemon = make_daemon(config, store, http, simulator, clock=VirtualClock(), release_memory=release)
            stop = asyncio.Event()
            task = asyncio.create_task(daemon.run(stop))
            await eventually(lambda: len(released) >= 3)
            assert "memory" in {loop.name for loop in daemon.loop_health()}
            stop.set()
            await task

    asyncio.run(scenario())
    gaps = [later - earlier for earlier, later in itertools.pairwise(released)]
    assert all(gap >= timedelta(seconds=59) for gap in gaps), gaps
