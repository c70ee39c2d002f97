"""Time to verdict: from a result's end at Cekura to its verdict recorded, and to its alert delivered, when the
daemon polls (the default schedule: 10 s, growing by half up to 1 min) and when Cekura pushes a webhook.

``python -m bench.pushing [--results N]``: one daemon in-process per mode (real clock, SQLite in a scratch
folder), the simulator on 127.0.0.1, each result lasting a different time (spread evenly over 5..45 s, as real
runs do), every run failing so that each result opens an incident and sends one alert to a local json://
inbox. About 3 minutes, nearly all of it waiting.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import SecretStr

from scheduler.cekura import CekuraClient
from scheduler.clock import SystemClock
from scheduler.config import load_config
from scheduler.daemon import Daemon
from scheduler.delivery import AppriseSender
from scheduler.simulator import SimulatorConfig, running_simulator
from scheduler.simulator.inbox import AlertInbox
from scheduler.store import Store, create_db_engine, upgrade_database
from scheduler.transport import http_client
from scheduler.web import WebServer

SECRET = "bench-webhook-secret-0123456789"
SHORTEST, LONGEST = 5.0, 45.0  # seconds a result runs


def _wait_for_alerts(inbox: AlertInbox, jobs: int, within: float) -> None:
    """Until an alert about each of ``jobs`` jobs has arrived, or ``within`` seconds have passed."""
    deadline = time.monotonic() + within
    while len(inbox.first_by_job()) < jobs and (left := deadline - time.monotonic()) > 0:
        inbox.arrival.clear()
        if len(inbox.first_by_job()) < jobs:
            inbox.arrival.wait(min(left, 1.0))


def jobs_toml(count: int, inbox: str) -> str:
    text = f'[defaults]\nalerts = ["team"]\n\n[alerts.team]\nurl = "{inbox}"\n'
    for index in range(count):
        text += f'\n[jobs.j{index}]\ncron = "0 3 * * *"\nagent = 12\nscenarios = [101]\n'
    return text


async def measure(count: int, *, webhooks: bool, folder: Path) -> dict[str, list[float]]:
    """Seconds from each result's end to its verdict and to its alert, for one mode."""
    inbox = AlertInbox()
    path = folder / f"jobs-{webhooks}.toml"
    path.write_text(jobs_toml(count, inbox.url))
    config = load_config(path, env={})
    engine = create_db_engine(f"sqlite:///{folder / f'bench-{webhooks}.db'}")
    upgrade_database(engine)
    store = Store(engine=engine)
    simulator_config = SimulatorConfig(api_key="sim-key", behaviours={101: ["fail"]}, webhook_secret=SECRET)
    ends: dict[int, datetime] = {}
    with running_simulator(simulator_config) as simulator:
        async with http_client(max_connections=60) as http:
            cekura = CekuraClient(http=http, base_url=simulator.base_url, api_key=SecretStr("sim-key"))
            daemon = Daemon(
                config=config,
                store=store,
                cekura=cekura,
                alerts=AppriseSender(),
                clock=SystemClock(),
                webhooks=webhooks,
            )
            stop = asyncio.Event()
            task = asyncio.create_task(daemon.run(stop))
            async with WebServer(daemon=daemon, port=0, webhook_secret=SecretStr(SECRET) if webhooks else None) as web:
                if webhooks:
                    simulator.config.webhook_url = f"{web.url}/webhooks/cekura"
                fires = []
                for index in range(count):
                    duration = SHORTEST + (LONGEST - SHORTEST) * index / max(count - 1, 1)
                    simulator.config.run_duration = duration  # decided when the result is submitted
                    fire = await daemon.fire(config.jobs[f"j{index}"], datetime.now(UTC))
                    assert fire is not None and fire.result_id is not None and fire.submitted_at is not None
                    ends[fire.id] = fire.submitted_at + timedelta(seconds=duration)
                    fires.append(fire)
                await asyncio.to_thread(_wait_for_alerts, inbox, count, LONGEST + 120)
            stop.set()
            await task
    verdict, alert = [], []
    for fire in fires:
        recorded = store.get_fire(fire.id)
        assert recorded is not None and recorded.finished_at is not None, f"{fire.job} has no verdict"
        verdict.append((recorded.finished_at - ends[fire.id]).total_seconds())
        if (arrived := inbox.first_by_job().get(fire.job)) is not None:
            alert.append(arrived - ends[fire.id].timestamp())
    inbox.close()
    engine.dispose()
    return {"verdict": verdict, "alert": alert}


def summary(seconds: list[float]) -> str:
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"median {statistics.median(ordered):6.2f} s, p95 {p95:6.2f} s, max {ordered[-1]:6.2f} s (n={len(ordered)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=int, default=16)
    count = parser.parse_args().results
    with tempfile.TemporaryDirectory(prefix="bench-pushing-") as scratch:
        for webhooks in (False, True):
            times = asyncio.run(measure(count, webhooks=webhooks, folder=Path(scratch)))
            mode = "webhooks" if webhooks else "polling "
            print(f"{mode}  end -> verdict: {summary(times['verdict'])}")
            print(f"{mode}  end -> alert:   {summary(times['alert'])}")


if __name__ == "__main__":
    main()
