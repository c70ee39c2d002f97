"""Time as a dependency: every wait of the daemon goes through a ``Clock``.

``SystemClock`` is the real time. ``VirtualClock`` is time that only moves when the code waits: each ``sleep`` or
``wait`` that would block jumps the clock to its end at once, so a loop that backs off for an hour runs in
microseconds and its instants are exact. Tests of the timetable, admission, retries, catch-up, reminders and
leases run on it; the end-to-end tests run the daemon on the real clock against the simulator.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Where the daemon reads the time and waits."""

    def now(self) -> datetime:
        """The current instant, in UTC."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""
        ...

    async def wait(self, *events: asyncio.Event, within: float) -> bool:
        """Wait until one of ``events`` is set, at most ``within`` seconds; whether one was set."""
        ...


class SystemClock:
    """The real time, in UTC; waits on the event loop."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0))

    async def wait(self, *events: asyncio.Event, within: float) -> bool:
        if any(event.is_set() for event in events):
            return True
        waiters = [asyncio.ensure_future(event.wait()) for event in events]
        try:
            done, _ = await asyncio.wait(waiters, timeout=max(within, 0.0), return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Not awaited: awaiting them here could swallow a cancellation of the caller's task.
            for waiter in waiters:
                waiter.cancel()
        return bool(done)


class VirtualClock:
    """Time that jumps: a wait that would block moves the clock to its end and returns at once.

    Before jumping it lets the other tasks of the loop run (``turns`` passes of the event loop), so that an event
    they set in the meantime is seen. ``slept`` keeps every wait, as (instant it began, seconds), for tests that
    check back-off schedules to the microsecond.
    """

    def __init__(self, start: datetime = datetime(2026, 1, 5, 10, 0, tzinfo=UTC), *, turns: int = 3) -> None:
        self._now = start
        self._turns = turns
        self.slept: list[tuple[datetime, float]] = []

    def now(self) -> datetime:
        return self._now

    def advance(self, by: float | timedelta) -> None:
        """Move time forward by hand (a test's ``time passes``), by seconds or a timedelta."""
        self._now += by if isinstance(by, timedelta) else timedelta(seconds=by)

    def move_to(self, instant: datetime) -> None:
        """Set the time (a test's ``it is now 05:00``); it may go back, as a wall clock can."""
        self._now = instant

    async def sleep(self, seconds: float) -> None:
        self.slept.append((self._now, seconds))
        await self._let_others_run()
        self.advance(max(seconds, 0.0))

    async def wait(self, *events: asyncio.Event, within: float) -> bool:
        for _ in range(self._turns):
            if any(event.is_set() for event in events):
                return True
            await asyncio.sleep(0)
        if any(event.is_set() for event in events):
            return True
        self.slept.append((self._now, within))
        self.advance(max(within, 0.0))
        return False

    async def _let_others_run(self) -> None:
        for _ in range(self._turns):
            await asyncio.sleep(0)


__all__ = ["Clock", "SystemClock", "VirtualClock"]
