"""What the daemon's parts share: its I/O (store, Cekura, clock, alerts), its tasks, and the fires in its hands.

Each part (admission, submission, following, upkeep, reloading) takes a ``Runtime`` and reads the current config
through it, so a reload is seen everywhere at once. Database calls run in a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from scheduler.alerts import AlertSender
from scheduler.cekura import CekuraClient
from scheduler.clock import Clock
from scheduler.config import Config, Job
from scheduler.delivery import Outbox
from scheduler.errors import StoreError
from scheduler.incidents import DATABASE_DOWN, Incidents
from scheduler.metrics import Metrics
from scheduler.store import Hold, Store

logger = logging.getLogger(__name__)

T = TypeVar("T")
A = TypeVar("A")
R = TypeVar("R")

SCHEDULED, MANUAL = "schedule", "manual"
READS_IN_FLIGHT = 20  # polls and look-ups at once; the HTTP client gets this many connections beyond submissions
DEFAULT_RESULT_TIMEOUT = timedelta(hours=1)  # for a result whose job was removed from the config


@dataclass
class Stats:
    """What the daemon did since it started, for the shutdown summary."""

    fired: int = 0
    submitted: int = 0
    submit_errors: int = 0
    passed: int = 0
    failed: int = 0


class InFlight:
    """The fires in this process's hands: their leases are renewed, and shutdown waits for the submissions."""

    def __init__(self) -> None:
        self.following: set[int] = set()
        self.follow_tasks: dict[int, asyncio.Task[Any]] = {}
        self._submitting: set[int] = set()
        self._admitting = 0  # fires whose claim is being written
        self.settled = asyncio.Event()  # set while nothing is being admitted or submitted: shutdown waits on it
        self.settled.set()

    def mine(self) -> list[int]:
        """The fires whose leases this process renews."""
        return sorted(self.following | self._submitting)

    def busy(self) -> int:
        """How many fires are being admitted or submitted."""
        return len(self._submitting) + self._admitting

    def is_submitting(self, fire_id: int) -> bool:
        return fire_id in self._submitting

    def submitting(self, fire_id: int) -> None:
        self._submitting.add(fire_id)
        self.settled.clear()

    def submitted(self, fire_id: int) -> None:
        self._submitting.discard(fire_id)
        self._update()

    def admitting(self) -> None:
        self._admitting += 1
        self.settled.clear()

    def admitted(self) -> None:
        self._admitting -= 1
        self._update()

    def _update(self) -> None:
        if not self.busy():
            self.settled.set()


class Runtime:
    """The I/O and the state shared by the daemon's parts."""

    def __init__(
        self,
        *,
        config: Config,
        store: Store,
        cekura: CekuraClient,
        alerts: AlertSender,
        clock: Clock,
        metrics: Metrics,
        owner: str,
        alert_backoff: timedelta,
    ) -> None:
        self.config = config
        self.store = store
        self.cekura = cekura
        self.clock = clock
        self.metrics = metrics
        self.owner = owner
        self.lease = config.daemon.lease
        self.incidents = Incidents(
            store=store,
            sender=alerts,
            config=lambda: self.config,
            clock=clock.now,
            on_change=lambda: self.outbox.wake.set(),
        )
        self.outbox = Outbox(
            store=store,
            sender=alerts,
            channels=lambda: self.config.channels,
            owner=owner,
            clock=clock.now,
            wait=clock.wait,
            backoff=alert_backoff,
            on_delivery=lambda channel, ok: metrics.alert_deliveries.labels(channel, "sent" if ok else "failed").inc(),
        )
        self.stats = Stats()
        self.stop = asyncio.Event()
        self.in_flight = InFlight()
        self.retired: dict[str, Job] = {}  # removed jobs, kept to follow and alert their results in flight
        self.key_rejected = False  # Cekura refused the API key at the last check or submission
        self.submissions = asyncio.Semaphore(config.daemon.max_concurrent_submissions)
        self.reads = asyncio.Semaphore(READS_IN_FLIGHT)  # waves of polls never queue in front of submissions
        self.tasks: set[asyncio.Task[Any]] = set()

    def job(self, name: str) -> Job | None:
        """A job of the current config, or one removed by a reload whose results are still followed."""
        return self.config.jobs.get(name) or self.retired.get(name)

    def result_timeout(self, name: str) -> timedelta:
        job = self.job(name)
        return job.result_timeout if job is not None else DEFAULT_RESULT_TIMEOUT

    # -- tasks --------------------------------------------------------------------------------------------

    def spawn(self, coroutine: Awaitable[T], name: str | None = None) -> asyncio.Task[T]:
        """A task of this daemon, named for the log (``fire smoke@...``, ``follow result 9001``)."""
        task: asyncio.Task[T] = asyncio.ensure_future(coroutine)
        if name is not None:
            task.set_name(name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        task.add_done_callback(_report_crash)
        return task

    # -- database calls, off the event loop ---------------------------------------------------------------

    async def db(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(call, *args, **kwargs)

    async def db_patiently(self, what: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A write that must not be lost (a verdict): retried with backoff until the database takes it.

        The fire stays in this process's hands meanwhile (its lease is renewed as soon as the database answers),
        so no other replica decides it again; a stop cancels the wait, and the next start reads the result anew.
        """
        return await self.patiently(what, lambda: self.db(call, *args, **kwargs))

    async def patiently(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """``db_patiently`` for an awaitable write, e.g. one that joins a ``Batched`` transaction."""
        pause = 0.5
        while True:
            try:
                return await attempt()
            except StoreError as error:
                logger.error("cannot record %s yet, trying again in %.0fs: %s", what, pause, error)
                await self.problem(DATABASE_DOWN, f"Cannot record {what}; it is kept and retried.\n{error}")
                await self.clock.sleep(pause)
                pause = min(pause * 2, 30.0)

    async def db_quietly(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        try:
            return await self.db(call, *args, **kwargs)
        except StoreError as error:
            logger.error("%s", error)
            return None

    def record_outcome(self, fire_id: int, job_name: str | None, **recorded: Any) -> bool:
        """Record an outcome and its incident changes in one transaction (worker thread); no job name: no alert."""
        return self.record_outcomes([{"fire_id": fire_id, "job_name": job_name, **recorded}])[0]

    def record_outcomes(self, outcomes: Sequence[dict[str, Any]]) -> list[bool]:
        """``record_outcome`` for many fires in one transaction (each dict holds its arguments).

        The silences in force are read once for the whole batch, not once per fire.
        """
        holds: list[Hold] | None = None
        routed = []
        for outcome in outcomes:
            job_name = outcome["job_name"]
            route = None
            if job_name is not None:
                if holds is None:
                    holds = self._holds_or_none()
                route = self.incidents.router(job_name, holds)
            routed.append({key: value for key, value in outcome.items() if key != "job_name"} | {"route": route})
        return self.store.finish_many(routed)

    def _holds_or_none(self) -> list[Hold] | None:
        try:
            return self.store.active_holds(at=self.clock.now())
        except StoreError:
            return None  # each router reads them itself, and says so when it cannot

    async def shut_down(self, *, grace: float) -> None:
        """Let submissions in flight get their answer recorded, cancel the rest, hand the fires back, sum up.

        Results still followed are polled again from the database by the next start (or another replica).
        """
        if busy := self.in_flight.busy():
            logger.info("waiting up to %.0fs for %d submissions in flight", grace, busy)
            await self.clock.wait(self.in_flight.settled, within=grace)
        handed_back = self.in_flight.mine()
        pending = [task for task in self.tasks if not task.done()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        try:
            # Let another replica (or the next start) take these over now rather than when the lease ends.
            await self.db(self.store.release_leases, self.owner, at=self.clock.now())
        except StoreError as error:
            logger.warning(
                "could not hand back %d fires: %s (they are taken over when their lease ends)", len(handed_back), error
            )
        s = self.stats
        logger.info(
            "daemon stopped: %d fired, %d submitted, %d submission errors, %d passed, %d failed, "
            "%d results still in flight (followed again on next start)",
            s.fired,
            s.submitted,
            s.submit_errors,
            s.passed,
            s.failed,
            len(handed_back),
        )

    # -- daemon-level problems ----------------------------------------------------------------------------

    async def problem(self, problem: str, detail: str) -> None:
        """Alert once about a problem of the whole daemon, until it is solved."""
        await self.incidents.problem(problem, detail)

    def solved(self, problem: str) -> None:
        if problem in self.incidents.open_problems():
            self.spawn(self.incidents.solved(problem))


class Batched(Generic[A, R]):
    """Calls made while the previous batch runs, or in the same turn of the loop, run as one worker-thread call.

    A thousand jobs due at once then cost one transaction to claim rather than a thousand (the ORM's per-session
    cost, ~1 ms each, held the GIL the event loop needs), and answers arriving together are recorded together.
    ``linger`` (seconds) holds each batch open a little longer for writes nobody waits on to the millisecond:
    verdicts of results that end in the same wave of reads arrive a few milliseconds apart, and without it most
    batches held one (1.6 on average, for 1,000 results). It is a batching window, not the daemon's time, so it
    is the event loop's own sleep, not the injected clock's. ``most`` caps a batch: the first claims of a burst
    are then written (and their POSTs sent) while the next ones are still being claimed.
    """

    def __init__(
        self,
        run_many: Callable[[list[A]], list[R]],
        spawn: Callable[[Awaitable[None]], asyncio.Task[None]],
        *,
        linger: float = 0.0,
        most: int | None = None,
    ) -> None:
        self._run_many = run_many
        self._spawn = spawn
        self._linger = linger
        self._most = most
        self._waiting: list[tuple[A, asyncio.Future[R]]] = []
        self._runner: asyncio.Task[None] | None = None

    async def __call__(self, item: A) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._runner is None or self._runner.done():
            self._runner = self._spawn(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._waiting:
            await asyncio.sleep(self._linger)  # let the callers of this turn of the loop (or window) join
            cut = len(self._waiting) if self._most is None else self._most
            batch, self._waiting = self._waiting[:cut], self._waiting[cut:]
            try:
                results = await asyncio.to_thread(self._run_many, [item for item, _ in batch])
            except Exception as error:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)


def _report_crash(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and (error := task.exception()) is not None:
        logger.error("a daemon task failed (%s): %s", task.get_name(), error, exc_info=error)


def day_start(at: datetime) -> datetime:
    """00:00 UTC of the day of ``at`` (budgets count per UTC day)."""
    return at.replace(hour=0, minute=0, second=0, microsecond=0)
