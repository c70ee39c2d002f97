"""The floor of our stack: bare APScheduler 3 and one httpx client firing the same jobs, and nothing else.

No claim, no record, no polling: an ``AsyncIOScheduler`` with one date trigger per (job, slot), whose coroutine
POSTs the submission through one ``httpx.AsyncClient`` limited to ``--connections`` connections. Run as
``python -m bench.floor --url URL --jobs N --slot EPOCH``; it prints ``READY`` once the jobs are scheduled and
exits when every POST has its answer. The simulator measures when each POST arrived.

``--client aiohttp`` is the floor of the submission path alone: no scheduler, one ``aiohttp.ClientSession``
limited to ``--connections`` connections sends every POST of a slot when the slot comes (issue 15's "fairer
floor"). Either way the process prints ``CPU <seconds>`` before it exits: its CPU time from ``READY`` on.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime

import aiohttp
import httpx
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger

from bench.simserver import API_KEY
from scheduler.schedules import submission_name

_READY_CPU: list[float] = []  # the process's CPU time when it printed READY


def ready() -> None:
    _READY_CPU.append(time.process_time())
    print("READY", flush=True)


HEADERS = {"X-CEKURA-API-KEY": API_KEY, "Accept": "application/json"}


def _endpoint(url: str) -> str:
    return f"{url}/test_framework/v1/scenarios/run_scenarios_livekit_v2/"


def _body(name: str) -> dict[str, object]:
    return {"name": name, "frequency": 1, "scenarios": [{"scenario": 101}], "agent": 12}


async def fire_all(url: str, jobs: int, slots: list[float], connections: int) -> None:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    endpoint = _endpoint(url)
    total = jobs * len(slots)
    done = asyncio.Event()
    answered = 0

    async with httpx.AsyncClient(timeout=httpx.Timeout(300.0), limits=limits) as http:

        async def post(name: str) -> None:
            nonlocal answered
            try:
                await http.post(endpoint, json=_body(name), headers=HEADERS)
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
        ready()
        await done.wait()
        scheduler.shutdown(wait=False)


async def post_all(url: str, jobs: int, slots: list[float], connections: int) -> None:
    """Every POST of each slot sent when the slot comes, through one aiohttp session of ``connections``."""
    endpoint = _endpoint(url)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections), timeout=aiohttp.ClientTimeout(total=300)
    ) as session:

        async def post(name: str) -> None:
            async with session.post(endpoint, json=_body(name), headers=HEADERS) as answer:
                await answer.read()

        ready()
        for slot in slots:
            await asyncio.sleep(max(0.0, slot - time.time()))
            at = datetime.fromtimestamp(slot, UTC)
            names = [submission_name(f"floor{index:05d}", at) for index in range(jobs)]
            await asyncio.gather(*(post(name) for name in names), return_exceptions=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description="bare APScheduler 3 + httpx")
    parser.add_argument("--url", required=True)
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--slot", type=float, action="append", required=True, help="epoch seconds (repeatable)")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--client", choices=("apscheduler", "aiohttp"), default="apscheduler")
    args = parser.parse_args(argv)
    run = fire_all if args.client == "apscheduler" else post_all
    try:
        asyncio.run(run(args.url, args.jobs, args.slot, args.connections))
    finally:
        if _READY_CPU:  # imports and scheduling are not counted
            print(f"CPU {time.process_time() - _READY_CPU[0]}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
