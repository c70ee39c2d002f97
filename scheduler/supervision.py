"""Supervised background loops: named, restarted with backoff when they fail, and visible in ``/healthz``.

After procrastinate's worker: each loop of the daemon (the timer, the sweep, the heartbeat, the outbox, pruning,
config watching) runs under a ``Supervisor``. A loop reports each turn with ``tick()``; an exception is logged once
with the loop's name and its traceback, the loop starts again after a pause that doubles up to a minute, and one
that keeps failing raises a daemon-level alert (solved once it turns again). A loop that is down, or has not
turned for longer than its ``stale_after``, makes ``/healthz`` answer 503 with its name.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

logger = logging.getLogger(__name__)

FAILURES_BEFORE_ALERT = 3
_FIRST_PAUSE = 1.0
_LONGEST_PAUSE = 60.0


@dataclass
class LoopHealth:
    """How one background loop is doing."""

    name: str
    stale_after: timedelta
    last_tick: datetime | None = None
    failures: int = 0  # in a row, since it last turned
    last_error: str | None = None
    down: bool = False  # failed, waiting to start again
    _started: datetime | None = field(default=None, repr=False)

    def ok(self, now: datetime) -> bool:
        """Alive: not down, and it turned within ``stale_after`` (of its start, before its first turn)."""
        if self.down:
            return False
        since = self.last_tick or self._started
        return since is None or now - since <= self.stale_after

    def as_dict(self, now: datetime) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok(now),
            "last_tick": self.last_tick.isoformat().replace("+00:00", "Z") if self.last_tick else None,
            "stale_after_seconds": self.stale_after.total_seconds(),
            "failures": self.failures,
            "last_error": self.last_error,
        }


Problem = Callable[[str, str], Awaitable[None]]
Solved = Callable[[str], Awaitable[None]]


async def _nothing(*_: str) -> None:
    return None


class Supervisor:
    """Starts named loops, restarts them when they fail, and keeps their health."""

    def __init__(
        self,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        problem: Problem = _nothing,
        solved: Solved = _nothing,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._problem = problem
        self._solved = solved
        self._loops: dict[str, LoopHealth] = {}
        self._alerted: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []

    def tick(self, name: str) -> None:
        """The loop ``name`` has turned once more."""
        health = self._loops[name]
        health.last_tick = self._clock()
        if health.failures:
            logger.info("background task %r is running again", name)
            health.failures = 0
        if name in self._alerted:
            self._alerted.discard(name)
            task = asyncio.ensure_future(self._solved(_title(name)))
            self._tasks.append(task)
            task.add_done_callback(self._tasks.remove)

    def start(
        self, name: str, body: Callable[[Callable[[], None]], Awaitable[None]], *, stale_after: timedelta
    ) -> asyncio.Task[None]:
        """Run ``body(tick)`` as the task ``name`` until it returns (the daemon stops) or is cancelled."""
        self._loops[name] = LoopHealth(name=name, stale_after=stale_after, _started=self._clock())
        task = asyncio.create_task(self._supervise(name, body), name=name)
        return task

    async def _supervise(self, name: str, body: Callable[[Callable[[], None]], Awaitable[None]]) -> None:
        health = self._loops[name]
        pause = _FIRST_PAUSE
        while True:
            health.down = False
            try:
                await body(lambda: self.tick(name))
                return
            except asyncio.CancelledError:
                raise
            except Exception as error:
                health.down = True
                health.failures += 1
                health.last_error = f"{type(error).__name__}: {error}"
                logger.error(
                    "background task %r failed (%d in a row); restarting it in %.0fs",
                    name,
                    health.failures,
                    pause,
                    exc_info=error,
                    extra={"task": name},
                )
                if health.failures >= FAILURES_BEFORE_ALERT and name not in self._alerted:
                    self._alerted.add(name)
                    try:
                        await self._problem(
                            _title(name),
                            f"The daemon's background task {name!r} failed {health.failures} times in a row; it is "
                            f"restarted each time. Last error: {health.last_error}",
                        )
                    except Exception as alerting:  # the alert path itself may be what is broken
                        logger.error("cannot alert about background task %r: %s", name, alerting)
            await self._sleep(pause)
            pause = min(pause * 2, _LONGEST_PAUSE)

    def health(self) -> list[LoopHealth]:
        """Every loop, in the order they were started."""
        return list(self._loops.values())

    def stale(self) -> list[str]:
        """The names of the loops that are down or have not turned in time."""
        now = self._clock()
        return [loop.name for loop in self._loops.values() if not loop.ok(now)]


def _title(name: str) -> str:
    return f"background task {name} keeps failing"


__all__ = ["FAILURES_BEFORE_ALERT", "LoopHealth", "Supervisor"]
