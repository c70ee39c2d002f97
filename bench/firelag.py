"""Fire lag: from a slot to the moment its POST reaches the simulator, for our daemon and for the floor.

Every job of a measurement has the same ``every``, chosen so that its next epoch-aligned slot comes a few
seconds after the daemon is ready (see ``plan.next_slot_every``): N jobs fall due in the same second. The lag of
a job is the simulator's arrival time of its POST minus the slot in its submission name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass

from sqlalchemy import create_engine, text

from bench.databases import Database, sqlite
from bench.plan import Lags, job_names, jobs_toml, next_slot_every, slot_of
from bench.procs import SimServer, clean_environment, cpu_seconds, daemons, scratch_folder, stop_process

LATENCY = 0.1  # seconds the simulator takes to answer: a stand-in for the real API
CONCURRENCY = 50  # the default max_concurrent_submissions
FLOOR_PATIENCE = 120.0  # seconds the floor gets after its slot (plus 20 ms a job) before what is left is missing


class TooLate(Exception):
    """The daemon became ready after the slot it was meant to fire: start it earlier."""


@dataclass(frozen=True)
class FireRun:
    """One measurement: the lag of each POST that arrived (first arrival per name), and what went wrong."""

    lags: list[float]
    received_lags: list[float]  # the simulator's Submission.received_at, stamped after its simulated latency
    duplicates: int  # names POSTed more than once
    missing: int  # expected names that never arrived
    cpu: float = 0.0  # CPU seconds the daemons used from just before the slot to the last POST (the floor: its own)
    cpu_window: float = 0.0  # the wall-clock seconds over which ``cpu`` was counted
    owners: dict[str, int] = dataclasses.field(default_factory=dict)  # fires submitted by each daemon
    errors: int = 0  # ERROR lines in the daemons' logs: a figure is only worth something without them

    @property
    def summary(self) -> Lags:
        """p50/p99/max, where a POST that never arrived counts as an unbounded lag."""
        return Lags.of(self.lags + [math.inf] * self.missing)


def _collect(sim: SimServer, expected: set[str]) -> FireRun:
    posts = sim.posts()
    seen = Counter(name for _, _, name in posts)
    first: dict[str, tuple[float, float | None]] = {}
    for arrived, received, name in posts:
        if name in expected and name not in first:
            first[name] = (arrived, received)
    return FireRun(
        lags=[arrived - slot_of(name) for name, (arrived, _) in first.items()],
        received_lags=[received - slot_of(name) for name, (_, received) in first.items() if received is not None],
        duplicates=sum(1 for name, count in seen.items() if name in expected and count > 1),
        missing=len(expected - set(first)),
    )


def _wait_for_posts(sim: SimServer, count: int, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while sim.counts()["posts"] < count:
        if time.monotonic() > deadline:
            return  # what did not arrive is reported as missing
        time.sleep(0.25)
    time.sleep(LATENCY + 0.2)  # the last answers, for the simulator's received_at


def _startup_guess(jobs: int) -> float:
    """Seconds from spawning a daemon to its timer running: imports, migrations, and the config (~0.2 ms/job)."""
    return 4.0 + jobs * 0.0006


def daemon_run(
    jobs: int,
    *,
    database: Database = sqlite,
    replicas: int = 1,
    daemon_toml: str = "",
    startup: float | None = None,
) -> FireRun:
    """Start ``replicas`` daemons on ``jobs`` jobs due in the same second; measure their first slot."""
    margin = startup if startup is not None else _startup_guess(jobs)
    for _attempt in range(3):
        try:
            return _daemon_round(jobs, database, replicas, daemon_toml, margin)
        except TooLate:
            margin *= 2
    raise RuntimeError(f"the daemon with {jobs} jobs never became ready before its slot")


def _daemon_round(jobs: int, database: Database, replicas: int, daemon_toml: str, margin: float) -> FireRun:
    with SimServer(latency=LATENCY) as sim, scratch_folder("firelag") as folder, database(folder) as url:
        shortest = max(30, int(2 * margin + jobs * 0.03))  # the next slot must not come during the measure
        every, slot = next_slot_every(time.time() + margin, shortest=shortest, longest=2 * shortest)
        names = job_names("j", jobs)
        config = folder / "jobs.toml"
        config.write_text(jobs_toml(((name, f'every = "{every}s"') for name in names), daemon=daemon_toml))
        with daemons(folder, replicas, simulator_url=sim.url, database_url=url, config=config) as started:
            ready = max(d.wait_for_log("next fire of", timeout=margin * 3 + 30) for d in started)
            if ready > slot - 0.1:
                raise TooLate
            time.sleep(max(0.0, slot - 0.3 - time.time()))
            before, began = sum(cpu_seconds(d.pid) for d in started), time.monotonic()
            _wait_for_posts(sim, jobs, timeout=slot - time.time() + 60 + jobs * 0.05)
            used, window = sum(cpu_seconds(d.pid) for d in started) - before, time.monotonic() - began
            run = _collect(sim, {f"{name}@{_stamp(slot)}" for name in names})
        errors = sum(daemon.errors() for daemon in started)
        return dataclasses.replace(run, cpu=used, cpu_window=window, owners=_owners(url), errors=errors)


def _owners(url: str) -> dict[str, int]:
    """How many slots each daemon claimed (the ``owner`` of each fire it submitted)."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT owner, count(*) FROM fires WHERE state != 'skipped' GROUP BY owner ORDER BY owner")
            )
            return {str(owner): int(count) for owner, count in rows}
    finally:
        engine.dispose()


def daemon_ticks(samples: int, *, database: Database = sqlite) -> FireRun:
    """One job every second, ``samples`` slots in a row, on a warm daemon (its results may overlap)."""
    with SimServer(latency=LATENCY) as sim, scratch_folder("tick") as folder, database(folder) as url:
        config = folder / "jobs.toml"
        config.write_text(jobs_toml([("tick", 'every = "1s"')], defaults='overlap = "allow"'))
        with daemons(folder, 1, simulator_url=sim.url, database_url=url, config=config) as [daemon]:
            ready = daemon.wait_for_log("next fire of", timeout=60)
            first = int(ready) + 1
            expected = {f"tick@{_stamp(first + index)}" for index in range(samples)}
            # Wait for these names, not for a number of POSTs: the slot before `first` may have been sent too.
            deadline = time.monotonic() + samples + 30
            while not expected <= {name for _, _, name in sim.posts()} and time.monotonic() < deadline:
                time.sleep(0.25)
            time.sleep(LATENCY + 0.2)  # the last answer, for the simulator's received_at
            run = _collect(sim, expected)
        return dataclasses.replace(run, errors=daemon.errors())


def floor_run(jobs: int, *, slots: int = 1, client: str = "apscheduler") -> FireRun:
    """The same jobs fired by bare APScheduler 3 + httpx (``bench.floor``): ``jobs`` POSTs at each of ``slots``.

    The floor gets ``FLOOR_PATIENCE`` seconds (plus 20 ms a job) after its last slot; what has not arrived by
    then counts as missing, and its lag as unbounded (httpx's pool is quadratic in the requests queued on it).
    ``client="aiohttp"``: no scheduler, the POSTs through aiohttp alone (the floor of the submission path).
    ``cpu`` is the floor process's own CPU from READY to its last answer (unbounded if it had to be stopped).
    """
    margin = 3.0 + jobs * 0.0005  # the floor's imports and scheduling
    for _attempt in range(3):
        with SimServer(latency=LATENCY) as sim:
            start = time.time() + margin
            firsts = [float(int(start) + 1 + index) for index in range(slots)]
            command = [sys.executable, "-m", "bench.floor", "--url", sim.url, "--jobs", str(jobs)]
            for slot in firsts:
                command += ["--slot", str(slot)]
            command += ["--connections", str(CONCURRENCY), "--client", client]
            process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=clean_environment())
            cpu = math.inf
            try:
                assert process.stdout is not None
                if process.stdout.readline().strip() != "READY" or time.time() > firsts[0] - 0.1:
                    margin *= 2
                    continue
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=firsts[-1] - time.time() + FLOOR_PATIENCE + jobs * 0.02)
            finally:
                stop_process(process, grace=5)
                if process.stdout is not None:
                    for line in process.stdout.read().splitlines():
                        if line.startswith("CPU "):
                            cpu = float(line.split()[1])
                    process.stdout.close()
            names = {f"floor{index:05d}@{_stamp(slot)}" for slot in firsts for index in range(jobs)}
            return dataclasses.replace(_collect(sim, names), cpu=cpu)
    raise RuntimeError(f"the floor with {jobs} jobs never became ready before its slot")


def physical_limit(jobs: int, *, latency: float = LATENCY, concurrency: int = CONCURRENCY) -> float:
    """N x latency / concurrency: the time to get N answers through ``concurrency`` connections."""
    return jobs * latency / concurrency


def _stamp(slot: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(slot))
