"""Results pushed by Cekura's webhook: the simulator sends ``result.completed`` to the daemon's HTTP server.

The daemon runs on the real clock with ``webhook_poll_interval`` at an hour, so a verdict recorded within seconds
can only have come from the webhook; the lost-webhook test shortens it to see polling decide.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from scheduler.cekura import CekuraClient
from scheduler.clock import SystemClock
from scheduler.daemon import Daemon
from scheduler.delivery import AppriseSender
from scheduler.simulator import Simulator
from scheduler.store import Fire, Store
from scheduler.web import WebServer
from tests.conftest import API_KEY, HEADER, AlertInbox, cekura_http, eventually, prepare

SECRET = "whsec-0123456789abcdef-long-and-random"
JOBS = """
[jobs.smoke]
cron = "0 3 * * *"
agent = 12
scenarios = [101]
"""


@contextlib.asynccontextmanager
async def pushed_to(
    tmp_path: Path,
    simulator: Simulator,
    inbox: AlertInbox,
    sqlite_url: str,
    *,
    fallback: str = "1h",
    secret: str = SECRET,
    clock: Callable[[], datetime] | None = None,
) -> AsyncIterator[tuple[Daemon, Store, httpx.AsyncClient]]:
    """A running daemon with webhooks on and its HTTP server, and the simulator sending it webhooks."""
    header = HEADER.replace("[daemon]\n", f'[daemon]\nwebhook_poll_interval = "{fallback}"\n')
    config, store = prepare(tmp_path, JOBS, inbox=inbox, database_url=sqlite_url, header=header)
    async with cekura_http() as http:
        cekura = CekuraClient(http=http, base_url=simulator.base_url, api_key=SecretStr(API_KEY))
        daemon = Daemon(
            config=config, store=store, cekura=cekura, alerts=AppriseSender(), clock=SystemClock(), webhooks=True
        )
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.run(stop))
        try:
            async with (
                WebServer(daemon=daemon, port=0, webhook_secret=SecretStr(secret), clock=clock) as web,
                httpx.AsyncClient(base_url=web.url, timeout=15.0) as client,
            ):
                simulator.config.webhook_url = f"{web.url}/webhooks/cekura"
                simulator.config.webhook_secret = SECRET
                yield daemon, store, client
        finally:
            simulator.config.webhook_url = None
            stop.set()
            await task


async def fire_now(daemon: Daemon) -> Fire:
    """Fire the job now, followed by this daemon (as a scheduled slot is)."""
    fire = await daemon.fire(daemon.config.jobs["smoke"], datetime.now(UTC))
    assert fire is not None and fire.state == "submitted"
    return fire


def outcome(store: Store, fire: Fire) -> Fire:
    recorded = store.get_fire(fire.id)
    assert recorded is not None
    return recorded


def test_a_webhook_with_the_right_secret_records_the_verdict_at_once_and_a_duplicate_changes_nothing(
    tmp_path: Path, simulator: Simulator, alert_inbox: AlertInbox, sqlite_url: str
) -> None:
    async def main() -> None:
        simulator.config.behaviours = {101: ["fail"]}
        simulator.config.webhook_copies = 2  # Cekura's retries can deliver one webhook twice
        async with pushed_to(tmp_path, simulator, alert_inbox, sqlite_url) as (daemon, store, _):
            fire = await fire_now(daemon)
            await eventually(lambda: outcome(store, fire).state == "finished", within=10)
            first = outcome(store, fire)
            # A webhook is answered once its verdict (and the alert in the outbox) is written: after both
            # answers, a second alert would be in the outbox already.
            await eventually(lambda: len(simulator.webhooks) == 2, within=10)
            outbox = [(item.channel, item.kind) for item in store.outbox()]
            await eventually(lambda: len(alert_inbox.titles()) >= 1, within=10)

        assert (first.outcome, first.result_status) == ("failed", "completed")
        assert first.error == f"run {first.runs[0].run_id} failed"
        assert [hook["status"] for hook in simulator.webhooks] == [200, 200]
        assert outcome(store, fire).finished_at == first.finished_at  # the duplicate changed nothing
        assert outbox == [("team", "opened")]
        assert "FAILED smoke" in alert_inbox.titles()[0]

    asyncio.run(main())


def test_a_wrong_or_missing_secret_is_401_logged_and_never_a_verdict(
    tmp_path: Path,
    simulator: Simulator,
    alert_inbox: AlertInbox,
    sqlite_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        caplog.set_level(logging.INFO)
        simulator.config.run_duration = 3600  # no result ends by itself during the test
        async with pushed_to(tmp_path, simulator, alert_inbox, sqlite_url) as (daemon, store, client):
            fire = await fire_now(daemon)
            forged = {
                "event_type": "result.completed",
                "data": {"id": fire.result_id, "status": "completed", "runs": {}},
            }
            wrong = await client.post("/webhooks/cekura", json=forged, headers={"X-CEKURA-SECRET": "guess"})
            missing = await client.post("/webhooks/cekura", json=forged)
            page = (await client.get("/")).text

        assert (wrong.status_code, missing.status_code) == (401, 401)
        assert wrong.json() == {"error": "a valid X-CEKURA-SECRET header is required"}
        assert outcome(store, fire).state == "submitted"
        refused = [record.getMessage() for record in caplog.records if "webhook from" in record.getMessage()]
        assert refused == [
            "webhook from 127.0.0.1 refused: a wrong X-CEKURA-SECRET header",
            "webhook from 127.0.0.1 refused: no X-CEKURA-SECRET header",
        ]
        assert SECRET not in caplog.text and SECRET not in page

    asyncio.run(main())


def test_five_wrong_secrets_a_minute_lock_the_address_out_of_the_webhook_until_the_minute_is_over(
    tmp_path: Path,
    simulator: Simulator,
    alert_inbox: AlertInbox,
    sqlite_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = datetime.now(UTC)
    moved = timedelta()

    def clock() -> datetime:
        return now + moved

    async def main() -> None:
        nonlocal moved
        simulator.config.run_duration = 3600  # no result ends by itself: only the test's webhooks arrive
        async with pushed_to(tmp_path, simulator, alert_inbox, sqlite_url, clock=clock) as (daemon, store, client):
            fire = await fire_now(daemon)
            pushed = {"event_type": "result.completed", "data": {"id": fire.result_id, "status": "running"}}

            async def push(secret: str) -> httpx.Response:
                return await client.post("/webhooks/cekura", json=pushed, headers={"X-CEKURA-SECRET": secret})

            assert [(await push("guess")).status_code for _ in range(5)] == [401] * 5
            locked = await push(SECRET)  # over the limit, not even the right secret is compared
            assert (locked.status_code, locked.headers["retry-after"]) == (429, "60")
            assert locked.json() == {"error": "too many wrong webhook secrets from this address: try again in 60s"}
            moved = timedelta(seconds=45)
            assert (await push("guess")).headers["retry-after"] == "15"
            moved = timedelta(seconds=61)  # the first wrong one is more than a minute old
            assert (await push(SECRET)).status_code == 200
            assert (await push("guess")).status_code == 401  # the right one forgot the failures
            assert (await push(SECRET)).status_code == 200
            assert outcome(store, fire).state == "submitted"  # still running, as the pushes said

        warnings = [r.getMessage() for r in caplog.records if "webhook from" in r.getMessage()]
        assert warnings.count("webhook from 127.0.0.1 refused: a wrong X-CEKURA-SECRET header") == 6
        assert warnings.count("webhook from 127.0.0.1 refused for 60s: 5 wrong secrets within a minute") == 1

    asyncio.run(main())


def test_a_lost_webhook_still_ends_in_a_verdict_by_polling(
    tmp_path: Path, simulator: Simulator, alert_inbox: AlertInbox, sqlite_url: str
) -> None:
    async def main() -> None:
        simulator.config.webhook_drop_rate = 1.0
        async with pushed_to(tmp_path, simulator, alert_inbox, sqlite_url, fallback="1s") as (daemon, store, _):
            fire = await fire_now(daemon)
            await eventually(lambda: outcome(store, fire).state == "finished", within=15)

        assert outcome(store, fire).outcome == "passed"
        assert [hook["status"] for hook in simulator.webhooks] == ["lost"]

    asyncio.run(main())


def test_a_webhook_for_a_result_of_someone_elses_or_another_event_changes_nothing(
    tmp_path: Path, simulator: Simulator, alert_inbox: AlertInbox, sqlite_url: str
) -> None:
    async def main() -> None:
        simulator.config.run_duration = 3600
        async with pushed_to(tmp_path, simulator, alert_inbox, sqlite_url) as (daemon, store, client):
            fire = await fire_now(daemon)
            secret = {"X-CEKURA-SECRET": SECRET}
            foreign = {"event_type": "result.completed", "data": {"id": 1, "name": "theirs", "status": "completed"}}
            running = {"event_type": "result.completed", "data": {"id": fire.result_id, "status": "running"}}
            answers = [
                await client.post("/webhooks/cekura", json=foreign, headers=secret),
                await client.post(
                    "/webhooks/cekura", json={"event_type": "result.pre_trigger", "data": {}}, headers=secret
                ),
                await client.post("/webhooks/cekura", json=running, headers=secret),
                await client.post(
                    "/webhooks/cekura", json={"event_type": "result.completed", "data": {}}, headers=secret
                ),
            ]

        assert [answer.status_code for answer in answers] == [200, 200, 200, 400]
        assert [answer.json().get("received") for answer in answers[:3]] == ["not ours", "ignored", "not ended"]
        assert outcome(store, fire).state == "submitted"

    asyncio.run(main())
