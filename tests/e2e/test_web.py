"""The HTTP server over real HTTP: a daemon in-process (or the real CLI), the simulator, a real SQLite file."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from scheduler.cekura import CekuraClient
from scheduler.clock import VirtualClock
from scheduler.config import Config, ConfigSource, load_config
from scheduler.daemon import Daemon
from scheduler.delivery import AppriseSender
from scheduler.errors import SchedulerError
from scheduler.simulator import Simulator
from scheduler.store import Store, create_db_engine
from scheduler.web import WebServer
from tests.conftest import (
    API_KEY,
    HEADER,
    AlertInbox,
    cekura_http,
    claim_slot,
    clean_environment,
    cli,
    make_daemon,
    prepare,
    wait_until,
)

JOBS = """
[jobs.nightly]
cron = "0 3 * * *"
timezone = "America/New_York"
agent = 34
scenarios = [301]

[jobs.smoke]
every = "1s"
agent = 12
scenarios = [101]
"""

TOKEN = "a-long-random-token-0123456789"
SECRET = "s3cr3t-from-env-0xBEEF"
# A channel whose URL holds a secret from the environment: the daemon then hides it wherever it shows text.
HOOK = '\n[alerts.hook]\nurl = "json://127.0.0.1:1/${HOOK_TOKEN}"\n'
# Leases of 2 s: the daemon sweeps every second, and so reads its open incidents again.
SWEEPING = HEADER.replace("[daemon]\n", '[daemon]\nlease = "2s"\n')


def prepare_with_secret(
    tmp_path: Path, inbox: AlertInbox, database_url: str, *, header: str = HEADER
) -> tuple[Config, Store]:
    """``prepare``, with ``SECRET`` in the config (through ``${HOOK_TOKEN}``), so that the daemon knows it."""
    _, store = prepare(tmp_path, JOBS, inbox=inbox, database_url=database_url, header=header)
    path = tmp_path / "jobs.toml"
    path.write_text(header + JOBS + HOOK)
    return load_config(path, env={"INBOX": inbox.url, "HOOK_TOKEN": SECRET}), store


@contextlib.asynccontextmanager
async def serving(
    tmp_path: Path,
    simulator: Simulator,
    inbox: AlertInbox,
    database_url: str,
    *,
    token: str | None = None,
    running: bool = True,
    header: str = HEADER,
    secret: bool = False,
    reloadable: bool = False,
    **web_options: Any,
) -> AsyncIterator[tuple[Daemon, httpx.AsyncClient]]:
    """A daemon (running, or only constructed) with its HTTP server on 127.0.0.1, and a client for it.

    ``secret`` puts ``SECRET`` in its config; ``header`` replaces the config's ``[daemon]`` and channels;
    ``reloadable`` lets it read its jobs.toml again (``daemon.reload()``).
    """
    if secret:
        config, store = prepare_with_secret(tmp_path, inbox, database_url, header=header)
    else:
        config, store = prepare(tmp_path, JOBS, inbox=inbox, database_url=database_url, header=header)
    async with cekura_http() as http_to_cekura:
        source = ConfigSource(tmp_path / "jobs.toml", env={"INBOX": inbox.url, "HOOK_TOKEN": SECRET})
        daemon = make_daemon(config, store, http_to_cekura, simulator, config_source=source if reloadable else None)
        async with serving_daemon(daemon, token=token, running=running, **web_options) as client:
            yield daemon, client


@contextlib.asynccontextmanager
async def serving_daemon(
    daemon: Daemon, *, token: str | None = None, running: bool = True, **web_options: Any
) -> AsyncIterator[httpx.AsyncClient]:
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop)) if running else None
    try:
        async with (
            WebServer(daemon=daemon, port=0, token=SecretStr(token) if token else None, **web_options) as web,
            httpx.AsyncClient(base_url=web.url, timeout=15.0) as client,
        ):
            yield client
    finally:
        stop.set()
        if task is not None:
            await task


async def eventually(condition: Callable[[], Awaitable[bool]], within: float = 20.0) -> None:
    """Ask the server again until the condition holds."""
    deadline = asyncio.get_running_loop().time() + within
    while not await condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


async def alive(client: httpx.AsyncClient) -> None:
    """Until the daemon's loops have all started (it checks the API key and catches up first)."""

    async def healthy() -> bool:
        return (await client.get("/healthz")).status_code == 200

    await eventually(healthy)


class Clock(VirtualClock):
    """A virtual clock the test moves by hand (``now()`` as the daemon's, ``()`` as the web server's)."""

    def __init__(self) -> None:
        super().__init__(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now()


class PausingClock(Clock):
    """The test's clock, where a sleep (the supervisor's pause before it restarts a loop) lasts until ``restart``."""

    def __init__(self, restart: asyncio.Event) -> None:
        super().__init__()
        self.restart = restart

    async def sleep(self, seconds: float) -> None:
        await self.restart.wait()


def test_health_readiness_and_metrics_of_a_running_daemon(
    tmp_path: Path, simulator: Simulator, alert_inbox: AlertInbox, sqlite_url: str
) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, simulator, alert_inbox, sqlite_url) as (_, client):
            await alive(client)
            health = await client.get("/healthz")
            assert health.status_code == 200 and health.json()["status"] == "ok", health.text
            loops = {loop["name"]: loop for loop in health.json()["loops"]}
            assert {"timer", "sweep", "heartbeat", "outbox", "prune", "key-check"} <= set(loops)
            assert all(loop["ok"] for loop in loops.values()) and health.json()["stale"] == []
            assert loops["timer"]["last_tick"] is not None
            ready = await client.get("/readyz")
            assert ready.status_code == 200 and ready.json() == {"ready": True, "database": "ok", "config": "ok"}
            metrics = await client.get("/metrics")
            assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
            assert "cekura_scheduler_up 1.0" in metrics.text

    asyncio.run(scenario())


def test_healthz_names_a_loop_that_fails_and_is_503_until_it_turns_again(
    tmp_path: Path, simulator: Simulator, alert_inbox: AlertInbox, sqlite_url: str
) -> None:
    """A loop that raises once: /healthz, ``check`` and the page name it, with its error redacted, until it recovers."""
    restart = asyncio.Event()
    clock = PausingClock(restart)
    attempts: list[int] = []

    async def timer(tick: Callable[[], None]) -> None:
        tick()
        await asyncio.Event().wait()

    async def sweep(tick: Callable[[], None]) -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError(f"cannot reach https://hooks.example/{SECRET}")
        tick()
        await asyncio.Event().wait()

    async def scenario() -> None:
        config, store = prepare_with_secret(tmp_path, alert_inbox, sqlite_url)
        async with cekura_http() as http_to_cekura:
            cekura = CekuraClient(http=http_to_cekura, base_url=simulator.base_url, api_key=SecretStr(API_KEY))
            daemon = Daemon(
                config=config,
                store=store,
                cekura=cekura,
                alerts=AppriseSender(),
                clock=clock,
            )
            async with serving_daemon(daemon, token=TOKEN, running=False) as client:
                await watch(daemon, client)

    async def watch(daemon: Daemon, client: httpx.AsyncClient) -> None:
        supervisor = daemon.supervisor  # the daemon's own, on the test's clock, pausing until told to restart
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        answer = await client.get("/healthz")
        assert answer.status_code == 503 and answer.json()["status"] == "not started"

        tasks = [
            supervisor.start("timer", timer, stale_after=timedelta(seconds=30)),
            supervisor.start("sweep", sweep, stale_after=timedelta(seconds=90)),
        ]
        try:
            await until(lambda: supervisor.stale() == ["sweep"])
            answer = await client.get("/healthz", headers=bearer)
            assert answer.status_code == 503, answer.text
            health = answer.json()
            assert health["status"] == "stale" and health["stale"] == ["sweep"]
            loops = {loop["name"]: loop for loop in health["loops"]}
            assert loops["timer"]["ok"] is True and loops["sweep"]["ok"] is False
            assert loops["sweep"]["failures"] == 1
            assert loops["sweep"]["last_error"] == "RuntimeError: cannot reach https://hooks.example/***"
            # Open to anyone, but the errors are for those with the token.
            anonymous = (await client.get("/healthz")).json()
            assert anonymous["stale"] == ["sweep"] and "hooks.example" not in json.dumps(anonymous)

            port = str(client.base_url.port)
            env = _cli_env(SCHEDULER_HTTP_ADDR=f"127.0.0.1:{port}", SCHEDULER_HTTP_TOKEN=TOKEN)
            checked = await asyncio.to_thread(cli, "check", env=env)
            assert checked.returncode == 1
            assert "background task down or stale: sweep (failed 1 time: RuntimeError: cannot reach" in (checked.stderr)
            assert SECRET not in checked.stderr

            page = (await client.get("/", headers=bearer)).text
            banner = page.split('id="loops-down"')[1].split("</div>")[0]
            assert "<b>sweep</b> down, restarting (1 failure in a row)" in banner and "hooks.example/***" in banner
            assert SECRET not in page

            restart.set()
            await until(lambda: supervisor.stale() == [])
            answer = await client.get("/healthz")
            assert answer.status_code == 200 and answer.json()["status"] == "ok"
            assert 'id="loops-down"' not in (await client.get("/", headers=bearer)).text
            assert (await asyncio.to_thread(cli, "check", env=env)).returncode == 0

            clock.advance(31)  # the timer has not turned for longer than its 30 s
            answer = await client.get("/healthz")
            assert answer.status_code == 503 and answer.json()["stale"] == ["timer"]
            checked = await asyncio.to_thread(cli, "check", env=env)
            assert "down or stale: timer (last turned at 2026-03-02T09:00:00Z)" in checked.stderr
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(scenario())


async def until(condition: Callable[[], bool], within: float = 10.0) -> None:
    """Let the event loop run until a condition of this process holds."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 - the supervisor has no event to wait on
            await asyncio.sleep(0.01)


def test_readyz_answers_503_within_a_second_while_sqlite_is_locked(
    tmp_path: Path, simulator: Simulator, alert_inbox: AlertInbox, sqlite_url: str
) -> None:
    """Another process holds the file's lock (longer than SQLite's 30 s busy timeout): 503 at once, not a hang.

    The lock is taken in exclusive locking mode: in WAL mode a plain ``BEGIN EXCLUSIVE`` blocks writers only, and
    the readiness query reads.
    """
    path = sqlite_url.removeprefix("sqlite:///")

    async def scenario() -> None:
        async with serving(tmp_path, simulator, alert_inbox, sqlite_url, running=False) as (daemon, client):
            assert (await client.get("/readyz")).status_code == 200
            daemon.store.engine.dispose()  # an open connection would keep the lock from being taken
            locker = sqlite3.connect(path, isolation_level=None, timeout=5)
            try:
                locker.execute("PRAGMA locking_mode=EXCLUSIVE")
                locker.execute("BEGIN EXCLUSIVE")
                for _ in range(3):  # the later probes wait on the first query rather than start more
                    began = time.monotonic()
                    ready = await client.get("/readyz")
                    assert time.monotonic() - began < 2.0
                    assert ready.status_code == 503
                    assert ready.json() == {
                        "ready": False,
                        "database": "database did not answer within 1s",
                        "config": "ok",
                    }
                assert (await client.get("/healthz")).json()["status"] == "not started"  # no database asked
            finally:
                locker.close()

            async def ready_again() -> bool:
                return (await client.get("/readyz")).status_code == 200

            await eventually(ready_again, within=10)

    asyncio.run(scenario())


def test_readyz_is_503_while_the_config_file_is_invalid_and_the_page_says_so(
    tmp_path: Path, simulator: Simulator, alert_inbox: AlertInbox, sqlite_url: str
) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, simulator, alert_inbox, sqlite_url, reloadable=True) as (daemon, client):
            invalid = HEADER + JOBS.replace("scenarios = [101]", 'scenarios = [101]\n"<script>x" = 1')
            (tmp_path / "jobs.toml").write_text(invalid)
            assert not await daemon.reload()
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["config"].startswith("1 error in the file; running the previous version")
            assert ready.json()["errors"][0]["message"] == "unknown key '<script>x'"
            page = await client.get("/")
            assert page.status_code == 200 and 'id="config-invalid"' in page.text and "CONFIG INVALID" in page.text
            assert "unknown key &#x27;&lt;script&gt;x&#x27;" in page.text and "<script>" not in page.text
            assert (await client.get("/api/jobs")).json()["config"]["valid"] is False

    asyncio.run(scenario())


def test_readyz_and_the_page_when_the_database_is_unreachable(
    tmp_path: Path, simulator: Simulator, alert_inbox: AlertInbox, sqlite_url: str
) -> None:
    config, _ = prepare(tmp_path, JOBS, inbox=alert_inbox, database_url=sqlite_url)
    engine = create_db_engine("postgresql+psycopg://nobody@127.0.0.1:1/nothing?connect_timeout=2")

    async def scenario() -> None:
        async with cekura_http() as http_to_cekura:
            daemon = make_daemon(config, Store(engine=engine), http_to_cekura, simulator)
            async with serving_daemon(daemon, running=False) as client:
                ready = await client.get("/readyz")
                assert ready.status_code == 503 and "database error" in ready.json()["database"]
                assert (await client.get("/api/jobs")).status_code == 503
                page = await client.get("/")
                assert page.status_code == 200 and "Database unreachable." in page.text
                assert 'data-job="nightly"' in page.text  # the jobs are still listed, from the config

    try:
        asyncio.run(scenario())
    finally:
        engine.dispose()


def test_api_jobs_lists_every_job_and_never_a_secret(
    tmp_path: Path, simulator: Simulator, alert_inbox: AlertInbox, sqlite_url: str
) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, simulator, alert_inbox, sqlite_url) as (daemon, client):
            await eventually(lambda: _has_outcome(client, "smoke"))
            answer = await client.get("/api/jobs")
            assert answer.status_code == 200
            jobs = {job["name"]: job for job in answer.json()["jobs"]}
            nightly, smoke = jobs["nightly"], jobs["smoke"]
            assert nightly["schedule"] == "At 03:00, every day, in America/New_York"
            assert nightly["enabled"] is True and nightly["paused"] is False and nightly["last_outcome"] is None
            assert datetime.fromisoformat(nightly["next_fire"]) == daemon.next_fire("nightly")
            assert nightly["open_incident"] is None
            assert smoke["schedule"] == "Every second" and smoke["last_fire"]["job"] == "smoke"
            for path in ("/api/jobs", "/", "/readyz", "/metrics", "/api/jobs/smoke/fires"):
                text = (await client.get(path)).text
                assert API_KEY not in text and alert_inbox.url not in text and "127.0.0.1:" not in text, path

    asyncio.run(scenario())


async def _has_outcome(client: httpx.AsyncClient, job: str) -> bool:
    fires = (await client.get(f"/api/jobs/{job}/fires")).json()["fires"]
    return any(fire["outcome"] for fire in fires)


def test_trigger_records_a_fire_that_shows_in_the_history_and_the_metrics(
    tmp_path: Path, simulator: Simulator, alert_inbox: AlertInbox, sqlite_url: str
) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, simulator, alert_inbox, sqlite_url) as (_, client):
            answer = await client.post("/api/jobs/nightly/trigger")
            assert answer.status_code == 201, answer.text
            fire = answer.json()
            assert fire["job"] == "nightly" and fire["trigger"] == "manual" and fire["state"] == "submitted"
            assert fire["result_id"] is not None
            listed = (await client.get("/api/jobs/nightly/fires")).json()["fires"]
            assert [item["id"] for item in listed] == [fire["id"]]

            async def finished() -> bool:
                return bool((await client.get(f"/api/fires/{fire['id']}")).json()["outcome"] == "passed")

            await eventually(finished)
            detail = (await client.get(f"/api/fires/{fire['id']}")).json()
            assert [(run["scenario"], run["success"]) for run in detail["runs"]] == [(301, True)]
            counted = 'cekura_scheduler_fires_total{job="nightly",outcome="passed"} 1.0'

            async def in_the_metrics() -> bool:  # counted by the follower once the database has the outcome
                return counted in (await client.get("/metrics")).text

            await eventually(in_the_metrics)

            assert len((await client.get("/api/jobs/smoke/fires?limit=2")).json()["fires"]) <= 2
            for bad in ("0", "1001", "many"):
                assert (await client.get(f"/api/jobs/smoke/fires?limit={bad}")).status_code == 400
            assert (await client.get("/api/jobs/nope/fires")).status_code == 404
            assert (await client.get("/api/fires/999999")).status_code == 404
            assert (await client.post("/api/jobs/nope/trigger")).status_code == 404

    asyncio.run(scenario())


def test_pause_skips_the_next_slots_and_resume_fires_them_again(
    tmp_path: Path, simulator: Simulator, alert_inbox: AlertInbox, sqlite_url: str
) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, simulator, alert_inbox, sqlite_url) as (_, client):
            paused_at = datetime.now(UTC)
            answer = await client.post("/api/jobs/smoke/pause", json={"reason": "agent redeploy", "by": "alice"})
            assert answer.status_code == 200 and answer.json()["paused"] is True
            smoke = next(job for job in (await client.get("/api/jobs")).json()["jobs"] if job["name"] == "smoke")
            assert smoke["paused"] is True and smoke["pause"]["reason"] == "agent redeploy"
            assert smoke["pause"]["by"].startswith("alice")

            async def slots_after(moment: datetime) -> list[dict[str, str]]:
                fires = (await client.get("/api/jobs/smoke/fires?limit=50")).json()["fires"]
                return [fire for fire in fires if datetime.fromisoformat(fire["slot"]) > moment + timedelta(seconds=1)]

            async def skipped_as_paused() -> bool:
                return any(fire["skip_reason"] == "paused" for fire in await slots_after(paused_at))

            await eventually(skipped_as_paused)
            assert all(fire["state"] == "skipped" for fire in await slots_after(paused_at))

            resumed_at = datetime.now(UTC)
            answer = await client.post("/api/jobs/smoke/resume")
            assert answer.status_code == 200 and answer.json() == {"job": "smoke", "resumed": True}

            async def fired_again() -> bool:
                return any(fire["state"] != "skipped" for fire in await slots_after(resumed_at))

            await eventually(fired_again)
            assert all(fire["skip_reason"] is None for fire in await slots_after(resumed_at))
            assert (await client.post("/api/jobs/smoke/resume")).json()["resumed"] is False
            assert (await client.post("/api/jobs/smoke/pause", json={"until": "yesterday"})).status_code == 400

    asyncio.run(scenario())


def test_the_token_guards_everything_but_healthz(
    tmp_path: Path, simulator: Simulator, alert_inbox: AlertInbox, sqlite_url: str
) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, simulator, alert_inbox, sqlite_url, token=TOKEN) as (daemon, client):
            reads = ["/", "/readyz", "/metrics", "/api/jobs", "/api/jobs/nightly/fires", "/api/fires/1"]
            actions = ["/api/jobs/nightly/trigger", "/api/jobs/nightly/pause", "/api/jobs/nightly/resume"]
            for headers in ({}, {"Authorization": TOKEN}):  # no token, or not as a bearer: not counted as sign-ins
                for path in reads:
                    assert (await client.get(path, headers=headers)).status_code == 401, (path, headers)
                for path in actions:
                    assert (await client.post(path, headers=headers)).status_code == 401, (path, headers)
            wrong = {"Authorization": "Bearer wrong"}
            assert (await client.get(reads[3], headers=wrong)).status_code == 401
            assert (await client.post(actions[0], headers=wrong)).status_code == 401
            await alive(client)
            assert await asyncio.to_thread(daemon.store.recent_fires, job="nightly") == []
            assert await asyncio.to_thread(daemon.store.active_holds, at=datetime.now(UTC)) == []

            bearer = {"Authorization": f"Bearer {TOKEN}"}
            for path in reads[:-1]:
                assert (await client.get(path, headers=bearer)).status_code == 200, path
            assert (await client.post(actions[0], headers=bearer)).status_code == 201

            # The status page: a login form, then a session cookie that is not the token itself.
            login = await client.get("/")
            assert login.status_code == 401 and 'action="/login"' in login.text
            assert (await client.post("/login", data={"token": "wrong"})).status_code == 401
            signed_in = await client.post("/login", data={"token": TOKEN})
            assert signed_in.status_code == 303
            cookie = signed_in.headers["set-cookie"]
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
            page = await client.get("/")
            assert page.status_code == 200 and 'data-job="nightly"' in page.text
            origin = {"Origin": str(client.base_url).rstrip("/")}
            pressed = await client.post("/api/jobs/smoke/pause", data={"by": "bob"}, headers=origin)
            assert pressed.status_code == 303 and pressed.headers["location"] == "/?done=paused&job=smoke"
            cross_site = await client.post("/api/jobs/smoke/resume", data={}, headers={"Origin": "http://evil.test"})
            assert cross_site.status_code == 403
            assert "paused" in (await client.get("/?done=paused&job=smoke")).text

    asyncio.run(scenario())


def test_without_a_token_it_answers_local_names_and_same_origin_posts_only(
    tmp_path: Path, simulator: Simulator, alert_inbox: AlertInbox, sqlite_url: str
) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, simulator, alert_inbox, sqlite_url) as (daemon, client):
            # A page on another site, or a name rebound to 127.0.0.1, must not read or act.
            assert (await client.get("/api/jobs", headers={"Host": "evil.test:8787"})).status_code == 403
            refused = await client.post("/api/jobs/nightly/trigger", headers={"Origin": "http://evil.test"})
            assert refused.status_code == 403
            assert await asyncio.to_thread(daemon.store.recent_fires, job="nightly") == []
            await alive(client)
            assert (await client.get("/healthz", headers={"Host": "evil.test"})).status_code == 200
            assert (await client.get("/api/jobs", headers={"Host": "localhost:8787"})).status_code == 200

    asyncio.run(scenario())
    with pytest.raises(SchedulerError, match="needs a token"):
        WebServer(daemon=None, host="0.0.0.0")  # type: ignore[arg-type]


def test_the_status_page_shows_outcomes_incidents_and_buttons(
    tmp_path: Path, simulator: Simulator, alert_inbox: AlertInbox, sqlite_url: str
) -> None:
    simulator.config.behaviours = {101: ["pass", *["fail"] * 100]}  # one pass, then an incident that stays open

    async def scenario() -> None:
        async with serving(tmp_path, simulator, alert_inbox, sqlite_url, header=SWEEPING) as (daemon, client):

            async def both_outcomes() -> bool:
                fires = (await client.get("/api/jobs/smoke/fires?limit=50")).json()["fires"]
                return {"passed", "failed"} <= {fire["outcome"] for fire in fires}

            await eventually(both_outcomes)
            await daemon.incidents.problem("the config folder is not readable", "permission denied")

            async def both_incidents() -> bool:
                return {incident.scope for incident in daemon.open_incidents()} == {"job", "daemon"}

            await eventually(both_incidents)  # read again at the daemon's next sweep
            page = (await client.get("/")).text
            listed = {job["name"]: job for job in (await client.get("/api/jobs")).json()["jobs"]}
            incident = listed["smoke"]["open_incident"]
            assert (incident["scope"], incident["subject"], incident["channel"]) == ("job", "smoke", "team")
            assert datetime.fromisoformat(incident["opened_at"]) <= datetime.now(UTC)
            assert incident["opened_at"].endswith("Z") and incident["resolved_at"] is None
            assert listed["nightly"]["open_incident"] is None
        assert "Open incidents of the daemon" in page and "the config folder is not readable" in page
        assert '<meta http-equiv="refresh"' in page and 'name="viewport"' in page
        smoke = page.split('data-job="smoke"')[1].split("</tr>")[0]
        assert 'class="m passed"' in smoke and 'class="m failed"' in smoke
        assert "Every second" in smoke and "result 90" in smoke  # tooltips: slot, outcome, result id
        assert smoke.count('class="m ') <= 20
        since = datetime.fromisoformat(incident["failing_since"] or incident["opened_at"])
        assert f'<span class="pill bad">incident</span> open<br><small>since {since:%Y-%m-%d %H:%M} UTC' in smoke
        assert 'data-action="trigger"' in smoke and 'data-action="pause"' in smoke
        nightly = page.split('data-job="nightly"')[1].split("</tr>")[0]
        assert "At 03:00, every day, in America/New_York" in nightly and "no fires yet" in nightly
        assert 'class="incident"' not in nightly

    asyncio.run(scenario())


def zulu(instant: datetime) -> str:
    """How the API writes an instant: ISO 8601 in UTC with a Z."""
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def test_pauses_and_silences_show_who_why_since_and_until(
    tmp_path: Path, simulator: Simulator, alert_inbox: AlertInbox, sqlite_url: str
) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, simulator, alert_inbox, sqlite_url, running=False) as (daemon, client):
            now = datetime.now(UTC)
            until = (now + timedelta(days=2)).replace(microsecond=0)
            answer = await client.post(
                "/api/jobs/nightly/pause",
                json={"by": "alice", "reason": "<b>agent redeploy</b>", "until": until.isoformat()},
            )
            assert answer.status_code == 200, answer.text
            store = daemon.store
            for hours in (1, None):  # of two silences, the one that lasts longer is shown
                ends = now + timedelta(hours=hours) if hours else None
                await asyncio.to_thread(
                    store.add_hold, job="nightly", kind="silence", at=now, until=ends, created_by="bob", reason="outage"
                )
            await asyncio.to_thread(
                store.add_hold, job="smoke", kind="silence", at=now, until=until, created_by="carol", reason=""
            )

            jobs = {job["name"]: job for job in (await client.get("/api/jobs")).json()["jobs"]}
            nightly, smoke = jobs["nightly"], jobs["smoke"]
            assert nightly["paused"] is True and nightly["silenced"] is True
            assert nightly["pause"] == {
                "by": "alice (127.0.0.1)",
                "reason": "<b>agent redeploy</b>",
                "since": nightly["pause"]["since"],
                "until": zulu(until),
            }
            assert abs(datetime.fromisoformat(nightly["pause"]["since"]) - now) < timedelta(seconds=5)
            assert nightly["silence"] == {"by": "bob", "reason": "outage", "since": zulu(now), "until": None}
            assert smoke["paused"] is False and smoke["pause"] is None
            assert smoke["silenced"] is True and smoke["silence"]["until"] == zulu(until)

            page = (await client.get("/")).text
            row = page.split('data-job="nightly"')[1].split("</tr>")[0]
            local = f"{until.astimezone(daemon.config.jobs['nightly'].timezone):%Y-%m-%d %H:%M:%S %Z}"
            assert (
                f'data-hold="pause" title="since {now.astimezone(daemon.config.jobs["nightly"].timezone):%Y-%m-%d}'
            ) in row
            assert f"paused by alice (127.0.0.1) until {local}: &lt;b&gt;agent redeploy&lt;/b&gt;</div>" in row
            assert "alerts silenced by bob until further notice: outage</div>" in row
            assert 'data-action="resume"' in row and 'data-action="pause"' not in row and "<b>agent" not in row
            row = page.split('data-job="smoke"')[1].split("</tr>")[0]
            assert f"alerts silenced by carol until {until:%Y-%m-%d %H:%M:%S} UTC</div>" in row
            assert 'data-hold="pause"' not in row and 'data-action="pause"' in row  # silenced, still firing

            await asyncio.to_thread(store.end_holds, job="nightly", kind="silence", at=datetime.now(UTC))
            jobs = {job["name"]: job for job in (await client.get("/api/jobs")).json()["jobs"]}
            assert jobs["nightly"]["silenced"] is False and jobs["nightly"]["silence"] is None
            assert "alerts silenced by bob" not in (await client.get("/")).text

    asyncio.run(scenario())


def test_secrets_in_errors_are_redacted_on_every_page_and_answer(
    tmp_path: Path, simulator: Simulator, alert_inbox: AlertInbox, sqlite_url: str
) -> None:
    """Fire errors, config problems, incidents and database errors reach the web through Daemon.redact."""

    async def scenario() -> None:
        async with serving(
            tmp_path, simulator, alert_inbox, sqlite_url, running=False, header=SWEEPING, secret=True, reloadable=True
        ) as (daemon, client):
            store, now = daemon.store, datetime.now(UTC)
            fire = await asyncio.to_thread(claim_slot, store, "nightly", now)
            assert fire is not None
            await asyncio.to_thread(
                store.skip_claimed, fire.id, reason="lost", at=now, error=f"Cekura said: bad header {SECRET}"
            )
            await asyncio.to_thread(
                store.open_incident,
                scope="job",
                subject="nightly",
                channels=["team"],
                at=now,
                detail=f"alert to slack://{SECRET}@x failed",
                notice=None,
            )

            async def incident_shown() -> bool:
                return bool(daemon.open_incidents())

            stop = asyncio.Event()
            running = asyncio.create_task(daemon.run(stop))  # started now: its first sweep reads the incident
            try:
                await eventually(incident_shown)
                invalid = SWEEPING + JOBS.replace(
                    "scenarios = [301]", f'scenarios = [301]\nresult_timeout = "{SECRET}"'
                )
                (tmp_path / "jobs.toml").write_text(invalid + HOOK)
                assert not await daemon.reload()
                answers = {
                    path: await client.get(path)
                    for path in ("/", "/api/jobs", "/api/jobs/nightly/fires", f"/api/fires/{fire.id}", "/readyz")
                }
            finally:
                stop.set()
                await running
            for path, answer in answers.items():
                assert SECRET not in answer.text, path
            assert answers[f"/api/fires/{fire.id}"].json()["error"] == "Cekura said: bad header ***"
            said = answers["/readyz"].json()["errors"][0]["message"]
            assert said.startswith("result_timeout: invalid duration '(the value of ${HOOK_TOKEN})'")
            nightly = next(job for job in answers["/api/jobs"].json()["jobs"] if job["name"] == "nightly")
            assert nightly["open_incident"]["detail"] == "alert to slack://***@x failed"
            assert nightly["last_fire"]["error"] == "Cekura said: bad header ***"
            page = answers["/"].text
            assert (
                "invalid duration &#x27;(the value of ${HOOK_TOKEN})&#x27;" in page
                and "bad header ***" in page
                and "slack://***@x" in page
            )

        # The database's own error, when it cannot be reached, goes through it too.
        config, _ = prepare_with_secret(tmp_path, alert_inbox, sqlite_url)
        engine = create_db_engine(f"postgresql+psycopg://{SECRET}@127.0.0.1:1/nothing?connect_timeout=2")
        try:
            async with cekura_http() as http_to_cekura:
                daemon = make_daemon(config, Store(engine=engine), http_to_cekura, simulator)
                async with serving_daemon(daemon, running=False) as client:
                    for path in ("/", "/api/jobs", "/readyz", "/api/jobs/smoke/fires"):
                        assert SECRET not in (await client.get(path)).text, path
        finally:
            engine.dispose()

    asyncio.run(scenario())


def test_sign_in_is_limited_to_five_failures_a_minute_per_address(
    tmp_path: Path, simulator: Simulator, alert_inbox: AlertInbox, sqlite_url: str
) -> None:
    clock = Clock()

    async def scenario() -> None:
        async with serving(tmp_path, simulator, alert_inbox, sqlite_url, token=TOKEN, running=False, clock=clock) as (
            _,
            client,
        ):
            for _ in range(5):
                assert (await client.post("/login", data={"token": "guess"})).status_code == 401
            refused = await client.post("/login", data={"token": "guess"})
            assert refused.status_code == 429 and refused.headers["retry-after"] == "60"
            assert "too many failed sign-ins from this address: try again in 60s" in refused.text
            # Over the limit, not even the right token is checked: guessing gets no answer.
            assert (await client.post("/login", data={"token": TOKEN})).status_code == 429
            bearer = {"Authorization": f"Bearer {TOKEN}"}
            assert (await client.get("/api/jobs", headers=bearer)).status_code == 429
            # Without a proxy trusted, a forged X-Forwarded-For is no way out.
            forged = {"X-Forwarded-For": "198.51.100.1"}
            assert (await client.post("/login", data={"token": TOKEN}, headers=forged)).status_code == 429
            # Asking without a token is not signing in: it is neither counted nor refused.
            assert (await client.get("/api/jobs")).status_code == 401
            assert (await client.get("/")).status_code == 401

            clock.advance(45)
            assert (await client.get("/api/jobs", headers=bearer)).headers["retry-after"] == "15"
            clock.advance(16)  # the first failure is now more than a minute old
            for _ in range(4):
                assert (await client.post("/login", data={"token": "guess"})).status_code == 401
            assert (await client.post("/login", data={"token": TOKEN})).status_code == 303
            client.cookies.clear()
            for _ in range(5):  # a successful sign-in forgets the failures
                assert (await client.post("/login", data={"token": "guess"})).status_code == 401
            assert (await client.post("/login", data={"token": "guess"})).status_code == 429

            # A wrong bearer token counts the same, and the API answers in JSON.
            clock.advance(61)
            for _ in range(5):
                assert (await client.get("/api/jobs", headers={"Authorization": "Bearer guess"})).status_code == 401
            limited = await client.get("/api/jobs", headers=bearer)
            assert limited.status_code == 429 and limited.headers["retry-after"] == "60"
            assert limited.json() == {"error": "too many failed sign-ins from this address: try again in 60s"}

    asyncio.run(scenario())


@pytest.mark.parametrize("trusted", [False, True], ids=["no-proxy", "behind-a-proxy"])
def test_forwarded_headers_count_only_behind_a_trusted_proxy(
    tmp_path: Path, simulator: Simulator, alert_inbox: AlertInbox, sqlite_url: str, trusted: bool
) -> None:
    clock = Clock()
    proxy = {
        "X-Forwarded-For": "10.0.0.9, 203.0.113.7",  # the client may write what it likes before the proxy's entry
        "X-Forwarded-Host": "sched.example.com",
        "X-Forwarded-Proto": "https",
    }

    async def scenario() -> None:
        async with serving(
            tmp_path,
            simulator,
            alert_inbox,
            sqlite_url,
            token=TOKEN,
            running=False,
            clock=clock,
            trust_forwarded=trusted,
        ) as (daemon, client):
            # The session cookie is Secure when the browser reached the proxy over HTTPS.
            signed_in = await client.post("/login", data={"token": TOKEN}, headers=proxy)
            assert signed_in.status_code == 303
            assert ("Secure" in signed_in.headers["set-cookie"]) is trusted

            # A page of the proxy's origin may press the buttons (a Secure cookie is not sent to http://: a bearer).
            client.cookies.clear()
            bearer = {"Authorization": f"Bearer {TOKEN}"}
            pressed = await client.post(
                "/api/jobs/nightly/pause",
                data={"by": "dana"},
                headers={**proxy, **bearer, "Origin": "https://sched.example.com"},
            )
            assert pressed.status_code == (303 if trusted else 403)
            holds = await asyncio.to_thread(daemon.store.active_holds, at=datetime.now(UTC))
            assert [hold.created_by for hold in holds] == (["dana (203.0.113.7)"] if trusted else [])
            other_origin = {**proxy, **bearer, "Origin": "https://evil.example.com"}
            assert (await client.post("/api/jobs/smoke/pause", data={}, headers=other_origin)).status_code == 403

            # The limit counts per client address: the one the proxy saw, or else the peer's.
            for _ in range(5):
                assert (await client.post("/login", data={"token": "guess"}, headers=proxy)).status_code == 401
            prefixed = {"X-Forwarded-For": "10.9.9.9, 203.0.113.7"}
            assert (await client.post("/login", data={"token": "guess"}, headers=prefixed)).status_code == 429
            other = {"X-Forwarded-For": "203.0.113.8"}
            assert (await client.post("/login", data={"token": TOKEN}, headers=other)).status_code == (
                303 if trusted else 429
            )

    asyncio.run(scenario())
    with pytest.raises(SchedulerError, match=r"proxy is in front.*needs a token"):
        WebServer(daemon=None, trust_forwarded=True)  # type: ignore[arg-type]


# -- the command line: check, and the jobs and history tables -----------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _cli_env(**settings: str) -> dict[str, str]:
    """This process's environment without its own settings, with these."""
    return clean_environment(**settings)


def test_check_and_the_tables_against_a_running_daemon(tmp_path: Path, simulator: Simulator) -> None:
    (tmp_path / "jobs.toml").write_text('[daemon]\npoll_interval = "1s"\npoll_max_interval = "1s"\n' + JOBS)
    env = clean_environment(
        SCHEDULER_CONFIG=str(tmp_path / "jobs.toml"),
        SCHEDULER_DATABASE_URL=f"sqlite:///{tmp_path / 's.db'}",
        SCHEDULER_HTTP_ADDR=f"127.0.0.1:{free_port()}",
        CEKURA_API_KEY=API_KEY,
        CEKURA_BASE_URL=simulator.base_url,
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "scheduler", "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_until(lambda: cli("check", env=env).returncode == 0, timeout=30)
        assert cli("check", env=env).stdout.startswith("ok: http://127.0.0.1:")
        wait_until(
            lambda: any(fire["outcome"] for fire in json.loads(cli("history", "--format", "json", env=env).stdout))
        )
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=40)
    assert process.returncode == 0, stderr
    assert "HTTP server on http://127.0.0.1:" in stderr

    stopped = cli("check", env=env)
    assert stopped.returncode == 1 and "unhealthy:" in stopped.stderr

    jobs = json.loads(cli("jobs", "--format", "json", env=env).stdout)
    named = {job["name"]: job for job in jobs["jobs"]}
    assert jobs["valid"] is True and named["nightly"]["schedule"] == "At 03:00, every day, in America/New_York"
    assert named["nightly"]["last_fire"] is None and named["smoke"]["last_fire"]["job"] == "smoke"
    table = cli("jobs", env=env).stdout
    assert table.splitlines()[0].split() == ["job", "state", "schedule", "next", "fire", "last"]
    assert "nightly" in table and "cron '0 3 * * *' (America/New_York)" in table and "never fired" in table
    history = cli("history", "smoke", "--limit", "3", env=env).stdout
    assert history.splitlines()[0].split() == ["id", "job", "slot", "outcome", "result", "runs", "error"]
    assert (
        "passed" in history
        and 1 <= len(json.loads(cli("history", "--limit", "3", "--format", "json", env=env).stdout)) <= 3
    )


MANY = "".join(f'\n[jobs.job-{index:03d}]\ncron = "0 3 * * *"\nagent = 34\nscenarios = [301]\n' for index in range(250))


@contextlib.asynccontextmanager
async def serving_many(
    tmp_path: Path, simulator: Simulator, inbox: AlertInbox, database_url: str
) -> AsyncIterator[tuple[Daemon, httpx.AsyncClient]]:
    """A daemon (not running: nothing fires by itself) of 250 daily jobs; job-007's last fire failed, job-008's
    failure was followed by a pass."""
    config, store = prepare(tmp_path, MANY, inbox=inbox, database_url=database_url)
    now = datetime.now(UTC)
    for job, outcomes in (("job-007", ["passed", "failed"]), ("job-008", ["failed", "passed"])):
        for minutes, outcome in enumerate(outcomes):
            fire = claim_slot(store, job, now - timedelta(hours=1) + timedelta(minutes=minutes))
            assert fire is not None
            store.finish(fire.id, outcome=outcome, at=now)
    async with cekura_http() as http_to_cekura:
        daemon = make_daemon(config, store, http_to_cekura, simulator)
        async with serving_daemon(daemon, running=False) as client:
            yield daemon, client


def _rows(page: str) -> list[str]:
    return [part.split('"', 1)[0] for part in page.split('<tr data-job="')[1:]]


def test_the_status_page_shows_100_jobs_at_a_time_and_finds_a_job_by_name_or_failing(
    tmp_path: Path, simulator: Simulator, alert_inbox: AlertInbox, sqlite_url: str
) -> None:
    async def scenario() -> None:
        async with serving_many(tmp_path, simulator, alert_inbox, sqlite_url) as (_, client):
            first = (await client.get("/")).text
            assert _rows(first) == [f"job-{index:03d}" for index in range(100)]
            assert "jobs 1-100 of 250" in first and 'href="/?page=2" rel="next"' in first
            assert 'rel="prev"' not in first and 'url=/">' in first

            last = (await client.get("/?page=3")).text
            assert _rows(last) == [f"job-{index:03d}" for index in range(200, 250)]
            assert "jobs 201-250 of 250" in last and 'href="/?page=2" rel="prev"' in last and 'rel="next"' not in last
            assert 'content="10; url=/?page=3"' in last  # the refresh stays on this page

            # The filter is a plain GET form: what a browser sends without JavaScript.
            assert '<form method="get" action="/" class="filter"' in first and 'name="q"' in first
            found = (await client.get("/", params={"q": "JOB-04"})).text
            assert _rows(found) == [f"job-{index:03d}" for index in range(40, 50)]
            assert "jobs 1-10 of 10 (name holds “JOB-04”; 250 in all)" in found
            assert 'content="10; url=/?q=JOB-04"' in found and 'value="JOB-04"' in found
            one = (await client.get("/", params={"q": "job-042"})).text
            assert _rows(one) == ["job-042"]

            failing = (await client.get("/", params={"state": "failing"})).text
            assert _rows(failing) == ["job-007"]
            row = failing.split('data-job="job-007"')[1].split("</tr>")[0]
            assert 'class="m passed"' in row and 'class="m failed"' in row
            assert 'url=/?state=failing"' in failing and 'value="failing" checked' in failing
            nothing = (await client.get("/", params={"q": "nightly"})).text
            assert _rows(nothing) == [] and "No job matches" in nothing

            # A button of a filtered page answers with the same page and filter.
            pause = {"q": "job-042"}
            paused = await client.post("/api/jobs/job-042/pause", data=pause, headers=_same_origin(client))
            assert paused.status_code == 303
            assert paused.headers["location"] == "/?done=paused&job=job-042&q=job-042"
            assert '<input type="hidden" name="page" value="3">' in last
            back = (await client.get(paused.headers["location"])).text
            assert _rows(back) == ["job-042"] and "job-042 paused" in back
            assert '<input type="hidden" name="q" value="job-042">' in back

    asyncio.run(scenario())


def _same_origin(client: httpx.AsyncClient) -> dict[str, str]:
    return {"Origin": str(client.base_url).rstrip("/")}


def test_api_jobs_pages_and_filters_when_asked(
    tmp_path: Path, simulator: Simulator, alert_inbox: AlertInbox, sqlite_url: str
) -> None:
    async def scenario() -> None:
        async with serving_many(tmp_path, simulator, alert_inbox, sqlite_url) as (_, client):
            every = (await client.get("/api/jobs")).json()
            assert len(every["jobs"]) == every["total"] == 250 and every["limit"] is None
            assert {job["name"]: job["last_outcome"] for job in every["jobs"] if job["last_outcome"]} == {
                "job-007": "failed",
                "job-008": "passed",
            }
            page = (await client.get("/api/jobs", params={"offset": 200, "limit": 100})).json()
            assert [job["name"] for job in page["jobs"]] == [f"job-{index:03d}" for index in range(200, 250)]
            assert (page["total"], page["offset"], page["limit"]) == (250, 200, 100)
            named = (await client.get("/api/jobs", params={"q": "job-04", "limit": 3})).json()
            assert [job["name"] for job in named["jobs"]] == ["job-040", "job-041", "job-042"]
            assert named["total"] == 10
            failing = (await client.get("/api/jobs", params={"state": "failing"})).json()
            assert [job["name"] for job in failing["jobs"]] == ["job-007"] and failing["total"] == 1
            assert failing["jobs"][0]["last_fire"]["outcome"] == "failed"
            for wrong in ({"limit": "0"}, {"offset": "-1"}, {"limit": "ten"}, {"state": "broken"}):
                answer = await client.get("/api/jobs", params=wrong)
                assert answer.status_code == 400 and answer.json()["error"], wrong

    asyncio.run(scenario())
