"""The clocks: the real one's waits end at an event or a timeout and never swallow a cancellation; the virtual
one jumps to the end of each wait."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from scheduler.clock import SystemClock, VirtualClock


def test_the_real_clock_wakes_at_the_first_event_set() -> None:
    async def scenario() -> tuple[bool, bool]:
        clock, stop, wake = SystemClock(), asyncio.Event(), asyncio.Event()
        asyncio.get_running_loop().call_soon(wake.set)
        woken = await clock.wait(stop, wake, within=60)
        timed_out = await clock.wait(stop, within=0.01)
        return woken, timed_out

    assert asyncio.run(scenario()) == (True, False)


def test_a_task_cancelled_while_it_waits_is_cancelled() -> None:
    async def scenario() -> None:
        clock, never = SystemClock(), asyncio.Event()
        waiting = asyncio.create_task(clock.wait(never, within=60))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(scenario())


def test_the_virtual_clock_jumps_to_the_end_of_each_wait_and_notes_it() -> None:
    start = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

    async def scenario() -> tuple[bool, bool, VirtualClock]:
        clock, stop = VirtualClock(start), asyncio.Event()
        await clock.sleep(90)
        timed_out = await clock.wait(stop, within=30)
        stop.set()
        woken = await clock.wait(stop, within=3600)
        return timed_out, woken, clock

    timed_out, woken, clock = asyncio.run(scenario())
    assert (timed_out, woken) == (False, True)
    assert clock.now() == start + timedelta(minutes=2)  # a wait that an event ends takes no time
    assert clock.slept == [(start, 90), (start + timedelta(seconds=90), 30)]
