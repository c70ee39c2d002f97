"""The JSON API of the HTTP server: the jobs, their fires, and the actions (trigger, pause, resume).

The status page's buttons post to the same actions as forms; they are then answered with a redirect back to the
page instead of JSON. Every error text the daemon hands over goes through ``Daemon.redact`` first.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple
from urllib.parse import urlencode

from aiohttp import web

from scheduler.access import Access, from_page
from scheduler.config import Job
from scheduler.daemon import MANUAL, Daemon
from scheduler.store import FAILED, Fire, Hold, Incident
from scheduler.views import fire_as_dict, hold_as_dict, incident_as_dict, incident_job, iso, longest_holds, outcome_word

logger = logging.getLogger(__name__)

_DEFAULT_LIMIT = 20  # fires per page of /api/jobs/{name}/fires
# A reading is put off while a fire is this close to due, until this long after it: reading and drawing a page
# is tens of milliseconds of CPU, and the fire (which needs the GIL, whichever thread the page runs in) waits
# behind it. A fire's POST leaves within a few milliseconds of its slot; one wait per step, so it is bounded.
_FIRE_SOON = 0.1
_FIRE_GONE = 0.05
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


@dataclass(frozen=True)
class View:
    """Which jobs a request asks for: those whose name holds ``q`` (any case), only the failing ones, one page.

    A job is failing when its last fire failed or it has an open incident. ``limit`` None means every job.
    """

    q: str = ""
    failing: bool = False
    offset: int = 0
    limit: int | None = None


def _whole(query: Mapping[str, str], key: str, default: int, *, least: int) -> int:
    text = query.get(key, "")
    if not text:
        return default
    try:
        number = int(text)
    except ValueError:
        raise Refused(400, f"{key} must be a whole number") from None
    if number < least:
        raise Refused(400, f"{key} must be at least {least}")
    return number


def api_view(query: Mapping[str, str]) -> View:
    """What ``/api/jobs`` is asked: ``?q=`` a part of the job name, ``?state=failing``, ``?offset=`` (default 0)
    and ``?limit=`` (default: every job)."""
    state = query.get("state", "")
    if state not in ("", "failing"):
        raise Refused(400, "state must be failing (or left out)")
    limit = _whole(query, "limit", 0, least=1) if query.get("limit") else None
    return View(
        q=query.get("q", "").strip()[:100],
        failing=state == "failing",
        offset=_whole(query, "offset", 0, least=0),
        limit=limit,
    )


class Reading(NamedTuple):
    """What the database and the daemon say of the jobs of one view."""

    jobs: list[Job]  # the jobs of the page asked for, in the config's order
    total: int  # jobs that pass the filter, on every page
    last: dict[str, Fire]  # each job's newest fire (of ``jobs``)
    holds: dict[tuple[str, str], Hold]  # (job, kind) -> the pause or silence in force
    recent: dict[str, list[Fire]]  # each job's newest fires, newest first (of ``jobs``)
    incidents: dict[str, list[Incident]]  # by job, "" for the daemon's own


def failing(fire: Fire | None, incidents: list[Incident]) -> bool:
    """Whether a job is failing: its last fire failed, or it has an open incident."""
    return bool(incidents) or (fire is not None and fire.outcome == FAILED)


def _jobs_json(
    head: dict[str, Any],
    reading: Reading,
    upcoming: dict[str, datetime | None],
    redact: Callable[[str], str],
) -> str:
    """The answer of ``/api/jobs`` (a pure function of what was read)."""
    items = []
    for job in reading.jobs:
        fire = reading.last.get(job.name)
        pause, silence = reading.holds.get((job.name, "pause")), reading.holds.get((job.name, "silence"))
        incidents = [incident_as_dict(item, redact=redact) for item in reading.incidents.get(job.name, [])]
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
                "next_fire": iso(upcoming[job.name]),
                "last_outcome": outcome_word(fire) if fire is not None else None,
                "last_fire": fire_as_dict(fire, redact=redact) if fire is not None else None,
                "open_incident": next(iter(incidents), None),
                "open_incidents": incidents,
            }
        )
    return json.dumps(head | {"jobs": items}, default=str, indent=1)


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

    async def after_due_fires(self) -> None:
        """Wait for a fire due in the next moment to be sent before doing a page's work (see ``_FIRE_SOON``)."""
        wait = self.daemon.timetable.seconds_until_next(self.daemon.clock.now())
        if wait is not None and wait < _FIRE_SOON:
            await asyncio.sleep(wait + _FIRE_GONE)  # real time: it is the CPU, not the schedule, being shared

    def named(self, view: View) -> list[Job]:
        """The jobs of the config whose name holds ``view.q`` (any case), in the config's order."""
        needle = view.q.casefold()
        return [job for name, job in self.daemon.config.jobs.items() if needle in name.casefold()]

    async def read(self, view: View, *, history: int) -> Reading:
        """The jobs of ``view``: their last fire, pause and silence, ``history`` recent fires (one thread hop).

        Only the jobs of the page are read (and, for ``failing``, the last fire of those the name lets through):
        each job's newest fires come from its end of the (job, id) index, whatever the history holds.
        """
        jobs = self.daemon.config.jobs
        names = [job.name for job in self.named(view)]
        incidents = self.incidents()
        now = self.daemon.clock.now()
        store = self.daemon.store
        end = None if view.limit is None else view.offset + view.limit

        def read() -> tuple[list[str], int, dict[str, Fire], dict[tuple[str, str], Hold], dict[str, list[Fire]]]:
            chosen, last = names, {}
            if view.failing:
                last = store.last_fires_by_job(names)
                chosen = [name for name in names if failing(last.get(name), incidents.get(name, []))]
            shown = chosen[view.offset : end]
            recent = store.recent_fires_by_job(shown, limit=history) if history else {}
            if history:
                last = {name: fires[0] for name, fires in recent.items()}
            elif not view.failing:
                last = store.last_fires_by_job(shown)
            holds = longest_holds(store.active_holds(at=now))
            return shown, len(chosen), last, holds, recent

        await self.after_due_fires()
        shown, total, last, holds, recent = await asyncio.to_thread(read)
        return Reading([jobs[name] for name in shown], total, last, holds, recent, incidents)

    def _fire(self, fire: Fire, *, runs: bool = False) -> dict[str, Any]:
        return fire_as_dict(fire, runs=runs, redact=self.daemon.redact)

    async def jobs(self, request: web.Request) -> web.Response:
        """The jobs (every one, or ``?offset=``/``?limit=`` of those ``?q=``/``?state=failing`` let through):
        schedule, next fire, pause and silence (who, why, since, until), last outcome, open incidents."""
        view = api_view(request.query)
        reading = await self.read(view, history=0)
        now = self.daemon.clock.now()
        upcoming = {job.name: next_fire(self.daemon, job, now) for job in reading.jobs}
        config = self.daemon.config
        head = {
            "config": {"path": str(config.path), "digest": config.digest, "valid": not self.daemon.config_errors},
            "total": reading.total,
            "offset": view.offset,
            "limit": view.limit,
        }
        # The daemon's state is read above, on the loop; what is left is formatting, done in a thread so that
        # a thousand jobs' worth of JSON does not hold the loop (and the fires due meanwhile).
        await self.after_due_fires()
        text = await asyncio.to_thread(_jobs_json, head, reading, upcoming, self.daemon.redact)
        return web.Response(text=text, content_type="application/json", charset="utf-8")

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
    def _done(
        request: web.Request, action: str, job: Job, data: dict[str, Any], status: int, fields: dict[str, str]
    ) -> web.Response:
        """The answer to an action: JSON for the API, back to the status page for its buttons (to the same page
        and filter, which the buttons' forms carry)."""
        if not from_page(request):
            return json_response(data, status)
        kept = {key: fields[key] for key in ("q", "state", "page") if fields.get(key)}
        query = {"done": action, "job": job.name, **({"fire": data["id"]} if "id" in data else {}), **kept}
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
        return self._done(request, "triggered", job, self._fire(fire), 201, fields)

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
        answer = {"job": job.name, "paused": True, "pause": hold_as_dict(hold)}
        return self._done(request, "paused", job, answer, 200, fields)

    async def resume(self, request: web.Request) -> web.Response:
        """Resume a paused job from its next slot."""
        job = self._configured(request)
        fields = await self._fields(request)
        resumed = await self._shielded(self.daemon.resume(job.name, by=self._who(request, fields)))
        return self._done(request, "resumed", job, {"job": job.name, "resumed": resumed}, 200, fields)


__all__ = [
    "Api",
    "Reading",
    "Refused",
    "View",
    "api_view",
    "error_response",
    "failing",
    "json_response",
    "next_fire",
]
