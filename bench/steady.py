"""End to end: the daemon's CPU per fire over a steady workload, from the submission to the verdict.

N jobs fall due together every minute (an interval of 60 s or a little more, whose next epoch-aligned slot comes
soon: ``plan.next_slot_every``) for a few slots. The simulator's results end 20 s after they are created, so on
the default polling (first read after 10 s, the next 15 s later) each result is read about twice and its verdict
comes with the second read. The daemon's CPU is counted from just before the first slot until every fire of the
measured slots is ``finished`` in its database (read from the SQLite file), and divided by those fires; nothing is
subtracted. The baseline is the same daemon's idle CPU per second, over a few seconds before the first slot,
times that window: what the daemon would have used doing nothing.
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.databases import sqlite_rows, sqlite_stamp
from bench.firelag import LATENCY, TooLate, _startup_guess
from bench.plan import job_names, jobs_toml, next_slot_every, slot_of
from bench.procs import SimServer, cpu_seconds, daemons, scratch_folder

RUN_DURATION = 20.0  # seconds until a simulated result ends
IDLE_WINDOW = 8.0  # seconds of the idle baseline, right before the first slot (CPU ticks are 10 ms)
SHORTEST, LONGEST = 60, 72  # the interval: about a minute, the one whose next slot comes soonest
SAMPLE_EVERY = 0.1  # seconds between two readings of the daemon's CPU (the database is read every 0.5 s)


@dataclass(frozen=True)
class SteadyResult:
    jobs: int
    slots: int  # slots measured
    every: int  # seconds between two slots
    fires: int  # fires of the measured slots with their verdict (state 'finished') at the end of the window
    window: float  # seconds from just before the first slot until the last of those verdicts was seen
    cpu: float  # daemon CPU seconds over the window
    burst_cpu: float  # of which in the submission bursts (from each slot to its last POST, plus 0.5 s)
    idle_cpu: float  # daemon CPU seconds over ``idle_window`` before the first slot
    idle_window: float
    results: int  # results the measured fires were given
    reads: int  # GET /results/{id}/ of those results that reached the simulator in the window
    later_fires: int  # fires of a later slot already claimed at the end (their cost is in the window too)
    errors: int  # ERROR lines in the daemon's log

    @property
    def expected(self) -> int:
        return self.jobs * self.slots

    @property
    def per_fire(self) -> float:
        return self.cpu / max(self.fires, 1)

    @property
    def idle_rate(self) -> float:
        """The idle daemon's CPU as a share of a core."""
        return self.idle_cpu / self.idle_window

    @property
    def idle_per_fire(self) -> float:
        """What the idle daemon would have used over the window, per fire."""
        return self.idle_rate * self.window / max(self.fires, 1)


def steady_run(jobs: int, slots: int) -> SteadyResult:
    """``jobs`` jobs every minute for ``slots`` slots; the daemon's CPU until every verdict is in."""
    margin = _startup_guess(jobs) + IDLE_WINDOW + 2
    for _attempt in range(3):
        try:
            return _steady(jobs, slots, margin)
        except TooLate:
            margin *= 1.5
    raise RuntimeError("the daemon never became ready in time for the steady workload")


def _steady(jobs: int, slots: int, margin: float) -> SteadyResult:
    with SimServer(latency=LATENCY, run_duration=RUN_DURATION) as sim, scratch_folder("steady") as folder:
        every, first = next_slot_every(time.time() + margin, shortest=SHORTEST, longest=LONGEST)
        measured = [first + index * every for index in range(slots)]
        config = folder / "jobs.toml"
        config.write_text(jobs_toml((name, f'every = "{every}s"') for name in job_names("s", jobs)))
        path = folder / "scheduler.db"
        with daemons(folder, 1, simulator_url=sim.url, database_url=f"sqlite:///{path}", config=config) as [daemon]:
            ready = daemon.wait_for_log("next fire of", timeout=margin * 3 + 30)
            if ready > first - IDLE_WINDOW - 1.5:
                raise TooLate
            time.sleep(max(0.0, first - IDLE_WINDOW - 0.5 - time.time()))
            idle_start, idle_began = cpu_seconds(daemon.pid), time.monotonic()
            time.sleep(IDLE_WINDOW)
            start, began = cpu_seconds(daemon.pid), time.time()
            idle_cpu, idle_window = start - idle_start, time.monotonic() - idle_began
            samples = _follow(daemon.pid, start, began, path, measured, expected=jobs * slots)
            end, cpu = samples[-1]
            fires = _finished(path, measured)
            later = sqlite_rows(path, "SELECT count(*) FROM fires WHERE slot >= ?", sqlite_stamp(measured[-1] + 0.5))
            ids = {result for (result,) in _measured(path, "result_id", measured, "result_id IS NOT NULL")}
            reads = sum(1 for at, result in sim.gets() if result in ids and at <= end)
            posts = sim.posts()
        errors = daemon.errors()
    burst_cpu = 0.0
    for slot in measured:
        last = max((arrived for arrived, _, name in posts if slot_of(name) == slot), default=slot)
        burst_cpu += _cpu_at(samples, last + LATENCY + 0.5) - _cpu_at(samples, slot - 0.3)
    return SteadyResult(
        jobs=jobs,
        slots=slots,
        every=every,
        fires=fires,
        window=end - began,
        cpu=cpu,
        burst_cpu=burst_cpu,
        idle_cpu=idle_cpu,
        idle_window=idle_window,
        results=len(ids),
        reads=reads,
        later_fires=later[0][0],
        errors=errors,
    )


def _measured(path: Path, columns: str, measured: list[int], condition: str) -> list[tuple[Any, ...]]:
    """``SELECT columns FROM fires WHERE condition``, for the fires of the measured slots."""
    query = f"SELECT {columns} FROM fires WHERE {condition} AND slot >= ? AND slot < ?"
    return sqlite_rows(path, query, sqlite_stamp(measured[0] - 0.5), sqlite_stamp(measured[-1] + 0.5))


def _finished(path: Path, measured: list[int]) -> int:
    count: int = _measured(path, "count(*)", measured, "state = 'finished'")[0][0]
    return count


def _follow(
    pid: int, start: float, began: float, path: Path, measured: list[int], *, expected: int
) -> list[tuple[float, float]]:
    """The daemon's CPU (since ``start``) every ``SAMPLE_EVERY`` s until the measured fires are all finished.

    Gives up a minute and a half after the last slot; the last sample is the end of the window.
    """
    samples = [(began, 0.0)]
    deadline, checked = measured[-1] + 90, 0.0
    while True:
        time.sleep(SAMPLE_EVERY)
        now = time.time()
        samples.append((now, cpu_seconds(pid) - start))
        if now - checked >= 0.5:
            checked = now
            if _finished(path, measured) >= expected or now > deadline:
                return samples


def _cpu_at(samples: list[tuple[float, float]], at: float) -> float:
    """The CPU used by ``at``, interpolated between the two samples around it."""
    index = bisect.bisect_left(samples, (at, -1.0))
    if index == 0:
        return samples[0][1]
    if index == len(samples):
        return samples[-1][1]
    (t0, c0), (t1, c1) = samples[index - 1], samples[index]
    return c0 + (c1 - c0) * (at - t0) / (t1 - t0) if t1 > t0 else c1
