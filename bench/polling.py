"""Polling: what following 1,000 results in flight costs, and whether it slows the fires that fall due meanwhile.

Results in the simulator run for an hour, so every submitted result stays in flight. Polling follows the default
schedule of jobs.toml: first read after ``poll_interval`` (10 s), each pause half as long again as the last, up
to ``poll_max_interval`` (1 min).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from bench.databases import sqlite_epoch, sqlite_rows
from bench.firelag import LATENCY, TooLate, _collect, _startup_guess, _wait_for_posts
from bench.idle import far_cron
from bench.plan import Lags, job_names, jobs_toml, next_slot_every, slot_suffix, two_slots
from bench.procs import SimServer, cpu_seconds, daemons, scratch_folder

POLL_INTERVAL, POLL_GROWTH, POLL_CEILING = 10.0, 1.5, 60.0  # the defaults of [daemon]
IN_FLIGHT = 1000
PROBES = 100
PROBE_GAP = 26  # seconds from the 1,000 fires to the 100 probes: inside the second wave of reads (at ~25 s)
FOREVER = 3600.0  # the simulator's default run duration: results stay in flight while we measure


def poll_times(horizon: float, *, latency: float = LATENCY) -> list[float]:
    """When a result is read, counted from its answer, on the default schedule (each read takes ``latency``)."""
    times: list[float] = []
    at, pause = 0.0, POLL_INTERVAL
    while True:
        at += pause
        if at > horizon:
            return times
        times.append(at)
        at += latency
        pause = min(pause * POLL_GROWTH, POLL_CEILING)


@dataclass(frozen=True)
class PollResult:
    results: int
    window: float  # seconds over which reads and CPU were counted, once every result was submitted
    reads: int  # GET /results/{id}/ that reached the simulator in the window
    expected_reads: int  # what the configured schedule asks for in that window, from each result's first read
    cpu: float  # daemon CPU seconds in the window
    idle_cpu: float  # daemon CPU seconds over ``idle_window`` before the fire, same daemon, nothing in flight
    idle_window: float
    errors: int  # ERROR lines in the daemon's log

    @property
    def per_result_minute(self) -> float:
        return self.reads / self.results / (self.window / 60)

    @property
    def expected_per_result_minute(self) -> float:
        return self.expected_reads / self.results / (self.window / 60)


def poll_run(window: float) -> PollResult:
    """1,000 jobs fire once; count the reads and the daemon's CPU over ``window`` seconds once all are in flight."""
    idle_window = 8.0
    margin = _startup_guess(IN_FLIGHT) + idle_window + 1.5
    for _attempt in range(3):
        with SimServer(latency=LATENCY) as sim, scratch_folder("polling") as folder:
            shortest = int(window + 60)
            every, slot = next_slot_every(time.time() + margin, shortest=shortest, longest=2 * shortest)
            names = job_names("p", IN_FLIGHT)
            config = folder / "jobs.toml"
            config.write_text(jobs_toml((name, f'every = "{every}s"') for name in names))
            database = f"sqlite:///{folder / 'scheduler.db'}"
            with daemons(folder, 1, simulator_url=sim.url, database_url=database, config=config) as [daemon]:
                ready = daemon.wait_for_log("next fire of", timeout=margin * 3 + 30)
                if ready > slot - idle_window - 1:
                    margin *= 1.5
                    continue
                time.sleep(max(0.0, slot - idle_window - 0.5 - time.time()))
                idle_start = cpu_seconds(daemon.pid)
                time.sleep(idle_window)
                idle_cpu = cpu_seconds(daemon.pid) - idle_start
                _wait_for_posts(sim, IN_FLIGHT, timeout=slot - time.time() + 120)
                posts = sim.posts()
                begin = max(arrived for arrived, _, _ in posts) + LATENCY + 0.5
                time.sleep(max(0.0, begin - time.time()))
                cpu_start = cpu_seconds(daemon.pid)
                time.sleep(window)
                cpu = cpu_seconds(daemon.pid) - cpu_start
                gets = sim.gets()
            errors = daemon.errors()
        end = begin + window
        reads = [at for at, _ in gets if begin <= at < end]
        # The schedule counts from when the daemon started following a result (after recording its answer, which
        # may come well after the answer under load): its first read, POLL_INTERVAL later, tells when that was.
        first: dict[int, float] = {}
        for at, result in gets:
            first[result] = min(at, first.get(result, at))
        starts = [at - POLL_INTERVAL for at in first.values()]
        schedule = poll_times(end - min(starts, default=begin) + 1)
        expected = sum(1 for start in starts for at in schedule if begin <= start + at < end)
        return PollResult(
            results=len(posts),
            window=window,
            reads=len(reads),
            expected_reads=expected,
            cpu=cpu,
            idle_cpu=idle_cpu,
            idle_window=idle_window,
            errors=errors,
        )
    raise RuntimeError("the daemon never became ready in time for the polling benchmark")


@dataclass(frozen=True)
class ProbeResult:
    lags: Lags
    reads_meanwhile: int  # result reads that reached the simulator while the probes were being submitted
    errors: int  # ERROR lines in the daemon's log
    verdicts_meanwhile: int = 0  # verdicts of the 1,000 recorded (finished_at) while the probes were submitted
    verdicts: int = 0  # verdicts of the 1,000 recorded in all (none while their results run for an hour)
    verdict_wave: tuple[float, float] | None = None  # first and last finished_at, seconds after the 1,000 fired
    window: tuple[float, float] = (0.0, 0.0)  # from the probes' slot to their last POST, seconds after the 1,000


def probe_run(*, busy: bool, run_duration: float = FOREVER, gap: int = PROBE_GAP) -> ProbeResult:
    """100 jobs due at once, ``gap`` s after 1,000 others fired (``busy``) or with those 1,000 far away.

    The 1,000 results run for ``run_duration`` s: an hour keeps them in flight (their reads come in waves); 20 s
    ends them at their second read, about 25 s after their answers, and the daemon records 1,000 verdicts then.
    """
    margin = _startup_guess(IN_FLIGHT + PROBES)
    for _attempt in range(3):
        try:
            return _probe(busy, margin, run_duration=run_duration, gap=gap)
        except TooLate:
            margin *= 2
    raise RuntimeError("the daemon never became ready in time for the probe")


def _probe(busy: bool, margin: float, *, run_duration: float, gap: int) -> ProbeResult:
    with SimServer(latency=LATENCY, run_duration=run_duration) as sim, scratch_folder("probe") as folder:
        if busy:
            first_every, first, probe_every, probe = two_slots(time.time() + margin, gap, shortest=120, longest=240)
            loaded = f'every = "{first_every}s"'
        else:
            probe_every, probe = next_slot_every(time.time() + margin, shortest=120, longest=240)
            first, loaded = probe, far_cron()
        jobs = [(name, loaded) for name in job_names("p", IN_FLIGHT)]
        probes = job_names("probe", PROBES)
        jobs += [(name, f'every = "{probe_every}s"') for name in probes]
        config = folder / "jobs.toml"
        config.write_text(jobs_toml(jobs))
        path = folder / "scheduler.db"
        with daemons(folder, 1, simulator_url=sim.url, database_url=f"sqlite:///{path}", config=config) as [daemon]:
            ready = daemon.wait_for_log("next fire of", timeout=margin * 3 + 30)
            if ready > first - 0.1:
                raise TooLate
            expected = PROBES + (IN_FLIGHT if busy else 0)
            _wait_for_posts(sim, expected, timeout=probe - time.time() + 90)
            run = _collect(sim, {f"{name}{slot_suffix(probe)}" for name in probes})
            last = probe + run.summary.max
            reads = [at for at, _ in sim.gets() if probe <= at <= last]
            finished = _verdicts(path, wait=busy and run_duration < FOREVER, timeout=probe + 90)
        errors = daemon.errors()
    return ProbeResult(
        lags=run.summary,
        reads_meanwhile=len(reads),
        errors=errors,
        verdicts_meanwhile=sum(1 for at in finished if probe <= at <= last),
        verdicts=len(finished),
        verdict_wave=(min(finished) - first, max(finished) - first) if finished else None,
        window=(probe - first, last - first),
    )


def _verdicts(path: Path, *, wait: bool, timeout: float) -> list[float]:
    """When each of the 1,000 (not the probes) got its verdict; with ``wait``, once all have (or at ``timeout``)."""
    while True:
        query = "SELECT finished_at FROM fires WHERE state = 'finished' AND job NOT LIKE 'probe%'"
        finished = [sqlite_epoch(stamp) for (stamp,) in sqlite_rows(path, query)]
        if not wait or len(finished) >= IN_FLIGHT or time.time() > timeout:
            return finished
        time.sleep(0.5)
