"""The JSON API of the HTTP server: the jobs, their fires, and the actions (trigger, pause, resume).

The status page's buttons post to the same actions as forms; they are then answered with a redirect back to the
page instead of JSON. Every error text the daemon hands over goes through ``Daemon.redact`` first.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable
from datetime import datetime
from typing import Any, NamedTuple
from urllib.parse import urlencode

from aiohttp import web

from scheduler.access import Access, from_page
from scheduler.config import Job
from scheduler.daemon import MANUAL, Daemon
from scheduler.store import Fire, Hold, Incident
from scheduler.views import fire_as_dict, hold_as_dict, incident_as_dict, incident_job, iso, longest_holds, outcome_word

logger = logging.getLogger(__name__)

_DEFAULT_LIMIT = 20  # fires per page of /api/jobs/{name}/fires
_MAX_LIMIT = 1000


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(data, default=str, indent=1), status=status, content_type="application/json", charset="utf-8"
    )


def error_response(status: int, message: str) -> web.Response:
    return json_response({"error": message}, status)


class Refused(Exception):
    """A request the API turns down, with the status and the reason to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Reading(NamedTuple):
    """What the database and the daemon say of every job."""

    last: dict[str, Fire]  # each job's newest fire
    holds: dict[tuple[str, str], Hold]  # (job, kind) -> the pause or silence in force
    recent: dict[str, list[Fire]]  # each job's newest fires, newest first
    incidents: dict[str, list[Incident]]  # by job, "" for the daemon's own


def next_fire(daemon: Daemon, job: Job, now: datetime) -> datetime | None:
    """When the job fires next (None when it is disabled)."""
    if not job.enabled:
        return None
    return daemon.next_fire(job.name) or job.schedule.next_after(now)


class Api:
    """The handlers of ``/api``; ``drain`` lets the actions still running end at shutdown."""

    def __init__(self, *, daemon: Daemon, access: Access) -> None:
        self.daemon = daemon
        self.access = access
        self._actions: set[asyncio.Task[Any]] = set()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/jobs", self.jobs),
            web.get("/api/jobs/{name}/fires", self.job_fires),
            web.get(r"/api/fires/{id:\d+}", self.fire),
            web.post("/api/jobs/{name}/trigger", self.trigger),
            web.post("/api/jobs/{name}/pause", self.pause),
            web.post("/api/jobs/{name}/resume", self.resume),
        ]

    async def drain(self, within: float) -> None:
        """Wait up to ``within`` seconds for the actions still running."""
        if self._actions:
            await asyncio.wait(self._actions, timeout=within)

    # -- reading ----------------------------------------------------------------------------------------

    def incidents(self) -> dict[str, list[Incident]]:
        """The daemon's open incidents by job ("" for the daemon's own)."""
        by_job: dict[str, list[Incident]] = {}
        for incident in self.daemon.open_incidents():
            by_job.setdefault(incident_job(incident), []).append(incident)
        return by_job

    async def read(self, history: int) -> Reading:
        """Every job's last fire, pause and silence, and ``history`` recent fires (one thread hop)."""
        names = list(self.daemon.config.jobs)
        now = self.daemon.clock.now()
        store = self.daemon.store

        def read() -> tuple[dict[str, Fire], dict[tuple[str, str], Hold], dict[str, list[Fire]]]:
            last = store.last_fires_by_job()
            holds = longest_holds(store.active_holds(at=now))
            recent = {name: store.recent_fires(job=name, limit=history) for name in names} if history else {}
            return last, holds, recent

        last, holds, recent = await asyncio.to_thread(read)
        return Reading(last, holds, recent, self.incidents())

    def _fire(self, fire: Fire, *, runs: bool = False) -> dict[str, Any]:
        return fire_as_dict(fire, runs=runs, redact=self.daemon.redact)

    async def jobs(self, request: web.Request) -> web.Response:
        """Every job: schedule, next fire, its pause and silence (who, why, since, until), last outcome, incidents."""
        reading = await self.read(history=0)
        now = self.daemon.clock.now()
        items = []
        for job in self.daemon.config.jobs.values():
            fire = reading.last.get(job.name)
            pause, silence = reading.holds.get((job.name, "pause")), reading.holds.get((job.name, "silence"))
            incidents = [
                incident_as_dict(item, redact=self.daemon.redact) for item in reading.incidents.get(job.name, [])
            ]
            items.append(
                {
                    "name": job.name,
                    "schedule": job.schedule.in_words(),
                    "describe": job.schedule.describe(),
                    "timezone": str(job.timezone),
                    "enabled": job.enabled,
                    "paused": pause is not None,
                    "pause": hold_as_dict(pause),
                    "silenced": silence is not None,
                    "silence": hold_as_dict(silence),
                    "next_fire": iso(next_fire(self.daemon, job, now)),
                    "last_outcome": outcome_word(fire) if fire is not None else None,
                    "last_fire": self._fire(fire) if fire is not None else None,
                    "open_incident": next(iter(incidents), None),
                    "open_incidents": incidents,
                }
            )
        config = self.daemon.config
        valid = not self.daemon.config_errors
        return json_response(
            {"config": {"path": str(config.path), "digest": config.digest, "valid": valid}, "jobs": items}
        )

    async def job_fires(self, request: web.Request) -> web.Response:
        """A job's newest fires first; ``?limit=`` (1..1000, default 20)."""
        name = request.match_info["name"]
        try:
            limit = int(request.query.get("limit", str(_DEFAULT_LIMIT)))
        except ValueError:
            return error_response(400, "limit must be a whole number")
        if not 1 <= limit <= _MAX_LIMIT:
            return error_response(400, f"limit must be between 1 and {_MAX_LIMIT}")
        fires = await asyncio.to_thread(self.daemon.store.recent_fires, job=name, limit=limit)
        if not fires and self.daemon.job(name) is None:
            return error_response(404, f"no job named {name!r}")
        return json_response({"job": name, "fires": [self._fire(fire) for fire in fires]})

    async def fire(self, request: web.Request) -> web.Response:
        """One fire with the outcome of each of its runs."""
        fire_id = int(request.match_info["id"])
        fire = await asyncio.to_thread(self.daemon.store.get_fire, fire_id)
        if fire is None:
            return error_response(404, f"no fire {fire_id}")
        return json_response(self._fire(fire, runs=True))

    # -- acting -----------------------------------------------------------------------------------------

    @staticmethod
    async def _fields(request: web.Request) -> dict[str, str]:
        if from_page(request):
            return {key: str(value) for key, value in (await request.post()).items()}
        if request.can_read_body and request.content_type == "application/json":
            try:
                data = await request.json()
            except ValueError:
                raise Refused(400, "the body is not valid JSON") from None
            if not isinstance(data, dict):
                raise Refused(400, "the body must be a JSON object")
            return {key: str(value) for key, value in data.items() if value is not None}
        return {}

    def _configured(self, request: web.Request) -> Job:
        name = request.match_info["name"]
        job = self.daemon.config.jobs.get(name)
        if job is None:
            raise Refused(404, f"no job named {name!r} in the config")
        return job

    @staticmethod
    def _done(request: web.Request, action: str, job: Job, data: dict[str, Any], status: int) -> web.Response:
        """The answer to an action: JSON for the API, back to the status page for its buttons."""
        if not from_page(request):
            return json_response(data, status)
        query = {"done": action, "job": job.name, **({"fire": data["id"]} if "id" in data else {})}
        raise web.HTTPSeeOther(f"/?{urlencode(query)}")

    def _who(self, request: web.Request, fields: dict[str, str]) -> str:
        by = fields.get("by") or ("status page" if from_page(request) else "http api")
        return f"{by} ({self.access.client(request)})"[:100]

    async def _shielded(self, action: Awaitable[Any]) -> Any:
        """Run an action to its end even if the client goes away meanwhile."""
        task: asyncio.Task[Any] = asyncio.ensure_future(action)
        self._actions.add(task)
        task.add_done_callback(self._actions.discard)
        return await asyncio.shield(task)

    async def trigger(self, request: web.Request) -> web.Response:
        """Fire the job now (slot = now), recorded like any fire; answers once the submission is recorded."""
        job = self._configured(request)
        fields = await self._fields(request)
        if self.daemon.stopping:
            return error_response(503, "the daemon is shutting down: nothing new is fired")
        logger.info("%s triggered by %s", job.name, self._who(request, fields), extra={"job": job.name})
        fire = await self._shielded(self.daemon.fire(job, self.daemon.clock.now(), trigger=MANUAL))
        if fire is None:
            return error_response(
                503, f"{job.name} was not fired: its slot could not be claimed (see the daemon's log)"
            )
        return self._done(request, "triggered", job, self._fire(fire), 201)

    async def pause(self, request: web.Request) -> web.Response:
        """Pause the job: its slots are recorded as skipped (paused) until resumed or ``until``."""
        job = self._configured(request)
        fields = await self._fields(request)
        until: datetime | None = None
        if fields.get("until"):
            try:
                until = datetime.fromisoformat(fields["until"])
            except ValueError:
                return error_response(400, "until must be an ISO 8601 time with its offset, e.g. 2026-12-01T08:00:00Z")
            if until.tzinfo is None:
                return error_response(400, "until needs an offset (e.g. Z or +00:00)")
            if until <= self.daemon.clock.now():
                return error_response(400, "until is in the past")
        reason = (fields.get("reason") or "paused over HTTP").strip()[:1000]
        hold = await self._shielded(
            self.daemon.pause(job.name, by=self._who(request, fields), reason=reason, until=until)
        )
        return self._done(request, "paused", job, {"job": job.name, "paused": True, "pause": hold_as_dict(hold)}, 200)

    async def resume(self, request: web.Request) -> web.Response:
        """Resume a paused job from its next slot."""
        job = self._configured(request)
        fields = await self._fields(request)
        resumed = await self._shielded(self.daemon.resume(job.name, by=self._who(request, fields)))
        return self._done(request, "resumed", job, {"job": job.name, "resumed": resumed}, 200)


__all__ = ["Api", "Reading", "Refused", "error_response", "json_response", "next_fire"]
