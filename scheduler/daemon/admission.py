"""Admission: whether a due slot may fire, and its claim in the database before anything is sent.

A slot is skipped, and recorded as skipped with its reason, while Cekura refuses the API key, while a maintenance
window or a pause holds the job, when a ``max_runs_per_day`` would be exceeded, or when ``overlap = "skip"`` and
the job's previous result is still running by Cekura's word. Otherwise it is claimed: slots due in the same turn of
the loop are checked and claimed in one transaction.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

from scheduler.cekura import build_submission
from scheduler.config import Job
from scheduler.daemon.runtime import SCHEDULED, Batched, Runtime, day_start
from scheduler.errors import JobNotFoundError, StoreError
from scheduler.incidents import DATABASE_DOWN
from scheduler.schedules import submission_name
from scheduler.store import Fire, Hold

logger = logging.getLogger(__name__)

SKIP_OVERLAP = "overlap"
SKIP_PAUSED = "paused"
SKIP_MAINTENANCE = "maintenance"
SKIP_BUDGET = "budget"
SKIP_KEY_REJECTED = "api-key-rejected"

IN_FLIGHT = "a submission of the job is still in flight"
_HOLDS_FRESH_FOR = timedelta(seconds=1)
CLAIMS_AT_ONCE = 100  # slots claimed per transaction in a burst: the first POSTs leave after ~10 ms, not ~100 ms

StillRunning = Callable[[Sequence[Fire]], Awaitable[str | None]]


class Claim(NamedTuple):
    """A slot due now, on its way to be checked and claimed with the others due in the same turn of the loop."""

    job: Job
    slot: datetime
    trigger: str
    name: str
    endpoint: str
    now: datetime


class Decision(NamedTuple):
    """Whether a due slot may fire: why it is skipped (with the budget's detail), or its claim."""

    skip: str | None
    detail: str | None = None
    fire: Fire | None = None  # None with no skip: the slot was claimed already (another process, a restart)
    in_the_way: tuple[Fire, ...] = ()  # overlap: the job's fires still claimed or running


class Admitted(NamedTuple):
    """The answer of ``Admission.admit``: the fire recorded for the slot, and whether it is a claim to submit."""

    fire: Fire | None
    claimed: bool


class Admission:
    """Checks and claims due slots; records skipped ones; remembers slots the database could not take."""

    def __init__(self, runtime: Runtime, *, still_running: StillRunning) -> None:
        self._rt = runtime
        self._still_running = still_running  # following's word on the results in the way of an overlap
        self._holds: list[Hold] = []
        self._holds_at: datetime | None = None
        self._holds_lock = asyncio.Lock()
        self._decide = Batched(self._decide_many, runtime.spawn, most=CLAIMS_AT_ONCE)
        self.unrecorded: dict[str, list[datetime]] = {}  # slots whose claim failed (database down)

    async def admit(self, job: Job, slot: datetime, trigger: str) -> Admitted:
        """Skip the slot (recorded with its reason) or claim it; a claimed fire is marked as being submitted."""
        rt = self._rt
        name = submission_name(job.name, slot)
        extra = {"job": job.name, "slot": slot}
        try:
            if trigger == SCHEDULED and rt.key_rejected:
                logger.warning("%s skipped: Cekura rejects the API key (checked again every minute)", name, extra=extra)
                detail = "Cekura rejected the API key; nothing was sent"
                return Admitted(await self.record_skip(job, slot, SKIP_KEY_REJECTED, detail=detail), False)
            if trigger == SCHEDULED and (window := rt.incidents.paused_by_maintenance(job.name, slot)):
                logger.info("%s skipped: maintenance window %s pauses the job", name, window, extra=extra)
                return Admitted(await self.record_skip(job, slot, SKIP_MAINTENANCE), False)
            if trigger == SCHEDULED and any(
                hold.kind == "pause" and hold.job == job.name for hold in await self._holds_now()
            ):
                logger.info("%s skipped: the job is paused", name, extra=extra)
                return Admitted(await self.record_skip(job, slot, SKIP_PAUSED), False)
            claim = Claim(job, slot, trigger, name, build_submission(job, name).endpoint, rt.clock.now())
            rt.in_flight.admitting()
            try:
                decision = await self._decide(claim)
                still = None
                if decision.skip == SKIP_OVERLAP and (still := await self._still_running(decision.in_the_way)) is None:
                    # The database was behind: the previous result has ended. Claim the slot after all.
                    decision = await self._decide(claim._replace(now=rt.clock.now()))
                    still = IN_FLIGHT
                if decision.fire is not None:
                    rt.in_flight.submitting(decision.fire.id)  # before the count drops: shutdown sees it
            finally:
                rt.in_flight.admitted()
            if decision.skip == SKIP_BUDGET:
                assert decision.detail is not None
                logger.warning("%s skipped: %s", name, decision.detail, extra=extra)
                await rt.incidents.over_budget(job, slot, detail=decision.detail)
                return Admitted(await self.record_skip(job, slot, SKIP_BUDGET, detail=decision.detail), False)
            if decision.skip == SKIP_OVERLAP:
                why = still or IN_FLIGHT
                logger.warning("%s skipped (overlap = skip): %s", name, why, extra=extra)
                return Admitted(await self.record_skip(job, slot, SKIP_OVERLAP, detail=why), False)
        except StoreError as error:
            logger.error("%s not submitted: cannot claim the slot: %s", name, error, extra=extra)
            if trigger == SCHEDULED:
                self.unrecorded.setdefault(job.name, []).append(slot)
            await rt.problem(
                DATABASE_DOWN,
                f"Cannot record fires, so nothing is submitted. Slot {name} was not submitted; missed slots "
                f"follow each job's catch_up policy once the database answers.\n{error}",
            )
            return Admitted(None, False)
        if decision.fire is None:
            logger.debug("%s already claimed; not submitting it again", name, extra=extra)
            return Admitted(None, False)
        rt.solved(DATABASE_DOWN)
        if trigger == SCHEDULED:
            rt.metrics.fire_lag.observe(max(0.0, (claim.now - slot).total_seconds()))
        return Admitted(decision.fire, True)

    async def record_skip(self, job: Job, slot: datetime, reason: str, *, detail: str | None = None) -> Fire | None:
        """Record a scheduled slot as skipped, with its reason; None when the database could not take it."""
        rt = self._rt
        name = submission_name(job.name, slot)
        rt.metrics.skipped.labels(job.name, reason).inc()
        try:
            return await rt.db(
                rt.store.record_skipped,
                job=job.name,
                slot=slot,
                trigger=SCHEDULED,
                fired_at=rt.clock.now(),
                submission_name=name,
                endpoint=build_submission(job, name).endpoint,
                runs_requested=job.runs_per_fire or 0,
                reason=reason,
                detail=detail,
            )
        except StoreError as error:
            logger.error("%s: cannot record it as skipped (%s): %s", name, reason, error, extra={"job": job.name})
            self.unrecorded.setdefault(job.name, []).append(slot)
            return None

    async def pause(self, name: str, *, by: str, reason: str, until: datetime | None = None) -> Hold:
        """Stop firing a job (its slots are recorded as skipped: paused) until resumed or ``until``."""
        rt = self._rt
        if name not in rt.config.jobs:
            raise JobNotFoundError(f"no job named {name!r}")
        hold = await rt.db(
            rt.store.add_hold, job=name, kind="pause", at=rt.clock.now(), until=until, created_by=by, reason=reason
        )
        self._holds_at = None  # this process sees it at once; other replicas within a second
        logger.warning("%s paused by %s: %s", name, by, reason, extra={"job": name})
        return hold

    async def resume(self, name: str, *, by: str) -> bool:
        """Fire a paused job again from its next slot; False when it was not paused."""
        rt = self._rt
        ended = await rt.db(rt.store.end_holds, job=name, kind="pause", at=rt.clock.now())
        self._holds_at = None
        if ended:
            logger.warning("%s resumed by %s", name, by, extra={"job": name})
        return ended > 0

    async def _holds_now(self) -> list[Hold]:
        """The pauses and silences in force, read at most once a second (many jobs may fire at once)."""
        if self._holds_fresh(self._rt.clock.now()):
            return self._holds  # without the lock: fires due together stay together, and are claimed together
        async with self._holds_lock:
            now = self._rt.clock.now()
            if not self._holds_fresh(now):
                self._holds = await self._rt.db(self._rt.store.active_holds, at=now)
                self._holds_at = now
            return self._holds

    def _holds_fresh(self, now: datetime) -> bool:
        return self._holds_at is not None and timedelta(0) <= now - self._holds_at < _HOLDS_FRESH_FOR

    def _decide_many(self, requests: list[Claim]) -> list[Decision]:
        """Check the slots due in one turn of the loop may fire (budget, overlap), then claim them (worker thread).

        One query for the jobs still running, one transaction for every claim.
        """
        rt = self._rt
        scheduled = [claim.job for claim in requests if claim.trigger == SCHEDULED]
        busy = rt.store.in_flight_by_job(sorted({job.name for job in scheduled if job.overlap == "skip"}))
        tally: dict[str | None, int] = {}
        guesses: dict[str, int] = {}
        results = [Decision(None)] * len(requests)
        claims, placed = [], []
        batched: set[str] = set()  # jobs claimed in this batch, not yet in the database
        for index, (job, slot, trigger, name, endpoint, now) in enumerate(requests):
            if trigger == SCHEDULED:
                if job.overlap == "skip" and (job.name in busy or job.name in batched):
                    results[index] = Decision(SKIP_OVERLAP, in_the_way=tuple(busy.get(job.name, ())))
                    continue
                if over := self._over_budget(job, tally, guesses, now):
                    results[index] = Decision(SKIP_BUDGET, over)
                    continue
            if job.overlap == "skip":
                batched.add(job.name)  # a second slot of the job in this batch finds the first one running
            claims.append(
                {
                    "job": job.name,
                    "slot": slot,
                    "trigger": trigger,
                    "fired_at": now,
                    "submission_name": name,
                    "endpoint": endpoint,
                    "runs_requested": job.runs_per_fire or 0,
                    "owner": rt.owner,
                    "lease_until": now + rt.lease,
                }
            )
            placed.append(index)
        for index, fire in zip(placed, rt.store.claim_many(claims), strict=True):
            results[index] = Decision(None, None, fire)
        return results

    def _over_budget(
        self, job: Job, tally: dict[str | None, int], guesses: dict[str, int], now: datetime
    ) -> str | None:
        """Why this fire would exceed a max_runs_per_day (the job's or the daemon's), or None (worker thread).

        ``tally`` holds the runs counted so far for each limit (the job's name, or None for all jobs), read from
        the database on first use and grown by each fire admitted in the same batch, so that a thousand fires
        claimed together cannot all slip under the limit that the first of them saw. A job whose run count only
        Cekura knows (tags, a folder, a spec) is expected to create as many runs as its last answered fire did
        (``guesses``, read once per batch; one run when it has none), and is counted with the runs it created
        once the answer is recorded.
        """
        limits = [
            (job.max_runs_per_day, job.name, f"job {job.name}"),
            (self._rt.config.daemon.max_runs_per_day, None, "all jobs ([daemon])"),
        ]
        if all(limit is None for limit, _, _ in limits):
            return None
        if job.runs_per_fire is not None:
            needed, would_add = job.runs_per_fire, str(job.runs_per_fire)
        else:
            if job.name not in guesses:
                guesses[job.name] = max(self._rt.store.last_runs_created(job.name) or 1, 1)
            needed = guesses[job.name]
            would_add = f"about {needed}, as its last fire did" if needed > 1 else "at least 1"
        for limit, subject, label in limits:
            if limit is None:
                continue
            if subject not in tally:
                tally[subject] = self._rt.store.runs_submitted_since(day_start(now), job=subject)
            used = tally[subject]
            if used + needed > limit:
                return (
                    f"max_runs_per_day of {label} is {limit}: {used} Cekura runs since 00:00 UTC, and this fire "
                    f"would add {would_add}"
                )
        for limit, subject, _ in limits:
            if limit is not None:
                tally[subject] += needed
        return None
