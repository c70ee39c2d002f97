"""The long-running process: fire jobs at their slots, submit, follow results to a verdict, alert.

``Daemon`` is the composition root. It builds the parts, each a role with its I/O passed in through a
``Runtime``, starts the background loops as supervised named tasks, and shuts them down:

- ``timetable``  (pure) every enabled job's next slot, what is due, the catch-up plan for missed slots;
- ``admission``  whether a due slot may fire (key, maintenance, pause, budget, overlap), and its claim;
- ``submission`` the POST, its retries, and a lost answer looked up by name, never sent twice blindly;
- ``following``  polling each result to its verdict, the deadline, ending the calls of a timed-out result;
- ``pushed``     results Cekura pushes (webhooks), recorded through the follower's own path;
- ``missed``     slots missed while down or while the database was unreachable;
- ``upkeep``     the sweep (takeover of expired leases), the heartbeat, pruning, the API key check;
- ``reloading``  jobs.toml read again on SIGHUP or when it changes.

One asyncio loop; the timer sleeps until the earliest slot, and each due slot becomes a task. A failing job is
logged, recorded and alerted; it never stops the loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from scheduler import redaction
from scheduler.alerts import AlertSender
from scheduler.cekura import CekuraClient
from scheduler.clock import Clock, SystemClock
from scheduler.config import Config, ConfigSource, Job
from scheduler.daemon.admission import Admission
from scheduler.daemon.following import Follower
from scheduler.daemon.missed import MissedSlots
from scheduler.daemon.pushed import Pushed
from scheduler.daemon.reloading import Reloader
from scheduler.daemon.runtime import MANUAL, READS_IN_FLIGHT, SCHEDULED, Runtime
from scheduler.daemon.submission import Submitter
from scheduler.daemon.timetable import Timetable
from scheduler.daemon.upkeep import KEY_CHECK_EVERY, RELEASE_MEMORY_EVERY, Upkeep
from scheduler.errors import ConfigIssue, JobNotFoundError, SlotNotClaimedError, StoreError, SubmissionUnsettledError
from scheduler.incidents import DATABASE_DOWN
from scheduler.metrics import Metrics
from scheduler.schedules import submission_name
from scheduler.store import SUBMITTED, Fire, Hold, Incident, Store
from scheduler.supervision import LoopHealth, Supervisor

logger = logging.getLogger(__name__)

MAX_SLEEP = 5.0  # the timer wakes at least this often, so liveness can be judged by its ticks
SHUTDOWN_GRACE = 30.0  # seconds submissions in flight get to record their answer at shutdown

Loop = Callable[[Callable[[], None]], Awaitable[None]]


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
        owner: str | None = None,
        config_source: ConfigSource | None = None,
        metrics: Metrics | None = None,
        alert_backoff: timedelta = timedelta(seconds=5),
        key_check_every: float = KEY_CHECK_EVERY,
        webhooks: bool = False,
        release_memory: Callable[[], None] | None = None,
    ) -> None:
        redaction.install()
        redaction.register([*config.secrets, *cekura.secrets()])
        self.clock: Clock = clock or SystemClock()
        self.metrics = metrics or Metrics()
        self.runtime = rt = Runtime(
            config=config,
            store=store,
            cekura=cekura,
            alerts=alerts,
            clock=self.clock,
            metrics=self.metrics,
            owner=owner or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}",
            alert_backoff=alert_backoff,
        )
        self.metrics.in_flight.set_function(lambda: len(rt.in_flight.following))
        self.store, self.cekura, self.incidents, self.outbox = store, cekura, rt.incidents, rt.outbox
        self.stats, self.owner = rt.stats, rt.owner
        self.started_at: datetime | None = None
        self.ticked_at: datetime | None = None  # the timer's last turn: /healthz judges liveness by it
        self.timetable = Timetable()
        self._wake = asyncio.Event()
        self.follower = Follower(rt, webhooks=webhooks)
        self.pushed = Pushed(rt, follower=self.follower)
        self.admission = Admission(rt, still_running=self.follower.still_running)
        self.submitter = Submitter(rt)
        self.missed = MissedSlots(rt, admission=self.admission, fire=self.fire)
        self.upkeep = Upkeep(
            rt,
            follower=self.follower,
            submitter=self.submitter,
            missed=self.missed,
            key_check_every=key_check_every,
            release_memory=release_memory,
        )
        self.reloader = (
            Reloader(rt, source=config_source, timetable=self.timetable, wake=self._wake) if config_source else None
        )
        self.supervisor = Supervisor(
            clock=self.clock.now, sleep=self.clock.sleep, problem=rt.problem, solved=rt.incidents.solved
        )

    # -- what the web and the command line read -----------------------------------------------------------

    @property
    def config(self) -> Config:
        return self.runtime.config

    @property
    def config_source(self) -> ConfigSource | None:
        return self.reloader.source if self.reloader else None

    @property
    def config_errors(self) -> list[ConfigIssue]:
        """The problems of the file on disk, while it is invalid (the daemon runs the previous version)."""
        return self.reloader.errors if self.reloader else []

    @property
    def stopping(self) -> bool:
        """True once shutdown has begun: no new fires should be started (e.g. from the HTTP API)."""
        return self.runtime.stop.is_set()

    @staticmethod
    def redact(text: str) -> str:
        """Text with every secret the daemon knows replaced by ``***`` (for pages and answers)."""
        return redaction.redact(text)

    def loop_health(self) -> list[LoopHealth]:
        """Each background loop: when it last turned, whether it is down (for /healthz)."""
        return self.supervisor.health()

    def open_incidents(self) -> list[Incident]:
        """The incidents open at the last sweep (for the status page)."""
        return list(self.upkeep.open_incidents)

    def next_fire(self, name: str) -> datetime | None:
        """When the job fires next (its slot plus any jitter), or None when it is not planned."""
        return self.timetable.next_fire(name)

    def job(self, name: str) -> Job | None:
        """A job of the current config, or one removed by a reload whose results are still followed."""
        return self.runtime.job(name)

    # -- the loop ---------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Run until ``stop`` is set; then let submissions in flight finish and log one summary line."""
        rt = self.runtime
        if stop is not None:
            rt.stop = stop
        jobs = [job for job in rt.config.jobs.values() if job.enabled]
        logger.info(
            "daemon started with %d jobs (%d disabled) from %s",
            len(jobs),
            len(rt.config.jobs) - len(jobs),
            rt.config.path,
        )
        now = self.clock.now()
        self.started_at = self.ticked_at = now
        self.metrics.up.set(1)
        await rt.incidents.load_open_problems()
        await self.upkeep.check_key()  # before the first slot: a refused key is known before anything is POSTed
        await self.missed.after_downtime(jobs, now)
        for job in jobs:
            self.timetable.plan(job, after=now)
        for due in self.timetable.upcoming(10):
            logger.info("next fire of %s at %s", due.job, due.fire_at.isoformat(), extra={"job": due.job})
        background = [
            self.supervisor.start(name, body, stale_after=stale) for name, body, stale in self._background_loops()
        ]
        timer = self.supervisor.start("timer", self._timer, stale_after=timedelta(seconds=6 * MAX_SLEEP))
        try:
            await timer
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            self.metrics.up.set(0)
            await rt.shut_down(grace=SHUTDOWN_GRACE)

    def _background_loops(self) -> list[tuple[str, Loop, timedelta]]:
        """Each supervised loop with the time after which a loop that has not turned counts as stuck."""
        rt, upkeep, minute = self.runtime, self.upkeep, timedelta(minutes=1)
        loops: list[tuple[str, Loop, timedelta]] = [
            ("sweep", upkeep.sweep_forever, timedelta(seconds=3 * upkeep.sweep_every()) + minute),
            ("heartbeat", upkeep.heartbeat_forever, timedelta(seconds=3 * upkeep.heartbeat_every()) + minute),
            ("outbox", lambda tick: rt.outbox.run(rt.stop, tick), minute),
            ("prune", upkeep.prune_forever, timedelta(hours=2)),
        ]
        if self.reloader is not None:
            loops.append(("config-watch", self.reloader.watch_forever, minute))
        key_stale = timedelta(seconds=3 * upkeep.key_check_every) + minute
        loops.append(("key-check", upkeep.check_key_forever, key_stale))
        if upkeep.release_memory is not None:
            loops.append(("memory", upkeep.release_memory_forever, timedelta(seconds=3 * RELEASE_MEMORY_EVERY)))
        return loops

    async def _timer(self, tick: Callable[[], None]) -> None:
        """Spawn each due slot's fire and sleep until the next one (at most ``MAX_SLEEP``)."""
        rt = self.runtime
        while not rt.stop.is_set():
            tick()
            now = self.ticked_at = self.clock.now()
            while (due := self.timetable.pop_due(now)) is not None:
                try:
                    job = rt.config.jobs[due.job]
                    rt.spawn(self.fire(job, due.slot), f"fire {submission_name(due.job, due.slot)}")
                    self.timetable.plan(job, after=due.slot)
                except Exception:
                    # Put it back: the loop restarts (supervised) and tries again; the claim stops a second POST.
                    self.timetable.put_back(due)
                    raise
            wait = self.timetable.seconds_until_next(now)
            self._wake.clear()
            await self.clock.wait(rt.stop, self._wake, within=min(MAX_SLEEP if wait is None else wait, MAX_SLEEP))

    # -- one fire ---------------------------------------------------------------------------------------

    async def fire(self, job: Job, slot: datetime, *, trigger: str = SCHEDULED, follow: bool = True) -> Fire | None:
        """Claim the slot, submit it, record the answer and start following the result.

        Returns the fire as recorded (a skipped slot's row, when it was skipped), or None when the slot was
        already claimed (by this or another process) or could not be claimed.
        """
        rt = self.runtime
        rt.stats.fired += 1
        admitted = await self.admission.admit(job, slot, trigger)
        if not admitted.claimed or admitted.fire is None:
            return admitted.fire
        if self.admission.unrecorded:
            rt.spawn(self.missed.unrecorded())
        claimed = admitted.fire
        logger.info(
            "firing %s (%s runs)",
            claimed.submission_name,
            job.runs_per_fire if job.runs_per_fire is not None else "as Cekura selects",
            extra={"job": job.name, "slot": slot},
        )
        try:
            fire = await self.submitter.submit(job, claimed)
        except SubmissionUnsettledError:
            return claimed  # left claimed; the sweep looks it up again later
        except StoreError as error:
            # Answers and verdicts are written patiently; should another read fail, Cekura may have the
            # submission, and the sweep finds it by name once the database is back and the lease has run out.
            logger.error("%s: cannot record the answer: %s", claimed.submission_name, error, extra={"job": job.name})
            await rt.problem(DATABASE_DOWN, f"Cannot record the answer to {claimed.submission_name}.\n{error}")
            return claimed
        finally:
            rt.in_flight.submitted(claimed.id)
        if fire.state == SUBMITTED and follow:
            self.follower.start(fire)
        return fire

    async def trigger(self, job_name: str, *, wait: bool = False) -> Fire:
        """Fire one job now, recorded like any fire (slot = now); with ``wait``, follow it to its outcome."""
        rt = self.runtime
        job = rt.config.jobs.get(job_name)
        if job is None:
            raise JobNotFoundError(f"no job named {job_name!r} in {rt.config.path}")
        fire = await self.fire(job, self.clock.now(), trigger=MANUAL, follow=False)
        if fire is None:
            raise SlotNotClaimedError(f"{job_name}: the slot could not be claimed")
        if wait and fire.state == SUBMITTED:
            heartbeat = rt.spawn(self.upkeep.heartbeat_forever())  # keep the lease: no daemon polls it meanwhile
            try:
                fire = await self.follower.follow(fire)
            finally:
                heartbeat.cancel()
        else:
            # Hand it to the running daemon at once rather than when the lease ends.
            await rt.db_quietly(rt.store.release_leases, rt.owner, [fire.id], at=self.clock.now())
        await asyncio.gather(*[task for task in rt.tasks if task is not asyncio.current_task()], return_exceptions=True)
        try:
            await rt.outbox.deliver_due()  # this process's alerts, now; a running daemon would deliver the rest
        except StoreError as error:
            logger.warning("alerts of %s are delivered by the running daemon: %s", job_name, error)
        return fire

    # -- pauses -----------------------------------------------------------------------------------------

    async def pause(self, name: str, *, by: str, reason: str, until: datetime | None = None) -> Hold:
        """Stop firing a job (its slots are recorded as skipped: paused) until resumed or ``until``."""
        return await self.admission.pause(name, by=by, reason=reason, until=until)

    async def resume(self, name: str, *, by: str) -> bool:
        """Fire a paused job again from its next slot; False when it was not paused."""
        return await self.admission.resume(name, by=by)

    # -- reloading --------------------------------------------------------------------------------------

    def request_reload(self) -> None:
        """Ask for the config file to be read again now (SIGHUP)."""
        if self.reloader is not None:
            self.reloader.request()

    async def reload(self) -> bool:
        """Read the config file again and apply it when valid; whether a new version was applied."""
        if self.reloader is None:
            raise RuntimeError("this daemon was started without a config file to reload")
        return await self.reloader.reload()


__all__ = ["MANUAL", "READS_IN_FLIGHT", "SCHEDULED", "Daemon"]
