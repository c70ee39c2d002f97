"""Generated jobs.toml files, slots chosen to fall due soon, and the statistics of what the simulator saw."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from scheduler.schedules import submission_name

SCENARIOS = "[101]"


def jobs_toml(jobs: Iterable[tuple[str, str]], *, daemon: str = "", defaults: str = "") -> str:
    """A jobs.toml with one ``[jobs.<name>]`` per (name, schedule line), e.g. ``('a', 'every = "30s"')``."""
    parts = []
    if daemon:
        parts.append(f"[daemon]\n{daemon}\n")
    parts.append(f"[defaults]\nagent = 12\n{defaults}\n")
    for name, schedule in jobs:
        parts.append(f"[jobs.{name}]\n{schedule}\nscenarios = {SCENARIOS}\n")
    return "\n".join(parts)


def job_names(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{index:05d}" for index in range(count)]


def next_slot_every(earliest: float, *, shortest: int, longest: int) -> tuple[int, int]:
    """An interval (seconds) in [shortest, longest] whose next epoch-aligned slot comes soonest after ``earliest``.

    Slots of ``every`` are aligned to the Unix epoch, so ``every = "37s"`` falls due at multiples of 37 s. Among
    a range of intervals one has a multiple just after any instant: all jobs with that interval fall due in the
    same second, soon, and not again before ``shortest`` seconds have passed. Returns (interval, slot).
    """
    best: tuple[int, int] | None = None
    for every in range(shortest, longest + 1):
        slot = math.ceil(earliest / every) * every
        if best is None or slot < best[1]:
            best = (every, slot)
    assert best is not None
    return best


def two_slots(earliest: float, gap: int, *, shortest: int, longest: int) -> tuple[int, int, int, int]:
    """Two intervals whose next slots come soon after ``earliest``, the second ``gap`` (to +1) s after the first.

    Returns (first interval, first slot, second interval, second slot).
    """
    best: tuple[int, int, int, int] | None = None
    for first in range(shortest, longest + 1):
        slot = math.ceil(earliest / first) * first
        if slot - earliest > 30:
            continue
        for second in range(shortest, longest + 1):
            later = math.ceil((slot + gap) / second) * second
            if later - slot - gap <= 1 and (best is None or slot < best[1]):
                best = (first, slot, second, later)
    if best is None:
        raise RuntimeError(f"no two intervals in [{shortest}, {longest}] fall due {gap} s apart soon")
    return best


def slot_suffix(slot: float) -> str:
    """The ``@<slot>`` part of the submission names of a slot (epoch seconds)."""
    return submission_name("", datetime.fromtimestamp(slot, UTC))


def slot_of(name: str) -> float:
    """The slot (epoch seconds) of a submission name ``<job>@2026-11-29T03:00:00Z``."""
    stamp = name.rpartition("@")[2]
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile: the smallest value with at least ``share`` of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


@dataclass(frozen=True)
class Lags:
    """Fire lags (seconds) of one measurement: p50, p99, max and how many samples."""

    p50: float
    p99: float
    max: float
    count: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Lags:
        return cls(percentile(values, 0.5), percentile(values, 0.99), max(values), len(values))

    @classmethod
    def median(cls, runs: Sequence[Lags]) -> Lags:
        """The median of each figure over repeated runs (the machine is shared and noisy)."""
        return cls(
            statistics.median(run.p50 for run in runs),
            statistics.median(run.p99 for run in runs),
            statistics.median(run.max for run in runs),
            sum(run.count for run in runs),
        )

    def text(self) -> str:
        return f"p50 {seconds(self.p50)} · p99 {seconds(self.p99)} · max {seconds(self.max)}"


def seconds(value: float) -> str:
    """A duration for a human: 4 ms, 120 ms, 2.31 s, 16.4 s (and "never" for a POST that did not arrive)."""
    if math.isinf(value):
        return "never"
    if value < 1:
        return f"{value * 1000:.0f} ms" if value >= 0.0095 else f"{value * 1000:.1f} ms"
    return f"{value:.2f} s" if value < 10 else f"{value:.1f} s"
