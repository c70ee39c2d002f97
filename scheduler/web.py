"""The daemon's HTTP server: health, readiness, Prometheus metrics, a JSON API and a status page.

It runs on the daemon's event loop (aiohttp's AppRunner). The rule for access: ``/healthz`` is open; when a token
is set (``SCHEDULER_HTTP_TOKEN``), everything else needs it, as ``Authorization: Bearer <token>`` or as the
session cookie the status page's login form sets. Without a token the server only listens on loopback, and it
then also refuses requests whose ``Host`` is not a loopback name (a web page cannot reach it through DNS
rebinding). POST actions from a browser must come from the server's own origin. Failed sign-ins (a wrong token in
the login form, a ``Bearer`` header or the cookie) are limited per client address: after five in a minute, that
address gets 429 for the rest of the minute, whatever it sends.

``X-Forwarded-For``, ``-Host`` and ``-Proto`` are read only when told a proxy is in front
(``SCHEDULER_HTTP_TRUST_FORWARDED``); then the last value of each, the one the nearest proxy set, names the client
(its address for the limit and the record of who acted), the origin POSTs must come from, and whether the cookie
is ``Secure``. Otherwise anyone could send them.

Nothing here shows a secret: alert URLs and the API key never reach a page or an answer, and every error text the
daemon hands over (fires, config problems, incidents, background tasks) goes through ``Daemon.redact`` first.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import inspect
import json
import logging
import math
from collections import deque
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
from scheduler.supervision import LoopHealth

logger = logging.getLogger(__name__)

LIVENESS = timedelta(seconds=30)  # the timer turns at least every 5 s; six missed turns means it is stuck
READY_WITHIN = 1.0  # seconds /readyz waits for the database (SQLite alone would wait 30 s for a lock)
SIGN_IN_FAILURES = 5  # wrong tokens from one address ...
SIGN_IN_WINDOW = timedelta(minutes=1)  # ... within this long, and the address must wait
_REMEMBERED_ADDRESSES = 10_000  # a bound on the limiter's memory, whatever the number of addresses that try
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


def _same(text: str) -> str:
    return text


def fire_as_dict(fire: Fire, *, runs: bool = False, redact: Callable[[str], str] = _same) -> dict[str, Any]:
    """A fire as the JSON API (and ``history --format json``) shows it; ``redact`` hides secrets in its errors."""
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
        "error": redact(fire.error) if fire.error is not None else None,
        "error_status_code": fire.error_status_code,
        "fired_at": _iso(fire.fired_at),
        "submitted_at": _iso(fire.submitted_at),
        "finished_at": _iso(fire.finished_at),
    }
    if runs:
        data["failed_reasons"] = fire.failed_reasons
        data["runs"] = [
            {**dataclasses.asdict(run), "error_message": redact(run.error_message) if run.error_message else None}
            for run in fire.runs
        ]
    return data


def _hold_as_dict(hold: Hold | None) -> dict[str, Any] | None:
    if hold is None:
        return None
    return {"by": hold.created_by, "reason": hold.reason, "since": _iso(hold.starts_at), "until": _iso(hold.until)}


def _holds_by_job(holds: list[Hold]) -> dict[tuple[str, str], Hold]:
    """Each job's pause and silence in force, by (job, kind); of several, the one that lasts longest."""
    found: dict[tuple[str, str], Hold] = {}
    for hold in holds:
        key = (hold.job, hold.kind)
        held = found.get(key)
        if held is None or (held.until is not None and (hold.until is None or hold.until > held.until)):
            found[key] = hold
    return found


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


class _SignInLimit:
    """Failed sign-ins per client address, in a sliding window."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self._clock = clock
        self._failures: dict[str, deque[datetime]] = {}

    def wait(self, address: str) -> int:
        """Seconds ``address`` must wait before it may try again (0: it may try now)."""
        failures = self._failures.get(address)
        if failures is None or len(failures) < SIGN_IN_FAILURES:
            return 0
        left = (failures[0] + SIGN_IN_WINDOW - self._clock()).total_seconds()
        return max(0, math.ceil(left))

    def failed(self, address: str) -> None:
        now = self._clock()
        if address not in self._failures and len(self._failures) >= _REMEMBERED_ADDRESSES:
            self._forget(now)
        self._failures.setdefault(address, deque(maxlen=SIGN_IN_FAILURES)).append(now)
        if wait := self.wait(address):  # logged once per lock, not for each request it refuses
            logger.warning(
                "sign-in from %s refused for %ds: %d wrong tokens within a minute", address, wait, SIGN_IN_FAILURES
            )

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)

    def _forget(self, now: datetime) -> None:
        """Drop the addresses whose last failure is out of the window; if that is not enough, the oldest ones."""
        for address in [key for key, times in self._failures.items() if now - times[-1] > SIGN_IN_WINDOW]:
            del self._failures[address]
        while len(self._failures) >= _REMEMBERED_ADDRESSES:
            del self._failures[next(iter(self._failures))]


def _last(value: str | None) -> str:
    """The last entry of a forwarded header: the one the nearest proxy set (a client can only add before it)."""
    return (value or "").split(",")[-1].strip()


class WebServer:
    """The HTTP server of one daemon; ``start`` it on the daemon's loop and ``stop`` it at shutdown.

    ``trust_forwarded`` says a proxy is in front: its ``X-Forwarded-*`` headers are believed (see the module's
    docstring), and, as the server is then reached from beyond this machine, a token is required. ``clock``
    (default: the daemon's) times the sign-in limit.
    """

    def __init__(
        self,
        *,
        daemon: Daemon,
        host: str = "127.0.0.1",
        port: int = 8787,
        token: SecretStr | None = None,
        refresh: int = 10,
        trust_forwarded: bool = False,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        secret = token.get_secret_value() if token is not None else ""
        if not secret and host not in _LOOPBACK:
            raise SchedulerError(f"the HTTP server listens on {host}, beyond this machine: it needs a token")
        if not secret and trust_forwarded:
            raise SchedulerError(
                "SCHEDULER_HTTP_TRUST_FORWARDED says a proxy is in front, so clients beyond this machine reach the "
                "HTTP server: it needs a token (SCHEDULER_HTTP_TOKEN)"
            )
        self.daemon = daemon
        self.host = host
        self.port = port
        self.refresh = refresh
        self.trust_forwarded = trust_forwarded
        self._sign_in = _SignInLimit(clock or (lambda: self.daemon.clock.now()))
        self._probe: asyncio.Future[Any] | None = None  # the readiness query in flight, at most one
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

    def _redact(self, text: str) -> str:
        """``text`` with the daemon's secrets masked (``Daemon.redact``; as it is, for a daemon without one)."""
        redact: Callable[[str], str] = getattr(self.daemon, "redact", _same)
        return redact(text)

    def _masked(self, value: Any) -> Any:
        """``_redact`` for every string inside a JSON-like value."""
        if isinstance(value, str):
            return self._redact(value)
        if isinstance(value, dict):
            return {key: self._masked(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self._masked(item) for item in value]
        return value

    def _credentials(self, request: web.Request) -> tuple[bool, bool]:
        """(whether the request shows a token or a session cookie, whether one of them is right)."""
        if self._token is None:
            return False, True
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        bearer = scheme.lower() == "bearer"
        if bearer and hmac.compare_digest(given.strip().encode(), self._token):
            return True, True
        cookie = request.cookies.get(_COOKIE, "")
        if cookie and hmac.compare_digest(cookie.encode(), self._session.encode()):
            return True, True
        return bearer or bool(cookie), False

    def _authorized(self, request: web.Request) -> bool:
        return self._credentials(request)[1]

    def _client(self, request: web.Request) -> str:
        """The client's address: the peer, or, behind a trusted proxy, the address that proxy saw."""
        forwarded = _last(request.headers.get("X-Forwarded-For")) if self.trust_forwarded else ""
        return forwarded or request.remote or ""

    def _secure(self, request: web.Request) -> bool:
        """Whether the browser reached us over HTTPS (at the proxy, when one is trusted)."""
        if self.trust_forwarded and (proto := _last(request.headers.get("X-Forwarded-Proto"))):
            return proto.lower() == "https"
        return request.secure

    def _same_origin(self, request: web.Request) -> bool:
        """A browser's POST must come from a page of this server (a script or curl sends no Origin)."""
        origin = request.headers.get("Origin")
        if origin is None:
            return True
        hosts = {request.host}
        if self.trust_forwarded:
            hosts.add(_last(request.headers.get("X-Forwarded-Host")))
        return urlsplit(origin).netloc in hosts - {""}

    def _too_many(self, request: web.Request, wait: int) -> web.Response:
        message = f"too many failed sign-ins from this address: try again in {wait}s"
        if request.path == "/" or (request.path == "/login" and self._from_page(request)):
            response = self._login_page(429, problem=message)
        else:
            response = _error(429, message)
        response.headers["Retry-After"] = str(wait)
        return response

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Who may ask (see the module's docstring), errors as JSON, and headers every answer carries."""
        if request.path != "/healthz":
            if self._token is None and (urlsplit(f"//{request.host}").hostname or "") not in _LOOPBACK:
                return _error(403, "this server answers to localhost only (set SCHEDULER_HTTP_TOKEN to expose it)")
            shown, right = self._credentials(request)
            signing_in = shown or (request.path == "/login" and request.method == "POST")
            # While an address is over the limit, no token it sends is checked: guessing must stop.
            if signing_in and (wait := self._sign_in.wait(self._client(request))):
                return self._too_many(request, wait)
            if request.path not in _OPEN_PATHS and not right:
                if shown:
                    self._sign_in.failed(self._client(request))
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
            response = _error(503, f"database unavailable: {self._redact(str(error))}")
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
        client = self._client(request)
        if not hmac.compare_digest(given, self._token):
            logger.warning("status page login refused from %s", client)
            self._sign_in.failed(client)
            return self._login_page(401, problem="That token is not the right one.")
        self._sign_in.succeeded(client)
        signed_in = web.HTTPSeeOther("/")
        signed_in.set_cookie(
            _COOKIE,
            self._session,
            httponly=True,
            samesite="Strict",
            secure=self._secure(request),
            path="/",
            max_age=30 * 86400,
        )
        raise signed_in

    def _login_page(self, status: int, *, problem: str = "") -> web.Response:
        banner = f'<p class="banner bad" role="alert">{escape(problem)}</p>' if problem else ""
        body = (
            f"{banner}<p>This scheduler needs its token (<code>SCHEDULER_HTTP_TOKEN</code>).</p>"
            '<form method="post" action="/login" class="login">'
            '<input type="password" name="token" autocomplete="current-password" aria-label="token" required>'
            ' <button type="submit">Sign in</button></form>'
        )
        return self._page("cekura-scheduler: sign in", body, status=status, refresh=False)

    # -- health -----------------------------------------------------------------------------------------

    def _loops(self) -> list[LoopHealth] | None:
        """The daemon's supervised loops (None for a daemon without a supervisor)."""
        supervisor = getattr(self.daemon, "supervisor", None)
        return supervisor.health() if supervisor is not None else None

    async def healthz(self, request: web.Request) -> web.Response:
        """200 while every background loop of the daemon turns, 503 naming those that are down or stale.

        No database is asked: this is the liveness probe, asked every few seconds. Without the token (when one
        is set) the loops' last errors are left out: this page is open to anyone who can reach the server.
        """
        now = self.daemon.clock.now()
        ticked = self.daemon.ticked_at
        loops = self._loops()
        if loops is None:  # a daemon without a supervisor: its timer tells
            stale = [] if ticked is not None and now - ticked <= LIVENESS else ["timer"]
            status = "not started" if ticked is None else "stalled" if stale else "ok"
            shown: list[dict[str, Any]] = []
        else:
            stale = [loop.name for loop in loops if not loop.ok(now)]
            status = "not started" if not loops else "stale" if stale else "ok"
            shown = [loop.as_dict(now) for loop in loops]
            disclose = self._authorized(request)
            for loop in shown:
                if loop["last_error"] is not None:
                    loop["last_error"] = self._redact(loop["last_error"]) if disclose else "(shown with the token)"
        answer = {"status": status, "ticked_at": _iso(ticked), "stale": stale, "loops": shown}
        return _json(answer, 200 if status == "ok" else 503)

    async def _database_answers(self) -> str:
        """Whether the database answers within ``READY_WITHIN`` seconds: "ok", or why not.

        The query runs in a thread that cannot be cancelled, so a locked database keeps it for the busy timeout;
        the probes asked meanwhile wait on that same query rather than each taking another thread and connection.
        """
        if self._probe is None or self._probe.done():
            self._probe = asyncio.ensure_future(asyncio.to_thread(self.daemon.store.ping))
            # Retrieved here, so that a query ending after its probe gave up is not reported as never retrieved.
            self._probe.add_done_callback(lambda probe: probe.cancelled() or probe.exception())
        try:
            await asyncio.wait_for(asyncio.shield(self._probe), READY_WITHIN)
        except TimeoutError:
            return f"database did not answer within {READY_WITHIN:g}s"
        except StoreError as error:
            return self._redact(str(error))
        return "ok"

    async def readyz(self, request: web.Request) -> web.Response:
        """200 when the database answers within a second and the config file on disk is valid, 503 otherwise."""
        answer: dict[str, Any] = {"database": await self._database_answers(), "config": "ok"}
        if issues := self.daemon.config_errors:
            answer["config"] = (
                f"{count_errors(issues)} in the file; running the previous version {self.daemon.config.digest}"
            )
            answer["errors"] = [{**issue.as_dict(), "message": self._redact(issue.message)} for issue in issues]
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
            data: dict[str, Any] = self._masked(_plain(item))
            job = data.get("job") or (data.get("subject") if data.get("scope", "job") == "job" else None)
            by_job.setdefault(str(job or ""), []).append(data)
        return by_job

    async def _snapshot(
        self, history: int
    ) -> tuple[dict[str, Fire], dict[tuple[str, str], Hold], dict[str, list[Fire]], dict[str, list[dict[str, Any]]]]:
        """What the database says of every job: last fire, pause and silence, recent fires (one thread hop)."""
        names = list(self.daemon.config.jobs)
        now = self.daemon.clock.now()
        store = self.daemon.store

        def read() -> tuple[dict[str, Fire], dict[tuple[str, str], Hold], dict[str, list[Fire]]]:
            last = store.last_fires_by_job()
            holds = _holds_by_job(store.active_holds(at=now))
            recent = {name: store.recent_fires(job=name, limit=history) for name in names} if history else {}
            return last, holds, recent

        last, holds, recent = await asyncio.to_thread(read)
        return last, holds, recent, await self._incidents()

    def _next_fire(self, job: Job, now: datetime) -> datetime | None:
        if not job.enabled:
            return None
        return self.daemon.next_fire(job.name) or job.schedule.next_after(now)

    async def jobs(self, request: web.Request) -> web.Response:
        """Every job: schedule, next fire, its pause and silence (who, why, since, until), last outcome, incidents."""
        last, holds, _, incidents = await self._snapshot(history=0)
        now = self.daemon.clock.now()
        items = []
        for job in self.daemon.config.jobs.values():
            fire = last.get(job.name)
            pause, silence = holds.get((job.name, "pause")), holds.get((job.name, "silence"))
            items.append(
                {
                    "name": job.name,
                    "schedule": job.schedule.in_words(),
                    "describe": job.schedule.describe(),
                    "timezone": str(job.timezone),
                    "enabled": job.enabled,
                    "paused": pause is not None,
                    "pause": _hold_as_dict(pause),
                    "silenced": silence is not None,
                    "silence": _hold_as_dict(silence),
                    "next_fire": _iso(self._next_fire(job, now)),
                    "last_outcome": outcome_word(fire) if fire is not None else None,
                    "last_fire": fire_as_dict(fire, redact=self._redact) if fire is not None else None,
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
        return _json({"job": name, "fires": [fire_as_dict(fire, redact=self._redact) for fire in fires]})

    async def fire(self, request: web.Request) -> web.Response:
        """One fire with the outcome of each of its runs."""
        fire_id = int(request.match_info["id"])
        fire = await asyncio.to_thread(self.daemon.store.get_fire, fire_id)
        if fire is None:
            return _error(404, f"no fire {fire_id}")
        return _json(fire_as_dict(fire, runs=True, redact=self._redact))

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

    def _who(self, request: web.Request, fields: dict[str, str]) -> str:
        by = fields.get("by") or ("status page" if self._from_page(request) else "http api")
        return f"{by} ({self._client(request)})"[:100]

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
        return self._done(request, "triggered", job, fire_as_dict(fire, redact=self._redact), 201)

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
        holds: dict[tuple[str, str], Hold]
        try:
            _, holds, recent, incidents = await self._snapshot(history=HISTORY)
        except StoreError as error:
            holds, recent, incidents = {}, {}, await self._incidents()
            problem = (
                '<div class="banner bad" role="alert"><b>Database unreachable.</b> '
                f"{escape(self._redact(str(error)))}</div>"
            )
        rows = [
            self._row(
                job,
                now,
                [hold for kind in ("pause", "silence") if (hold := holds.get((job.name, kind))) is not None],
                recent.get(job.name, []),
                incidents.get(job.name, []),
            )
            for job in self.daemon.config.jobs.values()
        ]
        body = "".join(
            [
                self._header(now),
                self._loops_banner(now),
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

    def _loops_banner(self, now: datetime) -> str:
        """The background loops that are down or stale, with their last error."""
        down = [loop for loop in self._loops() or [] if not loop.ok(now)]
        if not down:
            return ""
        items = []
        for loop in down:
            if loop.down:
                state = f"down, restarting ({loop.failures} failure{'s' if loop.failures != 1 else ''} in a row)"
            elif loop.last_tick is not None:
                state = f"stale: last turned {_relative(loop.last_tick - now)}"
            else:
                state = "stale: has not turned since it started"
            error = f": <code>{escape(self._redact(loop.last_error))}</code>" if loop.last_error else ""
            items.append(f"<li><b>{escape(loop.name)}</b> {escape(state)}{error}</li>")
        return (
            '<div class="banner bad" id="loops-down" role="alert"><b>Background tasks not running:</b>'
            f"<ul>{''.join(items)}</ul></div>"
        )

    def _config_banner(self) -> str:
        issues = self.daemon.config_errors
        if not issues:
            return ""
        items = "".join(f"<li><code>{escape(self._redact(str(issue)))}</code></li>" for issue in issues)
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

    @staticmethod
    def _hold_html(hold: Hold, job: Job) -> str:
        """A pause or silence in words (paused by X until Y: reason), and since when on hover."""
        pause = hold.kind == "pause"
        open_ended = "resumed" if pause else "further notice"
        until = _local(hold.until, job) if hold.until is not None else open_ended
        words = f"{'paused' if pause else 'alerts silenced'} by {hold.created_by} until {until}"
        words += f": {hold.reason}" if hold.reason else ""
        tip = f"since {_local(hold.starts_at, job)}"
        return f'<div class="hold" data-hold="{escape(hold.kind)}" title="{escape(tip)}">{escape(words)}</div>'

    def _row(
        self, job: Job, now: datetime, holds: list[Hold], fires: list[Fire], incidents: list[dict[str, Any]]
    ) -> str:
        name = escape(job.name)
        path = f"/api/jobs/{quote(job.name, safe='')}"
        badges = ""
        if not job.enabled:
            badges += ' <span class="pill off">disabled</span>'
        badges += "".join(self._hold_html(hold, job) for hold in holds)
        paused = any(hold.kind == "pause" for hold in holds)
        upcoming = self._next_fire(job, now)
        next_fire = (
            f'<span class="nowrap" title="{upcoming:%Y-%m-%d %H:%M:%S} UTC">{escape(_local(upcoming, job))}</span>'
            f"<br><small>{escape(_relative(upcoming - now))}</small>"
            if upcoming is not None
            else "—"
        )
        marks = "".join(self._mark(fire, job, self._redact) for fire in reversed(fires))
        marks = marks or '<span class="none">no fires yet</span>'
        incident = self._incidents_html(incidents) or "—"
        toggle = (
            f'<form method="post" action="{path}/resume"><button data-action="resume">Resume</button></form>'
            if paused
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
    def _mark(fire: Fire, job: Job, redact: Callable[[str], str]) -> str:
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
            parts.append(redact(fire.error)[:200])
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
.hold{font-size:.8rem;color:#9a6700;margin-top:.2rem;max-width:18rem}
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
