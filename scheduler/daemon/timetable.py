"""The timetable: each enabled job's next slot, what is due, and what to do with slots missed while down.

Pure: no I/O, no clock of its own. Instants come in as arguments, so the rules are tested with exact times.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import NamedTuple

from scheduler.config import SCHEDULE_KEYS, Config, ConfigDiff, Job
from scheduler.schedules import jitter_offset

MAX_CATCH_UP_SLOTS = 1000
CATCH_UP_LOOKBACK = timedelta(days=1)  # how far back a restart looks for slots without a row

# Why a missed slot is not submitted (fires.skip_reason).
SKIP_CATCH_UP = "catch_up_skip"
SKIP_SUPERSEDED = "catch_up_latest"
SKIP_TOO_OLD = "catch_up_window"


class Due(NamedTuple):
    """A job's slot on the timetable: when it fires (the slot plus its jitter), the slot, the job."""

    fire_at: datetime
    slot: datetime
    job: str


class Timetable:
    """A heap of next slots, one current entry per job (entries left by a replan are skipped when popped)."""

    def __init__(self) -> None:
        self._plan: dict[str, Due] = {}
        self._heap: list[Due] = []

    def plan(self, job: Job, *, after: datetime) -> Due:
        """Put the job's first slot after ``after`` on the timetable (at its jitter offset, if it has one)."""
        slot = job.schedule.next_after(after)
        fire_at = slot + jitter_offset(job.name, slot, job.jitter) if job.jitter else slot
        due = Due(fire_at, slot, job.name)
        self._plan[job.name] = due
        heapq.heappush(self._heap, due)
        return due

    def drop(self, name: str) -> None:
        """Take the job off the timetable (removed or disabled)."""
        self._plan.pop(name, None)

    def pop_due(self, now: datetime) -> Due | None:
        """The earliest slot due at ``now``, taken off the timetable; None when nothing is due."""
        while self._heap and self._heap[0].fire_at <= now:
            due = heapq.heappop(self._heap)
            if self._plan.get(due.job) == due:
                del self._plan[due.job]
                return due
        return None

    def put_back(self, due: Due) -> None:
        """Undo ``pop_due`` (the fire could not be started; the next turn tries again)."""
        self._plan[due.job] = due
        heapq.heappush(self._heap, due)

    def seconds_until_next(self, now: datetime) -> float | None:
        """Seconds from ``now`` to the earliest planned fire (0 when overdue), or None with nothing planned."""
        while self._heap and self._plan.get(self._heap[0].job) != self._heap[0]:
            heapq.heappop(self._heap)  # a replan left it behind
        if not self._heap:
            return None
        return max((self._heap[0].fire_at - now).total_seconds(), 0.0)

    def next_fire(self, name: str) -> datetime | None:
        """When the job fires next (its slot plus any jitter), or None when it is not planned."""
        due = self._plan.get(name)
        return due.fire_at if due else None

    def upcoming(self, count: int) -> list[Due]:
        """The next ``count`` fires, earliest first."""
        return sorted(self._plan.values())[:count]

    def replan(self, old: Config, new: Config, diff: ConfigDiff, now: datetime) -> None:
        """Follow a config change: removed and disabled jobs leave, new ones join, changed schedules restart.

        From ``now`` on: a slot already fired is not fired again, and the one due next is not skipped.
        """
        for name in diff.removed:
            self.drop(name)
        for name in diff.added:
            if new.jobs[name].enabled:
                self.plan(new.jobs[name], after=now)
        for name, keys in diff.changed.items():
            job = new.jobs[name]
            if not job.enabled:
                self.drop(name)
            elif SCHEDULE_KEYS & set(keys) or name not in self._plan:
                self.plan(job, after=now)


def catch_up_start(job: Job, first: datetime, last: datetime, now: datetime) -> datetime:
    """Where to look for missed slots of a job recorded from ``first`` to ``last``, at ``now``.

    It looks for gaps, not only past the newest recorded slot: a process killed while it was catching up leaves
    its claims committed in any order, so a missed slot can sit below a recorded one.
    """
    lookback = max(job.catch_up_window, CATCH_UP_LOOKBACK)
    return max(first, min(last, now - lookback))


class CatchUp(NamedTuple):
    """What the catch_up policy does with missed slots: the ones submitted now, the rest with their reason."""

    submit: list[datetime]
    skip: list[tuple[datetime, str]]


def catch_up_plan(job: Job, missed: Iterable[datetime], now: datetime) -> CatchUp:
    """Apply the job's ``catch_up`` policy and ``catch_up_window`` to its missed slots (sorted)."""
    slots = sorted(missed)
    recent = [slot for slot in slots if now - slot <= job.catch_up_window]
    chosen = {"all": recent, "latest": recent[-1:], "skip": []}[job.catch_up]
    skip = [
        (slot, SKIP_TOO_OLD if slot not in recent else SKIP_CATCH_UP if job.catch_up == "skip" else SKIP_SUPERSEDED)
        for slot in slots
        if slot not in chosen
    ]
    return CatchUp(chosen, skip)
