"""Config: load and validate a generated jobs.toml of many jobs; reload it with one job changed, while running.

The reload runs in a real daemon (in this process, against the simulator in another) that has the big file
loaded and a few jobs firing every second; one of those is changed from every second to every two seconds. The
simulator's log then shows whether any slot was missed or sent twice around the reload.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from pydantic import SecretStr

from bench.plan import slot_of
from bench.procs import ChildUsage, SimServer, run_measured, scratch_folder
from bench.simserver import API_KEY
from scheduler.cekura import CekuraClient
from scheduler.config import ConfigSource, load_config
from scheduler.daemon import READS_IN_FLIGHT, Daemon
from scheduler.daemon.reloading import Reloader
from scheduler.delivery import AppriseSender
from scheduler.store import Store, create_db_engine, upgrade_database
from scheduler.transport import http_client

ZONES = ("UTC", "Europe/Paris", "America/New_York", "Asia/Tokyo")
CRON_SHAPES = ("{m} {h} * * *", "{m} {h} * * 1-5", "{m} {h} 1 * *", "{m} {h} * * 0", "{m} {h} 1,15 * *")
TICKING = 5  # jobs firing every second during the reload


def far_hour(zone: str) -> int:
    """An hour of the day, in ``zone``, 12 hours away: no cron at that hour falls due while we measure."""
    return (datetime.now(ZoneInfo(zone)) + timedelta(hours=12)).hour


def big_config(jobs: int, *, ticking: int = 0, tick_every: dict[str, str] | None = None) -> str:
    """A jobs.toml like a large deployment's: daily and weekly crons in four zones, varied scenarios.

    None of them falls due within hours. ``ticking`` more jobs fire every second (``tick_every`` may change one).
    """
    hours = {zone: far_hour(zone) for zone in ZONES}
    parts = [
        '[daemon]\npoll_interval = "1m"\n',
        '[defaults]\nagent = 12\nalerts = ["team"]\nresult_timeout = "2h"\n',
        '[alerts.team]\nurl = "json://127.0.0.1:9/alerts"\n',
    ]
    for index in range(jobs):
        zone = ZONES[index % len(ZONES)]
        cron = CRON_SHAPES[index % len(CRON_SHAPES)].format(m=index % 60, h=hours[zone])
        scenarios = (
            f'[{100 + index % 50}, {{ id = {200 + index % 7}, publish_data_message = {{ lang = "en" }} }}]'
            if index % 3 == 0
            else f"[{100 + index % 50}, {150 + index % 40}]"
        )
        parts.append(
            f'[jobs.svc-{index:05d}]\ncron = "{cron}"\ntimezone = "{zone}"\nscenarios = {scenarios}\n'
            f"frequency = {1 + index % 3}\n"
        )
    for index in range(ticking):
        name = f"tick-{index}"
        every = (tick_every or {}).get(name, "1s")
        parts.append(f'[jobs.{name}]\nevery = "{every}"\nscenarios = [101]\noverlap = "allow"\n')
    return "\n".join(parts)


@dataclass(frozen=True)
class LoadResult:
    jobs: int
    load: float  # median seconds of load_config (read, parse, interpolate, validate)
    parse: float  # median seconds of tomllib.loads alone: the baseline


def load_run(jobs: int, repeats: int) -> LoadResult:
    with scratch_folder("config") as folder:
        path = folder / "jobs.toml"
        path.write_text(big_config(jobs))
        loads, parses = [], []
        for _ in range(repeats):
            began = time.perf_counter()
            tomllib.loads(path.read_text())
            parses.append(time.perf_counter() - began)
            began = time.perf_counter()
            config = load_config(path, env={})
            loads.append(time.perf_counter() - began)
            assert len(config.jobs) == jobs
    return LoadResult(jobs=jobs, load=statistics.median(loads), parse=statistics.median(parses))


VALIDATE = (sys.executable, "-m", "scheduler", "validate")
PARSE = (sys.executable, "-c", "import sys, tomllib; tomllib.loads(open(sys.argv[1], encoding='utf-8').read())")


@dataclass(frozen=True)
class ValidateResult:
    """``python -m scheduler validate FILE`` as a process, beside a process that only parses the file."""

    jobs: int
    validate: ChildUsage  # the median repeat (by CPU)
    parse: ChildUsage  # ``tomllib.loads`` of the same text in a python process of its own: the baseline


def validate_run(jobs: int, repeats: int) -> ValidateResult:
    """Validate a generated ``jobs``-job file in a process of its own, ``repeats`` times; the median by CPU."""
    with scratch_folder("validate") as folder:
        path = folder / "jobs.toml"
        path.write_text(big_config(jobs))
        validates, parses = [], []
        for _ in range(repeats):
            parses.append(run_measured([*PARSE, str(path)], timeout=600))
            validates.append(run_measured([*VALIDATE, str(path)], timeout=600))
    return ValidateResult(jobs=jobs, validate=_median(validates), parse=_median(parses))


def _median(runs: list[ChildUsage]) -> ChildUsage:
    return sorted(runs, key=lambda run: run.cpu)[len(runs) // 2]


@dataclass(frozen=True)
class ReloadResult:
    jobs: int
    reload: float  # seconds Daemon.reload took to read, validate and apply the file with one job changed
    applied: bool
    summary: str
    missed: list[str]  # slots of the ticking jobs that never reached the simulator
    doubled: list[str]  # slots that reached it more than once
    lag_before: float  # worst fire lag of the ticking jobs in the seconds before the reload
    lag_during: float  # ... and in the seconds around it (the loop shares the process with the reload)


def reload_run(jobs: int) -> ReloadResult:
    with SimServer() as sim, scratch_folder("reload") as folder:
        return asyncio.run(_reload(jobs, sim, folder))


async def _reload(jobs: int, sim: SimServer, folder: Path) -> ReloadResult:
    path = folder / "jobs.toml"
    path.write_text(big_config(jobs, ticking=TICKING))
    config = load_config(path, env={})
    engine = create_db_engine(f"sqlite:///{folder / 'scheduler.db'}")
    upgrade_database(engine)
    store = Store(engine=engine)
    try:
        async with http_client(max_connections=50 + READS_IN_FLIGHT) as http:  # as `cekura-scheduler run` has it
            cekura = CekuraClient(http=http, base_url=sim.url, api_key=SecretStr(API_KEY))
            daemon = Daemon(config=config, store=store, cekura=cekura, alerts=AppriseSender())
            stop = asyncio.Event()
            task = asyncio.create_task(daemon.run(stop))
            await asyncio.sleep(4.0)
            # The daemon's reloading part on its own, with no file watcher: this times one reload.
            reloader = Reloader(
                daemon.runtime, source=ConfigSource(path, env={}), timetable=daemon.timetable, wake=asyncio.Event()
            )
            path.write_text(big_config(jobs, ticking=TICKING, tick_every={"tick-0": "2s"}))
            began_at = time.time()
            began = time.perf_counter()
            applied = await reloader.reload()
            took = time.perf_counter() - began
            await asyncio.sleep(4.0)
            stop.set()
            await task
            change = store.latest_config_change()
    finally:
        engine.dispose()
    return _check(sim, jobs=jobs, began=began_at, took=took, applied=applied, summary=change.summary if change else "")


def _check(sim: SimServer, *, jobs: int, began: float, took: float, applied: bool, summary: str) -> ReloadResult:
    posts = sim.posts()
    arrivals: dict[str, list[float]] = {}
    for arrived, _, name in posts:
        arrivals.setdefault(name, []).append(arrived)
    doubled = sorted(name for name, times in arrivals.items() if len(times) > 1)
    missed: list[str] = []
    lags_before: list[float] = []
    lags_during: list[float] = []
    for index in range(TICKING):
        job = f"tick-{index}"
        slots = sorted({slot_of(name) for name in arrivals if name.startswith(f"{job}@")})
        if not slots:
            missed.append(f"{job}: nothing")
            continue
        expected = _expected_slots(slots[0], slots[-1], changed=index == 0, began=began, took=took)
        missed += [f"{job}@{_stamp(slot)}" for slot in sorted(expected - set(slots))]
        for slot in slots:
            lag = arrivals[f"{job}@{_stamp(slot)}"][0] - slot
            if slot < began - 0.5:
                lags_before.append(lag)
            elif slot <= began + took + 1:
                lags_during.append(lag)
    return ReloadResult(
        jobs=jobs,
        reload=took,
        applied=applied,
        summary=summary,
        missed=missed,
        doubled=doubled,
        lag_before=max(lags_before, default=0.0),
        lag_during=max(lags_during, default=0.0),
    )


def _expected_slots(first: float, last: float, *, changed: bool, began: float, took: float) -> set[float]:
    """Every second from the first slot to the last; for the changed job, even seconds after the reload.

    Around the reload the changed job may fire either schedule's slots (the new one applies from the next slot
    after the change): the seconds between the start and the end of the reload are not required.
    """
    expected = set()
    slot = first
    while slot <= last:
        if not changed or slot < began or (slot > began + took + 1 and slot % 2 == 0):
            expected.add(slot)
        slot += 1
    return expected


def _stamp(slot: float) -> str:
    return datetime.fromtimestamp(slot, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
