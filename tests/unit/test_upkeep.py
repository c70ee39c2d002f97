"""Upkeep on a virtual clock: leases renewed by the heartbeat, taken over by another replica only once they end."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest

from scheduler.clock import VirtualClock
from scheduler.config import Job
from scheduler.daemon.admission import Admission
from scheduler.daemon.following import Follower
from scheduler.daemon.missed import MissedSlots
from scheduler.daemon.submission import Submitter
from scheduler.daemon.upkeep import Upkeep
from scheduler.simulator import Simulator
from scheduler.store import Fire
from tests.conftest import Parts, claim_slot, daemon_parts

JOBS = '\n[jobs.smoke]\nevery = "1h"\nagent = 12\nscenarios = [101]\n'
HEADER = '\n[daemon]\nlease = "30s"\n'


async def never_fired(job: Job, slot: datetime) -> None:
    raise AssertionError("nothing is missed in these tests")


@contextlib.asynccontextmanager
async def replica(
    tmp_path: Path, simulator: Simulator, clock: VirtualClock, owner: str
) -> AsyncIterator[tuple[Parts, Upkeep]]:
    """One replica's upkeep, on the database and jobs.toml every replica of the test shares."""
    async with daemon_parts(tmp_path, JOBS, simulator, clock, owner=owner, header=HEADER) as parts:
        rt = parts.runtime
        follower = Follower(rt)
        missed = MissedSlots(rt, admission=Admission(rt, still_running=follower.still_running), fire=never_fired)
        yield parts, Upkeep(rt, follower=follower, submitter=Submitter(rt), missed=missed)


async def submitted_by(parts: Parts) -> Fire:
    now = parts.clock.now()
    fire = claim_slot(parts.store, "smoke", now, owner=parts.runtime.owner, lease_until=now + parts.runtime.lease)
    assert fire is not None
    return await Submitter(parts.runtime).submit(parts.job("smoke"), fire)


def test_a_lease_renewed_by_the_heartbeat_is_not_taken_and_one_that_ran_out_is_followed_to_its_verdict(
    tmp_path: Path, virtual_simulator: Simulator, virtual_clock: VirtualClock
) -> None:
    virtual_simulator.config.run_duration = 600.0

    async def scenario() -> tuple[list[int], list[int], Fire | None]:
        async with (
            replica(tmp_path, virtual_simulator, virtual_clock, "a") as (a, a_upkeep),
            replica(tmp_path, virtual_simulator, virtual_clock, "b") as (b, b_upkeep),
        ):
            fire = await submitted_by(a)
            a.runtime.in_flight.following.add(fire.id)  # replica a follows it, so its heartbeat renews the lease
            virtual_clock.advance(20)
            await a_upkeep.heartbeat()  # the lease now ends at t = 50 s
            virtual_clock.advance(15)  # t = 35 s: past the first lease, within the renewed one
            await b_upkeep.sweep()
            while_renewed = sorted(b.runtime.in_flight.follow_tasks)
            virtual_clock.advance(16)  # t = 51 s: replica a went quiet
            await b_upkeep.sweep()
            taken = sorted(b.runtime.in_flight.follow_tasks)
            await asyncio.gather(*b.runtime.tasks)  # b follows it to its verdict
            await a_upkeep.heartbeat()  # a learns it lost the fire
            return while_renewed, taken, a.store.get_fire(fire.id)

    while_renewed, taken, fire = asyncio.run(scenario())
    assert while_renewed == []
    assert fire is not None and taken == [fire.id]
    assert fire.outcome == "passed"
    assert len(virtual_simulator.submissions) == 1  # taken over, never submitted again


def test_a_fire_taken_over_while_the_heartbeat_renews_is_followed_on_not_dropped(
    tmp_path: Path, virtual_simulator: Simulator, virtual_clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The sweep and the heartbeat meet every 30 s: a fire whose follower starts while the leases are being
    renewed was not in the renewal, and must not be taken for one that another process holds (it was dropped, and
    followed again only once its lease ran out)."""
    virtual_simulator.config.run_duration = 600.0

    async def scenario() -> None:
        async with replica(tmp_path, virtual_simulator, virtual_clock, "a") as (a, upkeep):
            fire = await submitted_by(a)
            renewing = asyncio.create_task(upkeep.heartbeat())
            await asyncio.sleep(0)  # the heartbeat has asked the database which leases it holds
            a.runtime.in_flight.following.add(fire.id)  # meanwhile the sweep took this fire over and follows it
            await renewing

    asyncio.run(scenario())
    assert not [record for record in caplog.records if "taken over by another process" in record.getMessage()]
