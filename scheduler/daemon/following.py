"""Following: poll each submitted result until it ends or times out, and record its verdict once.

The verdict is Cekura's (``scheduler.verdicts``), read from the result. At the deadline the result is read again
before anything is decided: a result that ended meanwhile gets its verdict, and only one still running is timed
out and has its calls ended. A verdict the database cannot take is kept and retried until it can.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from scheduler.daemon.admission import IN_FLIGHT
from scheduler.daemon.runtime import Batched, Runtime
from scheduler.daemon.submission import KEY_REJECTED, run_records
from scheduler.errors import CekuraAuthError, CekuraError, CekuraNotFoundError, SchedulerError, StoreError
from scheduler.redaction import redact
from scheduler.results import Result
from scheduler.schedules import format_duration
from scheduler.store import CLAIMED, FAILED, FINISHED, PASSED, Fire, RunRecord
from scheduler.verdicts import RUNNING_STATUSES, TERMINAL_STATUSES, TIMED_OUT, Verdict

logger = logging.getLogger(__name__)

LOOK_AGAIN_ATTEMPTS = 4
OUTCOMES_LINGER = 0.05  # seconds a batch of verdicts stays open (their alerts wait that much longer at most)
STATUSES_LINGER = 0.5  # the last status seen of a result still running: only `history` shows it


class Follower:
    """Follows results to their verdict, one task per result."""

    def __init__(self, runtime: Runtime, *, webhooks: bool = False) -> None:
        self._rt = runtime
        # Cekura pushes each result as it ends (``pushed``): polling is then only the fallback, and slow.
        self.webhooks = webhooks
        # Verdicts and statuses arriving together are written together: 1,000 results ending in the same wave
        # of reads cost a few transactions, not 1,000 (each a commit the fires due meanwhile would wait behind).
        self._outcomes = Batched(runtime.record_outcomes, runtime.spawn, linger=OUTCOMES_LINGER)
        self._statuses = Batched(runtime.store.record_polls, runtime.spawn, linger=STATUSES_LINGER)

    def start(self, fire: Fire) -> None:
        """Follow a submitted fire in a task of its own (cancelled if another process takes it over)."""
        in_flight = self._rt.in_flight
        task = self._rt.spawn(self.follow(fire), f"follow result {fire.result_id} of {fire.submission_name}")
        in_flight.follow_tasks[fire.id] = task
        task.add_done_callback(lambda _: in_flight.follow_tasks.pop(fire.id, None))

    def is_following(self, fire_id: int) -> bool:
        return fire_id in self._rt.in_flight.following

    def stop_following(self, fire_id: int) -> None:
        if (task := self._rt.in_flight.follow_tasks.get(fire_id)) is not None:
            task.cancel()

    async def follow(self, fire: Fire) -> Fire:
        """Poll a submitted result with backoff until it ends or times out; record and alert its outcome."""
        following = self._rt.in_flight.following
        if fire.id in following:
            raise SchedulerError(f"fire {fire.id} is already followed")
        following.add(fire.id)
        try:
            return await self._poll(fire)
        finally:
            following.discard(fire.id)

    async def _poll(self, fire: Fire) -> Fire:
        assert fire.result_id is not None
        rt = self._rt
        interval = rt.config.daemon.poll_interval.total_seconds()
        ceiling = rt.config.daemon.poll_max_interval.total_seconds()
        if self.webhooks:
            interval = ceiling = rt.config.daemon.webhook_poll_interval.total_seconds()
        deadline = fire.poll_deadline or (fire.submitted_at or fire.fired_at) + rt.result_timeout(fire.job)
        extra = {"job": fire.job, "slot": fire.slot, "result_id": fire.result_id}
        last_status = fire.result_status
        while True:
            remaining = (deadline - rt.clock.now()).total_seconds()
            if remaining <= 0:
                return await self._time_out(fire)
            await rt.clock.sleep(min(interval, remaining))
            interval = min(interval * 1.5, ceiling)
            try:
                async with rt.reads:
                    result = await rt.cekura.get_result(fire.result_id)
            except CekuraNotFoundError as error:
                rt.metrics.polls.labels("not found").inc()
                return await self.finish(fire, outcome=FAILED, error=error.message, result_status="not found")
            except CekuraAuthError as error:
                rt.metrics.polls.labels("error").inc()
                await rt.problem(KEY_REJECTED, error.message)
                continue
            except CekuraError as error:
                rt.metrics.polls.labels("error").inc()
                logger.warning("polling result %d: %s", fire.result_id, error, extra=extra)
                continue
            rt.metrics.polls.labels(result.status).inc()
            if result.status != last_status:
                # Debug only: the verdict's own line says how the result ended; one line per step a person needs.
                logger.debug("result %d is %s", fire.result_id, result.status, extra=extra)
                last_status = result.status
                if result.status not in RUNNING_STATUSES | TERMINAL_STATUSES:
                    logger.warning(
                        "result %d has the status %r, which Cekura's API document does not list; following it "
                        "until it ends or its deadline",
                        fire.result_id,
                        result.status,
                        extra=extra,
                    )
                if not result.terminal:
                    await self._record_status(fire, result.status)
            if (verdict := result.verdict()) is not None:
                return await self.conclude(fire, result, verdict)

    async def conclude(self, fire: Fire, result: Result, verdict: Verdict) -> Fire:
        """Record the verdict of a result that has ended, with its runs and Cekura's analysis of the failures."""
        return await self.finish(
            fire,
            outcome=verdict.outcome,
            result_status=result.status,
            error=verdict.reason,
            success_rate=result.success_rate,
            runs=run_records(result),
            failed_reasons=result.failed_reasons if not verdict.passed else None,
        )

    async def _look_again(self, fire: Fire) -> Result | None:
        """Read a result, insisting a little: None when Cekura cannot be reached (CekuraNotFoundError passes)."""
        assert fire.result_id is not None
        rt = self._rt
        pause = 2.0
        for attempt in range(1, LOOK_AGAIN_ATTEMPTS + 1):
            try:
                async with rt.reads:
                    return await rt.cekura.get_result(fire.result_id)
            except CekuraNotFoundError:
                raise
            except CekuraError as error:
                logger.warning(
                    "reading result %d before deciding (attempt %d of %d): %s",
                    fire.result_id,
                    attempt,
                    LOOK_AGAIN_ATTEMPTS,
                    error,
                    extra={"job": fire.job, "result_id": fire.result_id},
                )
                if attempt < LOOK_AGAIN_ATTEMPTS:
                    await rt.clock.sleep(pause)
                    pause *= 2
        return None

    async def _time_out(self, fire: Fire) -> Fire:
        """The deadline has passed: look once more, and only end the calls of a result that is still running.

        The result may have ended since the last poll, or this process may be taking over, after the deadline,
        a result whose follower died: then what Cekura says is the verdict, not a timeout.
        """
        assert fire.result_id is not None
        rt = self._rt
        extra = {"job": fire.job, "result_id": fire.result_id}
        try:
            result = await self._look_again(fire)
        except CekuraNotFoundError as error:
            return await self.finish(fire, outcome=FAILED, error=error.message, result_status="not found")
        if result is not None and (verdict := result.verdict()) is not None:
            logger.info("result %d had ended (%s) by its deadline", fire.result_id, result.status, extra=extra)
            return await self.conclude(fire, result, verdict)
        status = result.status if result is not None else "unknown: Cekura could not be reached"
        logger.warning(
            "result %d did not finish in time (status %s); ending its calls", fire.result_id, status, extra=extra
        )
        runs: list[RunRecord] | None = None
        try:
            async with rt.reads:
                await rt.cekura.end_calls(fire.result_id)
                runs = run_records(await rt.cekura.get_result(fire.result_id))
        except CekuraError as error:
            logger.warning("ending the calls of result %d: %s", fire.result_id, error, extra=extra)
        job = rt.job(fire.job)
        limit = f" ({format_duration(job.result_timeout)})" if job is not None else ""
        return await self.finish(
            fire,
            outcome=FAILED,
            result_status="timeout",
            runs=runs,
            error=f"{TIMED_OUT}{limit}; it was {status} and its calls were ended",
        )

    async def still_running(self, in_the_way: Sequence[Fire]) -> str | None:
        """Overlap: why the job's previous fire is still going, by Cekura's word; None once it has ended.

        The database only knows what the last poll saw, so each submitted result in the way is read once, and
        one that has ended is recorded (its verdict, its alert) before the slot is claimed. Nothing is read
        when nothing is in flight.
        """
        if not in_the_way:
            return IN_FLIGHT
        rt = self._rt
        for fire in in_the_way:
            if fire.state == CLAIMED or fire.result_id is None:
                return IN_FLIGHT
            extra = {"job": fire.job, "result_id": fire.result_id}
            try:
                async with rt.reads:
                    result = await rt.cekura.get_result(fire.result_id)
            except CekuraNotFoundError as error:
                await self.finish(fire, outcome=FAILED, error=error.message, result_status="not found")
                continue
            except CekuraError as error:
                logger.warning("reading result %d for the overlap rule: %s", fire.result_id, error, extra=extra)
                return f"the previous result {fire.result_id} could not be read ({error.message})"
            if (verdict := result.verdict()) is None:
                return f"the previous result {fire.result_id} is still {result.status}"
            await self.conclude(fire, result, verdict)
            self.stop_following(fire.id)  # its follower need not read it again
        return None

    async def _record_status(self, fire: Fire, status: str) -> None:
        try:
            await self._statuses({"fire_id": fire.id, "result_status": status})
        except StoreError as error:  # only what the status page shows meanwhile: the verdict is written patiently
            logger.error("%s", error)

    async def finish(
        self, fire: Fire, *, outcome: str, result_status: str | None, error: str | None = None, **recorded: Any
    ) -> Fire:
        """Record an outcome (and its alerts); while the database cannot take it, keep it and try again."""
        rt = self._rt
        at = rt.clock.now()
        outcome_of = {
            "fire_id": fire.id,
            "job_name": fire.job,
            "outcome": outcome,
            "at": at,
            "result_status": result_status,
            "error": error,
            **recorded,
        }
        finished = await rt.patiently(f"the outcome of {fire.submission_name}", lambda: self._outcomes(outcome_of))
        if not finished:  # another process recorded it first, and alerted
            refreshed = await rt.db_patiently(f"fire {fire.id}", rt.store.get_fire, fire.id)
            assert refreshed is not None
            return refreshed
        # counted at once: /metrics agrees with the database as soon as it can
        if outcome == PASSED:
            rt.stats.passed += 1
        else:
            rt.stats.failed += 1
        rt.metrics.fires.labels(fire.job, outcome).inc()
        rt.outbox.wake.set()
        logger.info(
            "%s %s (result %s, %s)%s",
            fire.submission_name,
            outcome,
            fire.result_id,
            result_status,
            f": {error}" if error else "",
            extra={"job": fire.job, "slot": fire.slot, "result_id": fire.result_id, "outcome": outcome},
        )
        return finished_fire(fire, outcome=outcome, at=at, result_status=result_status, error=error, **recorded)


def finished_fire(
    fire: Fire,
    *,
    outcome: str,
    at: datetime,
    result_status: str | None,
    error: str | None,
    success_rate: float | None = None,
    runs: list[RunRecord] | None = None,
    error_status_code: int | None = None,
    failed_reasons: Any = None,
) -> Fire:
    """What the database holds once ``Store.finish`` has recorded an outcome, without reading it back."""
    return dataclasses.replace(
        fire,
        state=FINISHED,
        outcome=outcome,
        finished_at=at,
        result_status=result_status if result_status is not None else fire.result_status,
        success_rate=success_rate,
        error=redact(error) if error is not None else None,
        error_status_code=error_status_code,
        failed_reasons=None if failed_reasons in (None, "", [], {}) else failed_reasons,
        runs=list(runs) if runs is not None else fire.runs,
    )
