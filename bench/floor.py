"""The floor of our stack: bare APScheduler 3 and one httpx client firing the same jobs, and nothing else.

No claim, no record, no polling: an ``AsyncIOScheduler`` with one date trigger per (job, slot), whose coroutine
POSTs the submission through one ``httpx.AsyncClient`` limited to ``--connections`` connections. Run as
``python -m bench.floor --url URL --jobs N --slot EPOCH``; it prints ``READY`` once the jobs are scheduled and
exits when every POST has its answer. The simulator measures when each POST arrived.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime

import httpx
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger

from bench.simserver import API_KEY
from scheduler.schedules import submission_name


async def fire_all(url: str, jobs: int, slots: list[float], connections: int) -> None:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    headers = {"X-CEKURA-API-KEY": API_KEY, "Accept": "application/json"}
    endpoint = f"{url}/test_framework/v1/scenarios/run_scenarios_livekit_v2/"
    total = jobs * len(slots)
    done = asyncio.Event()
    answered = 0

    async with httpx.AsyncClient(timeout=httpx.Timeout(300.0), limits=limits) as http:

        async def post(name: str) -> None:
            nonlocal answered
            body = {"name": name, "frequency": 1, "scenarios": [{"scenario": 101}], "agent": 12}
            try:
                await http.post(endpoint, json=body, headers=headers)
            finally:
                answered += 1
                if answered == total:
                    done.set()

        scheduler = AsyncIOScheduler(timezone=UTC)
        for slot in slots:
            at = datetime.fromtimestamp(slot, UTC)
            for index in range(jobs):
                name = submission_name(f"floor{index:05d}", at)
                # misfire_grace_time=None: a late job still runs (APScheduler drops it after 1 s by default).
                scheduler.add_job(post, DateTrigger(run_date=at), args=[name], id=name, misfire_grace_time=None)
        scheduler.start()
        print("READY", flush=True)
        await done.wait()
        scheduler.shutdown(wait=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description="bare APScheduler 3 + httpx")
    parser.add_argument("--url", required=True)
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--slot", type=float, action="append", required=True, help="epoch seconds (repeatable)")
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args(argv)
    asyncio.run(fire_all(args.url, args.jobs, args.slot, args.connections))


if __name__ == "__main__":
    main(sys.argv[1:])
