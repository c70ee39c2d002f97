"""The command line as a user runs it: real processes, the simulator over HTTP, a real SQLite file."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from scheduler.simulator import Simulator
from tests.conftest import API_KEY, wait_until

JOBS = """
[daemon]
poll_interval = "1s"
poll_max_interval = "1s"

[jobs.smoke]
every = "1s"
agent = 12
scenarios = [101]

[jobs.nightly]
cron = "0 3 * * *"
timezone = "America/New_York"
endpoint = "voice"
agent = 34
scenarios = [301, 302]
frequency = 2
"""


def cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scheduler", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def environment(tmp_path: Path, simulator: Simulator | None = None, **extra: str) -> dict[str, str]:
    (tmp_path / "jobs.toml").write_text(JOBS)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("CEKURA_", "SCHEDULER_"))}
    env.update(SCHEDULER_CONFIG=str(tmp_path / "jobs.toml"), SCHEDULER_DATABASE_URL=f"sqlite:///{tmp_path / 's.db'}")
    env.update(SCHEDULER_HTTP_ADDR="127.0.0.1:0")  # `run` serves HTTP: a free port, not 8787 (parallel runs)
    if simulator is not None:
        env.update(CEKURA_API_KEY=API_KEY, CEKURA_BASE_URL=simulator.base_url)
    env.update(extra)
    return env


def outcomes(database: Path) -> list[tuple[str, str | None]]:
    try:
        with sqlite3.connect(database) as connection:
            return list(connection.execute("SELECT job, outcome FROM fires WHERE state = 'finished' ORDER BY id"))
    except sqlite3.OperationalError:  # the daemon is still creating the schema
        return []


def test_run_refuses_to_start_without_an_api_key(tmp_path: Path) -> None:
    result = cli("run", env=environment(tmp_path))
    assert result.returncode != 0
    assert "no Cekura API key: set CEKURA_API_KEY" in result.stderr


def test_validate_shows_schedules_in_words_next_fires_and_cost(tmp_path: Path) -> None:
    result = cli("validate", str(tmp_path / "jobs.toml"), env=environment(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "nightly: At 03:00, every day, in America/New_York" in result.stdout
    assert "voice, agent 34; 4 runs per fire, ~4 runs/day, 120 runs/month" in result.stdout
    nightly = result.stdout.split("nightly:")[1].splitlines()[2:7]
    assert len(nightly) == 5 and all(" 03:00 E" in line and ":00 UTC)" in line for line in nightly)
    assert "smoke: Every second" in result.stdout
    assert "1 runs per fire, ~86400 runs/day, 2592000 runs/month" in result.stdout  # a cost mistake shows


def test_validate_json_for_ci_pipelines(tmp_path: Path) -> None:
    env = environment(tmp_path)
    good = json.loads(cli("validate", "--format", "json", env=env).stdout)
    assert good["valid"] is True and good["errors"] == []
    nightly = next(job for job in good["jobs"] if job["name"] == "nightly")
    assert nightly["next"][0]["local"].endswith(("-05:00", "-04:00")) and nightly["next"][0]["utc"].endswith("Z")
    assert good["runs_per_month"] == 120 + 2592000

    (tmp_path / "jobs.toml").write_text('[jobs.x]\nevery = "1m"\nagent = 1\nscenarios = [1]\nfrequncy = 2\n')
    result = cli("validate", "--format", "json", env=env)
    assert result.returncode == 1
    bad = json.loads(result.stdout)
    assert bad["valid"] is False
    assert bad["errors"] == [
        {
            "file": str(tmp_path / "jobs.toml"),
            "line": 5,
            "column": 1,
            "job": "x",
            "message": "unknown key 'frequncy' (did you mean 'frequency'?)",
        }
    ]


def test_validate_reports_every_error_with_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[jobs.a]\ncron = "0 3 * *"\nagent = 1\nscenarios = [1]\n\n[jobs.b]\nevery = "1m"\n'
        'agent = 1\nscenarios = [1]\ntimezon = "UTC"\n'
    )
    result = cli("validate", str(bad), env=environment(tmp_path))
    assert result.returncode == 1
    assert f"{bad}:2:1: job 'a': cron: invalid cron expression '0 3 * *'" in result.stderr
    assert f"{bad}:10:1: job 'b': unknown key 'timezon' (did you mean 'timezone'?)" in result.stderr


def test_run_fires_records_and_stops_cleanly_on_sigterm(tmp_path: Path, simulator: Simulator) -> None:
    env = environment(tmp_path, simulator)
    process = subprocess.Popen(
        [sys.executable, "-m", "scheduler", "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_until(lambda: (tmp_path / "s.db").exists() and len(outcomes(tmp_path / "s.db")) >= 2, timeout=30)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=40)
    assert process.returncode == 0, stderr
    assert "daemon stopped:" in stderr and " passed," in stderr
    assert API_KEY not in stderr  # the key never reaches a log line
    assert {outcome for _, outcome in outcomes(tmp_path / "s.db")} == {"passed"}

    history = cli("history", "smoke", env=env)
    assert history.returncode == 0 and "smoke" in history.stdout and "passed" in history.stdout
    fires = json.loads(cli("history", "smoke", "--format", "json", env=env).stdout)
    assert fires and {fire["job"] for fire in fires} == {"smoke"}
    assert all(fire["result_id"] or fire["skip_reason"] == "overlap" for fire in fires)
    jobs = cli("jobs", env=env)
    assert "smoke" in jobs.stdout and "nightly" in jobs.stdout and "never fired" in jobs.stdout
    listed = {job["name"]: job for job in json.loads(cli("jobs", "--format", "json", env=env).stdout)["jobs"]}
    assert listed["smoke"]["last_outcome"] in ("passed", "in flight", "skipped (overlap)")
    assert listed["nightly"]["last_fire"] is None
    assert listed["nightly"]["schedule"] == "At 03:00, every day, in America/New_York"


def test_trigger_wait_follows_a_job_to_its_outcome(tmp_path: Path, simulator: Simulator) -> None:
    simulator.config.behaviours = {301: ["fail"]}
    env = environment(tmp_path, simulator)
    result = cli("trigger", "nightly", "--wait", env=env)
    assert result.returncode == 1  # the job failed: a script or CI step notices
    assert "nightly" in result.stdout and "failed" in result.stdout and "result 9001" in result.stdout
    sent = simulator.submissions[0]
    assert sent.endpoint == "run_scenarios" and sent.body["agent_id"] == 34 and sent.body["frequency"] == 2
    assert outcomes(tmp_path / "s.db") == [("nightly", "failed")]

    unknown = cli("trigger", "nope", env=env)
    assert unknown.returncode != 0 and "no job named 'nope'" in unknown.stderr


def test_db_upgrade_creates_the_schema(tmp_path: Path) -> None:
    env = environment(tmp_path, SCHEDULER_DATABASE_URL=f"sqlite:///{tmp_path / 'new' / 'db.sqlite'}")
    result = cli("db", "upgrade", env=env)
    assert result.returncode == 0, result.stderr
    assert "schema is up to date" in result.stdout
    with sqlite3.connect(tmp_path / "new" / "db.sqlite") as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"fires", "runs"} <= tables


def test_every_command_explains_itself() -> None:
    env = dict(os.environ)
    for command in (
        "run",
        "validate",
        "jobs",
        "trigger",
        "history",
        "check",
        "demo",
        "simulator",
        "db",
        "alerts",
        "silence",
    ):
        result = cli(command, "--help", env=env)
        assert result.returncode == 0 and "Usage:" in result.stdout, command


def test_demo_shows_fires_a_failure_alert_and_a_recovery(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("CEKURA_", "SCHEDULER_"))}
    result = subprocess.run(
        [sys.executable, "-m", "scheduler", "demo", "--duration", "22"],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "firing support-smoke@" in result.stderr
    assert "ALERT [cekura-scheduler] FAILED checkout-flow: 1 of 2 runs failed" in result.stderr
    assert "ALERT [cekura-scheduler] RECOVERED checkout-flow" in result.stderr
    assert "What the demo recorded" in result.stdout and "passed" in result.stdout
    assert list(tmp_path.iterdir()) == []  # the demo leaves nothing behind in the working folder
