"""Slots missed while the daemon was down: found by their missing rows, then submitted or skipped with a reason."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from scheduler.clock import VirtualClock
from scheduler.config import Job
from scheduler.daemon.admission import Admission
from scheduler.daemon.following import Follower
from scheduler.daemon.missed import MissedSlots
from scheduler.daemon.timetable import SKIP_SUPERSEDED, SKIP_TOO_OLD
from scheduler.simulator import Simulator
from tests.conftest import claim_slot, daemon_parts

JOBS = """
[jobs.hourly]
cron = "0 * * * *"
agent = 12
scenarios = [101]
catch_up = "latest"
catch_up_window = "150m"
"""


def hour(h: int) -> datetime:
    return datetime(2026, 3, 2, h, 0, tzinfo=UTC)


def test_after_a_downtime_the_latest_slot_is_submitted_and_every_other_is_recorded_with_its_reason(
    tmp_path: Path, virtual_simulator: Simulator
) -> None:
    clock = VirtualClock(datetime(2026, 3, 2, 9, 30, tzinfo=UTC))
    fired: list[tuple[str, datetime]] = []

    async def fire(job: Job, slot: datetime) -> None:
        fired.append((job.name, slot))

    async def scenario() -> dict[datetime, str | None]:
        async with daemon_parts(tmp_path, JOBS, virtual_simulator, clock) as parts:
            rt = parts.runtime
            claim_slot(
                parts.store, "hourly", datetime(2026, 3, 2, 4, 0, tzinfo=UTC)
            )  # the last slot before it went down
            missed = MissedSlots(rt, admission=Admission(rt, still_running=Follower(rt).still_running), fire=fire)
            await missed.after_downtime([parts.job("hourly")], clock.now())
            await asyncio.gather(*rt.tasks)
            return {
                f.slot: f.skip_reason for f in parts.store.recent_fires(job="hourly", limit=50) if f.state == "skipped"
            }

    skipped = asyncio.run(scenario())
    assert fired == [("hourly", hour(9))]
    assert skipped == {hour(5): SKIP_TOO_OLD, hour(6): SKIP_TOO_OLD, hour(7): SKIP_SUPERSEDED, hour(8): SKIP_SUPERSEDED}
