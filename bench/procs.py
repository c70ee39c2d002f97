"""The processes a benchmark runs (the simulator, daemons, baselines) and what /proc says about them."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.simserver import API_KEY

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

PROFILES: list[Path] = []  # a folder where each daemon gets a py-spy profile (``--profile``), when set


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process used so far (``/proc/<pid>/stat`` utime + stime)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces: start after it
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def memory_mb(pid: int) -> tuple[float, float]:
    """The process's resident memory now and at its peak (VmRSS, VmHWM), in MB."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


@dataclass(frozen=True)
class ChildUsage:
    """What a command used from its start to its exit, as ``/usr/bin/time`` reports it."""

    cpu: float  # user + system seconds
    wall: float
    peak_rss_mb: float  # ru_maxrss
    returncode: int


# Runs its arguments as a command and prints what that command used. A small process of its own must start the
# command: Linux carries the peak RSS of the process that forks (or vforks) into the child's ru_maxrss across exec,
# so a child of this bench process (hundreds of MB after a big config) would report the bench's peak, not its own.
_MEASURE = """
import resource, subprocess, sys, time
began = time.monotonic()
code = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL)
wall = time.monotonic() - began
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(usage.ru_utime + usage.ru_stime, wall, usage.ru_maxrss, code)
"""


def run_measured(command: list[str], *, timeout: float) -> ChildUsage:
    """Run ``command`` (stdout discarded) to its end: its CPU, wall time and peak RSS, as ``/usr/bin/time`` does.

    The figures are the command's alone (``getrusage(RUSAGE_CHILDREN)`` in a small launcher whose one child it is).
    """
    answer = subprocess.run(
        [sys.executable, "-c", _MEASURE, *command],
        capture_output=True,
        text=True,
        env=clean_environment(),
        timeout=timeout,
        check=True,
    )
    cpu, wall, peak_kb, code = answer.stdout.split()
    if int(code) != 0:
        raise RuntimeError(f"{command[:4]} exited {code}: {answer.stderr[-2000:]}")
    return ChildUsage(float(cpu), float(wall), int(peak_kb) / 1024, int(code))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


ROOT = Path(__file__).resolve().parent.parent  # the checkout whose scheduler and bench are measured


def clean_environment(**extra: str) -> dict[str, str]:
    """This environment without the scheduler's own settings, plus ``extra``; imports come from this checkout."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("CEKURA_", "SCHEDULER_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env.update(extra)
    return env


def stop_process(process: subprocess.Popen[Any], *, grace: float = 40.0) -> None:
    """SIGTERM, wait, then SIGKILL: a daemon gets the time its shutdown needs (submissions in flight)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class SimServer:
    """``bench.simserver`` in a process of its own, so that it does not share a GIL with what it measures."""

    def __init__(self, *, latency: float = 0.1, run_duration: float = 3600.0) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.simserver", "--latency", str(latency), "--run-duration", str(run_duration)],
            stdout=subprocess.PIPE,
            text=True,
            env=clean_environment(),
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("READY "):
            stop_process(self.process)
            raise RuntimeError(f"the simulator did not start: {line!r}")
        self.url = line.split()[1]

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=60) as answer:
            return json.load(answer)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = self._get("/_bench/counts")
        return counts

    def posts(self) -> list[tuple[float, float | None, str]]:
        """Each submission as it arrived: (arrived, the simulator's received_at or None, name), epoch seconds."""
        return [(arrived, received, name) for arrived, received, name in self._get("/_bench/posts")]

    def gets(self) -> list[tuple[float, int]]:
        """Each result read: (when it arrived, the result id)."""
        return [(arrived, result) for arrived, result in self._get("/_bench/gets")]

    def close(self) -> None:
        stop_process(self.process, grace=10)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> SimServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


@dataclass
class Daemon:
    """One ``cekura-scheduler run`` process and its log (and the py-spy attached to it, with ``--profile``)."""

    process: subprocess.Popen[bytes]
    log: Path
    address: str  # host:port of its web server (/healthz, /metrics)
    profiler: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def errors(self) -> int:
        """How many ERROR lines the daemon logged (a crashed task, a failed write: the figures are suspect)."""
        return sum(1 for line in self.log_text().splitlines() if " ERROR " in line)

    def wait_for_log(self, text: str, *, timeout: float) -> float:
        """Wait until ``text`` shows in the log; return when it was seen (epoch seconds)."""
        deadline = time.monotonic() + timeout
        while text not in self.log_text():
            if self.process.poll() is not None:
                raise RuntimeError(f"the daemon exited ({self.process.returncode}):\n{self.log_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the daemon did not log {text!r} in {timeout:.0f}s")
            time.sleep(0.05)
        return time.time()

    def stop(self) -> None:
        stop_process(self.process)
        if self.profiler is not None:
            self.profiler.wait(timeout=60)  # py-spy writes its profile once the daemon has exited


def start_daemon(
    folder: Path,
    *,
    simulator_url: str,
    database_url: str,
    config: Path,
    name: str = "daemon",
    launcher: Sequence[str] = ("-m", "scheduler"),
) -> Daemon:
    """Start ``python -m scheduler run`` (what ``cekura-scheduler run`` is) on a config, against the simulator.

    ``launcher``: what runs the command line instead of ``-m scheduler`` (e.g. ``-m bench.heapwatch ... --``).
    """
    log = folder / f"{name}.log"
    address = f"127.0.0.1:{free_port()}"
    env = clean_environment(
        CEKURA_API_KEY=API_KEY,
        CEKURA_BASE_URL=simulator_url,
        SCHEDULER_CONFIG=str(config),
        SCHEDULER_DATABASE_URL=database_url,
        SCHEDULER_HTTP_ADDR=address,
    )
    with log.open("wb") as stderr:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [sys.executable, *launcher, "run"], cwd=folder, env=env, stderr=stderr, stdout=subprocess.DEVNULL
        )
    return Daemon(process=process, log=log, address=address, profiler=_profile(process.pid, name))


def _profile(pid: int, name: str) -> subprocess.Popen[bytes] | None:
    """Attach py-spy to a daemon (``--profile DIR``): collapsed stacks, one file per daemon, main thread apart."""
    if not PROFILES:
        return None
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if spy is None:
        raise RuntimeError("--profile needs py-spy: pip install py-spy")
    folder = PROFILES[0]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{time.strftime('%H%M%S')}-{name}-{pid}.txt"
    command = [
        spy,
        "record",
        "--pid",
        str(pid),
        "--rate",
        "100",
        "--nonblocking",
        "--threads",
        "--format",
        "raw",
        "-o",
        str(path),
    ]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@contextlib.contextmanager
def scratch_folder(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"cekura-bench-{prefix}-") as folder:
        yield Path(folder)


@contextlib.contextmanager
def daemons(folder: Path, count: int, *, simulator_url: str, database_url: str, config: Path) -> Iterator[list[Daemon]]:
    """``count`` daemons on one database and config, stopped (SIGTERM, then SIGKILL) on exit."""
    started: list[Daemon] = []
    try:
        for index in range(count):
            started.append(
                start_daemon(
                    folder, simulator_url=simulator_url, database_url=database_url, config=config, name=f"d{index}"
                )
            )
        yield started
    finally:
        for daemon in started:
            if daemon.process.poll() is None:
                daemon.process.send_signal(signal.SIGTERM)
        for daemon in started:
            daemon.stop()
