"""``python -m bench``: run the benchmarks, print the table, and optionally write it as Markdown.

Small sizes by default (a few minutes on 2 cores); ``--full`` for the table of BENCHMARKS.md (about an hour, half
of it the soak).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import procs
from bench.cli import database_commands, quick_commands
from bench.configload import load_run, reload_run, validate_run
from bench.databases import Database, postgres, sqlite
from bench.firelag import (
    CONCURRENCY,
    FLOOR_PATIENCE,
    LATENCY,
    FireRun,
    daemon_run,
    daemon_ticks,
    floor_run,
    physical_limit,
)
from bench.idle import idle_run
from bench.page import page_run
from bench.plan import Lags, seconds
from bench.polling import IN_FLIGHT, PROBES, ProbeResult, poll_run, probe_run
from bench.queries import BASE_PER_JOB, Measured, QueryTime, measure
from bench.soak import WARM_UP, SoakResult, soak_run
from bench.steady import RUN_DURATION, steady_run

NAMES = (
    "firelag",
    "burstcpu",
    "concurrency",
    "idle",
    "config",
    "validate",
    "polling",
    "verdicts",
    "steady",
    "postgres",
    "queries",
    "cli",
    "page",
    "soak",
)


@dataclass(frozen=True)
class Sizes:
    """How big and how many times: the default run is small, ``--full`` is the table of BENCHMARKS.md."""

    firelag: dict[int, int]  # jobs due at once -> repeats (medians are taken over them)
    tick_samples: int  # slots of the 1-job case (one job every second)
    idle_jobs: int
    idle_seconds: float
    config_jobs: int
    config_repeats: int
    poll_window: float
    probe_repeats: int
    postgres_repeats: int
    concurrency: tuple[tuple[int, int, int], ...]  # (jobs due at once, max_concurrent_submissions, repeats)
    steady: tuple[int, int]  # (jobs every minute, slots measured)
    validate: tuple[int, ...]  # jobs in each generated file
    validate_repeats: int
    history: tuple[int, int]  # (jobs, fires) of the long history the queries, jobs and history are timed on
    cli_repeats: int
    page_window: float  # seconds of each window of the page benchmark (on the ``history`` database)
    soak: tuple[int, int, float]  # (jobs, every so many seconds, minutes); the traced daemon fires a quarter


DEFAULT = Sizes(
    firelag={100: 3, 1000: 1},
    tick_samples=30,
    idle_jobs=10_000,
    idle_seconds=30,
    config_jobs=10_000,
    config_repeats=3,
    poll_window=30,
    probe_repeats=1,
    postgres_repeats=1,
    concurrency=((1000, 50, 1), (1000, 100, 1), (1000, 200, 1)),
    steady=(200, 2),
    validate=(10_000, 20_000, 40_000),
    validate_repeats=1,
    history=(1000, 100_000),
    cli_repeats=7,
    page_window=30,
    soak=(200, 10, 8),
)
FULL = Sizes(
    firelag={100: 5, 1000: 3, 10_000: 1},
    tick_samples=60,
    idle_jobs=10_000,
    idle_seconds=60,
    config_jobs=10_000,
    config_repeats=5,
    poll_window=60,
    probe_repeats=3,
    postgres_repeats=3,
    concurrency=((1000, 50, 3), (1000, 100, 3), (1000, 200, 3), (10_000, 200, 1)),
    steady=(1000, 3),
    validate=(10_000, 20_000, 40_000),
    validate_repeats=3,
    history=(1000, 1_000_000),
    cli_repeats=11,
    page_window=60,
    soak=(200, 10, 30),
)


@dataclass
class Row:
    """One line of the table: our figure beside its baseline, the ratio, and the target it answers to."""

    benchmark: str
    ours: str
    baseline: str
    ratio: str
    target: str = ""
    met: bool | None = None

    @property
    def verdict(self) -> str:
        return {True: "met", False: "MISSED", None: ""}[self.met]


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    fire_runs: dict[int, list[FireRun]] = field(default_factory=dict)  # our daemon's runs, by jobs due at once
    notes: list[str] = field(default_factory=list)


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _errors(count: int) -> str:
    return f" · {count} ERROR lines in the daemon's log" if count else ""


def ratio(value: float, baseline: float) -> str:
    if math.isinf(value) or math.isinf(baseline) or baseline <= 0:
        return "n/a"
    return f"{value / baseline:.2f}x"


# -- the benchmarks ---------------------------------------------------------------------------------------


def bench_firelag(sizes: Sizes, report: Report) -> None:
    say(f"fire lag: 1 job, every second, {sizes.tick_samples} slots (daemon, then the floor)")
    ours = daemon_ticks(sizes.tick_samples)
    floor = floor_run(1, slots=sizes.tick_samples)
    _firelag_rows(report, 1, [ours], [floor], label=f"fire lag, 1 job ({sizes.tick_samples} slots)")
    for jobs, repeats in sizes.firelag.items():
        ours_runs, floor_runs = [], []
        for index in range(repeats):
            say(f"fire lag: {jobs} jobs at once, run {index + 1}/{repeats} (daemon, then the floor)")
            ours_runs.append(daemon_run(jobs))
            floor_runs.append(floor_run(jobs))
        _firelag_rows(report, jobs, ours_runs, floor_runs, label=f"fire lag, {jobs:,} jobs at once")
        report.fire_runs[jobs] = ours_runs


def _firelag_rows(report: Report, jobs: int, ours_runs: list[FireRun], floor_runs: list[FireRun], label: str) -> None:
    ours = Lags.median([run.summary for run in ours_runs])
    floor = Lags.median([run.summary for run in floor_runs])
    limit = physical_limit(jobs)
    cpu = _median_by_cpu(ours_runs).cpu
    extra = f" · daemon CPU {cpu:.1f} s ({cpu / jobs * 1000:.1f} ms/fire)" if jobs > 1 else ""
    extra += _trouble(ours_runs)
    target, met = "", None
    if jobs == 1:
        target, met = "p99 <= 50 ms", ours.p99 <= 0.050
    elif jobs == 1000:
        target, met = "p99 <= 2.5 s", ours.p99 <= 2.5
    unsent = max(run.missing for run in floor_runs)
    patience = FLOOR_PATIENCE + jobs * 0.02
    floor_extra = f" ({unsent:,} of {jobs:,} not sent within {patience:.0f} s)" if unsent else ""
    report.rows.append(
        Row(
            label,
            ours.text() + extra,
            f"floor (APScheduler 3 + httpx, 50 conn.): {floor.text()}{floor_extra} · physical N x {seconds(LATENCY)} / "
            f"{CONCURRENCY} = {seconds(limit)}",
            f"{ratio(ours.p99, floor.p99)} floor, {ratio(ours.p99, limit)} physical (p99)",
            target,
            met,
        )
    )
    report.raw[f"firelag_{jobs}"] = {
        "ours": [dataclasses.asdict(run.summary) | {"cpu": run.cpu} for run in ours_runs],
        "floor": [dataclasses.asdict(run.summary) for run in floor_runs],
        "received_at_p99": [Lags.of(run.received_lags).p99 for run in ours_runs if run.received_lags],
        "physical": limit,
    }


def _median_by_cpu(runs: list[FireRun]) -> FireRun:
    """The run whose CPU is the median of the repeats (its CPU window with it)."""
    return sorted(runs, key=lambda run: run.cpu)[len(runs) // 2]


def _trouble(runs: list[FireRun]) -> str:
    """What went wrong in these runs, for the row: POSTs that never arrived or arrived twice, ERROR lines."""
    missing = sum(run.missing for run in runs)
    doubled = sum(run.duplicates for run in runs)
    text = f" · {missing:,} never arrived, {doubled:,} sent twice" if missing or doubled else ""
    return text + _errors(sum(run.errors for run in runs))


def _ms(value: float) -> str:
    """A small CPU time per operation, to the hundredth of a millisecond (the targets are 1 and 3 ms)."""
    return "n/a" if math.isinf(value) else f"{value * 1000:.2f} ms"


def _core(run: FireRun) -> str:
    """The CPU of a run as a share of one core over its window."""
    return f"{run.cpu / run.cpu_window:.2f} of a core" if run.cpu_window > 0 else "share n/a"


BURST = 1000  # jobs due at once in the CPU per fire row (issue 15)
LAG_TARGETS = {(1000, 50): 1.15, (1000, 200): 2.0, (10_000, 200): 1.2}  # (jobs, concurrency): p99 / physical limit


def _bursts(report: Report, jobs: int, repeats: int) -> list[FireRun]:
    """Our daemon's runs of ``jobs`` due at once on default settings: the fire lag benchmark's if it ran, else new."""
    runs = report.fire_runs.setdefault(jobs, [])
    while len(runs) < repeats:
        say(f"fire lag: {jobs:,} jobs at once, default settings, run {len(runs) + 1}/{repeats} (daemon)")
        runs.append(daemon_run(jobs))
    return runs


def bench_burstcpu(sizes: Sizes, report: Report) -> None:
    repeats = sizes.firelag.get(BURST, 1)
    ours_runs = _bursts(report, BURST, repeats)
    floor_runs = []
    for index in range(repeats):
        say(f"burst CPU: {BURST:,} POSTs through aiohttp alone, {CONCURRENCY} connections ({index + 1}/{repeats})")
        floor_runs.append(floor_run(BURST, client="aiohttp"))
    ours, floor = _median_by_cpu(ours_runs), _median_by_cpu(floor_runs)
    per_fire, per_post = ours.cpu / BURST, floor.cpu / BURST
    lags = Lags.median([run.summary for run in ours_runs])
    floor_lags = Lags.median([run.summary for run in floor_runs])
    unsent = max(run.missing for run in floor_runs)
    report.rows.append(
        Row(
            f"CPU per fire, {BURST:,} jobs at once ({CONCURRENCY} concurrent submissions)",
            f"{_ms(per_fire)} per fire (daemon CPU {ours.cpu:.2f} s over the {ours.cpu_window:.1f} s from just before "
            f"the slot to just after the last answer, {_core(ours)}) · p99 {seconds(lags.p99)}" + _trouble(ours_runs),
            f"aiohttp alone, {CONCURRENCY} connections, the same {BURST:,} POSTs: {_ms(per_post)} per POST "
            f"(CPU {floor.cpu:.2f} s, READY to the last answer) · p99 {seconds(floor_lags.p99)}"
            + (f" ({unsent:,} not sent)" if unsent else ""),
            ratio(per_fire, per_post),
            "at most 1.0 ms per fire",
            per_fire <= 0.001,
        )
    )
    report.raw["burstcpu"] = {
        "ours": [{"cpu": run.cpu, "window": run.cpu_window, "p99": run.summary.p99} for run in ours_runs],
        "aiohttp": [dataclasses.asdict(run.summary) | {"cpu": run.cpu} for run in floor_runs],
    }


def bench_concurrency(sizes: Sizes, report: Report) -> None:
    raw = []
    for jobs, concurrency, repeats in sizes.concurrency:
        if concurrency == CONCURRENCY:
            runs = _bursts(report, jobs, repeats)
        else:
            runs = []
            for index in range(repeats):
                say(f"concurrency: {jobs:,} jobs at once, {concurrency} concurrent submissions ({index + 1}/{repeats})")
                runs.append(daemon_run(jobs, daemon_toml=f"max_concurrent_submissions = {concurrency}"))
        lags = Lags.median([run.summary for run in runs])
        limit = physical_limit(jobs, concurrency=concurrency)
        middle = _median_by_cpu(runs)
        factor = LAG_TARGETS.get((jobs, concurrency))
        target = f"p99 <= {seconds(factor * limit)} ({factor:g}x the limit)" if factor else ""
        report.rows.append(
            Row(
                f"fire lag by concurrency, {jobs:,} jobs at once, {concurrency} concurrent submissions",
                f"{lags.text()} · daemon CPU {middle.cpu:.1f} s ({_ms(middle.cpu / jobs)}/fire, {_core(middle)})"
                + _trouble(runs),
                f"physical N x {seconds(LATENCY)} / {concurrency} = {seconds(limit)}",
                f"{ratio(lags.p99, limit)} physical (p99)",
                target,
                lags.p99 <= factor * limit if factor else None,
            )
        )
        raw.append(
            {
                "jobs": jobs,
                "concurrency": concurrency,
                "physical": limit,
                "runs": [dataclasses.asdict(run.summary) | {"cpu": run.cpu, "window": run.cpu_window} for run in runs],
            }
        )
    report.raw["concurrency"] = raw


def bench_idle(sizes: Sizes, report: Report) -> None:
    say(f"idle: {sizes.idle_jobs:,} jobs loaded, nothing due, {sizes.idle_seconds:.0f} s")
    result = idle_run(sizes.idle_jobs, sizes.idle_seconds)
    daemon, base = result.daemon, result.baseline
    report.rows.append(
        Row(
            f"idle, {result.jobs:,} jobs loaded ({daemon.seconds:.0f} s)",
            f"CPU {daemon.share:.2%} of a core ({daemon.cpu:.2f} s) · RSS {daemon.rss_mb:.0f} MB, "
            f"peak {daemon.peak_rss_mb:.0f} MB" + _errors(result.errors),
            f"python importing scheduler.daemon, asleep: CPU {base.share:.2%} · peak RSS {base.peak_rss_mb:.0f} MB",
            f"{ratio(daemon.peak_rss_mb, base.peak_rss_mb)} peak RSS",
            "CPU < 1% of a core, peak RSS < 150 MB",
            daemon.share < 0.01 and daemon.peak_rss_mb < 150,
        )
    )
    report.raw["idle"] = dataclasses.asdict(result)


def bench_config(sizes: Sizes, report: Report) -> None:
    say(f"config: load + validate {sizes.config_jobs:,} jobs, {sizes.config_repeats} times")
    load = load_run(sizes.config_jobs, sizes.config_repeats)
    report.rows.append(
        Row(
            f"config, load + validate {load.jobs:,} jobs",
            seconds(load.load),
            f"tomllib.loads of the same file alone: {seconds(load.parse)}",
            ratio(load.load, load.parse),
            "< 3 s",
            load.load < 3,
        )
    )
    say("config: reload one changed job in a running daemon")
    reloaded = reload_run(sizes.config_jobs)
    report.rows.append(
        Row(
            f"config, reload of one changed job ({reloaded.jobs:,} jobs)",
            f"{seconds(reloaded.reload)} ({reloaded.summary or 'not applied'}) · worst lag of jobs due meanwhile "
            f"{seconds(reloaded.lag_during)} (before: {seconds(reloaded.lag_before)})",
            f"load + validate alone: {seconds(load.load)}",
            ratio(reloaded.reload, load.load),
            "< 1 s",
            reloaded.applied and reloaded.reload < 1,
        )
    )
    report.rows.append(
        Row(
            "config, slots around the reload",
            f"{len(reloaded.missed)} missed, {len(reloaded.doubled)} doubled "
            "(5 jobs every second, one changed to every 2 s)",
            "-",
            "-",
            "none missed or doubled",
            not reloaded.missed and not reloaded.doubled,
        )
    )
    report.raw["config"] = {"load": dataclasses.asdict(load), "reload": dataclasses.asdict(reloaded)}


def bench_validate(sizes: Sizes, report: Report) -> None:
    results = []
    for jobs in sizes.validate:
        say(f"validate: `python -m scheduler validate` of a {jobs:,}-job jobs.toml, {sizes.validate_repeats} times")
        results.append(validate_run(jobs, sizes.validate_repeats))
    for result in results:
        ours, base, jobs = result.validate, result.parse, result.jobs
        report.rows.append(
            Row(
                f"validate, {jobs:,}-job jobs.toml (`python -m scheduler validate FILE`, a process of its own)",
                f"CPU {seconds(ours.cpu)} ({ours.cpu / jobs * 1e6:.0f} µs/job) · wall {seconds(ours.wall)} · "
                f"peak RSS {ours.peak_rss_mb:.0f} MB ({ours.peak_rss_mb * 1024 / jobs:.1f} KB/job)",
                f"tomllib.loads of the same text, a python process: CPU {seconds(base.cpu)} "
                f"({base.cpu / jobs * 1e6:.0f} µs/job) · peak RSS {base.peak_rss_mb:.0f} MB",
                f"{ratio(ours.cpu, base.cpu)} CPU, {ratio(ours.peak_rss_mb, base.peak_rss_mb)} peak RSS",
                "CPU < 10 s" if jobs == 40_000 else "",
                ours.cpu < 10 if jobs == 40_000 else None,
            )
        )
    steps = list(itertools.pairwise(results))
    if steps:
        # Linear means each added job costs the same: compare the last step's cost per added job with the first's.
        cpu = [(b.validate.cpu - a.validate.cpu) / (b.jobs - a.jobs) for a, b in steps]
        rss = [(b.validate.peak_rss_mb - a.validate.peak_rss_mb) * 1024 / (b.jobs - a.jobs) for a, b in steps]
        parse = [(b.parse.cpu - a.parse.cpu) / (b.jobs - a.jobs) for a, b in steps]
        names = [f"{a.jobs // 1000}k to {b.jobs // 1000}k" for a, b in steps]
        report.rows.append(
            Row(
                "validate, cost of each added job (linear: the same at every size)",
                " · ".join(
                    f"{name}: CPU {c * 1e6:.0f} µs, peak RSS {r:.1f} KB"
                    for name, c, r in zip(names, cpu, rss, strict=True)
                ),
                "tomllib.loads, each added job: "
                + " · ".join(f"{name}: CPU {c * 1e6:.0f} µs" for name, c in zip(names, parse, strict=True)),
                f"last step / first: {ratio(cpu[-1], cpu[0])} CPU, {ratio(rss[-1], rss[0])} RSS",
                "linear (last step within 1.25x the first, CPU and RSS)",
                cpu[-1] <= 1.25 * cpu[0] and rss[-1] <= 1.25 * rss[0],
            )
        )
    report.raw["validate"] = [dataclasses.asdict(result) for result in results]


def bench_polling(sizes: Sizes, report: Report) -> None:
    say(f"polling: {IN_FLIGHT:,} results in flight, {sizes.poll_window:.0f} s")
    polled = poll_run(sizes.poll_window)
    report.rows.append(
        Row(
            f"polling, reads per in-flight result per minute ({polled.results:,} results, first "
            f"{polled.window:.0f} s in flight)",
            f"{polled.per_result_minute:.2f} ({polled.reads:,} reads)" + _errors(polled.errors),
            "the configured schedule (10 s, x1.5 each time, up to 1 min) from each result's first read: "
            f"{polled.expected_per_result_minute:.2f}",
            ratio(polled.reads, polled.expected_reads),
            "",
        )
    )
    busy, idle = polled.cpu / polled.window, polled.idle_cpu / polled.idle_window
    report.rows.append(
        Row(
            f"polling, CPU with {polled.results:,} results in flight",
            f"{busy:.1%} of a core ({polled.cpu:.1f} s in {polled.window:.0f} s; "
            f"{polled.cpu / max(polled.reads, 1) * 1000:.1f} ms per read)",
            f"same daemon before the fire, nothing in flight: {idle:.2%}",
            ratio(busy, idle),
            "",
        )
    )
    with_load, without = [], []
    for index in range(sizes.probe_repeats):
        say(f"polling: {PROBES} jobs due while {IN_FLIGHT:,} results are read, and while none are ({index + 1})")
        with_load.append(probe_run(busy=True))
        without.append(probe_run(busy=False))
    busy_lags = Lags.median([probe.lags for probe in with_load])
    idle_lags = Lags.median([probe.lags for probe in without])
    reads = sorted(probe.reads_meanwhile for probe in with_load)[len(with_load) // 2]
    report.rows.append(
        Row(
            f"polling, fire lag of {PROBES} jobs due while {IN_FLIGHT:,} results are polled",
            f"{busy_lags.text()} ({reads} reads arrived meanwhile)"
            + _errors(sum(probe.errors for probe in with_load + without)),
            f"same {PROBES} jobs, nothing in flight: {idle_lags.text()}",
            f"{ratio(busy_lags.p99, idle_lags.p99)} (p99)",
            "no growth (p99 within 1.2x + 50 ms)",
            busy_lags.p99 <= 1.2 * idle_lags.p99 + 0.05,
        )
    )
    report.raw["polling"] = {
        "poll": dataclasses.asdict(polled),
        "probe_busy": [dataclasses.asdict(probe) for probe in with_load],
        "probe_idle": [dataclasses.asdict(probe) for probe in without],
    }


VERDICT_GAP = 27  # seconds from the 1,000 fires to the 100 probes: inside the wave of verdicts (from ~25 s)
WARM_GAP = 60  # ... and for the warm quiet baseline: every verdict recorded half a minute before, nothing in flight


def bench_verdicts(sizes: Sizes, report: Report) -> None:
    runs: dict[str, list[ProbeResult]] = {"busy": [], "warm": [], "cold": []}
    for index in range(sizes.probe_repeats):
        say(
            f"verdicts: {PROBES} jobs due {VERDICT_GAP} s after {IN_FLIGHT:,} others, whose results end after "
            f"{RUN_DURATION:.0f} s; then {WARM_GAP} s after, and on a fresh daemon ({index + 1}/{sizes.probe_repeats})"
        )
        runs["busy"].append(probe_run(busy=True, run_duration=RUN_DURATION, gap=VERDICT_GAP))
        runs["warm"].append(probe_run(busy=True, run_duration=RUN_DURATION, gap=WARM_GAP))
        runs["cold"].append(probe_run(busy=False))
    lags = {key: Lags.median([probe.lags for probe in value]) for key, value in runs.items()}
    middle = sorted(runs["busy"], key=lambda probe: probe.verdicts_meanwhile)[len(runs["busy"]) // 2]
    wave = middle.verdict_wave
    wave_text = f"all verdicts {wave[0]:.1f} to {wave[1]:.1f} s" if wave else "no verdict recorded"
    warm_noise = sum(probe.verdicts_meanwhile + probe.reads_meanwhile for probe in runs["warm"])
    report.rows.append(
        Row(
            f"fire lag of {PROBES} jobs due while {IN_FLIGHT:,} results finish (results end after "
            f"{RUN_DURATION:.0f} s; the {PROBES} fall due {VERDICT_GAP} s after the {IN_FLIGHT:,})",
            f"{lags['busy'].text()} · while they were submitted ({middle.window[0]:.1f} to {middle.window[1]:.1f} s "
            f"after the {IN_FLIGHT:,} fired) {middle.verdicts_meanwhile:,} verdicts were recorded and "
            f"{middle.reads_meanwhile:,} reads arrived ({wave_text}; {middle.verdicts:,} of {IN_FLIGHT:,})"
            + _errors(sum(probe.errors for value in runs.values() for probe in value)),
            f"same {PROBES} jobs, nothing in flight, on a warm daemon (the {IN_FLIGHT:,} fired {WARM_GAP} s before and "
            f"all finished; {warm_noise} reads or verdicts meanwhile): {lags['warm'].text()} · on a fresh daemon "
            f"(its first fires): p99 {seconds(lags['cold'].p99)}",
            f"{ratio(lags['busy'].p99, lags['warm'].p99)} warm, "
            f"{ratio(lags['busy'].p99, lags['cold'].p99)} fresh (p99)",
            "p99 at most 1.5x the quiet (warm) daemon's",
            lags["busy"].p99 <= 1.5 * lags["warm"].p99,
        )
    )
    report.raw["verdicts"] = {"gap": VERDICT_GAP, "warm_gap": WARM_GAP} | {
        key: [dataclasses.asdict(probe) for probe in value] for key, value in runs.items()
    }


def bench_steady(sizes: Sizes, report: Report) -> None:
    jobs, slots = sizes.steady
    say(f"steady: {jobs:,} jobs every minute, {slots} slots, results ending after {RUN_DURATION:.0f} s")
    result = steady_run(jobs, slots)
    fires = max(result.fires, 1)
    missing = result.expected - result.fires
    extra = f" · only {result.fires:,} of {result.expected:,} verdicts in time" if missing else ""
    extra += f" · {result.later_fires:,} fires of the next slot inside the window" if result.later_fires else ""
    report.rows.append(
        Row(
            f"CPU per fire end to end, {jobs:,} jobs every {result.every} s, {slots} slots (results end after "
            f"{RUN_DURATION:.0f} s)",
            f"{_ms(result.per_fire)} per fire (daemon CPU {result.cpu:.1f} s over {result.window:.0f} s, from just "
            f"before the first slot to the last verdict, {result.fires:,} fires; nothing subtracted) · in the bursts "
            f"{_ms(result.burst_cpu / fires)}, afterwards {_ms((result.cpu - result.burst_cpu) / fires)} · "
            f"{result.reads / max(result.results, 1):.2f} reads per result" + extra + _errors(result.errors),
            f"same daemon idle before the first slot: {result.idle_cpu:.2f} s in {result.idle_window:.0f} s, "
            f"{result.idle_rate:.2%} of a core, x {result.window:.0f} s = {_ms(result.idle_per_fire)} per fire",
            ratio(result.per_fire, result.idle_per_fire),
            "at most 3 ms per fire",
            result.fires == result.expected and result.per_fire <= 0.003,
        )
    )
    report.raw["steady"] = dataclasses.asdict(result)


def bench_postgres(sizes: Sizes, report: Report, url: str | None) -> None:
    if not url:
        report.notes.append("PostgreSQL: skipped (set SCHEDULER_TEST_POSTGRES_URL or pass --postgres URL).")
        say("postgres: skipped (no URL)")
        return
    database = postgres(url)
    jobs = 1000
    runs: dict[str, list[FireRun]] = {"sqlite": list(report.fire_runs.get(jobs, [])), "postgres": [], "replicas": []}
    for index in range(sizes.postgres_repeats):
        say(f"postgres: {jobs} jobs on PostgreSQL, and with 3 replicas ({index + 1}/{sizes.postgres_repeats})")
        if len(runs["sqlite"]) <= index:  # the SQLite baseline, unless the fire lag benchmark measured it
            runs["sqlite"].append(daemon_run(jobs, database=sqlite))
        runs["postgres"].append(daemon_run(jobs, database=database))
        runs["replicas"].append(daemon_run(jobs, database=database, replicas=3))
    lags = {key: Lags.median([run.summary for run in value]) for key, value in runs.items()}
    limit = physical_limit(jobs)
    report.rows.append(
        Row(
            f"PostgreSQL, fire lag, {jobs:,} jobs at once",
            lags["postgres"].text(),
            f"SQLite, same run: p99 {seconds(lags['sqlite'].p99)} · physical {seconds(limit)}",
            f"{ratio(lags['postgres'].p99, lags['sqlite'].p99)} SQLite, "
            f"{ratio(lags['postgres'].p99, limit)} physical (p99)",
            "p99 <= 2.5 s",
            lags["postgres"].p99 <= 2.5,
        )
    )
    missing = sum(run.missing for run in runs["replicas"])
    doubled = sum(run.duplicates for run in runs["replicas"])
    errors = sum(run.errors for value in runs.values() for run in value)
    shares = " / ".join(str(count) for count in sorted(runs["replicas"][-1].owners.values(), reverse=True))
    report.rows.append(
        Row(
            f"PostgreSQL, 3 replicas, {jobs:,} jobs at once",
            f"{lags['replicas'].text()} · submitted by each replica: {shares} · {missing} never arrived, "
            f"{doubled} sent twice" + _errors(errors),
            f"one replica: p99 {seconds(lags['postgres'].p99)}",
            f"{ratio(lags['replicas'].p99, lags['postgres'].p99)} (p99)",
            "p99 <= 2.5 s, none missing or doubled",
            lags["replicas"].p99 <= 2.5 and missing == doubled == 0,
        )
    )
    report.raw["postgres"] = {
        key: [dataclasses.asdict(run.summary) | {"cpu": run.cpu, "owners": run.owners} for run in value]
        for key, value in runs.items()
    }


PAGE_TARGET = 0.300  # seconds for GET / (p95)
PAGE_LAG = 0.010  # fire lag a tab may add, at p99


def bench_page(sizes: Sizes, report: Report) -> None:
    (jobs, fires), window = sizes.history, sizes.page_window
    say(f"page: GET / and /api/jobs with {jobs:,} jobs and {fires:,} fires of history, fire lag meanwhile")
    result = page_run(jobs, fires, window=window)
    page, busy, empty, api = result.page, result.page_busy, result.page_empty, result.api
    report.rows.append(
        Row(
            f"status page, GET / with {jobs:,} jobs and {fires:,} fires (one page of 100 jobs)",
            f"median {seconds(page.median)} · p95 {seconds(page.p95)} · {page.bytes / 1024:.0f} KB "
            f"({page.count} requests, one a second) · back to back: median {seconds(busy.median)}, p95 "
            f"{seconds(busy.p95)}, daemon CPU {result.cpu_per_page * 1000:.0f} ms a page "
            f"({result.cpu_per_page / 10:.1%} of a core per tab refreshing every 10 s)" + _errors(result.errors),
            f"same jobs, empty database: median {seconds(empty.median)} · p95 {seconds(empty.p95)} · "
            f"{empty.bytes / 1024:.0f} KB",
            f"{ratio(page.median, empty.median)} (median)",
            f"p95 < {seconds(PAGE_TARGET)}",
            page.p95 < PAGE_TARGET,
        )
    )
    report.rows.append(
        Row(
            f"/api/jobs with {jobs:,} jobs and {fires:,} fires (every job)",
            f"median {seconds(api.median)} · p95 {seconds(api.p95)} · {api.bytes / 1024:.0f} KB ({api.count} requests)",
            f"GET / (100 jobs), same run: median {seconds(page.median)}",
            f"{ratio(api.median, page.median)} (median)",
            "",
        )
    )
    added = result.tab.p99 - result.quiet.p99
    report.rows.append(
        Row(
            f"fire lag of a job every second while GET / is asked once a second ({window:.0f} s windows)",
            f"{result.tab.text()} (each request sent 50 ms before a slot) · back to back: {result.loaded.text()}",
            f"same daemon, same run, no page requests: {result.quiet.text()}",
            f"{ratio(result.tab.p99, result.quiet.p99)} (p99; {added * 1000:+.0f} ms), back to back "
            f"{ratio(result.loaded.p99, result.quiet.p99)}",
            f"p99 within +{seconds(PAGE_LAG)}",
            added <= PAGE_LAG,
        )
    )
    report.raw["page"] = dataclasses.asdict(result)


def _history_row(
    benchmark: str, big: dict[str, float], base: dict[str, float], show: Callable[[float], str], fires: int
) -> Row:
    """One measure on the long history beside the same on the baseline database, for each backend; within 3x."""

    def each(values: dict[str, str]) -> str:
        return " · ".join(f"{label} {value}" for label, value in values.items())

    return Row(
        benchmark,
        each({label: show(value) for label, value in big.items()}),
        f"same, {fires:,} fires: " + each({label: show(value) for label, value in base.items()}),
        each({label: ratio(value, base[label]) for label, value in big.items()}),
        "< 3x",
        all(value < 3 * base[label] for label, value in big.items()),
    )


def bench_queries(sizes: Sizes, report: Report, url: str | None) -> None:
    jobs, fires = sizes.history
    backends: dict[str, Database] = {"SQLite": sqlite}
    if url:
        backends["PostgreSQL"] = postgres(url)
    measured: dict[str, list[QueryTime]] = {}
    started: dict[str, Measured] = {}
    for label, database in backends.items():
        say(f"queries: {label}, {fires:,} fires of {jobs:,} jobs against {jobs * BASE_PER_JOB:,} (filling both)")
        with procs.scratch_folder("queries") as folder:
            started[label] = measure(database, folder, jobs=jobs, fires=fires)
        measured[label] = started[label].queries
        report.notes.append(f"queries: {label} filled with {fires:,} fires in {started[label].filled:.0f} s")
    if not url:
        report.notes.append("queries: PostgreSQL not measured (no --postgres URL)")
    base = jobs * BASE_PER_JOB
    for index, first in enumerate(measured["SQLite"]):
        times = {label: rows[index] for label, rows in measured.items()}
        report.rows.append(
            _history_row(
                f"query on {fires:,} fires: {first.name} ({first.when})",
                {label: row.big for label, row in times.items()},
                {label: row.base for label, row in times.items()},
                lambda value: f"{value * 1000:.2f} ms",
                base,
            )
        )
    report.rows.append(
        _history_row(
            f"start-up to the first POST on {fires:,} fires ({jobs:,} jobs looked at for missed slots)",
            {label: run.startup for label, run in started.items()},
            {label: run.startup_base for label, run in started.items()},
            seconds,
            base,
        )
    )
    report.raw["queries"] = {
        label: {
            "queries": [dataclasses.asdict(row) for row in run.queries],
            "startup": run.startup,
            "startup_base": run.startup_base,
        }
        for label, run in started.items()
    }


SOAK_TARGET = 2.0  # MB of RSS per hour after the warm-up (issue 16)
SETTLED = 600  # seconds after which the daemon's memory has settled: its caches fill for about 10 min


def bench_soak(sizes: Sizes, report: Report) -> None:
    jobs, every, minutes = sizes.soak
    traced_jobs = max(1, jobs // 4)
    say(
        f"soak: {jobs} jobs every {every} s for {minutes:g} min: the daemon and the floor side by side, and a "
        f"daemon of {traced_jobs} jobs under tracemalloc"
    )
    result = soak_run(jobs, every, minutes * 60, traced_jobs=traced_jobs)
    ours, floor = result.slope("daemon"), result.slope("floor")
    judged = result.seconds * WARM_UP >= SETTLED  # a shorter warm-up leaves the daemon's caches filling
    warm = f"after the first {WARM_UP:.0%} ({result.seconds * WARM_UP / 60:.1f} min)"
    kept_up = f"{result.fires:,} fires of {result.expected(jobs):,} due, {result.verdicts:,} with their verdict"
    report.rows.append(
        Row(
            f"memory growth, {jobs} jobs every {every} s for {minutes:g} min (RSS slope {warm})",
            f"RSS {ours:+.1f} MB/h ({_mb_span(result.daemon, result.seconds)}; {kept_up})" + _errors(result.errors),
            f"floor (APScheduler 3 + httpx, the same jobs, each result followed to its end): RSS {floor:+.1f} MB/h "
            f"({_mb_span(result.floor, result.seconds)})",
            f"{ours - floor:+.1f} MB/h beside the floor",
            f"RSS growth < {SOAK_TARGET:g} MB/h after warm-up"
            + ("" if judged else f" (judged after a warm-up of {SETTLED / 60:.0f} min: --full)"),
            ours < SOAK_TARGET if judged else None,
        )
    )
    if result.parts:
        report.notes.append(f"soak: who holds the daemon's memory (bench.memwatch), slopes {warm}: " + _parts(result))
    heap = result.slope("heap")
    grew = result.growth("heap") * 1e6
    report.rows.append(
        Row(
            f"Python heap growth, {traced_jobs} jobs every {every} s under tracemalloc (slope {warm})",
            f"traced heap {heap:+.2f} MB/h ({grew / max(result.traced_fires, 1):+.0f} bytes per fire; "
            f"{result.traced_fires:,} fires of {result.expected(traced_jobs):,} due)",
            f"the same process's RSS, tracemalloc's own tables included: {result.slope('traced_rss'):+.1f} MB/h",
            "-",
        )
    )
    if result.sites:
        report.notes.append(
            "soak: allocation sites that grew most in the traced daemon, end of the warm-up to the end (traceback "
            "grouping; the innermost of our frames): " + "; ".join(site.text() for site in result.sites)
        )
    if result.types:
        report.notes.append(
            "soak: object types whose count grew most in the traced daemon, end of the warm-up to the end: "
            + ", ".join(f"{name} {count:+,}" for name, count in result.types)
        )
    report.raw["soak"] = dataclasses.asdict(result) | {
        "slopes": {name: result.slope(name) for name in ("daemon", "floor", "traced_rss", "heap", *result.parts)}
    }


_PARTS = {  # bench.memwatch's series, as the report names them
    "rss_anon": "anonymous RSS (heaps, Python's arenas, stacks)",
    "rss_file": "file-backed RSS (code)",
    "malloc_used": "malloc in use",
    "malloc_free": "malloc free but kept",
    "malloc_mapped": "malloc's big blocks",
    "sqlite": "SQLite's allocator",
}


def _parts(result: SoakResult) -> str:
    """Each holder's slope and span after the warm-up, and the arenas at the end."""
    said = []
    for name, label in _PARTS.items():
        if name in result.parts:
            said.append(f"{label} {result.slope(name):+.1f} MB/h ({_mb_span(result.parts[name], result.seconds)})")
    if "blocks" in result.parts:
        blocks = [value for at, value in result.parts["blocks"] if at >= result.seconds * WARM_UP]
        said.append(f"CPython blocks {result.slope('blocks') * 1e6:+,.0f}/h ({blocks[0]:.3f}M to {blocks[-1]:.3f}M)")
    if arenas := result.parts.get("arenas"):
        said.append(f"{arenas[-1][1]:.0f} malloc arenas at the end")
    return "; ".join(said)


def _mb_span(samples: list[tuple[float, float]], seconds: float) -> str:
    """RSS at the end of the warm-up and at the end."""
    after = [value for at, value in samples if at >= seconds * WARM_UP]
    return f"{after[0]:.1f} to {after[-1]:.1f} MB" if after else "no samples"


# -- output -----------------------------------------------------------------------------------------------

COLUMNS = ("benchmark", "ours", "baseline (same run)", "ratio", "target", "")


def _cells(row: Row) -> tuple[str, ...]:
    return (row.benchmark, row.ours, row.baseline, row.ratio, row.target, row.verdict)


def text_table(rows: list[Row]) -> str:
    lines = []
    for row in rows:
        benchmark, ours, baseline, ratio_text, target, verdict = _cells(row)
        lines.append(f"{verdict or '-':6} {benchmark}")
        lines.append(f"       ours:     {ours}")
        lines.append(f"       baseline: {baseline}")
        lines.append(f"       ratio:    {ratio_text}" + (f"    target: {target}" if target else ""))
    return "\n".join(lines)


def markdown_table(rows: list[Row]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(text) for text in _cells(row)) + " |" for row in rows]
    return "\n".join(lines)


def bench_cli(sizes: Sizes, report: Report) -> None:
    say(f"cli: --version, --help, check, validate of a small file, {sizes.cli_repeats} times each")
    with procs.scratch_folder("cli") as folder:
        start, *quick = quick_commands(folder, repeats=sizes.cli_repeats)
        jobs, fires = sizes.history
        say(f"cli: jobs and history on {fires:,} fires of {jobs:,} jobs (filling the database first)")
        on_history, filled = database_commands(folder, jobs=jobs, fires=fires, repeats=sizes.cli_repeats)
    report.notes.append(f"cli: the SQLite database of jobs and history filled with {fires:,} fires in {filled:.0f} s")
    listed, shown, validated = on_history
    besides = {listed.label: f" · validate of the same jobs.toml alone {seconds(validated.wall)}"}
    for command, target in [*((command, 0.3) for command in quick), (listed, 0.5), (shown, 0.5)]:
        report.rows.append(
            Row(
                f"cli, `cekura-scheduler {command.label}`",
                f"wall {seconds(command.wall)} (CPU {seconds(command.cpu)}){besides.get(command.label, '')}",
                f"`python -c pass`: wall {seconds(start.wall)} (CPU {seconds(start.cpu)})",
                ratio(command.wall, start.wall),
                f"< {target:g} s",
                command.wall < target,
            )
        )
    report.raw["cli"] = [dataclasses.asdict(command) for command in [start, *quick, *on_history]]


def machine() -> str:
    load = " / ".join(f"{value:.2f}" for value in os.getloadavg())
    return (
        f"{os.cpu_count()} cores (nproc), Python {platform.python_version()}, {platform.system()} "
        f"{platform.release()}; load average (1/5/15 min) {load}"
    )


def revision() -> str:
    """The commit measured, and whether the scheduler's files differ from it (read-only git commands)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=procs.ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "scheduler"], cwd=procs.ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return commit + (" with uncommitted changes in scheduler/" if dirty else "")


def wait_for_quiet(limit: float, *, patience: float = 600, every: float = 30) -> float:
    """Wait (up to ``patience`` s) for the 1-minute load average to fall to ``limit``; return the last reading."""
    deadline = time.monotonic() + patience
    while (load := os.getloadavg()[0]) > limit and time.monotonic() < deadline:
        say(f"load average {load:.2f} > {limit}: waiting {every:.0f} s")
        time.sleep(every)
    return load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--full", action="store_true", help="the full sizes of BENCHMARKS.md (about an hour)")
    parser.add_argument("--only", choices=NAMES, action="append", help="run this benchmark only (repeatable)")
    parser.add_argument("--markdown", type=Path, metavar="PATH", help="also write the table as Markdown here")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write every measurement as JSON here")
    parser.add_argument(
        "--postgres",
        metavar="URL",
        default=os.environ.get("SCHEDULER_TEST_POSTGRES_URL"),
        help="a PostgreSQL URL (default: $SCHEDULER_TEST_POSTGRES_URL); a schema of its own per measurement",
    )
    parser.add_argument(
        "--wait-load",
        type=float,
        metavar="LOAD",
        help="first wait (up to 10 min) for the 1-minute load average to fall to LOAD",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="attach py-spy (--gil: who holds the GIL) to every daemon; collapsed stacks here",
    )
    args = parser.parse_args(argv)

    sizes = FULL if args.full else DEFAULT
    if args.wait_load is not None:
        wait_for_quiet(args.wait_load)
    if args.profile is not None:
        procs.PROFILES.append(args.profile)
    before, code = machine(), revision()
    report = Report()
    runners: dict[str, Callable[[], None]] = {
        "firelag": lambda: bench_firelag(sizes, report),
        "burstcpu": lambda: bench_burstcpu(sizes, report),
        "concurrency": lambda: bench_concurrency(sizes, report),
        "idle": lambda: bench_idle(sizes, report),
        "config": lambda: bench_config(sizes, report),
        "validate": lambda: bench_validate(sizes, report),
        "polling": lambda: bench_polling(sizes, report),
        "verdicts": lambda: bench_verdicts(sizes, report),
        "steady": lambda: bench_steady(sizes, report),
        "postgres": lambda: bench_postgres(sizes, report, args.postgres),
        "queries": lambda: bench_queries(sizes, report, args.postgres),
        "cli": lambda: bench_cli(sizes, report),
        "page": lambda: bench_page(sizes, report),
        "soak": lambda: bench_soak(sizes, report),
    }
    began = time.monotonic()
    for name in args.only or NAMES:
        try:
            runners[name]()
        except Exception as error:  # one broken benchmark must not lose the others' figures
            say(f"{name}: failed: {error!r}")
            report.notes.append(f"{name}: failed: {error!r}")
    took = time.monotonic() - began
    after = machine()
    if revision() != code:
        code += f" at the start, {revision()} at the end"

    print(text_table(report.rows))
    for note in report.notes:
        print(note)
    print(f"\ncode: {code}\nbefore: {before}\nafter:  {after}\ntook {took / 60:.1f} min")
    command = "python -m bench" + (" --full" if args.full else "") + "".join(f" --only {n}" for n in args.only or [])
    if args.markdown is not None:
        text = [
            f"Measured {time.strftime('%Y-%m-%d %H:%M %Z')} with `{command}` ({took / 60:.0f} min).",
            "",
            f"- Code: {code}",
            f"- Machine before: {before}",
            f"- Machine after: {after}",
            "",
            markdown_table(report.rows),
            "",
            *[f"- {note}" for note in report.notes],
        ]
        args.markdown.write_text("\n".join(text) + "\n")
    if args.json is not None:
        args.json.write_text(json.dumps({"command": command, "machine": before, **report.raw}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
