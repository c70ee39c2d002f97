"""The floor of our stack: bare APScheduler 3 and one httpx client firing the same jobs, and nothing else.

No claim, no record, no polling: an ``AsyncIOScheduler`` with one date trigger per (job, slot), whose coroutine
POSTs the submission through one ``httpx.AsyncClient`` limited to ``--connections`` connections. Run as
``python -m bench.floor --url URL --jobs N --slot EPOCH``; it prints ``READY`` once the jobs are scheduled and
exits when every POST has its answer. The simulator measures when each POST arrived.

``--client aiohttp`` is the floor of the submission path alone: no scheduler, one ``aiohttp.ClientSession``
limited to ``--connections`` connections sends every POST of a slot when the slot comes (issue 15's "fairer
floor"). Either way the process prints ``CPU <seconds>`` before it exits: its CPU time from ``READY`` on.

``--every SECONDS`` (instead of ``--slot``) is the soak benchmark's floor: the same jobs on an interval trigger,
each fire's result then followed to its end as the daemon's default polling does (first read after 10 s, then
x1.5 up to a minute), in a task kept in a set until it is done; it runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from datetime import UTC, datetime

import aiohttp
import httpx
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

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


FIRST_READ, READ_FACTOR, LONGEST_READ = 10.0, 1.5, 60.0  # the daemon's default poll_interval and its backoff
TERMINAL = frozenset({"completed", "failed", "timeout", "cancelled"})


async def follow_all(url: str, jobs: int, every: float, connections: int) -> None:
    """Fire ``jobs`` jobs every ``every`` s (epoch-aligned) and follow each result to its end, until SIGTERM."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    endpoint = _endpoint(url)
    followers: set[asyncio.Task[None]] = set()
    firing: set[asyncio.Task[object]] = set()  # POSTs in flight: let them end before the client closes
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    async with httpx.AsyncClient(timeout=httpx.Timeout(300.0), limits=limits) as http:

        async def follow(result: int) -> None:
            pause = FIRST_READ
            while True:
                await asyncio.sleep(pause)
                pause = min(pause * READ_FACTOR, LONGEST_READ)
                answer = await http.get(f"{url}/test_framework/v2/results/{result}/", headers=HEADERS)
                if answer.json().get("status") in TERMINAL:
                    return

        async def fire(job: str) -> None:
            if stop.is_set():
                return
            this = asyncio.current_task()
            assert this is not None
            firing.add(this)
            this.add_done_callback(firing.discard)
            name = submission_name(job, datetime.now(UTC).replace(microsecond=0))
            answer = await http.post(endpoint, json=_body(name), headers=HEADERS)
            task = asyncio.create_task(follow(answer.json()["id"]))
            followers.add(task)
            task.add_done_callback(followers.discard)

        scheduler = AsyncIOScheduler(timezone=UTC)
        start = datetime.fromtimestamp((time.time() // every + 1) * every, UTC)
        for index in range(jobs):
            job = f"floor{index:05d}"
            trigger = IntervalTrigger(seconds=every, start_date=start)
            # max_instances: a slow answer must not make APScheduler skip the job's next slot.
            scheduler.add_job(
                fire, trigger, args=[job], id=job, misfire_grace_time=None, coalesce=False, max_instances=100
            )
        scheduler.start()
        ready()
        await stop.wait()
        # APScheduler's shutdown cancels the jobs still running: let the POSTs in flight end first.
        scheduler.pause()
        await asyncio.gather(*firing, return_exceptions=True)
        scheduler.shutdown(wait=False)
        for task in list(followers):
            task.cancel()
        await asyncio.gather(*followers, return_exceptions=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description="bare APScheduler 3 + httpx")
    parser.add_argument("--url", required=True)
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--slot", type=float, action="append", help="epoch seconds (repeatable)")
    parser.add_argument("--every", type=float, help="instead of --slot: fire every SECONDS and follow, until SIGTERM")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--client", choices=("apscheduler", "aiohttp"), default="apscheduler")
    args = parser.parse_args(argv)
    if (args.slot is None) == (args.every is None):
        parser.error("give --slot (repeatable) or --every")
    run = fire_all if args.client == "apscheduler" else post_all
    try:
        if args.every is not None:
            asyncio.run(follow_all(args.url, args.jobs, args.every, args.connections))
        else:
            asyncio.run(run(args.url, args.jobs, args.slot, args.connections))
    finally:
        if _READY_CPU:  # imports and scheduling are not counted
            print(f"CPU {time.process_time() - _READY_CPU[0]}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
