"""The status page and /api/jobs on a long history, and what a tab refreshing the page costs the fires due meanwhile.

One daemon on a database filled by ``bench.history.fill`` (``jobs`` jobs, ``fires`` fires), configured with those
same jobs on a daily cron whose hour is half a day away (none fires during the measurement) plus one job, ``tick``,
every second, whose fire lag (slot to POST arriving at the simulator) is the probe. Three windows of ``window``
seconds each: nobody asks for the page (the baseline); a client asks for ``GET /`` once a second, 50 ms before
each slot so that the fire falls due while the page is being made (a tab refreshing ten times as often as the
page's own 10 s, at the worst moment); then back to back, each request sent on the previous answer (many tabs).
Then ``/api/jobs`` a few times. A second
daemon, the same jobs on an empty database, answers ``GET /`` too: the latency of the page without history.

The client is this process (not the daemon's GIL); each answer's latency is measured from sending to the last byte.
"""

from __future__ import annotations

import statistics
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime

from bench.history import fill
from bench.plan import Lags, job_names, jobs_toml, percentile, slot_of
from bench.procs import Daemon, SimServer, cpu_seconds, daemons, scratch_folder

TICK = "tick"
API_REQUESTS = 10
EMPTY_REQUESTS = 20
LEAD = 0.05  # seconds before a tick's slot that the once-a-second client sends its request


@dataclass(frozen=True)
class Latency:
    """Answers to one URL: how long each took (seconds, median and p95) and how big it was."""

    median: float
    p95: float
    count: int
    bytes: int

    @classmethod
    def of(cls, samples: list[tuple[float, int]]) -> Latency:
        seconds = [took for took, _ in samples]
        return cls(statistics.median(seconds), percentile(seconds, 0.95), len(samples), samples[-1][1])


@dataclass(frozen=True)
class PageResult:
    jobs: int
    fires: int
    fill_seconds: float
    window: float
    page: Latency  # GET / on the long history, once a second
    page_busy: Latency  # ... back to back
    page_empty: Latency  # GET / on an empty database, the same jobs
    api: Latency  # GET /api/jobs on the long history
    quiet: Lags  # the tick job's fire lag while nobody asks for the page
    tab: Lags  # ... while GET / is asked once a second, just before each slot
    loaded: Lags  # ... while GET / is asked back to back
    cpu_per_page: float  # daemon CPU seconds per GET / back to back (the tick job's own share included)
    errors: int  # ERROR lines in the daemons' logs


def _get(url: str) -> tuple[float, int]:
    began = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as answer:
        size = len(answer.read())
        if answer.status != 200:
            raise RuntimeError(f"{url} answered {answer.status}")
    return time.perf_counter() - began, size


def _config(names: list[str], now: datetime) -> str:
    hour = (now.hour + 12) % 24  # half a day away: the history's jobs do not fire while they are measured
    daily = [(name, f'cron = "0 {hour} * * *"') for name in names]
    return jobs_toml([*daily, (TICK, 'every = "1s"')], defaults='overlap = "allow"')


def _ready(daemon: Daemon, jobs: int) -> None:
    daemon.wait_for_log("next fire of", timeout=120 + jobs * 0.01)
    _get("http://" + daemon.address + "/")  # the first answer warms imports and caches up; not counted
    time.sleep(3)  # the first ticks, and a catch-up if any, are over


def _tick_lags(sim: SimServer, start: float, end: float) -> Lags:
    """The tick job's fire lags of the slots in [start, end) (first arrival of each slot)."""
    first: dict[str, float] = {}
    for arrived, _, name in sim.posts():
        if name.startswith(f"{TICK}@") and name not in first:
            first[name] = arrived
    lags = [arrived - slot_of(name) for name, arrived in first.items() if start <= slot_of(name) < end]
    if not lags:
        raise RuntimeError(f"no fire of {TICK} arrived for the slots of the window")
    return Lags.of(lags)


def _every_second(url: str, start: float, end: float) -> list[tuple[float, int]]:
    """One GET a second, sent ``LEAD`` before each slot of the tick job: its fire falls due mid-request."""
    samples: list[tuple[float, int]] = []
    for slot in range(int(start), int(end)):
        if time.time() > slot - LEAD:
            continue  # the previous answer came after this slot: a page slower than a second skips slots
        time.sleep(slot - LEAD - time.time())
        samples.append(_get(url))
    return samples


def _back_to_back(url: str, until: float) -> list[tuple[float, int]]:
    samples = [_get(url)]
    while time.time() < until:
        samples.append(_get(url))
    return samples


def page_run(jobs: int, fires: int, *, window: float) -> PageResult:
    """Measure the page on ``jobs`` jobs with ``fires`` fires of history (see the module's docstring)."""
    names = job_names("j", jobs)
    with SimServer(latency=0.1) as sim, scratch_folder("page") as folder:
        now = datetime.now(UTC)
        config = folder / "jobs.toml"
        config.write_text(_config(names, now))
        filled = f"sqlite:///{folder / 'history.db'}"
        took = fill(filled, jobs=names, fires=fires, end=now.replace(microsecond=0))
        with daemons(folder, 1, simulator_url=sim.url, database_url=filled, config=config) as [daemon]:
            _ready(daemon, jobs)
            quiet_start = float(int(time.time()) + 1)
            time.sleep(quiet_start + window - time.time())
            tab_start = quiet_start + window
            tab = _every_second("http://" + daemon.address + "/", tab_start, tab_start + window)
            busy_start = tab_start + window
            cpu_before = cpu_seconds(daemon.pid)
            busy = _back_to_back("http://" + daemon.address + "/", busy_start + window)
            cpu = cpu_seconds(daemon.pid) - cpu_before
            api = [_get("http://" + daemon.address + "/api/jobs") for _ in range(API_REQUESTS)]
            time.sleep(1.5)  # the last tick's POST of the window, and its answer
            quiet = _tick_lags(sim, quiet_start, tab_start)
            tabbed = _tick_lags(sim, tab_start, busy_start)
            loaded = _tick_lags(sim, busy_start, busy_start + window)
        errors = daemon.errors()
        empty_folder = folder / "empty"
        empty_folder.mkdir()
        empty = f"sqlite:///{empty_folder / 'empty.db'}"
        with daemons(empty_folder, 1, simulator_url=sim.url, database_url=empty, config=config) as [bare]:
            _ready(bare, jobs)
            page_empty = [_get("http://" + bare.address + "/") for _ in range(EMPTY_REQUESTS)]
        errors += bare.errors()
    return PageResult(
        jobs=jobs,
        fires=fires,
        fill_seconds=took,
        window=window,
        page=Latency.of(tab),
        page_busy=Latency.of(busy),
        page_empty=Latency.of(page_empty),
        api=Latency.of(api),
        quiet=quiet,
        tab=tabbed,
        loaded=loaded,
        cpu_per_page=cpu / max(len(busy), 1),
        errors=errors,
    )


def main() -> None:  # pragma: no cover - python -m bench.page, to try it alone
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.page")
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--fires", type=int, default=100_000)
    parser.add_argument("--window", type=float, default=20)
    args = parser.parse_args()
    print(page_run(args.jobs, args.fires, window=args.window))


if __name__ == "__main__":
    main()


__all__ = ["Latency", "PageResult", "page_run"]
