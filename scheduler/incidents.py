"""Who is told what, and when: job incidents, daemon problems, reminders, silences and maintenance, the budget.

The daemon reports what happened (an outcome, a problem, a skipped slot); this module turns it into incident
changes and outbox messages, held while a job is muted by a maintenance window or a silence. The state lives in
the database, so a restart neither repeats an alert nor forgets an open incident.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from scheduler.alerts import (
    BUDGET,
    DAEMON_PROBLEM,
    DAEMON_RESOLVED,
    REMINDER,
    SKIPPED,
    Alert,
    AlertSender,
    daemon_payload,
    job_router,
    notice_payload,
    outcome_payload,
    render,
)
from scheduler.config import Config, Job, incident_policy
from scheduler.delivery import send_now
from scheduler.errors import StoreError
from scheduler.store import Fire, Hold, Notice, Router, Store

logger = logging.getLogger(__name__)

DATABASE_DOWN = "database unreachable"


class Incidents:
    """Incident bookkeeping for one daemon; every method is safe to call when the database is down."""

    def __init__(
        self,
        *,
        store: Store,
        sender: AlertSender,
        config: Callable[[], Config],
        clock: Callable[[], datetime],
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.sender = sender
        self.config = config
        self.clock = clock
        self.on_change = on_change  # wakes the outbox after a message was queued
        self._problems: set[str] = set()  # daemon problems known to be open (so solving one costs no query)
        self._database_down = False

    # -- muting ---------------------------------------------------------------------------------------------

    def held_until(self, job: str, at: datetime, holds: Sequence[Hold] | None = None) -> datetime | None:
        """When the job's alerts may go out again, if they are held now (mute window or silence); else None.

        ``holds``: the pauses and silences in force at ``at``, when the caller has read them already.
        """
        ends: list[datetime] = []
        window = self.config().maintenance_at(job, at)
        if window is not None and window[0].mode == "mute":
            ends.append(window[1])
        try:
            for hold in self.store.active_holds(at=at, job=job) if holds is None else holds:
                if hold.kind == "silence" and hold.job == job:
                    ends.append(hold.until or datetime.max.replace(tzinfo=UTC))
        except StoreError as error:
            logger.warning("cannot read silences: %s", error)
        return max(ends) if ends else None

    def paused_by_maintenance(self, job: str, at: datetime) -> str | None:
        """The maintenance window that pauses this job now, if any."""
        window = self.config().maintenance_at(job, at)
        return window[0].name if window is not None and window[0].mode == "pause" else None

    # -- job outcomes -----------------------------------------------------------------------------------------

    def router(self, job_name: str, holds: Sequence[Hold] | None = None) -> Router | None:
        """How a finished fire of this job moves its incidents (None for a job that is no longer configured).

        ``holds``: the pauses and silences in force now, when the caller has read them already.
        """
        config = self.config()
        job = config.jobs.get(job_name)
        if job is None or not job.alerts:
            return None
        now = self.clock()
        held_until = self.held_until(job_name, now, holds)
        return job_router(job=job, channels=config.channels, now=now, held_until=held_until)

    async def remind(self) -> None:
        """Queue reminders for open incidents whose ``remind_every`` has passed (not while muted)."""
        config, now = self.config(), self.clock()
        try:
            incidents = await asyncio.to_thread(self.store.open_incidents, scope="job")
        except StoreError as error:
            logger.warning("cannot read open incidents: %s", error)
            return
        for incident in incidents:
            job, channel = config.jobs.get(incident.subject), config.channels.get(incident.channel)
            if job is None or channel is None:
                continue
            every = incident_policy(job, channel).remind_every
            last = incident.last_notified_at or incident.notified_at
            if every is None or last is None or now - last < every:
                continue
            if await asyncio.to_thread(self.held_until, job.name, now):
                continue  # no reminders while the job's alerts are held
            fires = await asyncio.to_thread(self.store.recent_fires, job=job.name, limit=1)
            latest = await asyncio.to_thread(self.store.get_fire, fires[0].id) if fires else None
            if latest is None:
                continue
            payload = outcome_payload(REMINDER, latest, job=job, failing_since=incident.failing_since, now=now)
            if await asyncio.to_thread(
                self.store.notify_incident, incident.id, opening=False, at=now, notice=Notice(REMINDER, payload, now)
            ):
                logger.info("reminder queued for %s on %s", job.name, channel.name, extra={"job": job.name})
                self.on_change()

    # -- slots that will not run ------------------------------------------------------------------------------

    async def slot_skipped(self, fire: Fire, *, reason: str, detail: str) -> None:
        """Tell the job's channels that a slot will never run (e.g. lost before it reached Cekura)."""
        job = self.config().jobs.get(fire.job)
        channels = list(job.alerts) if job is not None else self.daemon_channels()
        now = self.clock()
        payload = notice_payload(
            SKIPPED, job=fire.job, slot=fire.slot, zone=job.timezone if job else None, reason=reason, detail=detail
        )
        deliver_at = await asyncio.to_thread(self.held_until, fire.job, now) or now
        for channel in channels:
            await asyncio.to_thread(
                self.store.enqueue, channel=channel, notice=Notice(SKIPPED, payload, deliver_at), at=now
            )
        self.on_change()

    async def over_budget(self, job: Job, slot: datetime, *, detail: str) -> None:
        """Say once per (UTC) day that a job's fires are skipped by the budget."""
        now = self.clock()
        payload = notice_payload(BUDGET, job=job.name, slot=slot, zone=job.timezone, reason="budget", detail=detail)
        opened = await asyncio.to_thread(
            self.store.open_incident,
            scope="budget",
            subject=f"{job.name}@{now:%Y-%m-%d}",
            channels=list(job.alerts) or self.daemon_channels(),
            at=now,
            detail=detail,
            notice=lambda _: Notice(BUDGET, payload, now),
        )
        if opened:
            self.on_change()

    # -- problems of the daemon itself -----------------------------------------------------------------------

    def daemon_channels(self, config: Config | None = None) -> list[str]:
        config = config or self.config()
        if config.daemon.alerts:
            return list(config.daemon.alerts)
        # No [daemon] alerts: tell everyone who listens to any job rather than no one.
        return sorted({channel for job in config.jobs.values() for channel in job.alerts})

    async def problem(self, problem: str, detail: str, *, subject: str | None = None) -> None:
        """A problem of the whole daemon: one incident (one alert per channel) until it is solved."""
        logger.error("%s: %s", problem, detail.splitlines()[0] if detail else "")
        key = subject or problem
        if key in self._problems:
            return
        if problem == DATABASE_DOWN:
            # The outbox lives in the database: tell people directly.
            self._problems.add(key)
            self._database_down = True
            await self._send_directly(daemon_payload(DAEMON_PROBLEM, problem, detail))
            return
        now = self.clock()
        payload = daemon_payload(DAEMON_PROBLEM, problem, detail)
        try:
            await asyncio.to_thread(
                self.store.open_incident,
                scope="daemon",
                subject=key,
                channels=self.daemon_channels(),
                at=now,
                detail=detail,
                notice=lambda _: Notice(DAEMON_PROBLEM, payload, now),
            )
        except StoreError as error:
            logger.error("cannot record the incident %r: %s", problem, error)
            return
        self._problems.add(key)
        self.on_change()

    async def solved(self, problem: str, *, subjects: list[str] | None = None) -> None:
        """A daemon problem went away: resolve its incident (and say so)."""
        keys = subjects or [problem]
        if not self._problems.intersection(keys):
            return
        self._problems.difference_update(keys)
        logger.info("solved: %s", problem)
        payload = daemon_payload(DAEMON_RESOLVED, problem, "Solved; the scheduler works normally again.")
        if problem == DATABASE_DOWN and self._database_down:
            self._database_down = False
            await self._send_directly(payload)
            return
        now = self.clock()
        try:
            await asyncio.to_thread(
                self.store.resolve_incident,
                scope="daemon",
                subjects=keys,
                at=now,
                notice=lambda _: Notice(DAEMON_RESOLVED, payload, now),
            )
        except StoreError as error:
            logger.error("cannot resolve the incident %r: %s", problem, error)
        self.on_change()

    async def load_open_problems(self) -> None:
        """Learn which daemon problems are open from the database (after a restart)."""
        try:
            incidents = await asyncio.to_thread(self.store.open_incidents, scope="daemon")
        except StoreError:
            return
        self._problems.update(incident.subject for incident in incidents)

    def open_problems(self) -> set[str]:
        return set(self._problems)

    async def announce(self, problem: str, detail: str, *, config: Config) -> None:
        """Tell the daemon channels of ``config`` at once, without an incident (e.g. a reload that removes every
        job: the new version may have no channels left to tell)."""
        logger.warning("%s: %s", problem, detail.splitlines()[0] if detail else "")
        await self._send_directly(daemon_payload(DAEMON_PROBLEM, problem, detail), config=config)

    async def _send_directly(self, payload: dict[str, Any], *, config: Config | None = None) -> None:
        config = config or self.config()
        channels = [config.channels[name] for name in self.daemon_channels(config) if name in config.channels]
        alerts: list[Alert] = [render(payload, channel) for channel in channels]
        results = await asyncio.gather(*(self.sender.send(c, a) for c, a in zip(channels, alerts, strict=True)))
        for channel, delivery in zip(channels, results, strict=True):
            if not delivery.ok:
                logger.error("alert to %s failed: %s", channel.name, delivery.detail)


__all__ = ["DATABASE_DOWN", "Incidents", "send_now"]
