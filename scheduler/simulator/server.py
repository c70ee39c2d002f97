"""The simulator's HTTP side: the aiohttp application, its handlers, and running it in a thread or until stopped."""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout, web

from scheduler.endpoints import BY_PATH
from scheduler.simulator.config import TERMINAL, Json, SimulatorConfig
from scheduler.simulator.results import Result, Results, Submission
from scheduler.simulator.validation import check_submission
from scheduler.simulator.views import detail, hit, started

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
_RESULTS = ("/test_framework/v1/results", "/test_framework/v2/results")
WEBHOOK_EVERY = 0.05  # seconds between two looks for results that have ended, to push them


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers)


async def _read_json(request: web.Request) -> Any:
    """Return the request's parsed JSON body, or None when it is not JSON."""
    try:
        return await request.json()
    except ValueError:
        return None


def _not_found() -> web.Response:
    return _json({"detail": "Not found."}, 404)


class Simulator:
    """A Cekura-compatible aiohttp application with its own state: results, submissions log, config."""

    def __init__(self, config: SimulatorConfig | None = None, *, clock: Clock = _utc_now) -> None:
        self.config = config if config is not None else SimulatorConfig()
        self.submissions: list[Submission] = []
        self.ended_calls: list[int] = []
        self.base_url = ""
        self._clock = clock
        self._rng = random.Random(self.config.seed)
        self._results = Results()
        self._runner: web.AppRunner | None = None
        self._pusher: asyncio.Task[None] | None = None
        self._pushed: set[int] = set()
        self.webhooks: list[Json] = []  # each webhook sent: result id, copy, the status code it got (or the error)
        # Called (on the simulator's loop) once a POST has created its result, before the answer leaves: a test
        # makes something fail there, e.g. the daemon's database, while the answer is on its way.
        self.on_submission: Callable[[Submission], None] | None = None
        self.app = web.Application()
        self.app.router.add_post("/test_framework/v1/scenarios/{endpoint}/", self._submit)
        for results in _RESULTS:
            self.app.router.add_get(f"{results}/", self._list)
            self.app.router.add_get(rf"{results}/{{id:\d+}}/", self._detail)
            self.app.router.add_post(rf"{results}/{{id:\d+}}/end_calls/", self._end_calls)
        self.app.router.add_route("*", "/test_framework/{tail:.*}", self._unknown)
        self.app.router.add_get("/_simulator/submissions", self._control_submissions)
        self.app.router.add_get("/schedules/v1/cron-jobs/", self._cron_jobs)
        self.app.router.add_get("/_simulator/end_calls", self._control_end_calls)
        self.app.router.add_get("/_simulator/webhooks", self._control_webhooks)
        self.app.router.add_post("/_simulator/config", self._control_config)
        self.app.router.add_get("/_simulator/health", self._control_health)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on `host`:`port` (0 picks a free port) and return the base URL."""
        if self._runner is not None:
            raise RuntimeError("simulator already started")
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._pusher = asyncio.ensure_future(self._push_ended())
        bound_host, bound_port = runner.addresses[0][:2]
        self.base_url = f"http://{bound_host}:{bound_port}"
        return self.base_url

    async def stop(self) -> None:
        """Stop listening and close open connections; a no-op when not started."""
        if self._pusher is not None:
            self._pusher.cancel()
            await asyncio.gather(self._pusher, return_exceptions=True)
            self._pusher = None
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _push_ended(self) -> None:
        """Send Cekura's ``result.completed`` webhook for each result that has ended, once it has (while a
        ``webhook_url`` is set), ``webhook_copies`` times, unless ``webhook_drop_rate`` loses it."""
        async with ClientSession(timeout=ClientTimeout(total=10)) as session:
            while True:
                await asyncio.sleep(WEBHOOK_EVERY)
                url = self.config.webhook_url
                if url is None:
                    continue
                for result in self._results.newest_first():
                    if result.id in self._pushed:
                        continue
                    view = self._view(result)
                    if view["status"] not in TERMINAL:
                        continue
                    self._pushed.add(result.id)
                    if self._rng.random() < self.config.webhook_drop_rate:
                        self.webhooks.append({"result_id": result.id, "copy": 0, "status": "lost"})
                        continue
                    for copy in range(1, self.config.webhook_copies + 1):
                        await self._send_webhook(session, url, view, copy)

    async def _send_webhook(self, session: ClientSession, url: str, view: Json, copy: int) -> None:
        payload = {"event_type": "result.completed", "data": view}
        headers = {"X-CEKURA-SECRET": self.config.webhook_secret}
        entry: Json = {"result_id": view["id"], "copy": copy}
        try:
            async with session.post(url, json=payload, headers=headers) as response:
                entry["status"] = response.status
        except (ClientError, TimeoutError) as error:
            entry["status"] = f"error: {type(error).__name__}"
        self.webhooks.append(entry)
        logger.info("simulator: webhook for result %d (copy %d) -> %s", view["id"], copy, entry["status"])

    async def _gate(self, request: web.Request) -> web.Response | None:
        """Apply latency, authentication and throttling; return the answer that ends the request, if any."""
        if self.config.latency > 0:
            await asyncio.sleep(self.config.latency)
        key = request.headers.get("X-CEKURA-API-KEY", "")
        expected = self.config.api_key
        if not key or (expected is not None and key != expected):
            return _json({"detail": "Invalid API key."}, 401)
        if self._rng.random() < self.config.error_429_rate:
            detail = f"Request was throttled. Expected available in {self.config.retry_after} seconds."
            return _json({"detail": detail}, 429, {"Retry-After": str(self.config.retry_after)})
        return None

    async def _unknown(self, request: web.Request) -> web.Response:
        denied = await self._gate(request)
        return denied if denied is not None else _not_found()

    async def _submit(self, request: web.Request) -> web.StreamResponse:
        endpoint = request.match_info["endpoint"]
        body = await _read_json(request)
        denied = await self._gate(request)
        if endpoint not in BY_PATH:
            return denied if denied is not None else _not_found()
        data = body if isinstance(body, dict) else {}
        name = data.get("name") if isinstance(data.get("name"), str) else None
        entry = Submission(None, endpoint, name, data, self._clock(), None)
        self.submissions.append(entry)
        answer = denied if denied is not None else self._process(endpoint, body, entry)
        entry.status_code = answer.status if answer is not None else None
        if entry.result_id is not None and self.on_submission is not None:
            self.on_submission(entry)
        outcome = entry.status_code or "dropped"
        logger.info("simulator: %s %r -> %s, result %s", endpoint, name, outcome, entry.result_id)
        if answer is not None:
            return answer
        # The result exists but the client sees the connection close: it cannot know the POST succeeded.
        if request.transport is not None:
            request.transport.close()
        return web.Response(status=500)  # never sent: aiohttp gives up quietly on the closed transport

    def _process(self, endpoint: str, body: Any, entry: Submission) -> web.Response | None:
        """Validate and create a result; None means the result exists but the answer must be dropped."""
        if not isinstance(body, dict):
            return _json({"detail": "JSON parse error - expected a JSON object."}, 400)
        order = check_submission(endpoint, body, self.config)
        if isinstance(order, dict):
            return _json(order, 400)
        if set(order.scenarios) & self.config.unknown_scenarios:
            return _json({"scenarios": ["Invalid scenario IDs or scenarios not found"]}, 400)
        needed = order.runs
        if self.config.balance is not None and needed > self.config.balance:
            return _json({"detail": "Insufficient balance for this operation"}, 402)
        failing = self._rng.random() < self.config.error_500_rate
        dropping = self._rng.random() < self.config.drop_rate
        if failing:
            return _json({"detail": "Internal server error"}, 500)
        if self.config.balance is not None:
            self.config.balance -= needed
        as_text = endpoint == "run_scenarios_text"
        result = self._results.create(entry, order, run_as_text=as_text, at=self._clock(), config=self.config)
        entry.result_id = result.id
        if dropping:
            return None
        # The email endpoint answers with the result itself (runs as an object), the others with "run started".
        return _json(started(result, as_result=endpoint == "run_scenarios_email"), BY_PATH[endpoint].created)

    def _view(self, result: Result) -> Json:
        """Render a result as the detail endpoint does, logging its terminal state the first time it shows."""
        view = detail(result, now=self._clock(), config=self.config)
        if self._results.first_seen_ended(result, view["status"]):
            counts = (view["status"], int(view["failed_runs_count"]), len(result.runs))
            logger.info("simulator: result %d (%s) %s, %d/%d runs failed", result.id, result.name, *counts)
        return view

    async def _detail(self, request: web.Request) -> web.Response:
        if (denied := await self._gate(request)) is not None:
            return denied
        result = self._results.get(int(request.match_info["id"]))
        return _json(self._view(result)) if result is not None else _not_found()

    async def _list(self, request: web.Request) -> web.Response:
        if (denied := await self._gate(request)) is not None:
            return denied
        search = request.query.get("search", "").casefold()
        agent = request.query.get("agent_id")
        try:
            page = int(request.query.get("page", "1"))
            size = min(max(int(request.query.get("page_size", "50")), 1), 100)
        except ValueError:
            return _json({"detail": "Invalid page."}, 404)
        matches = [
            result
            for result in self._results.newest_first()
            if search in (result.name or "").casefold() and (agent is None or str(result.agent) == agent)
        ]
        pages = max(1, -(-len(matches) // size))
        if not 1 <= page <= pages:
            return _json({"detail": "Invalid page."}, 404)
        return _json(
            {
                "count": len(matches),
                "next": str(request.url.update_query(page=page + 1)) if page < pages else None,
                "previous": str(request.url.update_query(page=page - 1)) if page > 1 else None,
                "results": [
                    hit(result, self._view(result), config=self.config)
                    for result in matches[(page - 1) * size : page * size]
                ],
            }
        )

    async def _end_calls(self, request: web.Request) -> web.Response:
        if (denied := await self._gate(request)) is not None:
            return denied
        result_id = int(request.match_info["id"])
        self.ended_calls.append(result_id)
        logger.info("simulator: end_calls on result %d", result_id)
        result = self._results.get(result_id)
        if result is None:
            return _not_found()
        self._results.end_calls(result, self._clock())
        self._view(result)  # logs the terminal state
        return _json({"detail": "Calls ended."})

    async def _control_submissions(self, request: web.Request) -> web.Response:
        return _json([entry.to_json() for entry in self.submissions])

    async def _cron_jobs(self, request: web.Request) -> web.Response:
        """Cekura's own scheduled jobs, as ``cron_jobs`` lists them (filtered by ``agent_id``/``project_id``)."""
        if (denied := await self._gate(request)) is not None:
            return denied
        jobs = self.config.cron_jobs
        if (agent := request.query.get("agent_id")) is not None:
            jobs = [job for job in jobs if str(job.get("agent")) == agent]
        return _json(jobs)

    async def _control_webhooks(self, request: web.Request) -> web.Response:
        return _json(self.webhooks)

    async def _control_end_calls(self, request: web.Request) -> web.Response:
        return _json(self.ended_calls)

    async def _control_config(self, request: web.Request) -> web.Response:
        patch = await _read_json(request)
        if not isinstance(patch, dict):
            return _json({"detail": "Expected a JSON object of config fields."}, 400)
        try:
            self.config = self.config.patched(patch)
        except ValueError as exc:
            return _json({"detail": str(exc)}, 400)
        if "seed" in patch:
            self._rng.seed(self.config.seed)
        if "behaviours" in patch:
            self._results.restart_cycles()  # a new cycle starts from its first outcome
        logger.info("simulator: config changed: %s", sorted(patch))
        return _json(self.config.to_json())

    async def _control_health(self, request: web.Request) -> web.Response:
        return _json({"ok": True})


@contextmanager
def running_simulator(
    config: SimulatorConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    clock: Clock = _utc_now,
) -> Iterator[Simulator]:
    """Run a simulator on its own event loop in a daemon thread; yield it once it listens, stop it on exit."""
    simulator = Simulator(config, clock=clock)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="cekura-simulator", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(simulator.start(host, port), loop).result()
        try:
            yield simulator
        finally:
            asyncio.run_coroutine_threadsafe(simulator.stop(), loop).result()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


async def serve(config: SimulatorConfig, *, host: str, port: int, stop: asyncio.Event) -> None:
    """Serve the simulator until `stop` is set."""
    simulator = Simulator(config)
    url = await simulator.start(host, port)
    logger.info("simulator: listening on %s", url)
    try:
        await stop.wait()
    finally:
        await simulator.stop()
