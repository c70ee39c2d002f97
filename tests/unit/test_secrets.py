"""No secret in sight: a `${VAR}` value in a bad field and in a failing alert URL, looked for everywhere a person
or an attacker could read it: the DEBUG log of the real daemon, a dump of its database, its API and its page."""

from __future__ import annotations

import re
import secrets
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from scheduler.simulator import Simulator
from tests.conftest import run_environment, wait_until

pytestmark = pytest.mark.e2e

GOOD = """
[daemon]
poll_interval = "1s"
poll_max_interval = "1s"
alerts = ["team"]

[alerts.team]
url = "json://127.0.0.1:1/hooks/${HOOK_TOKEN}"   # nothing listens on port 1: every delivery fails

[jobs.smoke]
every = "1s"
agent = 12
scenarios = [101]
alerts = ["team"]
overlap = "allow"
"""


def test_a_secret_from_the_environment_shows_nowhere(tmp_path: Path, simulator: Simulator) -> None:
    hook, every = f"hook{secrets.token_hex(8)}", f"every{secrets.token_hex(8)}"
    simulator.config.behaviours = {101: ["fail"]}  # failures, so alerts are sent (and fail)
    config, database, log = tmp_path / "jobs.toml", tmp_path / "s.db", tmp_path / "daemon.log"
    config.write_text(GOOD)
    env = run_environment(
        config,
        f"sqlite:///{database}",
        simulator,
        SCHEDULER_LOG_LEVEL="DEBUG",
        HOOK_TOKEN=hook,
        EVERY_TOKEN=every,
    )

    def rows(query: str) -> list[tuple[object, ...]]:
        try:
            with sqlite3.connect(database) as connection:
                return list(connection.execute(query))
        except sqlite3.OperationalError:
            return []

    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "scheduler", "run"], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path
        )
    try:
        wait_until(lambda: bool(rows("SELECT id FROM outbox WHERE attempts > 0 AND last_error IS NOT NULL")), 30)
        # A bad save whose bad value comes from the environment.
        config.write_text(GOOD.replace('every = "1s"', 'every = "${EVERY_TOKEN}"'))
        wait_until(lambda: bool(rows("SELECT id FROM config_changes WHERE valid = 0")), 30)
        port = re.search(rb"HTTP server on http://127\.0\.0\.1:(\d+)", log.read_bytes())
        assert port is not None
        base = f"http://127.0.0.1:{int(port.group(1))}"
        pages = {path: httpx.get(base + path, timeout=10).text for path in ("/", "/readyz", "/healthz", "/api/jobs")}
        pages["/api/jobs/smoke/fires"] = httpx.get(base + "/api/jobs/smoke/fires?limit=50", timeout=10).text
        with sqlite3.connect(database) as connection:
            dump = "\n".join(connection.iterdump())
    finally:
        process.terminate()
        process.wait(timeout=60)
    output = log.read_text(errors="replace")

    assert "${EVERY_TOKEN}" in pages["/readyz"]  # the error names the variable ...
    [summary] = [str(row[0]) for row in rows("SELECT summary FROM config_changes WHERE valid = 0")]
    assert "${EVERY_TOKEN}" in summary
    assert "alert" in output.lower() and "DEBUG" in output  # the log was verbose enough to leak, had it leaked
    for where, text in {"log": output, "database": dump, **pages}.items():
        assert hook not in text, f"the alert URL's secret is in the {where}"
        assert every not in text, f"the interpolated value is in the {where}"
