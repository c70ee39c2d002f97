"""Soak: does memory grow? The daemon, the same daemon under ``tracemalloc``, and the floor, side by side.

N jobs every few seconds for many minutes, the whole life of each fire exercised (claim, POST, polls, verdict,
routing: the simulator's results end after ``RUN_DURATION`` s, so each is read about twice). Three processes run
at once, each against a simulator of its own:

- the daemon (``python -m scheduler run``, SQLite), its RSS read from ``/proc`` every ``SAMPLE_EVERY`` s, started
  through ``bench.memwatch``, which samples from inside it who holds that memory (malloc's bytes in use and free,
  SQLite's allocator, CPython's block count) without slowing it;
- the same daemon started through ``bench.heapwatch``, which traces allocations: its traced Python heap every
  few seconds, and snapshots at the end of the warm-up, in the middle and at the end, compared for the sites that
  grew (tracemalloc slows a process and its own tables take memory, so its RSS is not the one reported);
- the floor (``bench.floor --every``): bare APScheduler 3 and one httpx client firing the same jobs and following
  each result to its end, nothing kept: what our stack costs before the daemon adds anything.

Both daemons' ``/healthz`` and ``/metrics`` are read every ``SCRAPE_EVERY`` s, as a container's health check and a
Prometheus would. Growth is the least-squares slope of the samples after the warm-up (the first third), in MB
per hour.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time
import tracemalloc
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.databases import sqlite_rows, sqlite_stamp
from bench.firelag import LATENCY
from bench.plan import job_names, jobs_toml
from bench.procs import Daemon, SimServer, clean_environment, memory_mb, scratch_folder, start_daemon, stop_process

RUN_DURATION = 12.0  # seconds until a simulated result ends: read after 10 s (running) and 25 s (its verdict)
SAMPLE_EVERY = 2.0  # seconds between two readings of each process's RSS
SCRAPE_EVERY = 15.0  # seconds between two reads of /healthz and /metrics
HEAP_EVERY = 5.0  # seconds between two samples of the traced heap
WARM_UP = 1 / 3  # the share of the run left out of the slopes
TOP_SITES = 8  # allocation sites reported, the ones that grew most from the end of the warm-up to the end
IGNORED = ("<frozen importlib._bootstrap>", "<frozen importlib._bootstrap_external>", "<unknown>", tracemalloc.__file__)

Samples = list[tuple[float, float]]  # (seconds since the start of the measurement, MB)


def slope_per_hour(samples: Sequence[tuple[float, float]]) -> float:
    """The least-squares slope of (seconds, MB) samples, in MB per hour."""
    if len(samples) < 2:
        return float("nan")
    mean_t = sum(t for t, _ in samples) / len(samples)
    mean_v = sum(v for _, v in samples) / len(samples)
    spread = sum((t - mean_t) ** 2 for t, _ in samples)
    if spread == 0:
        return float("nan")
    return sum((t - mean_t) * (v - mean_v) for t, v in samples) / spread * 3600


def after_warm_up(samples: Samples, seconds: float) -> Samples:
    return [(t, v) for t, v in samples if t >= seconds * WARM_UP]


@dataclass(frozen=True)
class Site:
    """One allocation site and how much more it held at the end than after the warm-up."""

    where: str  # file:line (the innermost of our frames when one is in the traceback, else the innermost)
    grew_kb: float
    count_grew: int
    held_kb: float
    traceback: list[str] = field(default_factory=list)  # outermost first, shortened paths

    def text(self) -> str:
        return f"{self.where} {self.grew_kb:+.1f} KB ({self.count_grew:+,} blocks, {self.held_kb:.0f} KB held)"


@dataclass(frozen=True)
class SoakResult:
    jobs: int
    traced_jobs: int  # jobs of the traced daemon
    every: int  # seconds between two slots
    seconds: float  # length of the measurement
    daemon: Samples  # RSS, MB
    floor: Samples
    traced_rss: Samples  # RSS of the traced daemon (tracemalloc's own tables included), MB
    heap: Samples  # traced Python heap of the traced daemon, MB
    parts: dict[str, Samples]  # the daemon's memory by holder (bench.memwatch): rss_anon, malloc_used, sqlite, ...
    sites: list[Site]  # the sites that grew most, end of warm-up to end (traced daemon)
    types: list[tuple[str, int]]  # the object types whose count grew most, end of warm-up to end (traced daemon)
    fires: int  # fires the (untraced) daemon recorded after the warm-up
    verdicts: int  # ... of which finished (a verdict recorded) by the end
    traced_fires: int  # fires the traced daemon recorded after the warm-up
    scrapes: dict[str, int]  # status code of the reads of /healthz and /metrics -> how many
    errors: int  # ERROR lines in the two daemons' logs

    def slope(self, name: str) -> float:
        samples: Samples = self.parts[name] if name in self.parts else getattr(self, name)
        return slope_per_hour(after_warm_up(samples, self.seconds))

    def expected(self, jobs: int) -> int:
        """Fires ``jobs`` jobs make after the warm-up, when the daemon keeps up."""
        return round(jobs * self.seconds * (1 - WARM_UP) / self.every)

    def growth(self, name: str) -> float:
        """MB from the first sample after the warm-up to the last."""
        samples = after_warm_up(self.parts[name] if name in self.parts else getattr(self, name), self.seconds)
        return samples[-1][1] - samples[0][1] if samples else float("nan")


def soak_run(jobs: int, every: int, seconds: float, *, traced_jobs: int) -> SoakResult:
    """``jobs`` jobs every ``every`` s for ``seconds``: RSS of the daemon and the floor; the traced daemon's heap.

    The traced daemon fires ``traced_jobs`` of them: under tracemalloc a fire costs several times the CPU, and a
    daemon that falls behind would show its backlog, not what it keeps.
    """
    with contextlib.ExitStack() as stack:
        folder = stack.enter_context(scratch_folder("soak"))
        sims = [stack.enter_context(SimServer(latency=LATENCY, run_duration=RUN_DURATION)) for _ in range(3)]
        config, traced_config = folder / "jobs.toml", folder / "traced.toml"
        config.write_text(_config(jobs, every))
        traced_config.write_text(_config(traced_jobs, every))
        heap_folder = folder / "heap"
        heap_folder.mkdir()
        launcher = ["-m", "bench.heapwatch", "--out", str(heap_folder), "--every", str(HEAP_EVERY), "--"]
        parts_file = folder / "parts.jsonl"
        watched = ["-m", "bench.memwatch", "--out", str(parts_file), "--every", str(SAMPLE_EVERY), "--"]
        databases = [folder / "daemon.db", folder / "traced.db"]
        daemon = stack.enter_context(_daemon(folder, sims[0].url, databases[0], config, "daemon", watched))
        traced = stack.enter_context(_daemon(folder, sims[1].url, databases[1], traced_config, "traced", launcher))
        floor = stack.enter_context(_floor(sims[2].url, jobs, every))
        for each in (daemon, traced):
            each.wait_for_log("next fire of", timeout=120)
        samples: dict[str, Samples] = {"daemon": [], "floor": [], "traced_rss": []}
        pids = {"daemon": daemon.pid, "floor": floor.pid, "traced_rss": traced.pid}
        scrapes: dict[str, int] = {}
        snapshots = {"warm": seconds * WARM_UP, "middle": seconds * (1 + WARM_UP) / 2, "end": seconds}
        began = time.time()
        scraped = 0.0
        while (elapsed := time.time() - began) < seconds:
            for key, pid in pids.items():
                samples[key].append((elapsed, memory_mb(pid)[0]))
            if elapsed - scraped >= SCRAPE_EVERY:
                scraped = elapsed
                for each in (daemon, traced):
                    for path in ("/healthz", "/metrics"):
                        code = _get(f"http://{each.address}{path}")
                        scrapes[f"{path} {code}"] = scrapes.get(f"{path} {code}", 0) + 1
            for name, at in list(snapshots.items()):
                # Half-way between two slots, every time: as many results in flight at each snapshot.
                if elapsed >= at - every and every / 2 <= time.time() % every < every / 2 + SAMPLE_EVERY:
                    (heap_folder / f"{name}.want").touch()
                    del snapshots[name]
            time.sleep(SAMPLE_EVERY)
        for name in snapshots:  # the last turn may have overshot
            (heap_folder / f"{name}.want").touch()
        _wait_for(heap_folder / "end.pickle", traced)
        counts = [_counts(path, began + seconds * WARM_UP) for path in databases]
        errors = daemon.errors() + traced.errors()
        heap = _heap(heap_folder / "heap.tsv", began)
        parts = _parts(parts_file, began)
        sites = _sites([heap_folder / "warm.pickle", heap_folder / "end.pickle"])
        types = _types(heap_folder / "warm.types.json", heap_folder / "end.types.json")
    return SoakResult(
        jobs=jobs,
        traced_jobs=traced_jobs,
        every=every,
        seconds=seconds,
        daemon=samples["daemon"],
        floor=samples["floor"],
        traced_rss=samples["traced_rss"],
        heap=heap,
        parts=parts,
        sites=sites,
        types=types,
        fires=counts[0][0],
        verdicts=counts[0][1],
        traced_fires=counts[1][0],
        scrapes=scrapes,
        errors=errors,
    )


def _wait_for(path: Path, daemon: Daemon, *, timeout: float = 120) -> None:
    """Wait for the traced daemon to write a snapshot (a big heap takes a while to walk)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if daemon.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the traced daemon wrote no {path.name}:\n{daemon.log_text()[-2000:]}")
        time.sleep(0.5)


def _config(jobs: int, every: int) -> str:
    """``jobs`` jobs every ``every`` s, each fire's verdict routed to a channel (the log: they all pass)."""
    # overlap = "allow": each slot fires while the previous result is still followed (the default would skip it)
    schedules = ((name, f'every = "{every}s"') for name in job_names("soak", jobs))
    text = jobs_toml(schedules, defaults='overlap = "allow"\nalerts = ["log"]')
    return text + '\n[alerts.log]\nurl = "console://"\n'


@contextlib.contextmanager
def _daemon(
    folder: Path, url: str, database: Path, config: Path, name: str, launcher: Sequence[str] = ("-m", "scheduler")
) -> Iterator[Daemon]:
    daemon = start_daemon(
        folder, simulator_url=url, database_url=f"sqlite:///{database}", config=config, name=name, launcher=launcher
    )
    try:
        yield daemon
    finally:
        daemon.stop()


@contextlib.contextmanager
def _floor(url: str, jobs: int, every: int) -> Iterator[subprocess.Popen[str]]:
    command = [sys.executable, "-m", "bench.floor", "--url", url, "--jobs", str(jobs), "--every", str(every)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=clean_environment())
    try:
        assert process.stdout is not None
        if not process.stdout.readline().startswith("READY"):
            raise RuntimeError("the floor did not start")
        yield process
    finally:
        stop_process(process, grace=10)
        if process.stdout is not None:
            process.stdout.close()


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            answer.read()
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def _counts(path: Path, since: float) -> tuple[int, int]:
    """Fires since ``since`` (epoch seconds), and how many of them have their verdict."""
    query = "SELECT count(*), sum(state = 'finished') FROM fires WHERE fired_at >= ?"
    rows = sqlite_rows(path, query, sqlite_stamp(since))
    return int(rows[0][0]), int(rows[0][1] or 0)


def _heap(path: Path, began: float) -> Samples:
    """heap.tsv (epoch seconds, bytes) as (seconds since the start of the measurement, MB)."""
    samples = []
    for line in path.read_text().splitlines():
        at, size = line.split()
        samples.append((float(at) - began, int(size) / 1e6))
    return [(t, v) for t, v in samples if t >= 0]


def _parts(path: Path, began: float) -> dict[str, Samples]:
    """bench.memwatch's readings as one series per holder, (seconds since the start of the measurement, MB);
    CPython's allocated blocks in millions."""
    parts: dict[str, Samples] = {}
    for line in path.read_text().splitlines():
        reading = json.loads(line)
        at = reading.pop("at") - began
        if at >= 0:
            for name, value in reading.items():
                parts.setdefault(name, []).append((at, value / 1e6 if name == "blocks" else value))
    return parts


def _sites(paths: list[Path]) -> list[Site]:
    """The sites that grew most between the first snapshot (end of the warm-up) and the last."""
    ignore = [tracemalloc.Filter(False, pattern) for pattern in IGNORED]
    first = tracemalloc.Snapshot.load(str(paths[0])).filter_traces(ignore)
    last = tracemalloc.Snapshot.load(str(paths[-1])).filter_traces(ignore)
    sites = []
    grown = [stat for stat in last.compare_to(first, "traceback") if stat.size_diff > 0]
    for stat in sorted(grown, key=lambda stat: stat.size_diff, reverse=True)[:TOP_SITES]:
        frames = list(stat.traceback)  # most recent call first
        ours = next((frame for frame in frames if "/scheduler/" in frame.filename), frames[0])
        sites.append(
            Site(
                where=f"{_short(ours.filename)}:{ours.lineno}",
                grew_kb=stat.size_diff / 1024,
                count_grew=stat.count_diff,
                held_kb=stat.size / 1024,
                traceback=[f"{_short(frame.filename)}:{frame.lineno}" for frame in reversed(frames)],
            )
        )
    return sites


def _types(first: Path, last: Path) -> list[tuple[str, int]]:
    """The types of objects the collector tracks whose count grew most between two snapshots."""
    before, after = json.loads(first.read_text()), json.loads(last.read_text())
    grew = {name: count - before.get(name, 0) for name, count in after.items()}
    return sorted(((name, diff) for name, diff in grew.items() if diff > 0), key=lambda item: -item[1])[:TOP_SITES]


def _short(filename: str) -> str:
    """A path as a reader knows it: ``scheduler/daemon/runtime.py``, ``sqlalchemy/orm/session.py``."""
    if "/site-packages/" in filename:
        return filename.rsplit("/site-packages/", 1)[1]
    for marker in ("/scheduler/", "/bench/"):
        if marker in filename:
            return marker.strip("/") + "/" + filename.rsplit(marker, 1)[1]
    return re.sub(r".*/lib/python3\.\d+/", "", filename)
