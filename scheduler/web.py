"""The daemon's HTTP server: health, readiness, Prometheus metrics, the JSON API and the status page.

It runs on the daemon's event loop (aiohttp's AppRunner). Who may ask is decided in ``access``, the JSON API
answers in ``api`` and the page is drawn by ``status_page``; this module composes them into one server.

Nothing here shows a secret: alert URLs and the API key never reach a page or an answer, and every error text the
daemon hands over (fires, config problems, incidents, background tasks) goes through ``Daemon.redact`` first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import SecretStr, ValidationError

from scheduler import __version__
from scheduler.access import COOKIE, WEBHOOK_PATH, Access, Refusal
from scheduler.api import Api, Refused, View, error_response, json_response, next_fire
from scheduler.cekura import MAX_ANSWER_BYTES
from scheduler.daemon import Daemon
from scheduler.errors import SchedulerError, StoreError, count_errors
from scheduler.results import Result
from scheduler.status_page import HISTORY, PER_PAGE, JobRow, Paging, Snapshot, render, render_sign_in
from scheduler.store import Fire, Incident
from scheduler.views import iso

logger = logging.getLogger(__name__)

READY_WITHIN = 1.0  # seconds /readyz waits for the database (SQLite alone would wait 30 s for a lock)
_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _html(page: str, status: int = 200) -> web.Response:
    response = web.Response(text=page, status=status, content_type="text/html", charset="utf-8")
    response.headers["Content-Security-Policy"] = _CSP
    return response


class WebServer:
    """The HTTP server of one daemon; ``start`` it on the daemon's loop and ``stop`` it at shutdown.

    ``trust_forwarded`` says a proxy is in front: its ``X-Forwarded-*`` headers are believed (see ``access``),
    and, as the server is then reached from beyond this machine, a token is required. ``clock`` (default: the
    daemon's) times the sign-in limit. With ``webhook_secret`` it takes Cekura's webhook at ``WEBHOOK_PATH``.
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
        webhook_secret: SecretStr | None = None,
    ) -> None:
        self.access = Access(
            token=token,
            host=host,
            trust_forwarded=trust_forwarded,
            clock=clock or (lambda: daemon.clock.now()),
            webhook_secret=webhook_secret,
        )
        self.daemon = daemon
        self.host = host
        self.port = port
        self.refresh = refresh
        self.api = Api(daemon=daemon, access=self.access)
        self._probe: asyncio.Future[Any] | None = None  # the readiness query in flight, at most one
        self._runner: web.AppRunner | None = None
        # A webhook carries a whole result (its runs, their metrics): Cekura's answers are read up to this size too.
        self.app = web.Application(middlewares=[self._guard], client_max_size=MAX_ANSWER_BYTES)
        self.app.add_routes(
            [
                web.get("/", self.status_page),
                web.post("/login", self.login),
                web.get("/healthz", self.healthz),
                web.get("/readyz", self.readyz),
                web.get("/metrics", self.metrics),
                *self.api.routes(),
                *([web.post(WEBHOOK_PATH, self.webhook)] if webhook_secret is not None else []),
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
            "token required" if self.access.token else "no token: loopback only",
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
        await self.api.drain(within=30.0)

    async def __aenter__(self) -> WebServer:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    # -- who may ask ------------------------------------------------------------------------------------

    def _refused(self, refusal: Refusal) -> web.Response:
        if refusal.sign_in_page:
            response = _html(render_sign_in(refusal.message), refusal.status)
        else:
            response = error_response(refusal.status, refusal.message)
        if refusal.retry_after is not None:
            response.headers["Retry-After"] = str(refusal.retry_after)
        return response

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Who may ask (``Access``), errors as JSON, and headers every answer carries."""
        if (refusal := self.access.refusal(request)) is not None:
            return self._refused(refusal)
        try:
            response = await handler(request)
        except Refused as refused:
            response = error_response(refused.status, refused.message)
        except StoreError as error:
            response = error_response(503, f"database unavailable: {self.daemon.redact(str(error))}")
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")  # "no-referrer" makes Chrome send Origin: null
        return response

    async def login(self, request: web.Request) -> web.StreamResponse:
        """The status page's sign-in form: a right token sets the session cookie."""
        if self.access.token is None:
            raise web.HTTPSeeOther("/")
        form = await request.post()
        if not self.access.sign_in(request, str(form.get("token", ""))):
            return _html(render_sign_in("That token is not the right one."), 401)
        signed_in = web.HTTPSeeOther("/")
        signed_in.set_cookie(
            COOKIE,
            self.access.session,
            httponly=True,
            samesite="Strict",
            secure=self.access.secure(request),
            path="/",
            max_age=30 * 86400,
        )
        raise signed_in

    # -- health -----------------------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        """200 while every background loop of the daemon turns, 503 naming those that are down or stale.

        No database is asked: this is the liveness probe, asked every few seconds. Without the token (when one
        is set) the loops' last errors are left out: this page is open to anyone who can reach the server.
        """
        now = self.daemon.clock.now()
        loops = self.daemon.loop_health()
        stale = [loop.name for loop in loops if not loop.ok(now)]
        status = "not started" if not loops else "stale" if stale else "ok"
        shown = [loop.as_dict(now) for loop in loops]
        disclose = self.access.authorized(request)
        for loop in shown:
            if loop["last_error"] is not None:
                loop["last_error"] = self.daemon.redact(loop["last_error"]) if disclose else "(shown with the token)"
        answer = {"status": status, "ticked_at": iso(self.daemon.ticked_at), "stale": stale, "loops": shown}
        return json_response(answer, 200 if status == "ok" else 503)

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
            return self.daemon.redact(str(error))
        return "ok"

    async def readyz(self, request: web.Request) -> web.Response:
        """200 when the database answers within a second and the config file on disk is valid, 503 otherwise."""
        answer: dict[str, Any] = {"database": await self._database_answers(), "config": "ok"}
        if issues := self.daemon.config_errors:
            answer["config"] = (
                f"{count_errors(issues)} in the file; running the previous version {self.daemon.config.digest}"
            )
            answer["errors"] = [{**issue.as_dict(), "message": self.daemon.redact(issue.message)} for issue in issues]
        ready = answer["database"] == "ok" and answer["config"] == "ok"
        return json_response({"ready": ready, **answer}, 200 if ready else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.daemon.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    # -- results pushed by Cekura -----------------------------------------------------------------------

    async def webhook(self, request: web.Request) -> web.Response:
        """Cekura's ``result.completed`` webhook: the secret first (401 and a log line when wrong or missing,
        before the body is read; 429 after five wrong ones from an address within a minute), then the result,
        whose verdict is recorded at once (``Daemon.pushed``)."""
        if (refusal := self.access.webhook_refusal(request)) is not None:
            return self._refused(refusal)
        try:
            payload = await request.json()
        except ValueError:
            return error_response(400, "the body is not JSON")
        event = payload.get("event_type") if isinstance(payload, dict) else None
        if event != "result.completed":
            logger.debug("webhook event %r ignored", event)
            return json_response({"received": "ignored", "event_type": event if isinstance(event, str) else None})
        try:
            result = Result.model_validate(payload.get("data"))
        except ValidationError:
            logger.warning("webhook refused: its data is not a result with an id and a status")
            return error_response(400, "data must be a result, with at least an id and a status")
        received = await self.daemon.pushed.receive(result)
        return json_response({"received": received, "result_id": result.id})

    # -- the status page --------------------------------------------------------------------------------

    async def status_page(self, request: web.Request) -> web.Response:
        """One page of the jobs at a glance (``?page=``, ``?q=``, ``?state=failing``); refreshes itself.

        The daemon's state is read on the loop, the database in a thread, and the page, a pure function of what
        was read, is drawn in a thread too: the loop is held only for the reading of one page's jobs. Each step
        waits for a fire about to fall due to be sent first (``Api.after_due_fires``).
        """
        shown = await snapshot(self.daemon, self.api, request, refresh=self.refresh)
        await self.api.after_due_fires()
        return _html(await asyncio.to_thread(render, shown))


def page_view(query: Mapping[str, str]) -> tuple[View, int]:
    """The view the page is asked for, and its page number; what a person mistyped is read as the default."""
    page = query.get("page", "")
    number = int(page) if page.isdigit() and 0 < int(page) <= 10**6 else 1
    view = View(
        q=query.get("q", "").strip()[:100],
        failing=query.get("state") == "failing",
        offset=(number - 1) * PER_PAGE,
        limit=PER_PAGE,
    )
    return view, number


async def snapshot(daemon: Daemon, api: Api, request: web.Request, *, refresh: int) -> Snapshot:
    """What the status page shows now, every text of the daemon's through ``Daemon.redact``."""
    redact = daemon.redact
    view, number = page_view(request.query)
    now, problem, loops = daemon.clock.now(), None, daemon.loop_health()
    try:
        reading = await api.read(view, history=HISTORY)
        jobs, total, holds, recent, incidents = (
            reading.jobs,
            reading.total,
            reading.holds,
            reading.recent,
            reading.incidents,
        )
    except StoreError as error:
        # Without the database the page still lists the jobs (by name: whether one is failing is not known).
        named = api.named(view)
        jobs, total = named[view.offset : view.offset + PER_PAGE], len(named)
        holds, recent, incidents, problem = {}, {}, api.incidents(), redact(str(error))

    def masked(fires: list[Fire]) -> list[Fire]:
        return [replace(fire, error=redact(fire.error)) if fire.error else fire for fire in fires]

    def shown(items: list[Incident]) -> list[Incident]:
        return [replace(item, subject=redact(item.subject), detail=redact(item.detail)) for item in items]

    rows = [
        JobRow(
            job=job,
            next_fire=next_fire(daemon, job, now),
            holds=[hold for kind in ("pause", "silence") if (hold := holds.get((job.name, kind))) is not None],
            fires=masked(recent.get(job.name, [])),
            incidents=shown(incidents.get(job.name, [])),
        )
        for job in jobs
    ]
    paging = Paging(q=view.q, failing=view.failing, page=number, total=total, jobs=len(daemon.config.jobs))
    return Snapshot(
        now=now,
        version=__version__,
        owner=daemon.owner,
        started_at=daemon.started_at,
        ticked_at=daemon.ticked_at,
        config_path=str(daemon.config.path),
        config_digest=daemon.config.digest,
        config_errors=[redact(str(issue)) for issue in daemon.config_errors],
        loops=[replace(loop, last_error=redact(loop.last_error)) if loop.last_error else loop for loop in loops],
        jobs=rows,
        daemon_incidents=shown(incidents.get("", [])),
        database_problem=problem,
        notice=_notice(daemon, request),
        refresh=refresh,
        paging=paging,
    )


def _notice(daemon: Daemon, request: web.Request) -> str | None:
    """What a button of the page just did, from the query it was sent back with."""
    action, name = request.query.get("done"), request.query.get("job", "")
    if action not in ("triggered", "paused", "resumed") or name not in daemon.config.jobs:
        return None
    fire = request.query.get("fire", "")
    return f"{name} {action}" + (f" (fire {int(fire)})" if fire.isdigit() else "")


__all__ = ["READY_WITHIN", "WebServer"]
