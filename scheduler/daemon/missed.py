"""Missed slots: the ones that passed while the daemon was down, or while the database could not record them.

Each job's ``catch_up`` policy decides (``timetable.catch_up_plan``): submit them all, only the latest, or none,
within ``catch_up_window``; every other missed slot is recorded as skipped with its reason.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from scheduler.config import Job
from scheduler.daemon.admission import Admission
from scheduler.daemon.runtime import Runtime
from scheduler.daemon.timetable import MAX_CATCH_UP_SLOTS, catch_up_plan, catch_up_start
from scheduler.errors import StoreError
from scheduler.incidents import DATABASE_DOWN
from scheduler.schedules import format_duration, submission_name

logger = logging.getLogger(__name__)

Fire = Callable[[Job, datetime], Awaitable[object]]


class MissedSlots:
    """Finds slots without a row and applies the catch_up policy to them."""

    def __init__(self, runtime: Runtime, *, admission: Admission, fire: Fire) -> None:
        self._rt = runtime
        self._admission = admission
        self._fire = fire

    async def after_downtime(self, jobs: list[Job], now: datetime) -> None:
        """Apply each job's catch_up policy to its slots that have no row: missed while down."""
        rt = self._rt
        try:
            bounds = await rt.db(rt.store.slot_bounds, [job.name for job in jobs])
        except StoreError as error:
            await rt.problem(DATABASE_DOWN, f"Cannot read the database at start: {error}")
            return
        expected: dict[str, tuple[Job, list[datetime]]] = {}
        for job in jobs:
            if job.name not in bounds:
                continue  # a new job: nothing was missed
            first, last = bounds[job.name]
            start = catch_up_start(job, first, last, now)
            slots, dropped = job.schedule.slots_between(start, now, limit=MAX_CATCH_UP_SLOTS)
            if dropped:
                logger.warning(
                    "%s: more than %d slots were missed; only the newest %d are recorded",
                    job.name,
                    MAX_CATCH_UP_SLOTS,
                    MAX_CATCH_UP_SLOTS,
                    extra={"job": job.name},
                )
            if slots:
                expected[job.name] = (job, slots)
        try:
            recorded = await rt.db(rt.store.recorded_slots, {name: slots[0] for name, (_, slots) in expected.items()})
        except StoreError as error:
            await rt.problem(DATABASE_DOWN, f"Cannot read the database at start: {error}")
            return
        for name, (job, slots) in expected.items():
            missed = [slot for slot in slots if slot not in recorded[name]]
            if missed:
                await self.apply(job, missed, now)

    async def unrecorded(self) -> None:
        """Apply the catch-up policy to the slots that could not be recorded while the database was down."""
        if not self._admission.unrecorded:
            return
        missed, self._admission.unrecorded = self._admission.unrecorded, {}
        for name, slots in missed.items():
            if (job := self._rt.config.jobs.get(name)) is not None:
                await self.apply(job, sorted(set(slots)), self._rt.clock.now())

    async def apply(self, job: Job, slots: list[datetime], now: datetime) -> None:
        """Submit or skip (with the reason) each missed slot, as the job's catch_up policy says."""
        plan = catch_up_plan(job, slots, now)
        for slot in plan.submit:
            self._rt.spawn(self._fire(job, slot), f"catch up {submission_name(job.name, slot)}")
        skipped = 0
        for slot, reason in plan.skip:
            if await self._admission.record_skip(job, slot, reason) is not None:
                skipped += 1
        logger.warning(
            "%s: %d slots were missed (from %s); %d submitted now, %d recorded as skipped (catch_up = %s, "
            "catch_up_window = %s)",
            job.name,
            len(slots),
            slots[0].isoformat(),
            len(plan.submit),
            skipped,
            job.catch_up,
            format_duration(job.catch_up_window),
            extra={"job": job.name},
        )
