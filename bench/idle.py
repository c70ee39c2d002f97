"""Idle cost: a daemon with many jobs loaded and nothing due, beside a Python process that only imported it."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bench.plan import job_names, jobs_toml
from bench.procs import SimServer, clean_environment, cpu_seconds, daemons, memory_mb, scratch_folder, stop_process

BASELINE = "import scheduler.daemon, time; print('READY', flush=True); time.sleep(3600)"


@dataclass(frozen=True)
class Usage:
    """What a process used over a window: CPU seconds, and its resident memory at the end and at its peak."""

    cpu: float
    seconds: float
    rss_mb: float
    peak_rss_mb: float

    @property
    def share(self) -> float:
        """CPU as a share of one core over the window."""
        return self.cpu / self.seconds


@dataclass(frozen=True)
class IdleResult:
    jobs: int
    daemon: Usage
    baseline: Usage
    errors: int  # ERROR lines in the daemon's log


def far_cron(hours_ahead: int = 12) -> str:
    """A daily cron time ``hours_ahead`` from now: nothing falls due while we measure."""
    at = datetime.now(UTC) + timedelta(hours=hours_ahead)
    return f'cron = "{at.minute} {at.hour} * * *"'


def idle_run(jobs: int, seconds: float) -> IdleResult:
    """Start a daemon on ``jobs`` jobs due in 12 hours and a baseline process; measure both over ``seconds``."""
    with SimServer() as sim, scratch_folder("idle") as folder:
        config = folder / "jobs.toml"
        schedule = far_cron()
        config.write_text(jobs_toml((name, schedule) for name in job_names("idle", jobs)))
        database = f"sqlite:///{folder / 'scheduler.db'}"
        baseline = subprocess.Popen(
            [sys.executable, "-c", BASELINE], stdout=subprocess.PIPE, text=True, env=clean_environment()
        )
        try:
            with daemons(folder, 1, simulator_url=sim.url, database_url=database, config=config) as [daemon]:
                daemon.wait_for_log("next fire of", timeout=120)
                assert baseline.stdout is not None
                baseline.stdout.readline()
                time.sleep(2.0)  # let start-up work (the first sweep, the web server) settle
                pids = {"daemon": daemon.pid, "baseline": baseline.pid}
                start = {key: cpu_seconds(pid) for key, pid in pids.items()}
                began = time.monotonic()
                time.sleep(seconds)
                elapsed = time.monotonic() - began
                usage = {
                    key: Usage(cpu_seconds(pid) - start[key], elapsed, *memory_mb(pid)) for key, pid in pids.items()
                }
            errors = daemon.errors()
        finally:
            stop_process(baseline, grace=5)
            if baseline.stdout is not None:
                baseline.stdout.close()
    return IdleResult(jobs=jobs, daemon=usage["daemon"], baseline=usage["baseline"], errors=errors)
