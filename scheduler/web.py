"""The daemon's HTTP server: health, readiness, Prometheus metrics, a JSON API and a status page.

It runs on the daemon's event loop (aiohttp's AppRunner). The rule for access: ``/healthz`` is open; when a token
is set (``SCHEDULER_HTTP_TOKEN``), everything else needs it, as ``Authorization: Bearer <token>`` or as the
session cookie the status page's login form sets. Without a token the server only listens on loopback, and it
then also refuses requests whose ``Host`` is not a loopback name (a web page cannot reach it through DNS
rebinding). POST actions from a browser must come from the server's own origin. Nothing here shows a secret:
alert URLs and the API key never reach a page or an answer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import SecretStr

from scheduler import __version__
from scheduler.config import Job
from scheduler.daemon import MANUAL, Daemon
from scheduler.errors import SchedulerError, StoreError, count_errors
from scheduler.store import FAILED, PASSED, SKIPPED, Fire, Hold

logger = logging.getLogger(__name__)

LIVENESS = timedelta(seconds=30)  # the timer turns at least every 5 s; six missed turns means it is stuck
HISTORY = 20  # outcomes shown per job on the status page
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
_COOKIE = "cekura_scheduler_session"
_OPEN_PATHS = frozenset({"/healthz", "/login"})
_MAX_LIMIT = 1000

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _iso(instant: datetime | None) -> str | None:
    return instant.isoformat() if instant is not None else None


def outcome_word(fire: Fire) -> str:
    """A fire's outcome in a word or two: passed, failed, skipped (reason), in flight, claimed."""
    if fire.state == "skipped":
        return f"skipped ({fire.skip_reason})"
    if fire.outcome is None:
        return "in flight" if fire.state == "submitted" else "claimed"
    return fire.outcome


def fire_as_dict(fire: Fire, *, runs: bool = False) -> dict[str, Any]:
    """A fire as the JSON API (and ``history --format json``) shows it."""
    data: dict[str, Any] = {
        "id": fire.id,
        "job": fire.job,
        "slot": _iso(fire.slot),
        "trigger": fire.trigger,
        "state": fire.state,
        "outcome": fire.outcome,
        "summary": outcome_word(fire),
        "skip_reason": fire.skip_reason,
        "submission_name": fire.submission_name,
        "endpoint": fire.endpoint,
        "runs_requested": fire.runs_requested,
        "result_id": fire.result_id,
        "result_status": fire.result_status,
        "success_rate": fire.success_rate,
        "error": fire.error,
        "error_status_code": fire.error_status_code,
        "fired_at": _iso(fire.fired_at),
        "submitted_at": _iso(fire.submitted_at),
        "finished_at": _iso(fire.finished_at),
    }
    if runs:
        data["failed_reasons"] = fire.failed_reasons
        data["runs"] = [dataclasses.asdict(run) for run in fire.runs]
    return data


def _hold_as_dict(hold: Hold) -> dict[str, Any]:
    return {"by": hold.created_by, "reason": hold.reason, "since": _iso(hold.starts_at), "until": _iso(hold.until)}


def _plain(item: Any) -> dict[str, Any]:
    """An open incident as a dict, whatever shape the daemon gives it."""
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return dataclasses.asdict(item)
    if isinstance(item, dict):
        return dict(item)
    if callable(getattr(item, "model_dump", None)):
        return dict(item.model_dump())
    return {"job": getattr(item, "job", None), "summary": str(item)}


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(data, default=str, indent=1), status=status, content_type="application/json", charset="utf-8"
    )


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


def _relative(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    size = abs(seconds)
    if size < 90:
        text = f"{size}s"
    elif size < 5400:
        text = f"{round(size / 60)} min"
    elif size < 172800:
        text = f"{round(size / 3600)} h"
    else:
        text = f"{round(size / 86400)} days"
    return f"in {text}" if seconds >= 0 else f"{text} ago"


def _local(instant: datetime, job: Job | None) -> str:
    zone = job.timezone if job is not None else UTC
    return f"{instant.astimezone(zone):%Y-%m-%d %H:%M:%S %Z}"


class _Refused(Exception):
    """A request the API turns down, with the status and the reason to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class WebServer:
    """The HTTP server of one daemon; ``start`` it on the daemon's loop and ``stop`` it at shutdown."""

    def __init__(
        self,
        *,
        daemon: Daemon,
        host: str = "127.0.0.1",
        port: int = 8787,
        token: SecretStr | None = None,
        refresh: int = 10,
    ) -> None:
        secret = token.get_secret_value() if token is not None else ""
        if not secret and host not in _LOOPBACK:
            raise SchedulerError(f"the HTTP server listens on {host}, beyond this machine: it needs a token")
        self.daemon = daemon
        self.host = host
        self.port = port
        self.refresh = refresh
        self._token = secret.encode() or None
        # The status page's cookie holds a value derived from the token, not the token itself.
        self._session = hmac.new(secret.encode(), b"cekura-scheduler status page", hashlib.sha256).hexdigest()
        self._runner: web.AppRunner | None = None
        self._actions: set[asyncio.Task[Any]] = set()
        self.app = web.Application(middlewares=[self._guard])
        self.app.add_routes(
            [
                web.get("/", self.status_page),
                web.post("/login", self.login),
                web.get("/healthz", self.healthz),
                web.get("/readyz", self.readyz),
                web.get("/metrics", self.metrics),
                web.get("/api/jobs", self.jobs),
                web.get("/api/jobs/{name}/fires", self.job_fires),
                web.get(r"/api/fires/{id:\d+}", self.fire),
                web.post("/api/jobs/{name}/trigger", self.trigger),
                web.post("/api/jobs/{name}/pause", self.pause),
                web.post("/api/jobs/{name}/resume", self.resume),
            ]
        )

    # -- lifetime ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on host:port (port 0 picks a free one; ``port`` then tells which)."""
        self._runner = web.AppRunner(self.app, shutdown_timeout=5.0)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self.host, self.port).start()
        except OSError as error:
            await self._runner.cleanup()
            self._runner = None
            raise SchedulerError(
                f"cannot listen on {self.host}:{self.port} (SCHEDULER_HTTP_ADDR): {error.strerror}", permanent=True
            ) from None
        self.port = int(self._runner.addresses[0][1])
        logger.info(
            "HTTP server on %s (status page, /healthz, /metrics, /api; %s)",
            self.url,
            "token required" if self._token else "no token: loopback only",
        )

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        """Stop listening; an action still running (a manual fire being submitted) gets up to 30 s to end."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._actions:
            await asyncio.wait(self._actions, timeout=30.0)

    async def __aenter__(self) -> WebServer:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    # -- who may ask ------------------------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        if self._token is None:
            return True
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self._token):
            return True
        return hmac.compare_digest(request.cookies.get(_COOKIE, "").encode(), self._session.encode())

    @staticmethod
    def _same_origin(request: web.Request) -> bool:
        """A browser's POST must come from a page of this server (a script or curl sends no Origin)."""
        origin = request.headers.get("Origin")
        if origin is None:
            return True
        hosts = {request.host, request.headers.get("X-Forwarded-Host", "").split(",")[0].strip()}
        return urlsplit(origin).netloc in hosts - {""}

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Who may ask (see the module's docstring), errors as JSON, and headers every answer carries."""
        if request.path != "/healthz":
            if self._token is None and (urlsplit(f"//{request.host}").hostname or "") not in _LOOPBACK:
                return _error(403, "this server answers to localhost only (set SCHEDULER_HTTP_TOKEN to expose it)")
            if request.path not in _OPEN_PATHS and not self._authorized(request):
                if request.path == "/" and request.method in ("GET", "HEAD"):
                    return self._login_page(401)
                return _error(401, "a valid token is required: Authorization: Bearer <SCHEDULER_HTTP_TOKEN>")
            if request.method == "POST" and not self._same_origin(request):
                return _error(403, "cross-origin request refused")
        try:
            response = await handler(request)
        except _Refused as refused:
            response = _error(refused.status, refused.message)
        except StoreError as error:
            response = _error(503, f"database unavailable: {error}")
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")  # "no-referrer" makes Chrome send Origin: null
        return response

    async def login(self, request: web.Request) -> web.StreamResponse:
        """The status page's login form: a right token sets the session cookie."""
        if self._token is None:
            raise web.HTTPSeeOther("/")
        form = await request.post()
        given = str(form.get("token", "")).encode()
        if not hmac.compare_digest(given, self._token):
            logger.warning("status page login refused from %s", request.remote)
            return self._login_page(401, wrong=True)
        signed_in = web.HTTPSeeOther("/")
        signed_in.set_cookie(
            _COOKIE,
            self._session,
            httponly=True,
            samesite="Strict",
            secure=request.secure,
            path="/",
            max_age=30 * 86400,
        )
        raise signed_in

    def _login_page(self, status: int, *, wrong: bool = False) -> web.Response:
        problem = '<p class="banner bad">That token is not the right one.</p>' if wrong else ""
        body = (
            f"{problem}<p>This scheduler needs its token (<code>SCHEDULER_HTTP_TOKEN</code>).</p>"
            '<form method="post" action="/login" class="login">'
            '<input type="password" name="token" autocomplete="current-password" aria-label="token" required>'
            ' <button type="submit">Sign in</button></form>'
        )
        return self._page("cekura-scheduler: sign in", body, status=status, refresh=False)

    # -- health -----------------------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        """200 while the daemon's timer turns (it does at least every 5 s), 503 otherwise."""
        ticked = self.daemon.ticked_at
        if ticked is None:
            return _json({"status": "not started"}, 503)
        age = (self.daemon.clock.now() - ticked).total_seconds()
        alive = age <= LIVENESS.total_seconds()
        return _json({"status": "ok" if alive else "stalled", "ticked_at": _iso(ticked)}, 200 if alive else 503)

    async def readyz(self, request: web.Request) -> web.Response:
        """200 when the database answers and the config file on disk is valid, 503 otherwise."""
        answer: dict[str, Any] = {"database": "ok", "config": "ok"}
        try:
            await asyncio.to_thread(self.daemon.store.latest_config_change)
        except StoreError as error:
            answer["database"] = str(error)
        if issues := self.daemon.config_errors:
            answer["config"] = (
                f"{count_errors(issues)} in the file; running the previous version {self.daemon.config.digest}"
            )
            answer["errors"] = [issue.as_dict() for issue in issues]
        ready = answer["database"] == "ok" and answer["config"] == "ok"
        return _json({"ready": ready, **answer}, 200 if ready else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.daemon.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    # -- reading ----------------------------------------------------------------------------------------

    async def _incidents(self) -> dict[str, list[dict[str, Any]]]:
        """The daemon's open incidents by job ("" for the daemon's own), when it has them (``open_incidents``)."""
        reader = getattr(self.daemon, "open_incidents", None)
        found: Any = reader() if callable(reader) else []
        if inspect.isawaitable(found):
            found = await found
        by_job: dict[str, list[dict[str, Any]]] = {}
        for item in found or []:
            data = _plain(item)
            job = data.get("job") or (data.get("subject") if data.get("scope", "job") == "job" else None)
            by_job.setdefault(str(job or ""), []).append(data)
        return by_job

    async def _snapshot(
        self, history: int
    ) -> tuple[dict[str, Fire], dict[str, Hold], dict[str, list[Fire]], dict[str, list[dict[str, Any]]]]:
        """What the database says of every job: last fire, pause, recent fires (one thread hop)."""
        names = list(self.daemon.config.jobs)
        now = self.daemon.clock.now()
        store = self.daemon.store

        def read() -> tuple[dict[str, Fire], dict[str, Hold], dict[str, list[Fire]]]:
            last = store.last_fires_by_job()
            pauses = {hold.job: hold for hold in store.active_holds(at=now) if hold.kind == "pause"}
            recent = {name: store.recent_fires(job=name, limit=history) for name in names} if history else {}
            return last, pauses, recent

        last, pauses, recent = await asyncio.to_thread(read)
        return last, pauses, recent, await self._incidents()

    def _next_fire(self, job: Job, now: datetime) -> datetime | None:
        if not job.enabled:
            return None
        return self.daemon.next_fire(job.name) or job.schedule.next_after(now)

    async def jobs(self, request: web.Request) -> web.Response:
        """Every job: schedule, next fire, paused or not, last outcome, open incidents."""
        last, pauses, _, incidents = await self._snapshot(history=0)
        now = self.daemon.clock.now()
        items = []
        for job in self.daemon.config.jobs.values():
            fire = last.get(job.name)
            hold = pauses.get(job.name)
            items.append(
                {
                    "name": job.name,
                    "schedule": job.schedule.in_words(),
                    "describe": job.schedule.describe(),
                    "timezone": str(job.timezone),
                    "enabled": job.enabled,
                    "paused": hold is not None,
                    "pause": _hold_as_dict(hold) if hold is not None else None,
                    "next_fire": _iso(self._next_fire(job, now)),
                    "last_outcome": outcome_word(fire) if fire is not None else None,
                    "last_fire": fire_as_dict(fire) if fire is not None else None,
                    "open_incident": next(iter(incidents.get(job.name, [])), None),
                    "open_incidents": incidents.get(job.name, []),
                }
            )
        return _json(
            {
                "config": {
                    "path": str(self.daemon.config.path),
                    "digest": self.daemon.config.digest,
                    "valid": not self.daemon.config_errors,
                },
                "jobs": items,
            }
        )

    async def job_fires(self, request: web.Request) -> web.Response:
        """A job's newest fires first; ``?limit=`` (1..1000, default 20)."""
        name = request.match_info["name"]
        try:
            limit = int(request.query.get("limit", str(HISTORY)))
        except ValueError:
            return _error(400, "limit must be a whole number")
        if not 1 <= limit <= _MAX_LIMIT:
            return _error(400, f"limit must be between 1 and {_MAX_LIMIT}")
        fires = await asyncio.to_thread(self.daemon.store.recent_fires, job=name, limit=limit)
        if not fires and self.daemon.job(name) is None:
            return _error(404, f"no job named {name!r}")
        return _json({"job": name, "fires": [fire_as_dict(fire) for fire in fires]})

    async def fire(self, request: web.Request) -> web.Response:
        """One fire with the outcome of each of its runs."""
        fire_id = int(request.match_info["id"])
        fire = await asyncio.to_thread(self.daemon.store.get_fire, fire_id)
        if fire is None:
            return _error(404, f"no fire {fire_id}")
        return _json(fire_as_dict(fire, runs=True))

    # -- acting -----------------------------------------------------------------------------------------

    @staticmethod
    def _from_page(request: web.Request) -> bool:
        return request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data")

    @staticmethod
    async def _fields(request: web.Request) -> dict[str, str]:
        if WebServer._from_page(request):
            return {key: str(value) for key, value in (await request.post()).items()}
        if request.can_read_body and request.content_type == "application/json":
            try:
                data = await request.json()
            except ValueError:
                raise _Refused(400, "the body is not valid JSON") from None
            if not isinstance(data, dict):
                raise _Refused(400, "the body must be a JSON object")
            return {key: str(value) for key, value in data.items() if value is not None}
        return {}

    def _configured(self, request: web.Request) -> Job:
        name = request.match_info["name"]
        job = self.daemon.config.jobs.get(name)
        if job is None:
            raise _Refused(404, f"no job named {name!r} in the config")
        return job

    def _done(self, request: web.Request, action: str, job: Job, data: dict[str, Any], status: int) -> web.Response:
        """The answer to an action: JSON for the API, back to the status page for its buttons."""
        if not self._from_page(request):
            return _json(data, status)
        query = {"done": action, "job": job.name, **({"fire": data["id"]} if "id" in data else {})}
        raise web.HTTPSeeOther(f"/?{urlencode(query)}")

    @staticmethod
    def _who(request: web.Request, fields: dict[str, str]) -> str:
        by = fields.get("by") or ("status page" if WebServer._from_page(request) else "http api")
        return f"{by} ({request.remote})"[:100]

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
            return _error(503, "the daemon is shutting down: nothing new is fired")
        logger.info("%s triggered by %s", job.name, self._who(request, fields), extra={"job": job.name})
        fire = await self._shielded(self.daemon.fire(job, self.daemon.clock.now(), trigger=MANUAL))
        if fire is None:
            return _error(503, f"{job.name} was not fired: its slot could not be claimed (see the daemon's log)")
        return self._done(request, "triggered", job, fire_as_dict(fire), 201)

    async def pause(self, request: web.Request) -> web.Response:
        """Pause the job: its slots are recorded as skipped (paused) until resumed or ``until``."""
        job = self._configured(request)
        fields = await self._fields(request)
        until: datetime | None = None
        if fields.get("until"):
            try:
                until = datetime.fromisoformat(fields["until"])
            except ValueError:
                return _error(400, "until must be an ISO 8601 time with its offset, e.g. 2026-12-01T08:00:00+00:00")
            if until.tzinfo is None:
                return _error(400, "until needs an offset (e.g. +00:00 or Z)")
            if until <= self.daemon.clock.now():
                return _error(400, "until is in the past")
        reason = (fields.get("reason") or "paused over HTTP").strip()[:1000]
        hold = await self._shielded(
            self.daemon.pause(job.name, by=self._who(request, fields), reason=reason, until=until)
        )
        return self._done(request, "paused", job, {"job": job.name, "paused": True, "pause": _hold_as_dict(hold)}, 200)

    async def resume(self, request: web.Request) -> web.Response:
        """Resume a paused job from its next slot."""
        job = self._configured(request)
        fields = await self._fields(request)
        resumed = await self._shielded(self.daemon.resume(job.name, by=self._who(request, fields)))
        return self._done(request, "resumed", job, {"job": job.name, "resumed": resumed}, 200)

    # -- the status page --------------------------------------------------------------------------------

    async def status_page(self, request: web.Request) -> web.Response:
        """Every job at a glance; refreshes itself."""
        now = self.daemon.clock.now()
        problem = ""
        try:
            _, pauses, recent, incidents = await self._snapshot(history=HISTORY)
        except StoreError as error:
            pauses, recent, incidents = {}, {}, await self._incidents()
            problem = f'<div class="banner bad" role="alert"><b>Database unreachable.</b> {escape(str(error))}</div>'
        rows = [
            self._row(job, now, pauses.get(job.name), recent.get(job.name, []), incidents.get(job.name, []))
            for job in self.daemon.config.jobs.values()
        ]
        body = "".join(
            [
                self._header(now),
                self._config_banner(),
                problem,
                self._daemon_incidents(incidents.get("", [])),
                self._notice(request),
                '<div class="wrap"><table id="jobs"><thead><tr><th>Job</th><th>Schedule</th><th>Next fire</th>'
                f"<th>Last {HISTORY} (oldest to newest)</th><th>Open incident</th><th>Actions</th></tr></thead>"
                f"<tbody>{''.join(rows)}</tbody></table></div>",
                "" if rows else "<p>No jobs in the config.</p>",
                self._footer(),
            ]
        )
        return self._page("cekura-scheduler", body)

    def _header(self, now: datetime) -> str:
        daemon = self.daemon
        tick = daemon.ticked_at
        alive = tick is not None and now - tick <= LIVENESS
        state = (
            f'<span class="pill ok">running</span> timer turned {max(0, int((now - tick).total_seconds()))}s ago'
            if alive and tick is not None
            else '<span class="pill bad">not running</span>'
        )
        started = f" · started {escape(_local(daemon.started_at, None))}" if daemon.started_at else ""
        return (
            f"<header><h1>cekura-scheduler</h1><span class=meta>{state}{started} · "
            f"config <code>{escape(str(daemon.config.path))}</code> {escape(daemon.config.digest)} · "
            f"v{escape(__version__)} · {escape(daemon.owner)}</span></header>"
        )

    def _config_banner(self) -> str:
        issues = self.daemon.config_errors
        if not issues:
            return ""
        items = "".join(f"<li><code>{escape(str(issue))}</code></li>" for issue in issues)
        return (
            '<div class="banner bad" id="config-invalid" role="alert"><b>CONFIG INVALID:</b> '
            f"{escape(str(self.daemon.config.path))} has {len(issues)} error{'s' if len(issues) != 1 else ''}; "
            f"the daemon keeps running the previous version ({escape(self.daemon.config.digest)}) until it is fixed."
            f"<ul>{items}</ul></div>"
        )

    def _daemon_incidents(self, items: list[dict[str, Any]]) -> str:
        if not items:
            return ""
        listed = self._incidents_html(items)
        return f'<div class="banner bad" role="alert"><b>Open incidents of the daemon</b>{listed}</div>'

    def _notice(self, request: web.Request) -> str:
        action, name = request.query.get("done"), request.query.get("job", "")
        if action not in ("triggered", "paused", "resumed") or name not in self.daemon.config.jobs:
            return ""
        fire = request.query.get("fire", "")
        detail = f" (fire {int(fire)})" if fire.isdigit() else ""
        return f'<div class="banner note" role="status">{escape(name)} {action}{escape(detail)}.</div>'

    def _row(
        self, job: Job, now: datetime, hold: Hold | None, fires: list[Fire], incidents: list[dict[str, Any]]
    ) -> str:
        name = escape(job.name)
        path = f"/api/jobs/{quote(job.name, safe='')}"
        badges = ""
        if not job.enabled:
            badges += ' <span class="pill off">disabled</span>'
        if hold is not None:
            until = f" until {_local(hold.until, job)}" if hold.until else ""
            tip = f"paused by {hold.created_by} since {_local(hold.starts_at, job)}{until}: {hold.reason}"
            badges += f' <span class="pill warn" title="{escape(tip)}">paused</span>'
        upcoming = self._next_fire(job, now)
        next_fire = (
            f'<span class="nowrap" title="{upcoming:%Y-%m-%d %H:%M:%S} UTC">{escape(_local(upcoming, job))}</span>'
            f"<br><small>{escape(_relative(upcoming - now))}</small>"
            if upcoming is not None
            else "—"
        )
        marks = "".join(self._mark(fire, job) for fire in reversed(fires)) or '<span class="none">no fires yet</span>'
        incident = self._incidents_html(incidents) or "—"
        toggle = (
            f'<form method="post" action="{path}/resume"><button data-action="resume">Resume</button></form>'
            if hold is not None
            else f'<form method="post" action="{path}/pause"><button data-action="pause">Pause</button></form>'
        )
        actions = (
            f'<form method="post" action="{path}/trigger"><button data-action="trigger" class="primary">Run now'
            f"</button></form>{toggle}"
        )
        return (
            f'<tr data-job="{name}"><td data-label="Job"><b class="nowrap">{name}</b>{badges}</td>'
            f'<td data-label="Schedule">{escape(job.schedule.in_words())}</td>'
            f'<td data-label="Next fire">{next_fire}</td>'
            f'<td data-label="Last {HISTORY}"><div class="marks">{marks}</div></td>'
            f'<td data-label="Open incident">{incident}</td>'
            f'<td data-label="Actions"><div class="actions">{actions}</div></td></tr>'
        )

    @staticmethod
    def _mark(fire: Fire, job: Job) -> str:
        if fire.outcome == PASSED:
            kind, symbol = "passed", "✓"
        elif fire.outcome == FAILED:
            kind, symbol = "failed", "✗"
        elif fire.state == SKIPPED:
            kind, symbol = "skipped", "-"
        else:
            kind, symbol = "running", "…"
        parts = [f"{_local(fire.slot, job)}", outcome_word(fire)]
        parts.append(f"result {fire.result_id}" if fire.result_id is not None else "no result")
        if fire.trigger == MANUAL:
            parts.append("run by hand")
        if fire.error:
            parts.append(fire.error[:200])
        tip = escape(" · ".join(parts))
        return (
            f'<a class="m {kind}" href="/api/fires/{fire.id}" data-fire="{fire.id}" title="{tip}" '
            f'aria-label="{tip}">{symbol}</a>'
        )

    @staticmethod
    def _incidents_html(items: list[dict[str, Any]]) -> str:
        """Open incidents, one line each (one per channel is one line), their detail on hover."""
        seen: dict[tuple[str, str], str] = {}
        for item in items:
            # A daemon's incident is named by its subject ("database unreachable"); a job's by its detail.
            named = item.get("subject") if item.get("scope") not in (None, "job") else None
            detail = str(item.get("detail") or "")
            what = str(item.get("title") or item.get("summary") or named or detail).strip() or "open"
            since = item.get("failing_since") or item.get("opened_at")
            when = since.strftime("%Y-%m-%d %H:%M UTC") if isinstance(since, datetime) else str(since or "")
            first = what.splitlines()[0][:120]
            seen.setdefault(
                (first, when),
                f'<div class="incident" title="{escape((detail or what)[:1000])}"><span class="pill bad">incident'
                f"</span> {escape(first)}" + (f"<br><small>since {escape(when)}</small>" if when else "") + "</div>",
            )
        return "".join(seen.values())

    def _footer(self) -> str:
        return (
            f"<footer>Refreshes every {self.refresh}s. JSON: <a href=/api/jobs>/api/jobs</a> · "
            "<a href=/metrics>/metrics</a> · <a href=/readyz>/readyz</a></footer>"
        )

    def _page(self, title: str, body: str, *, status: int = 200, refresh: bool = True) -> web.Response:
        meta = f'<meta http-equiv="refresh" content="{self.refresh}; url=/">' if refresh else ""
        page = (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"{meta}<title>{escape(title)}</title><style>{_CSS}</style></head><body>{body}</body></html>"
        )
        response = web.Response(text=page, status=status, content_type="text/html", charset="utf-8")
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'"
        )
        return response


_CSS = """
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2328;background:#fff;
  margin:0 auto;padding:1rem;max-width:1280px}
header{display:flex;flex-wrap:wrap;gap:.25rem 1rem;align-items:baseline;margin-bottom:.75rem}
h1{font-size:1.3rem;margin:0}
.meta,small,footer,.none{color:#59636e;font-size:.85rem}
code{font-size:.85em;background:#f6f8fa;padding:0 .2em;border-radius:4px}
.banner{border-radius:8px;padding:.6rem .9rem;margin:.75rem 0}
.banner.bad{background:#ffebe9;border:1px solid #cf222e}
.banner.note{background:#ddf4ff;border:1px solid #0969da}
.banner ul{margin:.4rem 0 0;padding-left:1.2rem}
.wrap{overflow-x:auto}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.55rem .5rem;border-bottom:1px solid #d1d9e0;vertical-align:top}
th{font-size:.8rem;color:#59636e;font-weight:600;white-space:nowrap}
.pill{display:inline-block;font-size:.75rem;padding:0 .45rem;border-radius:1rem;border:1px solid;vertical-align:1px}
.pill.ok{color:#1a7f37}.pill.bad{color:#cf222e}.pill.warn{color:#9a6700}.pill.off{color:#59636e}
.marks{display:flex;flex-wrap:wrap;gap:3px;min-width:21.5rem;max-width:21.5rem}
.m{display:inline-block;width:14px;height:22px;border-radius:3px;color:#fff;font-size:11px;line-height:22px;
  text-align:center;text-decoration:none}
.m.passed{background:#1a7f37}.m.failed{background:#cf222e}.m.skipped{background:#afb8c1}.m.running{background:#0969da}
.actions{display:flex;gap:.35rem}
.nowrap{white-space:nowrap}
form{margin:0}
button{font:inherit;font-size:.85rem;padding:.3rem .75rem;border-radius:6px;border:1px solid #d1d9e0;
  background:#f6f8fa;color:#1f2328;cursor:pointer;min-height:2rem;white-space:nowrap}
button.primary{background:#1f883d;border-color:#1a7f37;color:#fff}
.login input{font:inherit;padding:.35rem .5rem;border:1px solid #d1d9e0;border-radius:6px}
footer{margin-top:1rem}
@media (max-width:760px){
  thead{display:none}
  table,tbody,tr,td{display:block;width:100%}
  tr{border:1px solid #d1d9e0;border-radius:8px;margin-bottom:.75rem;padding:.3rem 0}
  td{border:0;padding:.3rem .75rem}
  td::before{content:attr(data-label);display:block;font-size:.75rem;color:#59636e}
  .actions{flex-wrap:wrap}
  .marks{min-width:0}
}
"""
