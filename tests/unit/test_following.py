"""Following a result on a virtual clock: the back-off schedule, the verdict, the deadline and what it reads first."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from scheduler.clock import VirtualClock
from scheduler.daemon.following import Follower
from scheduler.daemon.submission import Submitter
from scheduler.simulator import Simulator
from scheduler.store import Fire
from scheduler.verdicts import TIMED_OUT
from tests.conftest import Parts, claim_slot, daemon_parts

JOBS = '\n[jobs.smoke]\nevery = "1h"\nagent = 12\nscenarios = [101]\nresult_timeout = "{timeout}"\n'


async def submitted(parts: Parts) -> Fire:
    slot = parts.clock.now()
    fire = claim_slot(parts.store, "smoke", slot, owner=parts.runtime.owner, lease_until=slot + timedelta(minutes=5))
    assert fire is not None
    return await Submitter(parts.runtime).submit(parts.job("smoke"), fire)


def follow(tmp_path: Path, simulator: Simulator, clock: VirtualClock, *, timeout: str = "1h") -> tuple[Fire, Parts]:
    async def scenario() -> tuple[Fire, Parts]:
        async with daemon_parts(tmp_path, JOBS.format(timeout=timeout), simulator, clock) as parts:
            fire = await submitted(parts)
            return await Follower(parts.runtime).follow(fire), parts

    return asyncio.run(scenario())


def test_a_result_is_polled_with_a_growing_interval_until_its_verdict(
    tmp_path: Path, virtual_simulator: Simulator, virtual_clock: VirtualClock
) -> None:
    virtual_simulator.config.run_duration = 60.0
    start = virtual_clock.now()

    fire, _ = follow(tmp_path, virtual_simulator, virtual_clock)

    assert fire.outcome == "passed" and fire.result_status == "completed"
    # poll_interval 10 s, times 1.5 each poll, at most poll_max_interval (60 s): 10, 15, 22.5, 33.75 -> t = 81.25 s
    assert [seconds for _, seconds in virtual_clock.slept] == [10.0, 15.0, 22.5, 33.75]
    assert fire.finished_at == start + timedelta(seconds=81.25)


def test_a_result_still_running_at_its_deadline_is_timed_out_and_its_calls_are_ended(
    tmp_path: Path, virtual_simulator: Simulator, virtual_clock: VirtualClock
) -> None:
    virtual_simulator.config.run_duration = 3600.0

    fire, _ = follow(tmp_path, virtual_simulator, virtual_clock, timeout="2m")

    assert fire.outcome == "failed" and fire.result_status == "timeout"
    assert fire.error is not None and fire.error.startswith(f"{TIMED_OUT} (2m)")
    assert virtual_simulator.ended_calls == [fire.result_id]
    assert sum(seconds for _, seconds in virtual_clock.slept) == 120.0  # the last wait stops at the deadline


def test_a_result_that_ended_by_its_deadline_gets_its_verdict_not_a_timeout(
    tmp_path: Path, virtual_simulator: Simulator, virtual_clock: VirtualClock
) -> None:
    """Taken over after its deadline (its follower died): what Cekura says decides, and no call is ended."""
    virtual_simulator.config.run_duration = 30.0
    virtual_simulator.config.behaviours = {101: ["fail"]}

    async def scenario() -> Fire:
        async with daemon_parts(tmp_path, JOBS.format(timeout="1m"), virtual_simulator, virtual_clock) as parts:
            fire = await submitted(parts)
            virtual_clock.advance(300)  # nobody polled it meanwhile
            return await Follower(parts.runtime).follow(fire)

    fire = asyncio.run(scenario())
    assert fire.outcome == "failed" and fire.result_status == "completed"
    assert virtual_simulator.ended_calls == []
    assert fire.error is not None and TIMED_OUT not in fire.error
