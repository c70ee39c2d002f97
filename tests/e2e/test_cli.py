"""The command line as a user runs it: real processes, the simulator over HTTP, a real SQLite file."""

from __future__ import annotations

import inspect
import json
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from importlib.metadata import version
from pathlib import Path

import click
import httpx
import pytest
from click.testing import CliRunner

from scheduler.cli import main
from scheduler.settings import Settings, environment_variables
from scheduler.simulator import Simulator
from scheduler.store import Store, create_db_engine
from scheduler.web import WebServer
from tests.conftest import API_KEY, DaemonProcess, claim_slot, clean_environment, cli, run_environment, wait_until

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


def environment(tmp_path: Path, simulator: Simulator | None = None, **extra: str) -> dict[str, str]:
    (tmp_path / "jobs.toml").write_text(JOBS)
    config, database = tmp_path / "jobs.toml", f"sqlite:///{tmp_path / 's.db'}"
    if simulator is not None:
        return run_environment(config, database, simulator, **extra)
    return clean_environment(**{"SCHEDULER_CONFIG": str(config), "SCHEDULER_DATABASE_URL": database, **extra})


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
    assert all(fire["result_id"] or fire["skip_reason"] == "overlap" for fire in fires), [
        (fire["state"], fire["skip_reason"], fire["error"], fire["result_id"]) for fire in fires
    ]
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
    runner = CliRunner()
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
        "pause",
        "resume",
    ):
        result = runner.invoke(main, [command, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.stdout, command


def test_demo_shows_fires_a_failure_alert_and_a_recovery(tmp_path: Path) -> None:
    env = clean_environment()
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


def fire_ids(database: Path, job: str, *, skip_reason: str | None = None, outcome: str | None = None) -> list[int]:
    query = "SELECT id FROM fires WHERE job = ? AND (skip_reason = ? OR outcome = ?) ORDER BY id"
    try:
        with sqlite3.connect(database) as connection:
            return [row[0] for row in connection.execute(query, (job, skip_reason, outcome))]
    except sqlite3.OperationalError:  # the daemon is still creating the schema
        return []


@contextmanager
def running_daemon(env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """``cekura-scheduler run``; stopped with SIGTERM, and it must stop cleanly."""
    process = subprocess.Popen(
        [sys.executable, "-m", "scheduler", "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=40)
    assert process.returncode == 0, stderr


def test_pause_from_the_command_line_stops_the_running_daemon_until_resume(
    tmp_path: Path, simulator: Simulator
) -> None:
    env = environment(tmp_path, simulator)
    database = tmp_path / "s.db"
    with running_daemon(env):
        wait_until(lambda: len(fire_ids(database, "smoke", outcome="passed")) >= 1, timeout=30)
        paused = cli("pause", "smoke", "--reason", "agent redeploy", "--by", "ana", env=env)
        assert paused.returncode == 0, paused.stderr
        assert paused.stdout.strip() == "smoke: paused until resume (by ana: agent redeploy)"

        wait_until(lambda: len(fire_ids(database, "smoke", skip_reason="paused")) >= 1, timeout=10)
        sent = len(simulator.submissions)
        wait_until(lambda: len(fire_ids(database, "smoke", skip_reason="paused")) >= 3, timeout=10)
        assert len(simulator.submissions) == sent  # a paused job costs nothing
        table = cli("jobs", env=env).stdout
        assert "paused (by ana: agent redeploy)" in next(line for line in table.splitlines() if "smoke" in line)
        listed = {job["name"]: job for job in json.loads(cli("jobs", "--format", "json", env=env).stdout)["jobs"]}
        assert listed["smoke"]["paused"] is True and listed["nightly"]["paused"] is False
        assert listed["smoke"]["pause"]["by"] == "ana" and listed["smoke"]["pause"]["until"] is None

        resumed = cli("resume", "smoke", env=env)
        assert resumed.returncode == 0 and resumed.stdout.strip() == "smoke: resumed"
        last_paused = fire_ids(database, "smoke", skip_reason="paused")[-1]
        wait_until(lambda: fire_ids(database, "smoke", outcome="passed")[-1] > last_paused, timeout=15)

    again = cli("resume", "smoke", env=env)
    assert again.returncode == 0 and again.stdout.strip() == "smoke: was not paused"


def test_jobs_shows_who_paused_or_silenced_a_job_why_and_until_when(tmp_path: Path) -> None:
    env = environment(tmp_path)
    assert cli("pause", "nightly", "--for", "2h", "--reason", "agent redeploy", "--by", "ana", env=env).returncode == 0
    assert cli("silence", "smoke", "--for", "30m", "--reason", "flaky line", "--by", "bob", env=env).returncode == 0

    listed = {job["name"]: job for job in json.loads(cli("jobs", "--format", "json", env=env).stdout)["jobs"]}
    pause, silence = listed["nightly"]["pause"], listed["smoke"]["silence"]
    assert listed["nightly"]["paused"] is True and listed["nightly"]["silenced"] is False
    assert listed["smoke"]["silenced"] is True and listed["smoke"]["paused"] is False
    assert (pause["by"], pause["reason"], silence["by"], silence["reason"]) == (
        "ana",
        "agent redeploy",
        "bob",
        "flaky line",
    )
    since, until = datetime.fromisoformat(pause["since"]), datetime.fromisoformat(pause["until"])
    assert (until - since).total_seconds() == 2 * 3600

    def shown(instant: str) -> str:  # today's times as HH:MM, others with their date
        moment = datetime.fromisoformat(instant)
        return f"{moment:%H:%M} UTC" if moment.date() == since.date() else f"{moment:%Y-%m-%d %H:%M} UTC"

    rows = {line.split()[0]: line for line in cli("jobs", env=env).stdout.splitlines()[1:] if line.strip()}
    assert f" paused (by ana until {shown(pause['until'])}: agent redeploy) " in rows["nightly"]
    assert f" enabled, silenced (by bob until {shown(silence['until'])}: flaky line) " in rows["smoke"]

    assert cli("resume", "nightly", env=env).stdout.strip() == "nightly: resumed"
    assert cli("silence", "smoke", "--end", env=env).stdout.strip() == "smoke: 1 silence ended"
    listed = {job["name"]: job for job in json.loads(cli("jobs", "--format", "json", env=env).stdout)["jobs"]}
    assert [(job["pause"], job["silence"]) for job in listed.values()] == [(None, None), (None, None)]


def test_pause_and_resume_refuse_what_they_cannot_record(tmp_path: Path) -> None:
    env = environment(tmp_path)
    for args, says in (
        (("pause", "nope", "--reason", "x"), "Error: no job named 'nope' in"),
        (("resume", "nope"), "Error: no job named 'nope' in"),
        (("pause", "smoke", "--for", "soon", "--reason", "x"), "Error: --for: invalid duration 'soon'"),
        (("pause", "smoke", "--reason", " "), "Error: --reason: say why the job is paused"),
    ):
        result = cli(*args, env=env)
        assert result.returncode == 1 and result.stderr.startswith(says), (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    missing = cli("pause", "smoke", env=env)
    assert missing.returncode == 2 and "Missing option '--reason'" in missing.stderr
    listed = json.loads(cli("jobs", "--format", "json", env=env).stdout)["jobs"]
    assert not any(job["paused"] for job in listed)  # nothing was recorded


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


_WEB_TAKES_TRUST = "trust_forwarded" in inspect.signature(WebServer).parameters


@pytest.mark.parametrize(
    "trusted",
    [
        pytest.param(False, marks=pytest.mark.skipif(not _WEB_TAKES_TRUST, reason="WebServer has no trust_forwarded")),
        True,
    ],
)
def test_forwarded_headers_count_only_when_the_setting_says_a_proxy_is_in_front(
    tmp_path: Path, simulator: Simulator, trusted: bool
) -> None:
    port = free_port()
    env = environment(tmp_path, simulator, SCHEDULER_HTTP_ADDR=f"127.0.0.1:{port}", SCHEDULER_HTTP_TOKEN="t" * 32)
    if trusted:
        env["SCHEDULER_HTTP_TRUST_FORWARDED"] = "true"
    with running_daemon(env):
        wait_until(lambda: cli("check", env=env).returncode == 0, timeout=30)
        # What a browser sends through a reverse proxy at https://scheduler.example.com to 127.0.0.1.
        answer = httpx.post(
            f"http://127.0.0.1:{port}/api/jobs/nightly/resume",
            headers={
                "Authorization": f"Bearer {'t' * 32}",
                "Origin": "https://scheduler.example.com",
                "X-Forwarded-Host": "scheduler.example.com",
                "X-Forwarded-Proto": "https",
            },
            timeout=10,
        )
    assert answer.status_code == (200 if trusted else 403), answer.text


def test_check_with_a_timeout_that_is_not_a_number_is_a_usage_error(tmp_path: Path) -> None:
    result = cli("check", "--timeout", "abc", env=environment(tmp_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert errors == ["Error: Invalid value for '--timeout': 'abc' is not a valid float."], result.stderr
    assert result.stdout == ""


# What a command may load of the heavy libraries, when it is asked for (the rest of this list it must not load).
HEAVY = (
    "scheduler.daemon",
    "scheduler.config",
    "scheduler.store",
    "sqlalchemy",
    "alembic",
    "aiohttp",
    "httpx",
    "apprise",
    "apscheduler",
    "pydantic",
    "pydantic_settings",
)
SETTINGS = {"pydantic", "pydantic_settings"}
CONFIG = {"scheduler.config", "pydantic", "apscheduler"}
DATABASE = {"scheduler.store", "sqlalchemy"}


@pytest.mark.parametrize(
    ("args", "may_load"),
    [
        (["--version"], set()),
        (["--help"], set()),
        (["check", "--help"], set()),
        (["check", "--timeout", "0.5"], SETTINGS),  # Docker asks every 30 s: the probe must stay cheap
        (["validate", "{config}"], CONFIG),
        (["validate"], CONFIG | SETTINGS),
        (["history"], SETTINGS | DATABASE),  # not Alembic: the schema is current
        (["jobs"], SETTINGS | DATABASE | CONFIG),
    ],
)
def test_a_command_loads_only_what_it_uses(tmp_path: Path, args: list[str], may_load: set[str]) -> None:
    """The help, the probe and validate answer at once; jobs and history do not load the daemon or Alembic."""
    env = environment(tmp_path, SCHEDULER_HTTP_ADDR=f"127.0.0.1:{free_port()}")
    assert cli("db", "upgrade", env=env).returncode == 0
    args = [arg.format(config=tmp_path / "jobs.toml") for arg in args]
    probe = (
        "import json, sys\n"
        "from click.testing import CliRunner\n"
        "from scheduler.cli import main\n"
        f"result = CliRunner().invoke(main, {args!r})\n"
        f"print(json.dumps([result.exit_code, [name for name in {HEAVY!r} if name in sys.modules]]))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    exit_code, loaded = json.loads(result.stdout)
    assert exit_code == (1 if "--timeout" in args else 0), result.stderr  # check: nobody listens, so unhealthy
    assert set(loaded) <= may_load, f"{args} loaded {sorted(set(loaded) - may_load)}"


# Every command that reads the jobs file or the database, as typed after `cekura-scheduler`.
SETTINGS_COMMANDS = [
    ["run"],
    ["trigger"],
    ["validate"],
    ["jobs"],
    ["history"],
    ["db", "upgrade"],
    ["alerts", "test"],
    ["silence"],
    ["pause"],
    ["resume"],
]


def test_config_and_database_options_win_over_the_environment(tmp_path: Path) -> None:
    """An operator points any command at a file and a database without exporting anything."""
    (tmp_path / "jobs.toml").write_text(JOBS)
    config, database = str(tmp_path / "jobs.toml"), f"sqlite:///{tmp_path / 'real.db'}"
    decoys = {
        "SCHEDULER_CONFIG": str(tmp_path / "decoy.toml"),
        "SCHEDULER_DATABASE_URL": f"sqlite:///{tmp_path / 'decoy' / 'decoy.db'}",
    }
    runner = CliRunner(env=decoys)
    both = ["--config", config, "--database", database]

    assert runner.invoke(main, ["db", "upgrade", "--database", database]).exit_code == 0
    assert (tmp_path / "real.db").exists() and not (tmp_path / "decoy").exists()
    validated = runner.invoke(main, ["validate", "--config", config, "--format", "json"])
    assert validated.exit_code == 0 and json.loads(validated.stdout)["valid"] is True

    paused = runner.invoke(main, ["pause", "nightly", "--reason", "redeploy", "--by", "ana", *both])
    assert paused.exit_code == 0, paused.output
    engine = create_db_engine(database)
    try:
        claim_slot(Store(engine=engine), "smoke")
    finally:
        engine.dispose()
    listed = json.loads(runner.invoke(main, ["jobs", "--format", "json", *both]).stdout)
    assert listed["file"] == config
    assert {job["name"]: job["paused"] for job in listed["jobs"]} == {"smoke": False, "nightly": True}
    fires = json.loads(runner.invoke(main, ["history", "--format", "json", "--database", database]).stdout)
    assert [fire["job"] for fire in fires] == ["smoke"]
    resumed = runner.invoke(main, ["resume", "nightly", *both])
    assert resumed.stdout.strip() == "nightly: resumed"
    assert not (tmp_path / "decoy").exists()  # the environment's database was never touched


def test_a_bad_option_is_named_as_the_option(tmp_path: Path) -> None:
    runner = CliRunner(env={"SCHEDULER_DATABASE_URL": f"sqlite:///{tmp_path / 's.db'}"})
    unsupported = runner.invoke(main, ["history", "--database", "mysql://db/x"])
    assert unsupported.exit_code == 1
    assert unsupported.stderr.startswith("Error: --database mysql://db/x: 'mysql' is not supported"), unsupported.stderr
    (tmp_path / "a-file").write_text("")
    unreachable = runner.invoke(main, ["db", "upgrade", "--database", f"sqlite:///{tmp_path / 'a-file' / 'x.db'}"])
    assert unreachable.exit_code == 1 and unreachable.stderr.startswith("Error: --database "), unreachable.stderr
    both = runner.invoke(main, ["validate", str(tmp_path / "jobs.toml"), "--config", str(tmp_path / "jobs.toml")])
    assert both.exit_code == 2 and "give the file as PATH or as --config, not both" in both.stderr


def test_every_command_that_reads_settings_takes_config_and_database() -> None:
    runner = CliRunner()
    for command in SETTINGS_COMMANDS:
        shown = runner.invoke(main, [*command, "--help"]).stdout
        assert "--config PATH" in shown and "--database URL" in shown, command


def test_help_lists_every_environment_variable_and_the_exit_codes() -> None:
    output = CliRunner().invoke(main, ["--help"]).stdout
    shown = " ".join(output.split())
    rows = environment_variables()  # the settings' own names, words and defaults
    assert len(rows) == len(Settings.model_fields) == 14
    for variable, about in [*rows, ("USER", "who pauses or silences a job")]:
        assert f" {variable} {about}" in shown, variable
    section = output.partition("\nEnvironment")[2].partition("\n\n")[0].splitlines()[1:]
    listed = [line.split()[0] for line in section if line.startswith("  ") and not line.startswith("   ")]
    assert listed == [variable for variable, _ in rows] + ["USER", "${VAR}"]  # nothing more, nothing stale
    assert "Exit codes: 0 done;" in shown and " 1 it failed:" in shown and " 2 a usage error:" in shown


def test_help_lists_each_command_as_its_own_help_begins() -> None:
    """--help lists the commands without importing them: what it says of each is the command's own first words."""
    context = click.Context(main)
    for name in main.list_commands(context):
        command = main.get_command(context, name)
        assert command is not None
        own = [(name, command.get_short_help_str(limit)) for limit in (20, 45, 10_000)]
        listed = []
        for limit in (20, 45, 10_000):
            formatter = click.HelpFormatter(width=limit + 6 + max(map(len, main.list_commands(context))))
            main.format_commands(context, formatter)
            line = next(line for line in formatter.getvalue().splitlines() if line.split()[:1] == [name])
            listed.append((name, line.split(None, 1)[1]))
        assert listed == own


def test_version_is_the_installed_one() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"cekura-scheduler, version {version('cekura-scheduler')}\n"


def test_an_older_version_on_a_newer_schema_says_so_in_one_line(tmp_path: Path) -> None:
    """During a rolling upgrade, a replica of the old version that restarts must say why it cannot start."""
    database = f"sqlite:///{tmp_path / 's.db'}"
    runner = CliRunner()
    assert runner.invoke(main, ["db", "upgrade", "--database", database]).exit_code == 0
    with sqlite3.connect(tmp_path / "s.db") as connection:
        connection.execute("UPDATE alembic_version SET version_num = '9999'")
    result = runner.invoke(main, ["db", "upgrade", "--database", database])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"Error: --database {database}: cannot upgrade the database schema: Can't locate revision identified by "
        "'9999' (a newer cekura-scheduler upgraded it: run that version)"
    ]


def test_json_logs_are_one_object_a_line_with_the_slot_in_utc_as_the_api_says_it(
    tmp_path: Path, simulator: Simulator
) -> None:
    path = tmp_path / "jobs.toml"
    path.write_text('[jobs.smoke]\nevery = "1s"\nagent = 12\nscenarios = [101]\n')
    env = run_environment(path, f"sqlite:///{tmp_path / 's.db'}", simulator) | {"SCHEDULER_LOG_FORMAT": "json"}
    daemon = DaemonProcess(env, tmp_path / "daemon.log")
    try:
        daemon.wait_for("submitted as result")
        daemon.terminate()
    finally:
        daemon.cleanup()
    entries = [json.loads(line) for line in daemon.output().splitlines() if line.strip()]
    submitted = next(entry for entry in entries if "submitted as result" in entry["message"])
    assert submitted["job"] == "smoke" and isinstance(submitted["result_id"], int)
    slot = submitted["slot"]
    assert slot.endswith("Z") and datetime.fromisoformat(slot).microsecond == 0
    assert submitted["message"].startswith(f"smoke@{slot} submitted")  # the same instant as the submission name
