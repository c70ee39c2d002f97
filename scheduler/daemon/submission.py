"""Submission: send a claimed slot to Cekura once, record the answer, and settle claims whose answer was lost.

A POST is never sent twice blindly. An error that surely had no effect (connect error, 429, 503) is retried after
a pause; one that may have reached Cekura (a lost answer, a 5xx, an unreadable body) is looked up by the
submission's unique name before anything else, and adopted when found. Which is which is the error's
``permanent`` flag and its class (``scheduler.errors``).
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Callable

from scheduler.cekura import Submission, build_submission
from scheduler.config import Job
from scheduler.daemon.runtime import Batched, Runtime
from scheduler.endpoints import BY_PATH
from scheduler.errors import (
    CekuraAmbiguousError,
    CekuraAuthError,
    CekuraBalanceError,
    CekuraError,
    CekuraResponseError,
    CekuraUnavailableError,
    StoreError,
    SubmissionUnsettledError,
)
from scheduler.results import Result, ResultSummary
from scheduler.store import FAILED, SUBMITTED, Fire, RunRecord

logger = logging.getLogger(__name__)

SUBMIT_ATTEMPTS = 4
LOOK_UP_PAUSES = (1.0, 3.0, 6.0)  # seconds before each search by name after an answer was lost
SKIP_LOST = "lost-before-submit"
KEY_REJECTED = "Cekura rejects the API key"
LOW_BALANCE = "insufficient Cekura balance"


def run_records(result: Result) -> list[RunRecord]:
    """The runs of a Cekura result, as the store keeps them (one per run id; a run without an id has no row)."""
    records: dict[int, RunRecord] = {}
    for run in result.runs:
        if run.id is None:
            continue
        records[run.id] = RunRecord(
            run_id=run.id,
            scenario=run.scenario,
            scenario_name=run.scenario_name,
            status=run.status,
            success=run.success,
            error_message=run.error_message,
            duration=run.duration,
            failed_metrics=[
                {"name": metric.name, "explanation": metric.explanation} for metric in run.failed_metrics()
            ],
        )
    return list(records.values())


def named(fire: Fire) -> bool:
    """Whether the fire's endpoint takes a ``name``, by which a lost answer is looked up (email, websockets do not)."""
    endpoint = BY_PATH.get(fire.endpoint)
    return endpoint is None or "name" in endpoint.fields


class Submitter:
    """Submits claimed fires and records Cekura's answers (answers arriving together are written together)."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        # Answers arrive a few milliseconds apart during a burst; a short window writes them ~20 at a time.
        self._answers = Batched(runtime.store.record_submitted_many, runtime.spawn, linger=0.02)

    async def submit(self, job: Job, fire: Fire, submission: Submission | None = None) -> Fire:
        """POST the fire's submission and record the answer; raises SubmissionUnsettledError when it is unknown."""
        rt = self._rt
        submission = submission or build_submission(job, fire.submission_name)
        extra = {"job": job.name, "slot": fire.slot}
        delay = 1.0
        last: CekuraError | None = None
        for attempt in range(1, SUBMIT_ATTEMPTS + 1):
            try:
                # Only the POST itself counts against max_concurrent_submissions: recording its answer, backing
                # off and looking a lost answer up by name leave the slot to the next submission.
                async with rt.submissions:
                    result = await rt.cekura.submit(submission)
            except CekuraUnavailableError as error:
                # Surely not taken into account by Cekura: safe to send again after a pause.
                last = error
                logger.warning(
                    "%s: %s (attempt %d of %d)", fire.submission_name, error, attempt, SUBMIT_ATTEMPTS, extra=extra
                )
                if attempt < SUBMIT_ATTEMPTS:
                    pause = error.retry_after if error.retry_after is not None else delay * (0.5 + random.random())
                    await rt.clock.sleep(pause)
                    delay *= 2
                continue
            except (CekuraAmbiguousError, CekuraResponseError) as error:
                # Maybe created: find it by name before anything else. Never blindly sent again.
                last = error
                if not named(fire):
                    unknowable = (
                        f"{error.message}; {fire.endpoint} takes no name to look it up by, so it is not sent again"
                    )
                    return await self._record_error(
                        job, fire, CekuraResponseError(unknowable, status_code=error.status_code)
                    )
                logger.warning("%s: %s; looking it up by name", fire.submission_name, error, extra=extra)
                found = await self.find(fire)
                if found is not None:
                    return await self.record_answer(fire, found)
                if error.permanent:  # Cekura answered, unreadably, and has no such result: sending again won't help
                    break
                continue
            except CekuraAuthError as error:
                rt.key_rejected = True  # the next slots are skipped, not POSTed, until the key check passes
                await rt.problem(KEY_REJECTED, f"{error.message}\nNo job can be submitted until the key is fixed.")
                return await self._record_error(job, fire, error, alert=False)
            except CekuraBalanceError as error:
                await rt.problem(LOW_BALANCE, error.message)
                return await self._record_error(job, fire, error, alert=False)
            except CekuraError as error:
                return await self._record_error(job, fire, error)
            rt.solved(KEY_REJECTED)
            rt.solved(LOW_BALANCE)
            return await self.record_answer(fire, result)
        assert last is not None
        return await self._record_error(job, fire, last)

    async def find(self, fire: Fire) -> ResultSummary | None:
        """Look a submission up by its unique name; None when Cekura surely has no such result."""
        rt = self._rt
        for pause in LOOK_UP_PAUSES:
            await rt.clock.sleep(pause)
            try:
                async with rt.reads:
                    found = await rt.cekura.find_by_name(fire.submission_name)
            except CekuraError as error:
                logger.warning("%s: cannot search for it yet: %s", fire.submission_name, error)
                continue
            if found:
                logger.info(
                    "%s: found as result %d; adopting it",
                    fire.submission_name,
                    found[0].id,
                    extra={"job": fire.job, "result_id": found[0].id},
                )
                return found[0]
            return None
        message = "the submission could not be looked up; it stays claimed and is looked up again later"
        logger.error("%s: %s", fire.submission_name, message, extra={"job": fire.job})
        raise SubmissionUnsettledError(message)

    async def record_answer(self, fire: Fire, result: Result | ResultSummary) -> Fire:
        """Record the result Cekura created for a fire: its answer to the POST, or a search hit (adopted).

        The answer is the only trace of a paid run this process holds, so a database that cannot take it is
        retried until it does (the fire stays this process's, its lease renewed as soon as the database answers),
        rather than left to a sweep that waits for the lease to run out and searches Cekura by name. A retry of a
        write whose commit was in fact made is recognised by its own values and counts as recorded.
        """
        assert result.id is not None
        rt = self._rt
        now = rt.clock.now()
        deadline = now + rt.result_timeout(fire.job)
        runs = run_records(result) if isinstance(result, Result) else []
        answer = {
            "fire_id": fire.id,
            "result_id": result.id,
            "status": result.status,
            "runs": runs,
            "runs_created": len(result.runs) if isinstance(result, Result) else None,
            "at": now,
            "poll_deadline": deadline,
        }
        recorded = await rt.patiently(f"the answer to {fire.submission_name}", lambda: self._answers(answer))
        extra = {"job": fire.job, "slot": fire.slot, "result_id": result.id}
        rt.stats.submitted += 1
        runs_said = len(result.runs) if isinstance(result, Result) else "unknown"
        logger.info("%s submitted as result %d (%s runs)", fire.submission_name, result.id, runs_said, extra=extra)
        if not recorded:
            refreshed = await rt.db_patiently(f"fire {fire.id}", rt.store.get_fire, fire.id)
            assert refreshed is not None
            if refreshed.result_id == result.id:
                # Another process found it by name meanwhile (its lease ran out while the database was away).
                logger.info("%s: result %d was recorded by another process", fire.submission_name, result.id)
            else:
                logger.error(
                    "%s: submitted as result %d, but the fire was settled elsewhere meanwhile (%s); check for a "
                    "duplicate",
                    fire.submission_name,
                    result.id,
                    f"result {refreshed.result_id}" if refreshed.result_id is not None else refreshed.state,
                    extra=extra,
                )
            return refreshed
        # What the database now holds, without reading it back (a second transaction per fire).
        return dataclasses.replace(
            fire,
            state=SUBMITTED,
            result_id=result.id,
            result_status=result.status,
            submitted_at=now,
            poll_deadline=deadline,
            runs=runs,
        )

    async def _record_error(self, job: Job, fire: Fire, error: CekuraError, *, alert: bool = True) -> Fire:
        rt = self._rt
        rt.stats.submit_errors += 1
        kind = type(error).__name__.removeprefix("Cekura").removesuffix("Error").lower() or "other"
        rt.metrics.submission_errors.labels(kind).inc()
        logger.error("%s not submitted: %s", fire.submission_name, error, extra={"job": job.name, "slot": fire.slot})
        finished = await rt.db_patiently(
            f"the outcome of {fire.submission_name}",
            rt.record_outcome,
            fire.id,
            job.name if alert else None,
            outcome=FAILED,
            at=rt.clock.now(),
            error=error.message,
            error_status_code=error.status_code,
        )
        refreshed = await rt.db_patiently(f"fire {fire.id}", rt.store.get_fire, fire.id)
        assert refreshed is not None
        if finished:
            rt.stats.failed += 1
            rt.metrics.fires.labels(job.name, FAILED).inc()
            rt.outbox.wake.set()
        return refreshed

    async def settle(self, fire: Fire, follow: Callable[[Fire], None]) -> None:
        """A claim with no recorded answer (its process died): adopt Cekura's result if it exists.

        Otherwise the POST never arrived: submit it now if the slot is still within the job's catch-up window,
        else record the slot as skipped (lost-before-submit) and alert.
        """
        rt = self._rt
        job = rt.job(fire.job)
        rt.in_flight.submitting(fire.id)
        try:
            if not named(fire):  # nothing to look it up by: sending it again could run it twice
                why = f"the slot was claimed by a process that died, and {fire.endpoint} takes no name to look it up by"
                await self._skip_lost(fire, f"{why}: not sent again, since it may have reached Cekura")
                return
            try:
                found = await self.find(fire)
            except SubmissionUnsettledError:
                return  # its lease runs out and a later sweep tries again
            if found is not None:
                follow(await self.record_answer(fire, found))
            elif job is not None and rt.clock.now() - fire.slot <= job.catch_up_window:
                logger.warning(
                    "%s: claimed but never sent; submitting it now", fire.submission_name, extra={"job": fire.job}
                )
                try:
                    submitted = await self.submit(job, fire)
                except SubmissionUnsettledError:
                    return  # sent again, answer lost, not found by name yet: a later sweep looks it up again
                if submitted.state == SUBMITTED:
                    follow(submitted)
            else:
                why = "its job is no longer configured" if job is None else "it is too late to catch up"
                await self._skip_lost(fire, why)
        except StoreError as error:
            logger.error("%s: cannot settle the claim: %s", fire.submission_name, error, extra={"job": fire.job})
        finally:
            rt.in_flight.submitted(fire.id)

    async def _skip_lost(self, fire: Fire, why: str) -> None:
        rt = self._rt
        error = (
            why
            if why.startswith("the slot")
            else f"the slot was claimed but its submission never reached Cekura, and {why}"
        )
        if not await rt.db(rt.store.skip_claimed, fire.id, reason=SKIP_LOST, at=rt.clock.now(), error=error):
            return
        logger.error("%s skipped (%s): %s", fire.submission_name, SKIP_LOST, error, extra={"job": fire.job})
        rt.metrics.skipped.labels(fire.job, SKIP_LOST).inc()
        await rt.incidents.slot_skipped(fire, reason=SKIP_LOST, detail=error)
