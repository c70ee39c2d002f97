"""Slots missed while the daemon was down: found by their missing rows, then submitted or skipped with a reason."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from scheduler.clock import VirtualClock
from scheduler.config import Job
from scheduler.daemon.admission import Admission
from scheduler.daemon.following import Follower
from scheduler.daemon.missed import MissedSlots
from scheduler.daemon.timetable import SKIP_CATCH_UP, SKIP_SUPERSEDED, SKIP_TOO_OLD
from scheduler.simulator import Simulator
from tests.conftest import claim_slot, daemon_parts

JOBS = """
[jobs.hourly]
cron = "0 * * * *"
agent = 12
scenarios = [101]
catch_up = "{policy}"
catch_up_window = "150m"
"""


def hour(h: int) -> datetime:
    return datetime(2026, 3, 2, h, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("policy", "submitted", "skipped_within_the_window"),
    [
        ("latest", [9], {7: SKIP_SUPERSEDED, 8: SKIP_SUPERSEDED}),
        ("all", [7, 8, 9], {}),
        ("skip", [], {7: SKIP_CATCH_UP, 8: SKIP_CATCH_UP, 9: SKIP_CATCH_UP}),
    ],
)
def test_after_a_downtime_missed_slots_are_submitted_or_recorded_with_their_reason_as_the_policy_says(
    tmp_path: Path,
    virtual_simulator: Simulator,
    policy: str,
    submitted: list[int],
    skipped_within_the_window: dict[int, str],
) -> None:
    clock = VirtualClock(datetime(2026, 3, 2, 9, 30, tzinfo=UTC))
    fired: list[tuple[str, datetime]] = []

    async def fire(job: Job, slot: datetime) -> None:
        fired.append((job.name, slot))

    async def scenario() -> dict[datetime, str | None]:
        async with daemon_parts(tmp_path, JOBS.format(policy=policy), virtual_simulator, clock) as parts:
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
    assert fired == [("hourly", hour(h)) for h in submitted]
    too_old = {hour(5): SKIP_TOO_OLD, hour(6): SKIP_TOO_OLD}  # beyond the 150 minutes of catch_up_window
    assert skipped == too_old | {hour(h): reason for h, reason in skipped_within_the_window.items()}
