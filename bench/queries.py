"""Every query the daemon runs per fire, per claim batch, per poll, per page view and at start, on a long history.

Two databases with the same jobs: one with a long history filled by ``bench.history.fill`` (1,000,000 fires
with ``--full``), one holding only each job's newest ``BASE_PER_JOB`` fires (the baseline: the same queries with
no history behind them). Each operation runs through ``Store`` as the daemon calls it, ``REPEATS`` times after one
warm-up, on each database in turn; the row is the median, and the ratio big/baseline says whether the query
grows with history (the target is under 3x). Writes (claim, answer, poll, verdict with its routing) act on new
slots of their own at each repeat, so both databases see the same work.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.databases import Database
from bench.history import fill
from bench.plan import job_names, jobs_toml
from bench.procs import SimServer, start_daemon
from scheduler.store import JobHistory, RunRecord, Store, create_db_engine
from scheduler.store.alerting import IncidentAction
from scheduler.verdicts import PASSED

REPEATS = 7
BATCH = 100  # fires per claim batch (admission claims up to 100 at once)
BASE_PER_JOB = 2
EVERY = timedelta(hours=8)  # 1,000 jobs x 1,000 fires: a year of history, a day of it today


@dataclass(frozen=True)
class QueryTime:
    name: str
    when: str  # per fire, per batch, per poll, per page view, at start, upkeep
    big: float  # median seconds on the long history
    base: float  # median seconds on the baseline


class _Context:
    """What the operations share on one database: the jobs, a clock, and fresh slots to claim."""

    def __init__(self, store: Store, jobs: list[str], end: datetime) -> None:
        self.store, self.jobs, self.end = store, jobs, end
        self.now = end + timedelta(seconds=1)
        self._next_slot = end + EVERY  # new slots, never in the history
        self.claimed: list[int] = []
        self.submitted: list[int] = []

    def new_claims(self) -> list[dict[str, Any]]:
        slot, self._next_slot = self._next_slot, self._next_slot + timedelta(seconds=1)
        return [
            {
                "job": job,
                "slot": slot,
                "trigger": "schedule",
                "fired_at": self.now,
                "submission_name": f"{job}@{slot:%Y-%m-%dT%H:%M:%S}Z",
                "endpoint": "run_scenarios",
                "runs_requested": 2,
                "owner": "bench",
                "lease_until": self.now + timedelta(minutes=2),
            }
            for job in self.jobs[:BATCH]
        ]


def _no_alerts(_history: JobHistory) -> list[IncidentAction]:
    return []  # routing still reads the job's last outcomes and open incidents: that read is what is timed


def _claim(ctx: _Context) -> None:
    ctx.claimed = [fire.id for fire in ctx.store.claim_many(ctx.new_claims()) if fire is not None]


def _answers(ctx: _Context) -> None:
    runs = [RunRecord(run_id=number, scenario=1, status="running") for number in range(2)]
    answers = [
        {
            "fire_id": fire_id,
            "result_id": 90_000_000 + fire_id,
            "status": "running",
            "runs": runs,
            "at": ctx.now,
            "poll_deadline": ctx.now + timedelta(hours=1),
            "runs_created": 2,
        }
        for fire_id in ctx.claimed
    ]
    ctx.store.record_submitted_many(answers)
    ctx.submitted = ctx.claimed


def _polls(ctx: _Context) -> None:
    ctx.store.record_polls([{"fire_id": fire_id, "result_status": "running"} for fire_id in ctx.submitted])


def _verdicts(ctx: _Context) -> None:
    runs = [RunRecord(run_id=number, scenario=1, status="completed", success=True) for number in range(2)]
    outcomes = [
        {
            "fire_id": fire_id,
            "outcome": PASSED,
            "at": ctx.now,
            "result_status": "completed",
            "success_rate": 100.0,
            "runs": runs,
            "route": _no_alerts,
        }
        for fire_id in ctx.submitted
    ]
    ctx.store.finish_many(outcomes)


def _skipped(ctx: _Context) -> None:
    claim = ctx.new_claims()[0]
    ctx.store.record_skipped(
        **{key: value for key, value in claim.items() if key not in ("owner", "lease_until")}, reason="overlap"
    )


def _resolve(ctx: _Context) -> None:
    ctx.store.resolve_incident(scope="daemon", subjects=["database unreachable"], at=ctx.now, notice=None)


def _day_back(ctx: _Context) -> dict[str, datetime]:
    return dict.fromkeys(ctx.jobs, ctx.now - timedelta(days=1))


def _day_start(ctx: _Context) -> datetime:
    return ctx.now.replace(hour=0, minute=0, second=0, microsecond=0)


# (name, when, operation); the writes run in this order at each repeat, so each has fires to act on.
OPERATIONS: list[tuple[str, str, Callable[[_Context], object]]] = [
    ("claim_many (100 slots)", "per batch", _claim),
    ("in_flight_by_job (100 jobs)", "per batch", lambda c: c.store.in_flight_by_job(c.jobs[:BATCH])),
    ("runs_submitted_since (a job)", "per batch", lambda c: c.store.runs_submitted_since(_day_start(c), job=c.jobs[0])),
    ("runs_submitted_since (all jobs)", "per batch", lambda c: c.store.runs_submitted_since(_day_start(c))),
    ("active_holds", "per batch", lambda c: c.store.active_holds(at=c.now)),
    ("last_runs_created (a job)", "per batch", lambda c: c.store.last_runs_created(c.jobs[0])),
    ("record_submitted_many (100)", "per fire", _answers),
    ("renew_leases (100)", "per poll", lambda c: c.store.renew_leases("bench", c.submitted, until=c.now)),
    ("record_polls (100)", "per poll", _polls),
    ("fire_for_result (by id)", "per webhook", lambda c: c.store.fire_for_result(90_000_000 + c.submitted[0], None)),
    ("fire_for_result (by name)", "per webhook", lambda c: c.store.fire_for_result(None, "no-such@name")),
    ("finish_many with routing (100)", "per fire", _verdicts),
    ("record_skipped (a slot)", "per skip", _skipped),
    ("get_fire (with its runs)", "per API call", lambda c: c.store.get_fire(c.submitted[0])),
    ("resolve_incident (none open)", "per daemon check", _resolve),
    ("in_flight", "at start", lambda c: c.store.in_flight()),
    ("slot_bounds (every job)", "at start", lambda c: c.store.slot_bounds(c.jobs)),
    (
        "recorded_slots (every job, 1 day)",
        "at start",
        lambda c: c.store.recorded_slots(dict.fromkeys(c.jobs, c.now - timedelta(days=1))),
    ),
    ("take_over", "per upkeep", lambda c: c.store.take_over("bench2", now=c.now - timedelta(days=1), until=c.now)),
    ("claim_outbox", "per upkeep", lambda c: c.store.claim_outbox("bench", now=c.now, until=c.now)),
    ("prune (nothing old enough)", "per upkeep", lambda c: c.store.prune(before=c.end - timedelta(days=3650))),
    ("last_fires_by_job (100 jobs)", "per page view", lambda c: c.store.last_fires_by_job(c.jobs[:BATCH])),
    (
        "recent_fires_by_job (100 jobs, 20)",
        "per page view",
        lambda c: c.store.recent_fires_by_job(c.jobs[:BATCH], limit=20),
    ),
    ("recent_fires (a job, 20)", "per page view", lambda c: c.store.recent_fires(job=c.jobs[0], limit=20)),
    ("recent_fires (all, 50)", "per page view", lambda c: c.store.recent_fires(limit=50)),
    ("open_incidents", "per page view", lambda c: c.store.open_incidents()),
    ("latest_config_change", "per page view", lambda c: c.store.latest_config_change()),
]


def startup(url: str, jobs: list[str], folder: Path) -> float:
    """Seconds from starting ``cekura-scheduler run`` on this database to its first POST arriving.

    The config holds the history's jobs (daily at 03:00, ``catch_up = "skip"``: start-up looks for their missed
    slots, and records them, without submitting) and one new job every second, whose first POST is the one timed.
    """
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "jobs.toml"
    lines = [(name, 'cron = "0 3 * * *"\ncatch_up = "skip"') for name in jobs] + [("tick", 'every = "1s"')]
    config.write_text(jobs_toml(lines))
    with SimServer(latency=0.01) as sim:
        began = time.time()
        daemon = start_daemon(folder, simulator_url=sim.url, database_url=url, config=config)
        try:
            deadline = time.monotonic() + 300
            while not (posts := sim.posts()) and time.monotonic() < deadline:
                if daemon.process.poll() is not None:
                    raise RuntimeError(f"the daemon exited:\n{daemon.log_text()[-2000:]}")
                time.sleep(0.05)
        finally:
            daemon.stop()
    if not posts:
        raise RuntimeError("the daemon sent nothing within 300 s of its start")
    return min(arrived for arrived, _received, _name in posts) - began


def _url(store: Store) -> str:
    return store.engine.url.render_as_string(hide_password=False)


@contextmanager
def _filled(database: Database, folder: Path, jobs: list[str], fires: int, end: datetime) -> Iterator[Store]:
    with database(folder) as url:
        fill(url, jobs=jobs, fires=fires, every=EVERY, end=end)
        engine = create_db_engine(url)
        try:
            yield Store(engine=engine)
        finally:
            engine.dispose()


@dataclass(frozen=True)
class Measured:
    queries: list[QueryTime]
    filled: float  # seconds the two fills took
    startup: float  # seconds from start to the first POST, on the long history
    startup_base: float  # the same on the baseline


def measure(database: Database, folder: Path, *, jobs: int, fires: int) -> Measured:
    """Time every operation on ``fires`` fires of history and on the baseline, then the daemon's start-up on each."""
    names = job_names("job-", jobs)
    end = datetime.now(UTC).replace(microsecond=0)
    times: dict[str, dict[str, list[float]]] = {"big": {}, "base": {}}
    (folder / "big").mkdir(parents=True, exist_ok=True)
    (folder / "base").mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    with (
        _filled(database, folder / "big", names, fires, end) as big,
        _filled(database, folder / "base", names, jobs * BASE_PER_JOB, end) as base,
    ):
        filled = time.monotonic() - began
        contexts = {"big": _Context(big, names, end), "base": _Context(base, names, end)}
        for repeat in range(REPEATS + 1):
            for which, ctx in contexts.items():  # alternate, so that a noisy moment hits both
                for name, _when, operation in OPERATIONS:
                    start = time.perf_counter()
                    operation(ctx)
                    took = time.perf_counter() - start
                    if repeat:  # the first round warms the caches
                        times[which].setdefault(name, []).append(took)
        urls = {
            which: str(ctx.store.engine.url.render_as_string(hide_password=False)) for which, ctx in contexts.items()
        }
        started = {which: startup(url, names, folder / f"{which}-daemon") for which, url in urls.items()}
    queries = [
        QueryTime(name, when, statistics.median(times["big"][name]), statistics.median(times["base"][name]))
        for name, when, _operation in OPERATIONS
    ]
    return Measured(queries, filled, started["big"], started["base"])
