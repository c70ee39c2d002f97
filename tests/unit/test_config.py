"""jobs.toml: parsing, defaults, interpolation, and errors that name the file, the line and the job."""

from __future__ import annotations

import logging
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from textwrap import dedent
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from scheduler.config import (
    DURATION_BOUNDS,
    Config,
    ConfigSource,
    alert_url_secrets,
    digest,
    load_config,
    parse_config,
)
from scheduler.errors import ConfigError, ConfigIssue
from scheduler.schedules import format_duration

REPO = Path(__file__).resolve().parents[2]
PATH = Path("/etc/cekura/jobs.toml")

EXAMPLE = """\
[daemon]
max_concurrent_submissions = 20
poll_interval = "5s"
alerts = ["ops"]

[defaults]
timezone = "America/New_York"
endpoint = "livekit_v2"
agent = 12
alerts = ["slack"]
result_timeout = "30m"

[jobs.support-nightly]
cron = "0 3 * * *"
scenarios = [101, 102]

[jobs.checkout-hourly]
every = "1h"
timezone = "Europe/Paris"
agent = 34
frequency = 3
alerts = []
result_timeout = "10m"
scenarios = [{ id = 201, publish_data_message = { lang = "fr" } }, 202]

[jobs.checkout-hourly.body]
concurrency_limit = 2

[jobs.voice-weekly]
cron = "0 9 * * 1-5"
endpoint = "voice"
enabled = false
scenarios = [301]

[alerts.slack]
url = "${SLACK_URL}"

[alerts.ops]
url = "mailto://ops@example.com"
"""
ENV = {"SLACK_URL": "slack://T000A/B000B/VerySecretToken42"}


def parse(text: str, env: dict[str, str] | None = None) -> Config:
    return parse_config(dedent(text), path=PATH, env=env or {})


def issues_of(text: str, env: dict[str, str] | None = None) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as caught:
        parse(text, env)
    return caught.value.issues


def only_issue(text: str, env: dict[str, str] | None = None) -> ConfigIssue:
    issues = issues_of(text, env)
    assert len(issues) == 1, [str(issue) for issue in issues]
    return issues[0]


def job(body: str, name: str = "nightly") -> str:
    """A valid job table with extra lines appended."""
    return f'[jobs.{name}]\ncron = "0 3 * * *"\nagent = 12\nscenarios = [101]\n{dedent(body)}'


# --- the example ------------------------------------------------------------------------------------------------


def example() -> Config:
    return parse(EXAMPLE, ENV)


def test_example_loads_every_table() -> None:
    config = example()
    assert config.path == PATH
    assert config.daemon.max_concurrent_submissions == 20
    assert config.daemon.poll_interval == timedelta(seconds=5)
    assert config.daemon.poll_max_interval == timedelta(seconds=60)  # the default
    assert config.daemon.alerts == ("ops",)
    assert list(config.jobs) == ["support-nightly", "checkout-hourly", "voice-weekly"]
    assert set(config.channels) == {"slack", "ops"}


def test_job_inherits_defaults_it_does_not_set() -> None:
    nightly = example().jobs["support-nightly"]
    assert nightly.timezone == ZoneInfo("America/New_York")
    assert nightly.endpoint == "livekit_v2"
    assert nightly.agent == 12
    assert nightly.alerts == ("slack",)
    assert nightly.result_timeout == timedelta(minutes=30)
    assert nightly.frequency == 1
    assert nightly.enabled is True


def test_job_own_values_win_over_defaults() -> None:
    hourly = example().jobs["checkout-hourly"]
    assert hourly.timezone == ZoneInfo("Europe/Paris")
    assert hourly.agent == 34
    assert hourly.frequency == 3
    assert hourly.alerts == ()
    assert hourly.result_timeout == timedelta(minutes=10)
    assert hourly.every == timedelta(hours=1)
    assert hourly.body == {"concurrency_limit": 2}
    assert hourly.runs_per_fire == 6


def test_job_sets_its_own_endpoint_and_enabled() -> None:
    weekly = example().jobs["voice-weekly"]
    assert (weekly.endpoint, weekly.enabled, weekly.agent) == ("voice", False, 12)


def test_pipecat_job_without_agent() -> None:
    smoke = parse('[jobs.smoke]\nevery = "15m"\nendpoint = "pipecat_v2"\nscenarios = [301]\n').jobs["smoke"]
    assert (smoke.endpoint, smoke.agent) == ("pipecat_v2", None)


def test_pipecat_job_does_not_inherit_the_default_agent() -> None:
    # A job cannot unset a default in TOML; a default agent must not make every pipecat_v2 job invalid.
    config = parse("""\
        [defaults]
        agent = 12

        [jobs.smoke]
        every = "15m"
        endpoint = "pipecat_v2"
        scenarios = [301]
        """)
    assert config.jobs["smoke"].agent is None


def test_without_defaults_a_job_gets_utc_livekit_and_one_hour_timeout() -> None:
    nightly = parse(job("")).jobs["nightly"]
    assert nightly.timezone == ZoneInfo("UTC")
    assert nightly.endpoint == "livekit_v2"
    assert nightly.result_timeout == timedelta(hours=1)
    assert nightly.alerts == ()


def test_job_schedule_uses_its_timezone() -> None:
    nightly = example().jobs["support-nightly"]
    assert nightly.schedule.describe() == "cron '0 3 * * *' (America/New_York)"


# --- scenarios --------------------------------------------------------------------------------------------------


def test_scenarios_as_ids_and_as_tables() -> None:
    scenarios = example().jobs["checkout-hourly"].scenarios
    assert [(ref.id, ref.publish_data_message) for ref in scenarios] == [(201, {"lang": "fr"}), (202, None)]


def test_empty_scenarios_is_an_error() -> None:
    issue = only_issue(job("").replace("[101]", "[]"))
    assert issue.job == "nightly"
    assert issue.line == 4
    assert "scenarios" in issue.message


def test_typo_in_a_scenario_table_suggests_the_scenario_key() -> None:
    issues = issues_of(job("").replace("[101]", '[{ id = 101, publish_data_mesage = "hi" }]'))
    assert any("did you mean 'publish_data_message'?" in issue.message for issue in issues), [
        str(issue) for issue in issues
    ]


# --- errors name the file, the line and the job -----------------------------------------------------------------


def test_unknown_key_suggests_the_close_one() -> None:
    issue = only_issue(job('timzone = "UTC"\n'))
    assert (issue.path, issue.line, issue.column, issue.job) == (str(PATH), 5, 1, "nightly")
    assert issue.message == "unknown key 'timzone' (did you mean 'timezone'?)"


def test_issue_prints_as_file_line_column_job_message() -> None:
    issue = only_issue(job('timzone = "UTC"\n'))
    assert str(issue) == f"{PATH}:5:1: job 'nightly': unknown key 'timzone' (did you mean 'timezone'?)"


def test_unknown_section_suggests_the_close_one() -> None:
    issue = only_issue('[defautls]\ntimezone = "UTC"\n')
    assert issue.line == 1
    assert issue.message == "unknown section [defautls] (did you mean [defaults]?)"


def test_unknown_daemon_key_is_an_error_without_a_job() -> None:
    issue = only_issue("[daemon]\n\npoll_intervall = '5s'\n")
    assert (issue.line, issue.job) == (3, None)
    assert "did you mean 'poll_interval'?" in issue.message


def test_bad_cron_names_the_line_and_job() -> None:
    issue = only_issue('[jobs.nightly]\nagent = 12\ncron = "0 3 * * 8"\nscenarios = [101]\n')
    assert (issue.line, issue.job) == (3, "nightly")
    assert "invalid cron expression '0 3 * * 8'" in issue.message
    assert "0 and 7 are Sunday" in issue.message


def test_unknown_timezone() -> None:
    issue = only_issue(job('timezone = "Mars/Olympus"\n'))
    assert (issue.line, issue.job) == (5, "nightly")
    assert "unknown timezone 'Mars/Olympus'" in issue.message


def test_unknown_timezone_in_defaults() -> None:
    issue = only_issue('[defaults]\ntimezone = "Europe/Pariss"\n')
    assert (issue.line, issue.job) == (2, None)
    assert "unknown timezone 'Europe/Pariss'" in issue.message


def test_missing_variable_names_it() -> None:
    issue = only_issue(job('[jobs.nightly.body]\nlivekit_data = { url = "Bearer ${CEKURA_TOKEN}" }\n'))
    assert (issue.line, issue.job) == (6, "nightly")
    assert issue.message == "environment variable CEKURA_TOKEN is not set (used as ${CEKURA_TOKEN})"


def test_a_variable_can_come_from_the_file_its_FILE_variable_names(tmp_path: Path) -> None:
    secret = tmp_path / "slack"
    secret.write_text("T0FILESECRET\n")
    channel = '[alerts.team]\nurl = "slack://${SLACK_A}/B0000000/XXXXXXXXXXXXXXXXXXXXXXXX"\n'
    config = parse(channel, {"SLACK_A_FILE": str(secret)})
    assert config.channels["team"].url.get_secret_value().startswith("slack://T0FILESECRET/")  # trimmed
    assert "T0FILESECRET" in config.secrets  # hidden from every log line, page and answer, as a variable's value
    both = parse(channel, {"SLACK_A": "T0FROMENV", "SLACK_A_FILE": str(secret)})
    assert both.channels["team"].url.get_secret_value().startswith("slack://T0FROMENV/")  # the variable wins
    missing = only_issue(channel, {"SLACK_A_FILE": str(tmp_path / "gone")})
    assert missing.line == 2
    assert missing.message == (
        f"environment variable SLACK_A_FILE {str(tmp_path / 'gone')!r} (for ${{SLACK_A}}): No such file or directory"
    )


@pytest.mark.parametrize("frequency", [0, 101])
def test_frequency_out_of_range(frequency: int) -> None:
    issue = only_issue(job(f"frequency = {frequency}\n"))
    assert (issue.line, issue.job) == (5, "nightly")
    assert issue.message.startswith("frequency:")


@pytest.mark.parametrize("frequency", [1, 100])
def test_frequency_at_the_limits_is_fine(frequency: int) -> None:
    assert parse(job(f"frequency = {frequency}\n")).jobs["nightly"].frequency == frequency


def test_both_cron_and_every() -> None:
    issue = only_issue(job('every = "1h"\n'))
    assert (issue.line, issue.job) == (1, "nightly")
    assert "exactly one of cron" in issue.message


def test_neither_cron_nor_every() -> None:
    issue = only_issue("\n[jobs.nightly]\nagent = 12\nscenarios = [101]\n")
    assert (issue.line, issue.job) == (2, "nightly")
    assert "exactly one of cron" in issue.message


@pytest.mark.parametrize("value", ['"15x"', '"0s"', '"-1m"', '""'])
def test_bad_duration(value: str) -> None:
    issue = only_issue(f"[jobs.nightly]\nagent = 12\nscenarios = [101]\nevery = {value}\n")
    assert (issue.line, issue.job) == (4, "nightly")
    assert issue.message.startswith("every: invalid duration")


@pytest.mark.parametrize("line", ["every = 0", "every = -60", "result_timeout = 0"])
def test_zero_or_negative_duration_as_a_number_is_an_error(line: str) -> None:
    # every = 0 would fire (and pay for) a submission every second.
    text = f"[jobs.nightly]\nagent = 12\nscenarios = [101]\n{line}\n"
    if not line.startswith("every"):
        text += 'every = "1h"\n'
    issue = only_issue(text)
    assert (issue.line, issue.job) == (4, "nightly")


def test_bad_duration_in_daemon() -> None:
    issue = only_issue('[daemon]\npoll_interval = "soon"\n')
    assert issue.line == 2
    assert "invalid duration 'soon'" in issue.message


def test_bad_job_name() -> None:
    issue = only_issue(job("", name='"-nightly"'))
    assert issue.job == "-nightly"
    assert "job names use letters" in issue.message


# --- every problem at once --------------------------------------------------------------------------------------


def test_all_problems_in_a_file_are_reported_at_once_in_line_order() -> None:
    issues = issues_of(
        """\
        [daemon]
        poll_interval = "fast"

        [jobs.a]
        cron = "0 3 * * *"
        agent = 12
        scenarios = [101]
        timzone = "UTC"

        [jobs.b]
        cron = "every day"
        agent = 12
        scenarios = [101]
        frequency = 101

        [jobs.c]
        every = "1h"
        endpoint = "voice"
        scenarios = [101]
        alerts = ["nowhere"]

        [alerts.slack]
        url = "${SLACK_URL}"
        """
    )
    summary = [(issue.line, issue.job) for issue in issues]
    assert summary == [(2, None), (8, "a"), (11, "b"), (14, "b"), (16, "c"), (23, None)]
    messages = "\n".join(issue.message for issue in issues)
    assert "did you mean 'timezone'?" in messages
    assert "voice endpoint needs agent" in messages
    assert "SLACK_URL" in messages


def test_config_error_message_lists_every_issue() -> None:
    with pytest.raises(ConfigError) as caught:
        parse(job('timzone = "UTC"\nfrequency = 0\n'))
    lines = str(caught.value).splitlines()
    assert len(lines) == 2
    assert all(line.startswith(f"{PATH}:") for line in lines)


def test_field_errors_and_job_rules_are_reported_together() -> None:
    # A bad timezone must not hide that the same job also lacks cron/every.
    issues = issues_of('[jobs.nightly]\nagent = 12\nscenarios = [101]\ntimezone = "Mars/Olympus"\n')
    messages = "\n".join(issue.message for issue in issues)
    assert "unknown timezone" in messages
    assert "exactly one of cron" in messages


# --- TOML itself ------------------------------------------------------------------------------------------------


def test_toml_syntax_error_has_line_and_column() -> None:
    issue = only_issue('[jobs.nightly]\ncron = "0 3 * * *"\nagent 12\n')
    assert (issue.path, issue.line, issue.column) == (str(PATH), 3, 7)
    assert issue.message.startswith("not valid TOML:")
    assert "line" not in issue.message  # the position is in the fields, not repeated in the text


def test_duplicate_job_name_is_rejected() -> None:
    issue = only_issue(job("\n") + job("", name="nightly"))
    assert issue.line == 6
    assert issue.message.startswith("not valid TOML:")
    assert "nightly" in issue.message


@pytest.mark.parametrize("text", ['jobs = "nightly"\n', 'alerts = ["slack"]\n', "daemon = 5\n"])
def test_section_that_is_not_a_table_is_a_config_error(text: str) -> None:
    issue = only_issue(text)
    assert issue.line == 1


# --- interpolation and secrets ----------------------------------------------------------------------------------


def test_variables_are_interpolated() -> None:
    config = parse(
        job('endpoint = "text"\n[jobs.nightly.body]\nwebsocket_url = "wss://${HOST}/ws"\n').replace(
            "agent = 12", 'agent = "${AGENT}"'
        ),
        {"HOST": "agent.example.com", "AGENT": "77"},
    )
    assert config.jobs["nightly"].agent == 77
    assert config.jobs["nightly"].body == {"websocket_url": "wss://agent.example.com/ws"}


def test_alert_url_is_a_secret() -> None:
    config = example()
    url = config.channels["slack"].url
    assert url.get_secret_value() == ENV["SLACK_URL"]
    assert "VerySecretToken42" not in str(url)
    assert "VerySecretToken42" not in repr(config)


# --- body, endpoints, alert channels ----------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["scenarios", "agent", "agent_id", "name", "frequency"])
def test_reserved_key_under_body_is_rejected(key: str) -> None:
    issue = only_issue(job(f"\n[jobs.nightly.body]\n{key} = 1\n"))
    assert (issue.line, issue.job) == (6, "nightly")
    assert f"{key} cannot be set under body" in issue.message


def test_other_body_keys_pass_through() -> None:
    body = parse(job('[jobs.nightly.body]\nmock_tool_names = ["lookup"]\nlivekit_data = { agent_name = "a" }\n'))
    assert body.jobs["nightly"].body == {"mock_tool_names": ["lookup"], "livekit_data": {"agent_name": "a"}}


def test_pipecat_v2_rejects_agent() -> None:
    issue = only_issue(job('endpoint = "pipecat_v2"\n'))
    assert (issue.line, issue.job) == (3, "nightly")
    assert "pipecat_v2 endpoint takes no agent" in issue.message


@pytest.mark.parametrize("endpoint", ["voice", "text", "sip", "chirp", "agora", "elevenlabs"])
def test_endpoint_requires_agent(endpoint: str) -> None:
    issue = only_issue(f'[jobs.nightly]\ncron = "0 3 * * *"\nendpoint = "{endpoint}"\nscenarios = [101]\n')
    assert (issue.line, issue.job) == (1, "nightly")
    assert f"the {endpoint} endpoint needs agent" in issue.message


def test_unknown_endpoint() -> None:
    issue = only_issue(job('endpoint = "webrtc"\n'))
    assert (issue.line, issue.job) == (5, "nightly")
    assert "endpoint" in issue.message


def test_job_alert_channel_must_exist() -> None:
    issue = only_issue(job('alerts = ["slack"]\n'))
    assert (issue.line, issue.job) == (5, "nightly")
    assert issue.message == "alert channel 'slack' is not defined under [alerts]"


def test_daemon_alert_channel_must_exist() -> None:
    issue = only_issue('[daemon]\nalerts = ["pager"]\n')
    assert (issue.line, issue.job) == (2, None)
    assert "alert channel 'pager' is not defined" in issue.message


def test_default_alert_channel_must_exist() -> None:
    issue = only_issue('[defaults]\nalerts = ["slack"]\n\n' + job(""))
    assert issue.job == "nightly"
    assert "alert channel 'slack' is not defined" in issue.message


def test_alert_channel_needs_a_url() -> None:
    issues = issues_of("[alerts.slack]\nurll = 'slack://x'\n")
    assert [issue.line for issue in issues] == [1, 2]
    assert issues[0].message == "url: Field required"
    assert issues[1].message == "unknown key 'urll' (did you mean 'url'?)"


# --- files ------------------------------------------------------------------------------------------------------


def test_load_config_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "jobs.toml"
    path.write_text(job(""), encoding="utf-8")
    config = load_config(path, env={})
    assert config.path == path
    assert list(config.jobs) == ["nightly"]


def test_load_config_names_the_file_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "jobs.toml"
    path.write_text(job("frequency = 0\n"), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert str(caught.value).startswith(f"{path}:5:1: job 'nightly': frequency:")


def test_load_config_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert caught.value.issues[0].path == str(path)
    assert "cannot read the file" in str(caught.value)


def test_repository_jobs_toml_loads() -> None:
    path = REPO / "jobs.toml"
    if not path.exists():
        pytest.skip("jobs.toml is not in the repository yet")
    variables = re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", path.read_text(encoding="utf-8"))
    config = load_config(path, env=dict.fromkeys(variables, "1"))
    assert config.jobs


def test_demo_toml_loads() -> None:
    config = load_config(REPO / "scheduler" / "demo.toml", env={"DEMO_ALERTS": "console://"})
    assert config.jobs
    assert all(job.alerts == ("console",) for job in config.jobs.values())
    assert config.channels["console"].url.get_secret_value() == "console://"


def test_a_recurring_maintenance_window_covers_its_duration_in_its_timezone(tmp_path: Path) -> None:
    text = (
        '[jobs.a]\nevery = "1m"\nagent = 1\nscenarios = [1]\n\n'
        '[maintenance.sunday]\ncron = "0 22 * * 0"\nduration = "2h"\ntimezone = "Europe/Paris"\njobs = ["a"]\n'
    )
    config = parse_config(text, path=tmp_path / "jobs.toml", env={})
    sunday_evening = datetime(2026, 11, 29, 21, 30, tzinfo=UTC)  # 22:30 in Paris, a Sunday
    found = config.maintenance_at("a", sunday_evening)
    assert found is not None and found[0].mode == "mute" and found[1] == datetime(2026, 11, 29, 23, 0, tzinfo=UTC)
    assert config.maintenance_at("a", datetime(2026, 11, 29, 23, 0, tzinfo=UTC)) is None  # the end is excluded
    assert config.maintenance_at("a", datetime(2026, 11, 30, 21, 30, tzinfo=UTC)) is None  # Monday
    assert config.maintenance_at("other", sunday_evening) is None


def test_a_maintenance_window_needs_one_complete_kind(tmp_path: Path) -> None:
    text = '[jobs.a]\nevery = "1m"\nagent = 1\nscenarios = [1]\n\n[maintenance.w]\ncron = "0 22 * * 0"\njobs = ["b"]\n'
    with pytest.raises(ConfigError) as caught:
        parse_config(text, path=tmp_path / "jobs.toml", env={})
    messages = [issue.message for issue in caught.value.issues]
    assert any("give either cron and duration" in message for message in messages)


def test_a_reload_takes_unchanged_jobs_as_they_were_and_rebuilds_what_changed(tmp_path: Path) -> None:
    path = tmp_path / "jobs.toml"
    jobs = (
        '[jobs.a]\ncron = "0 3 * * *"\nagent = 1\nscenarios = [1]\n\n'
        '[jobs.b]\nevery = "1h"\nagent = 1\nscenarios = [2]\n'
    )
    path.write_text('[defaults]\ntimezone = "UTC"\n\n' + jobs)
    source = ConfigSource(path, env={})
    first = source.load()

    path.write_text('[defaults]\ntimezone = "UTC"\n\n' + jobs.replace('every = "1h"', 'every = "2h"'))
    second = source.load()
    assert second.jobs["a"] is first.jobs["a"]  # not validated again
    assert second.jobs["b"].every == timedelta(hours=2)

    # A change of [defaults] reaches every job that inherits it, unchanged tables included.
    path.write_text('[defaults]\ntimezone = "Asia/Tokyo"\n\n' + jobs.replace('every = "1h"', 'every = "2h"'))
    third = source.load()
    assert third.jobs["a"].timezone == ZoneInfo("Asia/Tokyo") and third.jobs["b"].timezone == ZoneInfo("Asia/Tokyo")
    assert third.jobs["a"].schedule.next_after(datetime(2026, 11, 29, tzinfo=UTC)) == datetime(
        2026, 11, 29, 18, 0, tzinfo=UTC
    )  # 03:00 in Tokyo

    # An invalid version reuses nothing it should not: its errors are reported as they are.
    path.write_text('[defaults]\ntimezone = "Asia/Tokyo"\n\n' + jobs.replace("scenarios = [1]", "scenarios = []"))
    with pytest.raises(ConfigError):
        source.load()


# --- any bytes: a config error with a place, never another exception (issue 11) ---------------------------------


def load_bytes(tmp_path: Path, data: bytes, env: dict[str, str] | None = None) -> Config:
    path = tmp_path / "jobs.toml"
    path.write_bytes(data)
    return load_config(path, env=env or {})


def bytes_issue(tmp_path: Path, data: bytes, env: dict[str, str] | None = None) -> ConfigIssue:
    with pytest.raises(ConfigError) as caught:
        load_bytes(tmp_path, data, env)
    assert len(caught.value.issues) == 1, str(caught.value)
    return caught.value.issues[0]


def test_a_byte_that_is_not_utf8_is_named_with_its_line_and_column(tmp_path: Path) -> None:
    # printf '# caf\xe9\n' >> jobs.toml
    issue = bytes_issue(tmp_path, job("").encode() + "# café: \xe9\n".encode() + b"# caf\xe9\n")
    assert (issue.line, issue.column) == (6, 6)  # the column counts characters: "é" on line 5 is one
    assert issue.message == "not UTF-8: the byte 0xe9 cannot be read (save the file as UTF-8)"


def test_a_string_with_a_lone_surrogate_is_a_config_error() -> None:
    issue = only_issue(job("# \ud800\n"))
    assert (issue.line, issue.column) == (5, 3)


@pytest.mark.parametrize(
    ("zone", "says"),
    [
        ("US", "a group of zones, not a zone"),
        ("America", "a group of zones, not a zone"),
        ("../../etc/passwd", "unknown timezone"),
        ("/etc/localtime", "unknown timezone"),
        ("a" * 300, "unknown timezone"),
        ("leapseconds", "unknown timezone"),  # a file of the zone database that is no zone
        ("UTC\\u0000", "unknown timezone"),
        ("", "unknown timezone"),
    ],
)
def test_a_zone_must_be_a_zone(zone: str, says: str) -> None:
    issue = only_issue(job(f'timezone = "{zone}"\n'))
    assert (issue.line, issue.job) == (5, "nightly")
    assert says in issue.message
    assert len(issue.message) <= 400  # a 300-character name is not repeated whole in every log line


@pytest.mark.parametrize("value", ["99999999999d", "999999999d", "367d", "9" * 5000 + "s"])
def test_a_huge_interval_is_an_error_not_an_overflow(value: str) -> None:
    issue = only_issue(f'[jobs.nightly]\nagent = 12\nscenarios = [101]\nevery = "{value}"\n')
    assert (issue.line, issue.job) == (4, "nightly")
    assert "too long (at most 366d)" in issue.message


BOUNDS = [
    # (key, in which table, shortest, longest, too short, too long)
    ("every", "job", "1s", "366d", None, "367d"),
    ("result_timeout", "job", "1s", "7d", None, "7d1s"),
    ("catch_up_window", "job", "1s", "7d", None, "8d"),
    ("jitter", "job", "1s", "1d", None, "25h"),
    ("remind_every", "job", "1m", "30d", "59s", "31d"),
    ("poll_interval", "daemon", "1s", "1h", None, "61m"),
    ("poll_max_interval", "daemon", "1s", "1h", None, "2h"),
    ("lease", "daemon", "1s", "1h", None, "3601s"),
    ("retention", "history", "1d", "3660d", "23h", "3661d"),
    ("remind_every", "alerts", "1m", "30d", "30s", "60d"),
    ("duration", "maintenance", "1m", "31d", "30s", "32d"),
]


def with_duration(key: str, table: str, value: str) -> str:
    text = "[jobs.a]\nagent = 12\nscenarios = [101]\n" + ("" if key == "every" else 'cron = "0 3 * * *"\n')
    line = f'{key} = "{value}"\n'
    if table == "job":
        return text + line
    if table == "alerts":
        return text + '\n[alerts.ops]\nurl = "json://127.0.0.1:9/alerts"\n' + line
    if table == "maintenance":
        return text + '\n[maintenance.m]\ncron = "0 22 * * 0"\n' + line
    return text + f"\n[{table}]\n{line}"


@pytest.mark.parametrize(("key", "table", "shortest", "longest", "too_short", "too_long"), BOUNDS)
def test_every_duration_has_documented_bounds(
    key: str, table: str, shortest: str, longest: str, too_short: str | None, too_long: str
) -> None:
    parse(with_duration(key, table, shortest))
    parse(with_duration(key, table, longest))
    issue = only_issue(with_duration(key, table, too_long))
    assert (
        issue.line is not None
        and issue.message == f"{key}: invalid duration {too_long!r}: too long (at most {longest})"
    )
    if too_short is not None:
        issue = only_issue(with_duration(key, table, too_short))
        assert issue.message == f"{key}: invalid duration {too_short!r}: too short (at least {shortest})"


def test_a_jitter_longer_than_the_interval_is_an_error_at_its_line() -> None:
    interval = '[jobs.nightly]\nagent = 12\nscenarios = [101]\nevery = "1h"\n'
    issue = only_issue(interval + 'jitter = "90m"\n')
    assert (str(issue.path), issue.line, issue.column, issue.job) == (str(PATH), 5, 1, "nightly")
    assert issue.message == "jitter: 1h30m is longer than every (1h): a fire would come after the job's next slot"
    inherited = only_issue('[defaults]\njitter = "2h"\n\n' + interval)  # from [defaults]: said at the job
    assert (inherited.line, inherited.job) == (4, "nightly") and "2h is longer than every (1h)" in inherited.message
    assert parse(interval + 'jitter = "1h"\n').jobs["nightly"].jitter == timedelta(hours=1)  # as long is fine
    assert parse(job('jitter = "1d"\n')).jobs["nightly"].jitter == timedelta(days=1)  # a cron has no every


def test_a_poll_ceiling_below_the_first_poll_pause_is_an_error_at_its_line() -> None:
    issue = only_issue(job('\n[daemon]\npoll_interval = "30s"\npoll_max_interval = "10s"\n'))
    assert (issue.line, issue.column, issue.job) == (8, 1, None)
    assert issue.message == (
        "poll_max_interval: 10s is shorter than poll_interval (30s): the pause between two reads starts at "
        "poll_interval and grows up to poll_max_interval"
    )
    daemon = parse(job('\n[daemon]\npoll_interval = "30s"\npoll_max_interval = "30s"\n')).daemon
    assert daemon.poll_interval == daemon.poll_max_interval == timedelta(seconds=30)  # as long is fine
    # Against a default it is not checked: a ceiling of 5s alone (first pause 10s) has always been accepted.
    assert parse(job('\n[daemon]\npoll_max_interval = "5s"\n')).daemon.poll_max_interval == timedelta(seconds=5)


def test_the_readme_documents_every_duration_bound() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for key, (shortest, longest) in DURATION_BOUNDS.items():
        row = f"| `{key}` | {format_duration(shortest)} | {format_duration(longest)} |"
        assert row in readme, row


@pytest.mark.parametrize("cron", ["0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 0 30-31 2 *"])
def test_a_cron_that_never_fires_is_an_error(cron: str) -> None:
    issue = only_issue(f'[jobs.nightly]\nagent = 12\nscenarios = [101]\ncron = "{cron}"\n')
    assert (issue.line, issue.job) == (4, "nightly")
    assert "never fires" in issue.message


def test_a_maintenance_window_that_never_starts_is_an_error() -> None:
    issue = only_issue(job('\n[maintenance.m]\ncron = "0 0 31 2 *"\nduration = "1h"\n'))
    assert issue.line == 7 and "never fires" in issue.message


def test_a_cron_that_fires_only_on_leap_days_is_fine() -> None:
    config = parse('[jobs.leap]\nagent = 12\nscenarios = [101]\ncron = "0 0 29 2 *"\n')
    assert config.jobs["leap"].schedule.next_after(datetime(2026, 1, 1, tzinfo=UTC)) == datetime(
        2028, 2, 29, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("agent = 99999999999999999999999", "integer out of range"),
        ("agent = " + "9" * 5000, "integer out of range"),  # more digits than Python reads
        ("agent = 0x" + "f" * 5000, "integer out of range"),  # read, but not printable
        ("frequency = nan", "nan and inf are not accepted"),
        ("frequency = -inf", "nan and inf are not accepted"),
        ("[jobs.nightly.body]\nx = " + "[" * 500 + "]" * 500, "nested more than 32 levels"),
        ("[jobs.nightly.body]\nx = " + "[" * 33 + "]" * 33, "nested more than 32 levels"),
        ("[jobs.nightly.body]\nwhen = 2026-01-01T00:00:00Z", "cannot be sent as JSON"),
        ("[jobs.nightly.body]\nwhen = 07:30:00", "cannot be sent as JSON"),
        ('cron = "' + "0," * 200 + '0 3 * * *"', "longer than 200 characters"),
    ],
)
def test_values_the_models_cannot_take_are_errors_with_a_place(line: str, says: str) -> None:
    text = job("").replace("agent = 12\n", "") if line.startswith("agent") else job("")
    if line.startswith("cron"):
        text = text.replace('cron = "0 3 * * *"\n', "")
    issue = only_issue(text + line + "\n")
    assert issue.line is not None and issue.line >= 4, issue
    assert says in issue.message


@pytest.mark.parametrize("parts", [900, 2000])
def test_a_deeply_dotted_table_is_an_error_with_a_place(parts: int) -> None:
    issue = only_issue("\n[" + ".".join(["a"] * parts) + "]\n")
    assert issue.line == 2 and "nested more than 32 levels" in issue.message


@pytest.mark.parametrize(
    "text",
    [
        "[jobs]\nnightly = 5\n",
        "[alerts]\nops = []\n",
        "[maintenance]\nm = 1\n",
        '[daemon]\nalerts = "ops"\n',
        '[jobs.nightly]\nevery = 60\nagent = 12\nscenarios = "101"\n',
        '[jobs.nightly]\nevery = "1h"\nagent = 12\nscenarios = [[101]]\nalerts = [1]\n',
        '[jobs.nightly]\nevery = "1h"\nagent = true\nscenarios = [{ id = "x" }]\nbody = 3\n',
        '[jobs.nightly]\nevery = ["1h"]\nagent = 1.5\nscenarios = [101]\ntimezone = 7\nendpoint = ["voice"]\n',
        "[maintenance.m]\nstart = 9999-12-31T23:59:59-23:59\nend = 9999-12-31T23:59:59-23:00\n",
        "[maintenance.m]\nstart = 2026-01-01\nend = 07:00:00\n",
        '[[jobs]]\nname = "x"\n',
    ],
)
def test_wrong_types_anywhere_are_config_errors(text: str) -> None:
    issues = issues_of(text)
    assert issues and all(issue.line is not None for issue in issues), [str(issue) for issue in issues]


def test_an_empty_file_is_a_valid_config_without_jobs(tmp_path: Path) -> None:
    config = load_bytes(tmp_path, b"")
    assert config.jobs == {} and config.channels == {} and config.secrets == frozenset()


def test_a_folder_is_not_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path, env={})
    assert caught.value.issues[0].message == "cannot read the file: it is a folder, not a file"


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "jobs.toml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError) as caught:
        load_config(fifo, env={})
    assert caught.value.issues[0].message == "cannot read the file: it is not a regular file"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "jobs.toml"
    path.write_text(job(""))
    path.chmod(0)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert caught.value.issues[0].message == "cannot read the file: Permission denied"


def test_a_file_larger_than_16_mb_is_refused(tmp_path: Path) -> None:
    issue = bytes_issue(tmp_path, b"#" * (16 * 1024 * 1024 + 1))
    assert issue.message == "the file is larger than 16 MB"


# --- secrets: never in an error, listed on the config ------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ('every = "${EVERY_VAR}"', "every: invalid duration (the value of ${EVERY_VAR}): use a number and a unit"),
        ('every = "1${EVERY_VAR}"', "every: invalid duration (the value of '1${EVERY_VAR}'): use a number"),
        ('timezone = "${EVERY_VAR}"', "timezone: unknown timezone (the value of ${EVERY_VAR}): use an IANA"),
        ('cron = "${EVERY_VAR} * * * *"', "cron: invalid cron expression (the value of '${EVERY_VAR} * * * *')"),
    ],
)
def test_an_interpolated_value_is_never_shown_in_an_error_the_variable_is_named(line: str, says: str) -> None:
    text = f"[jobs.nightly]\nagent = 12\nscenarios = [101]\n{line}\n"
    if not line.startswith(("every", "cron")):
        text += 'every = "1h"\n'
    with pytest.raises(ConfigError) as caught:
        parse(text, {"EVERY_VAR": "TOKENBBBB2"})
    assert "TOKENBBBB2" not in str(caught.value)
    assert says in caught.value.issues[0].message


def test_config_secrets_hold_interpolated_values_and_alert_url_credentials() -> None:
    config = parse(
        """\
        [jobs.nightly]
        cron = "0 3 * * *"
        agent = "${AGENT}"
        scenarios = [101]
        body = { livekit_data = { url = "${CEKURA_TOKEN}" } }

        [alerts.slack]
        url = "slack://${SLACK_A}/${SLACK_B}/XoXoLiteral42/#qa"

        [alerts.pager]
        url = "pagerduty://integrationkey1@apikey22"

        [alerts.hook]
        url = "json://user:hunter22@hooks.example.com/alerts?token=abcdefgh&format=json"
        """,
        {"AGENT": "12", "CEKURA_TOKEN": "Bearer sk-123456", "SLACK_A": "TAAAA1", "SLACK_B": "BBBBB2"},
    )
    assert config.secrets == {
        "Bearer sk-123456",  # every value that came from ${VAR} ...
        "TAAAA1",
        "BBBBB2",  # ... but "12": too short to redact
        "XoXoLiteral42",  # tokens written in the URL itself
        "integrationkey1",
        "apikey22",
        "user",
        "hunter22",
        "abcdefgh",  # a query value under a key that says token; format=json is no secret, nor is the host
    }
    assert "abcdefgh" not in repr(config)


def test_many_problems_each_name_their_own_variable_and_place() -> None:
    count = 300
    env = {f"EVERY_{i}": f"bad-{i:03d}" for i in range(count)} | {"LONGER": "bad-001-and-more"}
    text = "".join(f'[jobs.j{i}]\nagent = 12\nscenarios = [101]\nevery = "${{EVERY_{i}}}"\n\n' for i in range(count))
    text += (
        '[jobs.long]\nagent = 12\nscenarios = [101]\nevery = "${LONGER}"\n\n[jobs.dotted.body]\nconcurrency_limit = 1\n'
    )
    issues = issues_of(text, env)
    every = [issue for issue in issues if issue.message.startswith("every:")]
    assert [(issue.job, issue.line) for issue in every] == [
        *((f"j{i}", 5 * i + 4) for i in range(count)),
        ("long", 5 * count + 4),
    ]
    assert all(f"(the value of ${{EVERY_{i}}})" in issue.message for i, issue in enumerate(every[:count]))
    assert "(the value of ${LONGER})" in every[-1].message  # named whole, not through the bad-001 inside it
    assert not any("bad-" in issue.message for issue in issues)
    dotted = [issue for issue in issues if issue.job == "dotted" and issue.line is not None]
    assert [issue.line for issue in dotted] == [5 * count + 6] * 2  # [jobs.dotted.body]: cron/every, scenarios


def test_a_url_apprise_cannot_parse_is_an_error_naming_the_channel_not_the_url(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    issues = issues_of(
        '[alerts.team]\nurl = "slak://${TOKEN}/B0000000/XXXXXXXXXXXXXXXXXXXXXXXX"\n\n'
        '[alerts.pager]\nurl = "slack://TokenA/TokenB/bad-token"\n\n[alerts.bare]\nurl = "${TOKEN}"\n',
        {"TOKEN": "T0SECRET1"},
    )
    assert [(issue.line, issue.message) for issue in issues] == [
        (2, "url of alert channel 'team': Apprise has no slak:// service (a typo in the scheme?)"),
        (5, "url of alert channel 'pager': Apprise cannot use this slack:// URL (check its tokens and options)"),
        (8, "url of alert channel 'bare': not an Apprise URL (scheme://...)"),
    ]
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "T0SECRET1" not in logged and "bad-token" not in logged and "XXXXXXXX" not in logged


def test_a_channel_with_a_missing_variable_is_told_once() -> None:
    issue = only_issue('[alerts.team]\nurl = "slack://${SLACK_A}/B0000000/XXXXXXXXXXXXXXXXXXXXXXXX"\n')
    assert issue.message == "environment variable SLACK_A is not set (used as ${SLACK_A})"


@pytest.mark.parametrize(
    ("url", "secrets"),
    [
        ("slack://TokenA/TokenB/TokenC/#qa", {"TokenA", "TokenB", "TokenC"}),
        ("pagerduty://integration_key@api_key", {"integration_key", "api_key"}),
        ("json://user:pass@host/path?token=abc123456", {"user", "pass", "abc123456"}),
        ("mailto://ops@example.com", set()),  # a plain host and a 3-letter user
        ("json://127.0.0.1:8080/alerts", set()),
        ("https://hooks.slack.com/services/T0000AAAA/B0000BBBB/XXXXXXXX", {"T0000AAAA", "B0000BBBB", "XXXXXXXX"}),
        ("json://localhost/a%2Fb%3Dc", {"a%2Fb%3Dc", "a/b=c"}),
        ("no-scheme-token", {"no-scheme-token"}),
    ],
)
def test_alert_url_secrets_are_everything_but_a_plain_host_and_plain_words(url: str, secrets: set[str]) -> None:
    assert alert_url_secrets(url) == secrets


def test_the_console_target_of_the_demo_is_accepted() -> None:
    assert parse('[alerts.log]\nurl = "console://"\n').channels["log"].url.get_secret_value() == "console://"


# --- reload: only a finished version is loaded --------------------------------------------------------------------


class Writer:
    """Virtual time for a ConfigSource, and a writer that changes the file while the source waits."""

    def __init__(self, path: Path, versions: list[bytes], *, per_call: float = 0.0) -> None:
        self.path = path
        self.versions = list(versions)
        self.now = 0.0
        self.per_call = per_call  # how far time moves on each look at the clock (a parse taking time)
        self.sleeps: list[float] = []

    def clock(self) -> float:
        self.now += self.per_call
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if self.versions:
            self.path.write_bytes(self.versions.pop(0))


FULL = (job("", name="a") + "\n" + job("", name="b") + "\n" + job("", name="c")).encode()


def source_with(tmp_path: Path, first: bytes, later: list[bytes], **options: Any) -> tuple[ConfigSource, Writer]:
    path = tmp_path / "jobs.toml"
    path.write_bytes(first)
    writer = Writer(path, later, per_call=options.pop("per_call", 0.0))
    return ConfigSource(path, env={}, sleep=writer.sleep, clock=writer.clock, **options), writer


@pytest.mark.parametrize(
    "half",
    [b"", FULL[: FULL.index(b"[jobs.b]")], FULL[: FULL.index(b"[jobs.c]") + 5]],
    ids=["empty", "cut-at-a-job", "cut-in-a-header"],
)
def test_a_half_written_file_is_never_loaded(tmp_path: Path, half: bytes) -> None:
    # What `cp new.toml jobs.toml` looks like to a reader: truncated, then written; the full version follows.
    source, writer = source_with(tmp_path, half, [FULL])
    config = source.load()
    assert list(config.jobs) == ["a", "b", "c"]
    assert writer.sleeps == [0.5, 0.5]  # the half version, then the full one, each read twice 0.5 s apart
    assert source.last_digest == digest(FULL)


def test_an_unchanged_file_is_read_twice_a_settle_time_apart(tmp_path: Path) -> None:
    source, writer = source_with(tmp_path, FULL, [], settle=0.25)
    assert list(source.load().jobs) == ["a", "b", "c"]
    assert writer.sleeps == [0.25]


def test_the_time_a_parse_takes_counts_toward_the_settle_time(tmp_path: Path) -> None:
    source, writer = source_with(tmp_path, FULL, [], per_call=0.2)
    source.load()
    assert writer.sleeps == [pytest.approx(0.3)]  # 0.5 s after the first read, of which the parse took 0.2 s


def test_a_file_that_keeps_changing_is_reported_not_loaded(tmp_path: Path) -> None:
    versions = [FULL + f"# edit {number}\n".encode() for number in range(20)]
    source, writer = source_with(tmp_path, FULL, versions, max_reads=4)
    with pytest.raises(ConfigError) as caught:
        source.load()
    assert "still being written: it changed between each of 4 reads 0.5 s apart" in str(caught.value)
    assert len(writer.sleeps) == 3
    assert source.changed() is True  # tried again at the next poll: the writer may have finished by then


def test_a_broken_version_is_reported_once_it_settles_and_changed_sees_the_next_edit(tmp_path: Path) -> None:
    source, _ = source_with(tmp_path, FULL + b"# caf\xe9\n", [])
    with pytest.raises(ConfigError) as caught:
        source.load()
    assert caught.value.issues[0].message.startswith("not UTF-8")
    assert source.last_digest == digest(FULL + b"# caf\xe9\n") == source.current_digest()
    assert source.changed() is False
    (tmp_path / "jobs.toml").write_bytes(FULL)
    assert source.changed() is True
    assert list(source.load().jobs) == ["a", "b", "c"]


def test_an_unreadable_source_is_a_config_error(tmp_path: Path) -> None:
    source, _ = source_with(tmp_path, FULL, [])
    (tmp_path / "jobs.toml").unlink()
    with pytest.raises(ConfigError) as caught:
        source.load()
    assert "cannot read the file" in str(caught.value)
    assert source.last_digest is None and source.current_digest() is None
