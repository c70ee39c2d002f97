"""The command line's answer time: each command, a process of its own, from its start to its exit.

Beside each, the interpreter's own start-up (``python -c pass``) timed in the same run, on the same machine: what
no command can go below. Every command runs ``REPEATS`` times (medians); ``check`` both against a running daemon
and against none, ``validate`` on a small file with and without an alert channel (one loads Apprise), ``jobs``
and ``history`` on a long history filled by ``bench.history.fill`` (the database is at the newest schema).
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.history import fill
from bench.plan import job_names, jobs_toml
from bench.procs import SimServer, clean_environment, free_port, start_daemon

SMALL = jobs_toml([("nightly", 'cron = "0 3 * * *"\ntimezone = "America/New_York"'), ("smoke", 'every = "15m"')])
ALERTS = SMALL + '\n[alerts.team]\nurl = "slack://TokenAAAA/TokenBBBBB/TokenCCCCCCCC/#qa"\n'
EVERY = "5m"  # as bench.history fills: one slot per job every 5 minutes


@dataclass(frozen=True)
class CommandTime:
    """One command's median wall and CPU time over its repeats, and the exit code it gave."""

    label: str
    wall: float
    cpu: float
    returncode: int


def time_command(label: str, args: list[str], *, env: dict[str, str], cwd: Path, repeats: int) -> CommandTime:
    """Run ``python ARGS`` ``repeats`` times after one warm-up (the file cache): the medians."""
    walls, cpus, code = [], [], 0
    for attempt in range(repeats + 1):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        began = time.perf_counter()
        code = subprocess.run(
            [sys.executable, *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        ).returncode
        wall = time.perf_counter() - began
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if attempt:
            walls.append(wall)
            cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return CommandTime(label, statistics.median(walls), statistics.median(cpus), code)


@contextmanager
def _running_daemon(folder: Path) -> Iterator[str]:
    """A ``cekura-scheduler run`` answering /healthz (its one job far from due); yields its SCHEDULER_HTTP_ADDR."""
    config = folder / "daemon.toml"
    config.write_text(SMALL)
    with SimServer() as simulator:
        daemon = start_daemon(
            folder, simulator_url=simulator.url, database_url=f"sqlite:///{folder / 'daemon.db'}", config=config
        )
        try:
            env = clean_environment(SCHEDULER_HTTP_ADDR=daemon.address)
            deadline = time.monotonic() + 60
            while _check(env, folder) != 0:
                if daemon.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the daemon did not answer /healthz:\n{daemon.log_text()[-2000:]}")
                time.sleep(0.2)
            yield daemon.address
        finally:
            daemon.stop()


def _check(env: dict[str, str], cwd: Path) -> int:
    return subprocess.run(
        [sys.executable, "-m", "scheduler", "check"], cwd=cwd, env=env, capture_output=True
    ).returncode


def quick_commands(folder: Path, *, repeats: int) -> list[CommandTime]:
    """The interpreter's start-up, then --version, --help, check and validate of a small file."""
    (folder / "small.toml").write_text(SMALL)
    (folder / "alerts.toml").write_text(ALERTS)
    env = clean_environment(SCHEDULER_HTTP_ADDR=f"127.0.0.1:{free_port()}")  # nobody listens there

    def timed(label: str, *args: str, environment: dict[str, str] = env) -> CommandTime:
        return time_command(label, list(args), env=environment, cwd=folder, repeats=repeats)

    times = [
        timed("python -c pass (the interpreter's start-up)", "-c", "pass"),
        timed("--version", "-m", "scheduler", "--version"),
        timed("--help", "-m", "scheduler", "--help"),
        timed("check, no daemon running (exit 1)", "-m", "scheduler", "check"),
    ]
    with _running_daemon(folder) as address:
        alive = clean_environment(SCHEDULER_HTTP_ADDR=address)
        times.append(timed("check, a daemon running", "-m", "scheduler", "check", environment=alive))
    times += [
        timed("validate FILE, 2 jobs", "-m", "scheduler", "validate", "small.toml"),
        timed("validate FILE, 2 jobs and an alert channel (Apprise)", "-m", "scheduler", "validate", "alerts.toml"),
    ]
    return times


def database_commands(folder: Path, *, jobs: int, fires: int, repeats: int) -> tuple[list[CommandTime], float]:
    """``jobs`` and ``history`` on a SQLite database of ``fires`` fires of ``jobs`` jobs, and ``validate`` of that
    jobs.toml (what ``jobs`` reads besides the database); also the seconds the fill took."""
    names = job_names("job-", jobs)
    config = folder / "jobs.toml"
    config.write_text(jobs_toml([(name, f'every = "{EVERY}"') for name in names]))
    url = f"sqlite:///{folder / 'history.db'}"
    filled = fill(url, jobs=names, fires=fires)
    env = clean_environment(SCHEDULER_CONFIG=str(config), SCHEDULER_DATABASE_URL=url)

    def timed(label: str, *args: str) -> CommandTime:
        return time_command(label, ["-m", "scheduler", *args], env=env, cwd=folder, repeats=repeats)

    return [
        timed(f"jobs, {jobs:,} jobs, {fires:,} fires", "jobs"),
        timed(f"history, {fires:,} fires (the newest 20)", "history"),
        timed(f"validate of the same {jobs:,}-job jobs.toml", "validate"),
    ], filled
