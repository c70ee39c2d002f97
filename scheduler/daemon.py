"""The long-running process: fire jobs at their slots, submit, follow results to an outcome, alert.

One asyncio loop. A timer keeps every enabled job's next slot in a heap and wakes at the earliest; each due slot
becomes a task that claims the slot in the database (before anything is sent), submits it to Cekura and records
the answer. Every submitted result is followed by its own polling task until it ends or times out. A sweep
picks up results and claims that no task of this process follows (after a restart, or a ``trigger`` from the
command line). A failing job is logged, recorded and alerted; it never stops the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import logging
import os
import random
import secrets
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from scheduler import redaction
from scheduler.alerts import AlertSender, Outbox
from scheduler.cekura import CekuraClient, build_submission
from scheduler.config import SCHEDULE_KEYS, Config, ConfigSource, Job, diff_configs
from scheduler.errors import (
    CekuraAmbiguousError,
    CekuraAuthError,
    CekuraError,
    CekuraNotFoundError,
    CekuraResponseError,
    CekuraUnavailableError,
    ConfigError,
    ConfigIssue,
    SchedulerError,
    StoreError,
    count_errors,
)
from scheduler.incidents import DATABASE_DOWN, Incidents
from scheduler.metrics import Metrics
from scheduler.results import Result, ResultSummary
from scheduler.schedules import format_duration, jitter_offset, submission_name
from scheduler.store import CLAIMED, FAILED, PASSED, SUBMITTED, Fire, Hold, Incident, RunRecord, Store
from scheduler.supervision import LoopHealth, Supervisor
from scheduler.verdicts import RUNNING_STATUSES, TERMINAL_STATUSES, TIMED_OUT, Verdict

logger = logging.getLogger(__name__)

T = TypeVar("T")

SCHEDULED, MANUAL = "schedule", "manual"
_SUBMIT_ATTEMPTS = 4
READS_IN_FLIGHT = 20  # polls and look-ups at once; the HTTP client gets this many connections beyond submissions
_MAX_SLEEP = 5.0  # the timer wakes at least this often, so liveness can be judged by its ticks
_MAX_CATCH_UP_SLOTS = 1000
_CATCH_UP_LOOKBACK = timedelta(days=1)  # how far back a restart looks for slots without a row

# Why a slot was not submitted (fires.skip_reason).
SKIP_OVERLAP = "overlap"
SKIP_CATCH_UP = "catch_up_skip"
SKIP_SUPERSEDED = "catch_up_latest"
SKIP_TOO_OLD = "catch_up_window"
SKIP_LOST = "lost-before-submit"
SKIP_PAUSED = "paused"
SKIP_MAINTENANCE = "maintenance"
SKIP_BUDGET = "budget"
SKIP_KEY_REJECTED = "api-key-rejected"

KEY_REJECTED = "Cekura rejects the API key"
UNREACHABLE = "cannot reach Cekura"
_KEY_CHECK_EVERY = 60.0  # seconds between two checks of the key (and of Cekura being reachable)
_UNREACHABLE_AFTER = 3  # requests in a row that could not connect before people are told

_IN_FLIGHT = "a submission of the job is still in flight"


class Clock(Protocol):
    """Where the daemon reads the time; tests inject their own."""

    def now(self) -> datetime: ...


class SystemClock:
    """The real time, in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass
class Stats:
    """What the daemon did since it started, for the shutdown summary."""

    fired: int = 0
    submitted: int = 0
    submit_errors: int = 0
    passed: int = 0
    failed: int = 0


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


A = TypeVar("A")
R = TypeVar("R")


class _Claim(NamedTuple):
    """A slot due now, on its way to be checked and claimed with the others due in the same turn of the loop."""

    job: Job
    slot: datetime
    trigger: str
    name: str
    endpoint: str
    now: datetime


class _Admission(NamedTuple):
    """Whether a due slot may fire: why it is skipped (with the budget's detail), or its claim."""

    skip: str | None
    detail: str | None = None
    fire: Fire | None = None  # None with no skip: the slot was claimed already (another process, a restart)
    in_the_way: tuple[Fire, ...] = ()  # overlap: the job's fires still claimed or running


class _Batched(Generic[A, R]):
    """Calls made while the previous batch runs, or in the same turn of the loop, run as one worker-thread call.

    A thousand jobs due at once then cost one transaction to claim rather than a thousand (the ORM's per-session
    cost, ~1 ms each, held the GIL the event loop needs), and answers arriving together are recorded together.
    """

    def __init__(
        self, run_many: Callable[[list[A]], list[R]], spawn: Callable[[Awaitable[None]], asyncio.Task[None]]
    ) -> None:
        self._run_many = run_many
        self._spawn = spawn
        self._waiting: list[tuple[A, asyncio.Future[R]]] = []
        self._runner: asyncio.Task[None] | None = None

    async def __call__(self, item: A) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._runner is None or self._runner.done():
            self._runner = self._spawn(self._drain())
        return await future

    async def _drain(self) -> None:
        await asyncio.sleep(0)  # let the callers of this turn of the loop join
        while self._waiting:
            batch, self._waiting = self._waiting, []
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


class Daemon:
    """Fires the jobs of one config, follows their results and alerts on their outcomes."""

    def __init__(
        self,
        *,
        config: Config,
        store: Store,
        cekura: CekuraClient,
        alerts: AlertSender,
        clock: Clock | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        owner: str | None = None,
        config_source: ConfigSource | None = None,
        metrics: Metrics | None = None,
        alert_backoff: timedelta = timedelta(seconds=5),
        key_check_every: float = _KEY_CHECK_EVERY,
    ) -> None:
        self.config = config
        redaction.install()
        redaction.register([*config.secrets, *cekura.secrets()])
        self.metrics = metrics or Metrics()
        self.metrics.in_flight.set_function(lambda: len(self._following))
        self.started_at: datetime | None = None
        self.ticked_at: datetime | None = None  # the timer's last turn: /healthz judges liveness by it
        self.config_source = config_source
        self.config_errors: list[ConfigIssue] = []  # the problems of the file on disk, while it is invalid
        self._rejected_digest: str | None = None
        self._reload_requested = asyncio.Event()
        self._wake = asyncio.Event()
        self._retired: dict[str, Job] = {}  # removed jobs, kept to follow and alert their results in flight
        self._plan: dict[str, tuple[datetime, datetime]] = {}  # job -> (fire at, slot) of its next fire
        self._heap: list[tuple[datetime, datetime, str]] = []
        self.store = store
        self.cekura = cekura
        self.alerts = alerts
        self.clock = clock or SystemClock()
        self._sleep = sleep
        self._submissions = asyncio.Semaphore(config.daemon.max_concurrent_submissions)
        self._reads = asyncio.Semaphore(READS_IN_FLIGHT)  # waves of polls never queue in front of submissions
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._following: set[int] = set()
        self._submitting: set[int] = set()
        self._admitting = 0  # fires whose claim is being written: shutdown waits for them as for submissions
        self._follow_tasks: dict[int, asyncio.Task[Any]] = {}
        self._unrecorded: dict[str, list[datetime]] = {}  # slots whose claim failed (database down)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.lease = config.daemon.lease
        self.incidents = Incidents(
            store=store,
            sender=alerts,
            config=lambda: self.config,
            clock=self.clock.now,
            on_change=lambda: self.outbox.wake.set(),
        )
        self.outbox = Outbox(
            store=store,
            sender=alerts,
            channels=lambda: self.config.channels,
            owner=self.owner,
            clock=self.clock.now,
            backoff=alert_backoff,
            on_delivery=self._count_delivery,
        )
        self._open_incidents: list[Incident] = []
        self._key_rejected = False  # Cekura refused the API key at the last check or submission
        self._key_check_every = key_check_every
        self._holds: list[Hold] = []
        self._holds_at: datetime | None = None
        self._holds_lock = asyncio.Lock()
        self.stats = Stats()
        self.supervisor = Supervisor(
            clock=self.clock.now, sleep=sleep, problem=self._daemon_problem, solved=self.incidents.solved
        )
        self._admissions: _Batched[_Claim, _Admission] = _Batched(self._admit_many, self._spawn)
        self._answers: _Batched[dict[str, Any], bool] = _Batched(self.store.record_submitted_many, self._spawn)

    # -- the loop ---------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Run until ``stop`` is set; then let submissions in flight finish and log one summary line."""
        if stop is not None:
            self._stop = stop
        jobs = [job for job in self.config.jobs.values() if job.enabled]
        logger.info(
            "daemon started with %d jobs (%d disabled) from %s",
            len(jobs),
            len(self.config.jobs) - len(jobs),
            self.config.path,
        )
        now = self.clock.now()
        self.started_at = self.ticked_at = now
        self.metrics.up.set(1)
        await self.incidents.load_open_problems()
        await self._check_key()  # before the first slot: a refused key is known before anything is POSTed
        await self._catch_up_after_downtime(jobs, now)
        for job in jobs:
            self._plan_next(job, after=now)
        for fire_at, _, name in sorted(self._heap)[:10]:
            logger.info("next fire of %s at %s", name, fire_at.isoformat(), extra={"job": name})
        lease = self.lease.total_seconds()
        minute = timedelta(minutes=1)
        loops: list[tuple[str, Callable[[Callable[[], None]], Awaitable[None]], timedelta]] = [
            ("sweep", self._sweep_forever, timedelta(seconds=3 * self._sweep_every()) + minute),
            ("heartbeat", self._heartbeat_forever, timedelta(seconds=3 * max(lease / 3, 0.2)) + minute),
            ("outbox", lambda tick: self.outbox.run(self._stop, tick), minute),
            ("prune", self._prune_forever, timedelta(hours=2)),
        ]
        if self.config_source is not None:
            loops.append(("config-watch", self._watch_config_forever, minute))
        loops.append(("key-check", self._check_key_forever, timedelta(seconds=3 * _KEY_CHECK_EVERY) + minute))
        background = [self.supervisor.start(name, body, stale_after=stale) for name, body, stale in loops]
        timer = self.supervisor.start("timer", self._timer, stale_after=timedelta(seconds=6 * _MAX_SLEEP))
        try:
            await timer
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            self.metrics.up.set(0)
            await self._shut_down()

    async def _check_key_forever(self, tick: Callable[[], None]) -> None:
        """Check at start, then every minute, that Cekura answers and accepts the key.

        While the key is refused, slots are recorded as skipped (``api-key-rejected``) rather than POSTed; firing
        resumes by itself once the key is accepted again. Requests that cannot connect, several in a row (of any
        kind: submissions, reads, these checks), are one daemon-level incident until Cekura answers again.
        """
        while not self._stop.is_set():
            tick()
            await self._wait_for_stop(self._key_check_every)
            if not self._stop.is_set():
                await self._check_key()

    async def _check_key(self) -> None:
        """Ask Cekura once whether it answers and accepts the key; alert (once) when not, solve when it does."""
        try:
            await asyncio.wait_for(self.cekura.check_key(), timeout=15.0)
        except TimeoutError:
            logger.warning("checking the API key: Cekura did not answer within 15s")
        except CekuraAuthError as error:
            self._key_rejected = True
            await self._daemon_problem(
                KEY_REJECTED,
                f"{error.message}\nNothing is submitted until the key is accepted: slots are recorded as skipped "
                f"({SKIP_KEY_REJECTED}). The key is checked again every minute.",
            )
        except CekuraError as error:
            logger.warning("checking the API key: %s", error)
        else:
            if self._key_rejected:
                logger.warning("Cekura accepts the API key again; firing resumes")
            self._key_rejected = False
            self._daemon_problem_solved(KEY_REJECTED)
        if self.cekura.connect_failures >= _UNREACHABLE_AFTER:
            await self._daemon_problem(
                UNREACHABLE,
                f"{self.cekura.connect_failures} requests in a row got no answer from Cekura "
                f"({self.cekura.base_url}). Slots are claimed and retried; this alert resolves once Cekura answers "
                "again.",
            )
        elif self.cekura.connect_failures == 0:
            self._daemon_problem_solved(UNREACHABLE)

    @staticmethod
    def redact(text: str) -> str:
        """Text with every secret the daemon knows replaced by ``***`` (for pages and answers)."""
        return redaction.redact(text)

    def loop_health(self) -> list[LoopHealth]:
        """Each background loop: when it last turned, whether it is down (for /healthz)."""
        return self.supervisor.health()

    async def _timer(self, tick: Callable[[], None]) -> None:
        """Spawn each due slot's fire and sleep until the next one (at most ``_MAX_SLEEP``)."""
        while not self._stop.is_set():
            tick()
            now = self.ticked_at = self.clock.now()
            while self._heap and self._heap[0][0] <= now:
                entry = heapq.heappop(self._heap)
                fire_at, slot, name = entry
                if self._plan.get(name) != (fire_at, slot):
                    continue  # planned before a reload changed or removed the job
                try:
                    job = self.config.jobs[name]
                    self._spawn(self.fire(job, slot), f"fire {submission_name(name, slot)}")
                    self._plan_next(job, after=slot)
                except Exception:
                    # Put it back: the loop restarts (supervised) and tries again; the claim stops a second POST.
                    heapq.heappush(self._heap, entry)
                    raise
            wait = (self._heap[0][0] - now).total_seconds() if self._heap else _MAX_SLEEP
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_or_wake(), timeout=min(max(wait, 0.0), _MAX_SLEEP))

    async def _stop_or_wake(self) -> None:
        stop, wake = asyncio.ensure_future(self._stop.wait()), asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({stop, wake}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            wake.cancel()

    def _plan_next(self, job: Job, *, after: datetime) -> None:
        """Put the job's first slot after ``after`` on the timer (at its jitter offset, if it has one)."""
        slot = job.schedule.next_after(after)
        fire_at = slot + jitter_offset(job.name, slot, job.jitter) if job.jitter else slot
        self._plan[job.name] = (fire_at, slot)
        heapq.heappush(self._heap, (fire_at, slot, job.name))

    def _over_budget(self, job: Job, tally: dict[str | None, int]) -> str | None:
        """Why this fire would exceed a max_runs_per_day (the job's or the daemon's), or None (worker thread).

        ``tally`` holds the runs counted so far for each limit (the job's name, or None for all jobs), read from
        the database on first use and grown by each fire admitted in the same batch, so that a thousand fires
        claimed together cannot all slip under the limit that the first of them saw.
        """
        day = self.clock.now().replace(hour=0, minute=0, second=0, microsecond=0)
        limits = [
            (job.max_runs_per_day, job.name, f"job {job.name}"),
            (self.config.daemon.max_runs_per_day, None, "all jobs ([daemon])"),
        ]
        for limit, subject, label in limits:
            if limit is None:
                continue
            if subject not in tally:
                tally[subject] = self.store.runs_submitted_since(day, job=subject)
            used = tally[subject]
            if used + job.runs_per_fire > limit:
                return (
                    f"max_runs_per_day of {label} is {limit}: {used} Cekura runs since 00:00 UTC, and this fire "
                    f"would add {job.runs_per_fire}"
                )
        for limit, subject, _ in limits:
            if limit is not None:
                tally[subject] += job.runs_per_fire
        return None

    async def _holds_now(self) -> list[Hold]:
        """The pauses and silences in force, read at most once a second (many jobs may fire at once)."""
        if self._holds_fresh(self.clock.now()):
            return self._holds  # without the lock: fires due together stay together, and are claimed together
        async with self._holds_lock:
            now = self.clock.now()
            if not self._holds_fresh(now):
                self._holds = await self._db(self.store.active_holds, at=now)
                self._holds_at = now
            return self._holds

    def _holds_fresh(self, now: datetime) -> bool:
        return self._holds_at is not None and timedelta(0) <= now - self._holds_at < timedelta(seconds=1)

    @property
    def stopping(self) -> bool:
        """True once shutdown has begun: no new fires should be started (e.g. from the HTTP API)."""
        return self._stop.is_set()

    def next_fire(self, name: str) -> datetime | None:
        """When the job fires next (its slot plus any jitter), or None when it is not planned."""
        planned = self._plan.get(name)
        return planned[0] if planned else None

    async def pause(self, name: str, *, by: str, reason: str, until: datetime | None = None) -> Hold:
        """Stop firing a job (its slots are recorded as skipped: paused) until resumed or ``until``."""
        if name not in self.config.jobs:
            raise SchedulerError(f"no job named {name!r}", permanent=True)
        hold = await self._db(
            self.store.add_hold, job=name, kind="pause", at=self.clock.now(), until=until, created_by=by, reason=reason
        )
        self._holds_at = None  # this process sees it at once; other replicas within a second
        logger.warning("%s paused by %s: %s", name, by, reason, extra={"job": name})
        return hold

    async def resume(self, name: str, *, by: str) -> bool:
        """Fire a paused job again from its next slot; False when it was not paused."""
        ended = await self._db(self.store.end_holds, job=name, kind="pause", at=self.clock.now())
        self._holds_at = None
        if ended:
            logger.warning("%s resumed by %s", name, by, extra={"job": name})
        return ended > 0

    def job(self, name: str) -> Job | None:
        """A job of the current config, or one removed by a reload whose results are still followed."""
        return self.config.jobs.get(name) or self._retired.get(name)

    # -- reloading jobs.toml ----------------------------------------------------------------------------

    def request_reload(self) -> None:
        """Ask for the config file to be read again now (SIGHUP)."""
        self._reload_requested.set()

    async def _watch_config_forever(self, tick: Callable[[], None]) -> None:
        assert self.config_source is not None
        while not self._stop.is_set():
            tick()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reload_requested.wait(), timeout=1.0)
            asked = self._reload_requested.is_set()
            self._reload_requested.clear()
            if asked:
                logger.info(
                    "reloading %s (SIGHUP); environment settings (CEKURA_*, SCHEDULER_*) are read at start "
                    "only: restart to change them",
                    self.config_source.path,
                )
            if asked or self.config_source.changed():
                await self.reload()

    async def reload(self) -> bool:
        """Read the config file again; apply it when valid, else keep running the current one and say why.

        Returns whether a new version was applied.
        """
        assert self.config_source is not None
        source = self.config_source
        try:
            new = await asyncio.to_thread(source.load)  # waits until two reads of the file agree
        except ConfigError as error:
            now = self.clock.now()
            fingerprint = source.last_digest or "unreadable"
            self.config_errors = error.issues
            if fingerprint != self._rejected_digest:
                self._rejected_digest = fingerprint
                for issue in error.issues:
                    logger.error("config not applied: %s", issue)
                detail = "\n".join(str(issue) for issue in error.issues)
                await self._db_quietly(
                    self.store.record_config_change,
                    at=now,
                    path=str(source.path),
                    digest=fingerprint,
                    valid=False,
                    summary=detail,
                )
                await self.incidents.problem(
                    "config file invalid",
                    f"{source.path} (version {fingerprint}) has {count_errors(error.issues)}; the daemon keeps "
                    f"running the previous version ({self.config.digest}).\n{detail}",
                    subject=f"config:{fingerprint}",
                )
            self.metrics.config_reloads.labels("rejected").inc()
            return False
        self.config_errors = []
        self._rejected_digest = None
        rejected = [key for key in self.incidents.open_problems() if key.startswith("config:")]
        if rejected:
            await self.incidents.solved("config file invalid", subjects=rejected)
        if new.digest == self.config.digest:
            self.metrics.config_reloads.labels("unchanged").inc()
            return False
        redaction.register(new.secrets)
        # Taken when the version is applied, with no wait before it: a slot fired until now (during the settle
        # time, or while a solved alert was recorded) belonged to the previous version.
        now = self.clock.now()
        diff = diff_configs(self.config, new)
        empties = any(job.enabled for job in self.config.jobs.values()) and not any(
            job.enabled for job in new.jobs.values()
        )
        old, self.config = self.config, new
        for name in diff.removed:
            self._plan.pop(name, None)
            self._retired[name] = old.jobs[name]
        for name in diff.added:
            self._retired.pop(name, None)
            if new.jobs[name].enabled:
                self._plan_next(new.jobs[name], after=now)
        for name, keys in diff.changed.items():
            job = new.jobs[name]
            if not job.enabled:
                self._plan.pop(name, None)
            elif SCHEDULE_KEYS & set(keys) or name not in self._plan:
                # From now on: a slot already fired is not fired again, the one due next is not skipped.
                self._plan_next(job, after=now)
        self._wake.set()
        if empties:  # told after it is applied: nothing of the old jobs may fire while people are told
            await self.incidents.announce(
                "every job removed",
                f"{source.path} (version {new.digest}) has no enabled job left (was {len(old.jobs)}); nothing "
                "will fire until jobs are added again. It is applied: if this is not what you meant, restore the "
                "file.",
                config=old,
            )
        self.metrics.config_reloads.labels("applied").inc()
        logger.info("config %s applied (was %s): %s", new.digest, old.digest, diff.summary())
        restart_only = [key for key in diff.daemon if key != "alerts"]
        if restart_only:
            logger.warning("[daemon] %s changed: takes effect after a restart", ", ".join(restart_only))
        await self._db_quietly(
            self.store.record_config_change,
            at=now,
            path=str(source.path),
            digest=new.digest,
            valid=True,
            summary=diff.summary(),
        )
        return True

    async def _wait_for_stop(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)

    def _spawn(self, coroutine: Awaitable[T], name: str | None = None) -> asyncio.Task[T]:
        """A task of this daemon, named for the log (``fire smoke@...``, ``follow result 9001``)."""
        task: asyncio.Task[T] = asyncio.ensure_future(coroutine)
        if name is not None:
            task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(self._report_crash)
        return task

    @staticmethod
    def _report_crash(task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and (error := task.exception()) is not None:
            logger.error("a daemon task failed (%s): %s", task.get_name(), error, exc_info=error)

    async def _shut_down(self, grace: float = 30.0) -> None:
        """Let submissions in flight get their answer recorded; polling resumes from the database next start."""
        if self._submitting or self._admitting:
            logger.info(
                "waiting up to %.0fs for %d submissions in flight", grace, len(self._submitting) + self._admitting
            )
            deadline = asyncio.get_running_loop().time() + grace
            while (self._submitting or self._admitting) and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        handed_back = sorted(self._following | self._submitting)
        pending = [task for task in self._tasks if not task.done()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        in_flight = len(handed_back)
        try:
            # Let another replica (or the next start) take these over now rather than when the lease ends.
            await self._db(self.store.release_leases, self.owner, at=self.clock.now())
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
            in_flight,
        )

    def _sweep_every(self) -> float:
        return min(max(self.lease.total_seconds() / 2, 0.5), 30.0)

    async def _sweep_forever(self, tick: Callable[[], None]) -> None:
        while not self._stop.is_set():
            tick()
            await self.sweep()
            await self._wait_for_stop(self._sweep_every())

    async def sweep(self) -> None:
        """Take over the unfinished fires whose lease ran out: follow their results, settle their claims.

        That is how results in flight survive a restart, how a replica takes over the work of one that died, and
        how a ``trigger`` from the command line gets followed. Slots missed while the database was unreachable
        are handled here too, once it answers again.
        """
        now = self.clock.now()
        try:
            taken = await self._db(self.store.take_over, self.owner, now=now, until=now + self.lease)
        except StoreError as error:
            await self._daemon_problem(DATABASE_DOWN, f"Cannot read the database: {error}")
            return
        self._daemon_problem_solved(DATABASE_DOWN)
        await self.incidents.remind()
        self._open_incidents = await self._db_quietly(self.store.open_incidents) or []
        self.metrics.open_incidents.set(len(self._open_incidents))
        for fire in taken:
            if fire.id in self._following or fire.id in self._submitting:
                continue
            if fire.state == "submitted":
                self._start_following(fire)
            else:
                self._spawn(self._settle_unanswered(fire), f"settle {fire.submission_name}")
        await self._catch_up_unrecorded()

    async def _catch_up_unrecorded(self) -> None:
        """Apply the catch-up policy to the slots that could not be recorded while the database was down."""
        if not self._unrecorded:
            return
        missed, self._unrecorded = self._unrecorded, {}
        for name, slots in missed.items():
            if (job := self.config.jobs.get(name)) is not None:
                await self._apply_catch_up(job, sorted(set(slots)), self.clock.now())

    async def _heartbeat_forever(self, tick: Callable[[], None] = lambda: None) -> None:
        """Renew the leases of the fires this process works on; stop following those another process took."""
        while not self._stop.is_set():
            tick()
            await self._wait_for_stop(max(self.lease.total_seconds() / 3, 0.2))
            mine = sorted(self._following | self._submitting)
            try:
                held = await self._db(self.store.renew_leases, self.owner, mine, until=self.clock.now() + self.lease)
            except StoreError as error:
                logger.warning("cannot renew leases: %s", error)
                continue
            for fire_id in set(self._following) - held:
                logger.warning("fire %d was taken over by another process; no longer following it", fire_id)
                if (task := self._follow_tasks.get(fire_id)) is not None:
                    task.cancel()

    async def _prune_forever(self, tick: Callable[[], None], every: float = 3600.0) -> None:
        """Delete history older than [history] retention, in small batches, once an hour."""
        while not self._stop.is_set():
            tick()
            retention = self.config.history.retention
            if retention is not None:
                before, total = self.clock.now() - retention, 0
                while not self._stop.is_set():
                    try:
                        deleted = await self._db(self.store.prune, before=before)
                    except StoreError as error:
                        logger.warning("pruning history: %s", error)
                        break
                    total += deleted
                    if deleted < 500:
                        break
                    await asyncio.sleep(0.1)  # let the daemon's own writes through between batches
                if total:
                    logger.info("pruned %d fires older than %s", total, format_duration(retention))
            await self._wait_for_stop(every)

    def _start_following(self, fire: Fire) -> None:
        task = self._spawn(self.follow(fire), f"follow result {fire.result_id} of {fire.submission_name}")
        self._follow_tasks[fire.id] = task
        task.add_done_callback(lambda _: self._follow_tasks.pop(fire.id, None))

    # -- missed slots -----------------------------------------------------------------------------------

    async def _catch_up_after_downtime(self, jobs: list[Job], now: datetime) -> None:
        """Apply each job's catch_up policy to its slots that have no row: missed while down.

        It looks for gaps, not only past the newest recorded slot: a process killed while it was catching up
        leaves its claims committed in any order, so a missed slot can sit below a recorded one.
        """
        try:
            bounds = await self._db(self.store.slot_bounds, [job.name for job in jobs])
        except StoreError as error:
            await self._daemon_problem(DATABASE_DOWN, f"Cannot read the database at start: {error}")
            return
        for job in jobs:
            if job.name not in bounds:
                continue  # a new job: nothing was missed
            first, last = bounds[job.name]
            lookback = max(job.catch_up_window, _CATCH_UP_LOOKBACK)
            start = max(first, min(last, now - lookback))
            slots, dropped = job.schedule.slots_between(start, now, limit=_MAX_CATCH_UP_SLOTS)
            if dropped:
                logger.warning(
                    "%s: more than %d slots were missed; only the newest %d are recorded",
                    job.name,
                    _MAX_CATCH_UP_SLOTS,
                    _MAX_CATCH_UP_SLOTS,
                    extra={"job": job.name},
                )
            if not slots:
                continue
            try:
                recorded = await self._db(self.store.recorded_slots, job.name, since=slots[0])
            except StoreError as error:
                await self._daemon_problem(DATABASE_DOWN, f"Cannot read the database at start: {error}")
                return
            missed = [slot for slot in slots if slot not in recorded]
            if missed:
                await self._apply_catch_up(job, missed, now)

    async def _apply_catch_up(self, job: Job, slots: list[datetime], now: datetime) -> None:
        """Submit or skip (with the reason) each missed slot, as the job's catch_up policy says."""
        recent = [slot for slot in slots if now - slot <= job.catch_up_window]
        chosen = {"all": recent, "latest": recent[-1:], "skip": []}[job.catch_up]
        skipped = 0
        for slot in slots:
            if slot in chosen:
                self._spawn(self.fire(job, slot), f"catch up {submission_name(job.name, slot)}")
                continue
            reason = (
                SKIP_TOO_OLD if slot not in recent else (SKIP_CATCH_UP if job.catch_up == "skip" else SKIP_SUPERSEDED)
            )
            if await self._record_skip(job, slot, reason) is not None:
                skipped += 1
        logger.warning(
            "%s: %d slots were missed (from %s); %d submitted now, %d recorded as skipped (catch_up = %s, "
            "catch_up_window = %s)",
            job.name,
            len(slots),
            slots[0].isoformat(),
            len(chosen),
            skipped,
            job.catch_up,
            format_duration(job.catch_up_window),
            extra={"job": job.name},
        )

    async def _record_skip(self, job: Job, slot: datetime, reason: str, *, detail: str | None = None) -> Fire | None:
        name = submission_name(job.name, slot)
        self.metrics.skipped.labels(job.name, reason).inc()
        try:
            return await self._db(
                self.store.record_skipped,
                job=job.name,
                slot=slot,
                trigger=SCHEDULED,
                fired_at=self.clock.now(),
                submission_name=name,
                endpoint=build_submission(job, name).endpoint,
                runs_requested=job.runs_per_fire,
                reason=reason,
                detail=detail,
            )
        except StoreError as error:
            logger.error("%s: cannot record it as skipped (%s): %s", name, reason, error, extra={"job": job.name})
            self._unrecorded.setdefault(job.name, []).append(slot)
            return None

    # -- one fire ---------------------------------------------------------------------------------------

    async def fire(self, job: Job, slot: datetime, *, trigger: str = SCHEDULED, follow: bool = True) -> Fire | None:
        """Claim the slot, submit it, record the answer and start following the result.

        Returns the fire as recorded, or None when the slot was already claimed (by this or another process)
        or could not be claimed.
        """
        name = submission_name(job.name, slot)
        extra = {"job": job.name, "slot": slot.isoformat()}
        submission = build_submission(job, name)
        self.stats.fired += 1
        try:
            if trigger == SCHEDULED and self._key_rejected:
                logger.warning("%s skipped: Cekura rejects the API key (checked again every minute)", name, extra=extra)
                return await self._record_skip(
                    job, slot, SKIP_KEY_REJECTED, detail="Cekura rejected the API key; nothing was sent"
                )
            if trigger == SCHEDULED and (window := self.incidents.paused_by_maintenance(job.name, slot)):
                logger.info("%s skipped: maintenance window %s pauses the job", name, window, extra=extra)
                return await self._record_skip(job, slot, SKIP_MAINTENANCE)
            if trigger == SCHEDULED and any(
                hold.kind == "pause" and hold.job == job.name for hold in await self._holds_now()
            ):
                logger.info("%s skipped: the job is paused", name, extra=extra)
                return await self._record_skip(job, slot, SKIP_PAUSED)
            now = self.clock.now()
            claim = _Claim(job, slot, trigger, name, submission.endpoint, now)
            self._admitting += 1
            try:
                reason, over, fire, in_the_way = await self._admissions(claim)
                if reason == SKIP_OVERLAP and (still := await self._still_running(in_the_way)) is None:
                    # The database was behind: the previous result has ended. Claim the slot after all.
                    reason, over, fire, in_the_way = await self._admissions(claim._replace(now=self.clock.now()))
                    still = _IN_FLIGHT
                if fire is not None:
                    self._submitting.add(fire.id)  # before the count drops: shutdown never sees it unaccounted
            finally:
                self._admitting -= 1
            if reason == SKIP_BUDGET:
                assert over is not None
                logger.warning("%s skipped: %s", name, over, extra=extra)
                await self.incidents.over_budget(job, slot, detail=over)
                return await self._record_skip(job, slot, SKIP_BUDGET, detail=over)
            if reason == SKIP_OVERLAP:
                why = still or _IN_FLIGHT
                logger.warning("%s skipped (overlap = skip): %s", name, why, extra=extra)
                return await self._record_skip(job, slot, SKIP_OVERLAP, detail=why)
        except StoreError as error:
            logger.error("%s not submitted: cannot claim the slot: %s", name, error, extra=extra)
            if trigger == SCHEDULED:
                self._unrecorded.setdefault(job.name, []).append(slot)
            await self._daemon_problem(
                DATABASE_DOWN,
                f"Cannot record fires, so nothing is submitted. Slot {name} was not submitted; missed slots "
                f"follow each job's catch_up policy once the database answers.\n{error}",
            )
            return None
        if fire is None:
            logger.debug("%s already claimed; not submitting it again", name, extra=extra)
            return None
        self._daemon_problem_solved(DATABASE_DOWN)
        if trigger == SCHEDULED:
            self.metrics.fire_lag.observe(max(0.0, (now - slot).total_seconds()))
        if self._unrecorded:
            self._spawn(self._catch_up_unrecorded())
        logger.info("firing %s (%d runs)", name, job.runs_per_fire, extra=extra)
        claimed = fire
        self._submitting.add(claimed.id)
        try:
            fire = await self._submit(job, claimed, submission)
        except _Unsettled:
            return claimed  # left claimed; the sweep looks it up again later
        except StoreError as error:
            # Cekura may have the submission; the sweep finds it by name once the database is back.
            logger.error("%s: cannot record the answer: %s", name, error, extra=extra)
            await self._daemon_problem(DATABASE_DOWN, f"Cannot record the answer to {name}.\n{error}")
            return claimed
        finally:
            self._submitting.discard(claimed.id)
        if fire.state == "submitted" and follow:
            self._start_following(fire)
        return fire

    def _admit_many(self, requests: list[_Claim]) -> list[_Admission]:
        """Check the slots due in one turn of the loop may fire (budget, overlap), then claim them, in one trip.

        Each answer is (skip reason, budget detail, None) for a slot to skip, else (None, None, its claim or None
        when it was claimed already). One query for the jobs still running, one transaction for every claim.
        """
        scheduled = [job for job, _, trigger, *_ in requests if trigger == SCHEDULED]
        busy = self.store.in_flight_by_job(sorted({job.name for job in scheduled if job.overlap == "skip"}))
        tally: dict[str | None, int] = {}
        results = [_Admission(None)] * len(requests)
        claims, placed = [], []
        batched: set[str] = set()  # jobs claimed in this batch, not yet in the database
        for index, (job, slot, trigger, name, endpoint, now) in enumerate(requests):
            if trigger == SCHEDULED:
                if job.overlap == "skip" and (job.name in busy or job.name in batched):
                    results[index] = _Admission(SKIP_OVERLAP, in_the_way=tuple(busy.get(job.name, ())))
                    continue
                if over := self._over_budget(job, tally):
                    results[index] = _Admission(SKIP_BUDGET, over)
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
                    "runs_requested": job.runs_per_fire,
                    "owner": self.owner,
                    "lease_until": now + self.lease,
                }
            )
            placed.append(index)
        for index, fire in zip(placed, self.store.claim_many(claims), strict=True):
            results[index] = _Admission(None, None, fire)
        return results

    async def _submit(self, job: Job, fire: Fire, submission: Any) -> Fire:
        extra = {"job": job.name, "slot": fire.slot.isoformat()}
        delay = 1.0
        last: CekuraError | None = None
        for attempt in range(1, _SUBMIT_ATTEMPTS + 1):
            try:
                # Only the POST itself counts against max_concurrent_submissions: recording its answer, backing
                # off and looking a lost answer up by name leave the slot to the next submission.
                async with self._submissions:
                    result = await self.cekura.submit(submission)
            except CekuraUnavailableError as error:
                # Surely not taken into account by Cekura: safe to send again after a pause.
                last = error
                logger.warning(
                    "%s: %s (attempt %d of %d)", fire.submission_name, error, attempt, _SUBMIT_ATTEMPTS, extra=extra
                )
                if attempt < _SUBMIT_ATTEMPTS:
                    await self._sleep(
                        error.retry_after if error.retry_after is not None else delay * (0.5 + random.random())
                    )
                    delay *= 2
                continue
            except (CekuraAmbiguousError, CekuraResponseError) as error:
                # Maybe created: find it by name before anything else. Never blindly sent again.
                last = error
                logger.warning("%s: %s; looking it up by name", fire.submission_name, error, extra=extra)
                found = await self._find_submission(fire)
                if found is not None:
                    return await self._record_answer(job, fire, found)
                if isinstance(error, CekuraResponseError):
                    break
                continue
            except CekuraAuthError as error:
                self._key_rejected = True  # the next slots are skipped, not POSTed, until the key check passes
                await self._daemon_problem(
                    KEY_REJECTED, f"{error.message}\nNo job can be submitted until the key is fixed."
                )
                return await self._record_submit_error(job, fire, error, alert=False)
            except CekuraError as error:
                if "balance" in error.message.lower():
                    await self._daemon_problem("insufficient Cekura balance", error.message)
                    return await self._record_submit_error(job, fire, error, alert=False)
                return await self._record_submit_error(job, fire, error)
            self._daemon_problem_solved(KEY_REJECTED)
            self._daemon_problem_solved("insufficient Cekura balance")
            return await self._record_answer(job, fire, result)
        assert last is not None
        return await self._record_submit_error(job, fire, last)

    async def _find_submission(self, fire: Fire) -> ResultSummary | None:
        """Look a submission up by its unique name; None when Cekura surely has no such result."""
        for pause in (1.0, 3.0, 6.0):
            await self._sleep(pause)
            try:
                async with self._reads:
                    found = await self.cekura.find_by_name(fire.submission_name)
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
        raise _Unsettled(message)

    async def _record_answer(self, job: Job | None, fire: Fire, result: Result | ResultSummary) -> Fire:
        """Record the result Cekura created for a fire: its answer to the POST, or a search hit (adopted)."""
        assert result.id is not None
        now = self.clock.now()
        timeout = job.result_timeout if job is not None else timedelta(hours=1)
        runs = run_records(result) if isinstance(result, Result) else []
        recorded = await self._answers(
            {
                "fire_id": fire.id,
                "result_id": result.id,
                "status": result.status,
                "runs": runs,
                "at": now,
                "poll_deadline": now + timeout,
            }
        )
        if not recorded:
            logger.error(
                "%s: submitted as result %d, but the fire was settled elsewhere meanwhile; check for a duplicate",
                fire.submission_name,
                result.id,
                extra={"job": fire.job, "result_id": result.id},
            )
        self.stats.submitted += 1
        logger.info(
            "%s submitted as result %d (%s runs)",
            fire.submission_name,
            result.id,
            len(result.runs) if isinstance(result, Result) else "unknown",
            extra={"job": fire.job, "slot": fire.slot.isoformat(), "result_id": result.id},
        )
        if not recorded:
            refreshed = await self._db(self.store.get_fire, fire.id)
            assert refreshed is not None
            return refreshed
        # What the database now holds, without reading it back (a second transaction per fire).
        return dataclasses.replace(
            fire,
            state=SUBMITTED,
            result_id=result.id,
            result_status=result.status,
            submitted_at=now,
            poll_deadline=now + timeout,
            runs=runs,
        )

    async def _record_submit_error(self, job: Job, fire: Fire, error: CekuraError, *, alert: bool = True) -> Fire:
        self.stats.submit_errors += 1
        kind = type(error).__name__.removeprefix("Cekura").removesuffix("Error").lower() or "other"
        self.metrics.submission_errors.labels(kind).inc()
        logger.error(
            "%s not submitted: %s", fire.submission_name, error, extra={"job": job.name, "slot": fire.slot.isoformat()}
        )
        finished = await self._db(
            self._finish_routed,
            fire.id,
            job.name if alert else None,
            outcome=FAILED,
            at=self.clock.now(),
            error=error.message,
            error_status_code=error.status_code,
        )
        refreshed = await self._db(self.store.get_fire, fire.id)
        assert refreshed is not None
        if finished:
            self.stats.failed += 1
            self.metrics.fires.labels(job.name, FAILED).inc()
            self.outbox.wake.set()
        return refreshed

    def _finish_routed(self, fire_id: int, job_name: str | None, **recorded: Any) -> bool:
        """Record an outcome and its incident changes in one transaction (runs in a worker thread)."""
        route = self.incidents.router(job_name) if job_name is not None else None
        return self.store.finish(fire_id, route=route, **recorded)

    async def _settle_unanswered(self, fire: Fire) -> None:
        """A claim with no recorded answer (its process died): adopt Cekura's result if it exists.

        Otherwise the POST never arrived: submit it now if the slot is still within the job's catch-up window,
        else record the slot as skipped (lost-before-submit) and alert.
        """
        job = self.job(fire.job)
        self._submitting.add(fire.id)
        try:
            try:
                found = await self._find_submission(fire)
            except _Unsettled:
                return  # its lease runs out and a later sweep tries again
            if found is not None:
                settled = await self._record_answer(job, fire, found)
                self._start_following(settled)
            elif job is not None and self.clock.now() - fire.slot <= job.catch_up_window:
                logger.warning(
                    "%s: claimed but never sent; submitting it now", fire.submission_name, extra={"job": fire.job}
                )
                try:
                    submitted = await self._submit(job, fire, build_submission(job, fire.submission_name))
                except _Unsettled:
                    return  # sent again, answer lost, not found by name yet: a later sweep looks it up again
                if submitted.state == "submitted":
                    self._start_following(submitted)
            else:
                why = "its job is no longer configured" if job is None else "it is too late to catch up"
                await self._skip_lost(fire, why)
        except StoreError as error:
            logger.error("%s: cannot settle the claim: %s", fire.submission_name, error, extra={"job": fire.job})
        finally:
            self._submitting.discard(fire.id)

    async def _skip_lost(self, fire: Fire, why: str) -> None:
        error = f"the slot was claimed but its submission never reached Cekura, and {why}"
        if not await self._db(self.store.skip_claimed, fire.id, reason=SKIP_LOST, at=self.clock.now(), error=error):
            return
        logger.error("%s skipped (%s): %s", fire.submission_name, SKIP_LOST, error, extra={"job": fire.job})
        self.metrics.skipped.labels(fire.job, SKIP_LOST).inc()
        await self.incidents.slot_skipped(fire, reason=SKIP_LOST, detail=error)

    # -- following a result -----------------------------------------------------------------------------

    async def follow(self, fire: Fire) -> Fire:
        """Poll a submitted result with backoff until it ends or times out; record and alert its outcome."""
        if fire.id in self._following:
            raise SchedulerError(f"fire {fire.id} is already followed")
        self._following.add(fire.id)
        try:
            return await self._follow(fire)
        finally:
            self._following.discard(fire.id)

    async def _follow(self, fire: Fire) -> Fire:
        assert fire.result_id is not None
        job = self.job(fire.job)
        interval = self.config.daemon.poll_interval.total_seconds()
        ceiling = self.config.daemon.poll_max_interval.total_seconds()
        timeout = job.result_timeout if job is not None else timedelta(hours=1)
        deadline = fire.poll_deadline or (fire.submitted_at or fire.fired_at) + timeout
        extra = {"job": fire.job, "slot": fire.slot.isoformat(), "result_id": fire.result_id}
        last_status = fire.result_status
        while True:
            remaining = (deadline - self.clock.now()).total_seconds()
            if remaining <= 0:
                return await self._time_out(fire)
            await self._sleep(min(interval, remaining))
            interval = min(interval * 1.5, ceiling)
            try:
                async with self._reads:
                    result = await self.cekura.get_result(fire.result_id)
            except CekuraNotFoundError as error:
                self.metrics.polls.labels("not found").inc()
                return await self._finish(fire, outcome=FAILED, error=error.message, result_status="not found")
            except CekuraAuthError as error:
                self.metrics.polls.labels("error").inc()
                await self._daemon_problem(KEY_REJECTED, error.message)
                continue
            except CekuraError as error:
                self.metrics.polls.labels("error").inc()
                logger.warning("polling result %d: %s", fire.result_id, error, extra=extra)
                continue
            self.metrics.polls.labels(result.status).inc()
            if result.status != last_status:
                logger.info("result %d is %s", fire.result_id, result.status, extra=extra)
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
                    await self._db_quietly(self.store.record_poll, fire.id, result_status=result.status)
            if (verdict := result.verdict()) is not None:
                return await self._conclude(fire, result, verdict)

    async def _conclude(self, fire: Fire, result: Result, verdict: Verdict) -> Fire:
        """Record the verdict of a result that has ended, with its runs and Cekura's analysis of the failures."""
        return await self._finish(
            fire,
            outcome=verdict.outcome,
            result_status=result.status,
            error=verdict.reason,
            success_rate=result.success_rate,
            runs=run_records(result),
            failed_reasons=result.failed_reasons if not verdict.passed else None,
        )

    async def _look_again(self, fire: Fire, *, attempts: int = 4) -> Result | None:
        """Read a result, insisting a little: None when Cekura cannot be reached (CekuraNotFoundError passes)."""
        assert fire.result_id is not None
        pause = 2.0
        for attempt in range(1, attempts + 1):
            try:
                async with self._reads:
                    return await self.cekura.get_result(fire.result_id)
            except CekuraNotFoundError:
                raise
            except CekuraError as error:
                logger.warning(
                    "reading result %d before deciding (attempt %d of %d): %s",
                    fire.result_id,
                    attempt,
                    attempts,
                    error,
                    extra={"job": fire.job, "result_id": fire.result_id},
                )
                if attempt < attempts:
                    await self._sleep(pause)
                    pause *= 2
        return None

    async def _time_out(self, fire: Fire) -> Fire:
        """The deadline has passed: look once more, and only end the calls of a result that is still running.

        The result may have ended since the last poll, or this process may be taking over, after the deadline,
        a result whose follower died: then what Cekura says is the verdict, not a timeout.
        """
        assert fire.result_id is not None
        extra = {"job": fire.job, "result_id": fire.result_id}
        try:
            result = await self._look_again(fire)
        except CekuraNotFoundError as error:
            return await self._finish(fire, outcome=FAILED, error=error.message, result_status="not found")
        if result is not None and (verdict := result.verdict()) is not None:
            logger.info("result %d had ended (%s) by its deadline", fire.result_id, result.status, extra=extra)
            return await self._conclude(fire, result, verdict)
        status = result.status if result is not None else "unknown: Cekura could not be reached"
        logger.warning(
            "result %d did not finish in time (status %s); ending its calls", fire.result_id, status, extra=extra
        )
        runs: list[RunRecord] | None = None
        try:
            async with self._reads:
                await self.cekura.end_calls(fire.result_id)
                runs = run_records(await self.cekura.get_result(fire.result_id))
        except CekuraError as error:
            logger.warning("ending the calls of result %d: %s", fire.result_id, error, extra=extra)
        job = self.job(fire.job)
        limit = f" ({format_duration(job.result_timeout)})" if job is not None else ""
        return await self._finish(
            fire,
            outcome=FAILED,
            result_status="timeout",
            runs=runs,
            error=f"{TIMED_OUT}{limit}; it was {status} and its calls were ended",
        )

    async def _still_running(self, in_the_way: Sequence[Fire]) -> str | None:
        """Overlap: why the job's previous fire is still going, by Cekura's word; None once it has ended.

        The database only knows what the last poll saw, so each submitted result in the way is read once, and
        one that has ended is recorded (its verdict, its alert) before the slot is claimed. Nothing is read
        when nothing is in flight.
        """
        if not in_the_way:
            return _IN_FLIGHT
        for fire in in_the_way:
            if fire.state == CLAIMED or fire.result_id is None:
                return _IN_FLIGHT
            extra = {"job": fire.job, "result_id": fire.result_id}
            try:
                async with self._reads:
                    result = await self.cekura.get_result(fire.result_id)
            except CekuraNotFoundError as error:
                await self._finish(fire, outcome=FAILED, error=error.message, result_status="not found")
                continue
            except CekuraError as error:
                logger.warning("reading result %d for the overlap rule: %s", fire.result_id, error, extra=extra)
                return f"the previous result {fire.result_id} could not be read ({error.message})"
            if (verdict := result.verdict()) is None:
                return f"the previous result {fire.result_id} is still {result.status}"
            await self._conclude(fire, result, verdict)
            if (task := self._follow_tasks.get(fire.id)) is not None:
                task.cancel()  # its follower need not read it again
        return None

    async def _finish(
        self, fire: Fire, *, outcome: str, result_status: str | None, error: str | None = None, **recorded: Any
    ) -> Fire:
        """Record an outcome (and its alerts); while the database cannot take it, keep it and try again."""
        at = self.clock.now()
        finished = await self._db_patiently(
            f"the outcome of {fire.submission_name}",
            self._finish_routed,
            fire.id,
            fire.job,
            outcome=outcome,
            at=at,
            result_status=result_status,
            error=error,
            **recorded,
        )
        refreshed = await self._db_patiently(f"fire {fire.id}", self.store.get_fire, fire.id)
        assert refreshed is not None
        if not finished:
            return refreshed  # another process recorded it first, and alerted
        logger.info(
            "%s %s (result %s, %s)%s",
            fire.submission_name,
            outcome,
            fire.result_id,
            result_status,
            f": {error}" if error else "",
            extra={"job": fire.job, "slot": fire.slot.isoformat(), "result_id": fire.result_id, "outcome": outcome},
        )
        if outcome == PASSED:
            self.stats.passed += 1
        else:
            self.stats.failed += 1
        self.metrics.fires.labels(fire.job, outcome).inc()
        self.outbox.wake.set()
        return refreshed

    # -- alerts -----------------------------------------------------------------------------------------

    async def _daemon_problem(self, problem: str, detail: str) -> None:
        """Alert once about a problem of the whole daemon, until it is solved."""
        await self.incidents.problem(problem, detail)

    def _daemon_problem_solved(self, problem: str) -> None:
        if problem in self.incidents.open_problems():
            self._spawn(self.incidents.solved(problem))

    def _count_delivery(self, channel: str, ok: bool) -> None:
        self.metrics.alert_deliveries.labels(channel, "sent" if ok else "failed").inc()

    def open_incidents(self) -> list[Incident]:
        """The incidents open at the last sweep (for the status page)."""
        return list(self._open_incidents)

    # -- database calls run off the event loop ----------------------------------------------------------

    async def _db(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(call, *args, **kwargs)

    async def _db_patiently(self, what: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A write that must not be lost (a verdict): retried with backoff until the database takes it.

        The fire stays in this process's hands meanwhile (its lease is renewed as soon as the database answers),
        so no other replica decides it again; a stop cancels the wait, and the next start reads the result anew.
        """
        pause = 0.5
        while True:
            try:
                return await self._db(call, *args, **kwargs)
            except StoreError as error:
                logger.error("cannot record %s yet, trying again in %.0fs: %s", what, pause, error)
                await self._daemon_problem(DATABASE_DOWN, f"Cannot record {what}; it is kept and retried.\n{error}")
                await self._sleep(pause)
                pause = min(pause * 2, 30.0)

    async def _db_quietly(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        try:
            return await self._db(call, *args, **kwargs)
        except StoreError as error:
            logger.error("%s", error)
            return None

    async def trigger(self, job_name: str, *, wait: bool = False) -> Fire:
        """Fire one job now, recorded like any fire (slot = now); with ``wait``, follow it to its outcome."""
        job = self.config.jobs.get(job_name)
        if job is None:
            raise SchedulerError(f"no job named {job_name!r} in {self.config.path}", permanent=True)
        fire = await self.fire(job, self.clock.now(), trigger=MANUAL, follow=False)
        if fire is None:
            raise SchedulerError(f"{job_name}: the slot could not be claimed", permanent=True)
        if wait and fire.state == "submitted":
            heartbeat = self._spawn(self._heartbeat_forever())  # keep the lease: no daemon polls it meanwhile
            try:
                fire = await self.follow(fire)
            finally:
                heartbeat.cancel()
        else:
            # Hand it to the running daemon at once rather than when the lease ends.
            await self._db_quietly(self.store.release_leases, self.owner, [fire.id], at=self.clock.now())
        await asyncio.gather(
            *[task for task in self._tasks if task is not asyncio.current_task()], return_exceptions=True
        )
        with contextlib.suppress(StoreError):
            await self.outbox.deliver_due()  # this process's alerts, now; a running daemon would deliver the rest
        return fire


class _Unsettled(SchedulerError):
    """A submission could not be looked up by name; its claim stays for the next sweep."""
