"""Process settings as a user meets them: a bad value stops every command in one line naming the variable."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from scheduler.cli import main
from scheduler.errors import SettingsError
from scheduler.settings import load_settings
from tests.conftest import clean_environment

JOBS = '[jobs.smoke]\nevery = "1m"\nagent = 1\nscenarios = [101]\n\n[alerts.team]\nurl = "json://127.0.0.1:1/"\n'

# Every command that reads the settings, with the arguments it needs to get that far.
COMMANDS = [
    ["run"],
    ["validate"],
    ["jobs"],
    ["history"],
    ["trigger", "smoke"],
    ["db", "upgrade"],
    ["alerts", "test", "team"],
    ["silence", "smoke", "--for", "1h"],
    ["pause", "smoke", "--reason", "deploy"],
    ["resume", "smoke"],
]


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder with a valid jobs.toml and no .env, and no CEKURA_/SCHEDULER_ variable from outside."""
    (tmp_path / "jobs.toml").write_text(JOBS)
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(("CEKURA_", "SCHEDULER_")):
            monkeypatch.delenv(name)
    return tmp_path


def environment(folder: Path, **values: str) -> dict[str, str]:
    """Good settings, but for ``values``."""
    env = {
        "CEKURA_API_KEY": "test-key",
        "SCHEDULER_CONFIG": str(folder / "jobs.toml"),
        "SCHEDULER_DATABASE_URL": f"sqlite:///{folder / 's.db'}",
        "SCHEDULER_HTTP_ADDR": "127.0.0.1:0",
    }
    env.update(values)
    return env


def assert_one_line(stderr: str, variable: str, secret: str | None = None) -> str:
    """What a user reads: click's ``Error: `` and one line naming the variable, no traceback, no secret."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("Error: ") and variable in lines[0], stderr
    assert "Traceback" not in stderr
    if secret is not None:
        assert secret not in stderr
    return lines[0]


def a_file(folder: Path) -> Path:
    (folder / "plain-file").write_text("not a folder")
    return folder / "plain-file"


BAD_SETTINGS = [
    ("SCHEDULER_DATABASE_URL", "notaurl", "not a database URL"),
    ("SCHEDULER_DATABASE_URL", "", "not a database URL"),
    ("SCHEDULER_DATABASE_URL", "postgresql://x:hunter2@", "names neither a host nor a database"),
    ("SCHEDULER_DATABASE_URL", "postgresql+psycopg://u:hunter2@db:port/x", "port is not a number"),
    ("SCHEDULER_DATABASE_URL", "sqlite:///{file}/x/y.db", "is a file, so"),
    ("SCHEDULER_DATABASE_URL", "sqlite:///{folder}", "is a folder, not a database file"),
    ("SCHEDULER_DATABASE_URL", "mysql://u:hunter2@h/db", "'mysql' is not supported"),
    ("SCHEDULER_DATABASE_URL", "postgresql+asyncpg://u:hunter2@h/db", "is an asyncio driver"),
    ("SCHEDULER_DATABASE_URL", "postgresql+nodriver://u:hunter2@h/db", "no driver 'nodriver' for postgresql"),
    ("CEKURA_BASE_URL", "not-a-url", "use an http(s) URL with a host"),
    ("CEKURA_BASE_URL", "ftp://api.cekura.ai", "use an http(s) URL with a host"),
    ("CEKURA_BASE_URL", "https://", "use an http(s) URL with a host"),
    ("CEKURA_BASE_URL", "https://api.cekura.ai:99999", "valid port"),
    ("CEKURA_BASE_URL", "https://api.cekura.ai /v1", "no spaces"),
    ("SCHEDULER_HTTP_ADDR", "127.0.0.1:http", "numeric port"),
    ("SCHEDULER_HTTP_ADDR", "127.0.0.1:70000", "0..65535"),
    ("SCHEDULER_HTTP_ADDR", "8787", "use host:port"),
    ("SCHEDULER_HTTP_ADDR", "0.0.0.0:8787", "set SCHEDULER_HTTP_TOKEN too"),
    ("SCHEDULER_LOG_LEVEL", "LOUD", "'DEBUG', 'INFO', 'WARNING' or 'ERROR'"),
    ("SCHEDULER_LOG_FORMAT", "xml", "'text' or 'json'"),
    ("SCHEDULER_HTTP_TRUST_FORWARDED", "perhaps", "valid boolean"),
    ("CEKURA_WEBHOOK_SECRET", "   ", "empty: set the secret of the Cekura project's webhook"),
]


@pytest.mark.parametrize(("variable", "value", "says"), BAD_SETTINGS)
def test_a_bad_setting_stops_every_command_in_one_line(folder: Path, variable: str, value: str, says: str) -> None:
    value = value.format(file=a_file(folder), folder=folder)
    runner = CliRunner()
    env = environment(folder, **{variable: value})
    reads = [command for command in COMMANDS if variable != "SCHEDULER_DATABASE_URL" or command != ["validate"]]
    for command in reads:
        result = runner.invoke(main, command, env=env)
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), (command, result.output)
        line = assert_one_line(result.stderr, variable, secret="hunter2")
        assert says in line, (command, line)
    if variable == "SCHEDULER_DATABASE_URL":  # validate never opens the database: its URL is not validate's to judge
        assert runner.invoke(main, ["validate"], env=env).exit_code == 0
    assert not (folder / "s.db").exists()  # stopped before touching the database


def test_a_driver_that_is_not_installed_is_named(folder: Path) -> None:
    if importlib.util.find_spec("pg8000") is not None:
        pytest.skip("pg8000 is installed here")
    env = environment(folder, SCHEDULER_DATABASE_URL="postgresql+pg8000://u:hunter2@h/db")
    result = CliRunner().invoke(main, ["jobs"], env=env)
    assert result.exit_code == 1
    line = assert_one_line(result.stderr, "SCHEDULER_DATABASE_URL", secret="hunter2")
    assert "the postgresql driver 'pg8000' is not installed (no module 'pg8000'): use postgresql+psycopg://" in line


# Each secret given as a file, as Docker and Kubernetes mount them: the variable naming the file, and the variable
# whose value the file holds (read only when that variable is not set).
SECRET_FILES = [
    ("CEKURA_API_KEY_FILE", "CEKURA_API_KEY"),
    ("CEKURA_WEBHOOK_SECRET_FILE", "CEKURA_WEBHOOK_SECRET"),
    ("SCHEDULER_HTTP_TOKEN_FILE", "SCHEDULER_HTTP_TOKEN"),
    ("SCHEDULER_DATABASE_URL_FILE", "SCHEDULER_DATABASE_URL"),
]


@pytest.mark.parametrize(("variable", "holds"), SECRET_FILES)
@pytest.mark.parametrize("problem", ["missing", "folder", "empty"])
def test_an_unreadable_secret_file_stops_every_command_in_one_line(
    folder: Path, variable: str, holds: str, problem: str
) -> None:
    path = {"missing": folder / "no-such-file", "folder": folder, "empty": folder / "empty"}[problem]
    (folder / "empty").write_text(" \n")
    env = environment(folder, **{variable: str(path)})
    env.pop(holds, None)  # the file is read only when the variable itself is not set
    says = {"missing": "No such file or directory", "folder": "Is a directory", "empty": "the file is empty"}[problem]
    for command in COMMANDS:
        result = CliRunner().invoke(main, command, env=env)
        assert result.exit_code == 1, command
        line = assert_one_line(result.stderr, variable)
        assert line == f"Error: {variable} {str(path)!r}: {says}", line


def test_secrets_are_read_from_their_files_and_the_variables_win(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    values = {
        "CEKURA_API_KEY": "file-key",
        "CEKURA_WEBHOOK_SECRET": "file-webhook-secret",
        "SCHEDULER_HTTP_TOKEN": "file-token",
        "SCHEDULER_DATABASE_URL": f"sqlite:///{folder / 'from-file.db'}",
    }
    for variable, holds in SECRET_FILES:
        (folder / variable).write_text(f"  {values[holds]}\n")  # trimmed, as a file written by `echo` ends
        monkeypatch.setenv(variable, str(folder / variable))
    settings = load_settings(http_addr="0.0.0.0:0")  # beyond loopback: the token from its file is enough
    read = (settings.api_key, settings.webhook_secret, settings.http_token)
    assert [secret.get_secret_value() for secret in read if secret is not None] == list(values.values())[:3]
    assert settings.database_url == values["SCHEDULER_DATABASE_URL"]
    for variable in values:
        monkeypatch.setenv(variable, f"sqlite:///{folder / 'env.db'}" if variable.endswith("URL") else "from-env")
    settings = load_settings()
    assert settings.require_api_key().get_secret_value() == "from-env"
    assert settings.database_url == f"sqlite:///{folder / 'env.db'}"


def test_a_database_url_from_a_file_is_the_one_used_and_named_with_its_password_hidden(folder: Path) -> None:
    url_file = folder / "database-url"
    url_file.write_text(f"sqlite:///{folder / 'from-file.db'}\n")
    env = environment(folder, SCHEDULER_DATABASE_URL_FILE=str(url_file))
    del env["SCHEDULER_DATABASE_URL"]
    assert CliRunner().invoke(main, ["db", "upgrade"], env=env).exit_code == 0
    assert (folder / "from-file.db").exists() and not (folder / "scheduler.db").exists()
    url_file.write_text("mysql://u:hunter2@h/db")
    line = assert_one_line(CliRunner().invoke(main, ["jobs"], env=env).stderr, "SCHEDULER_DATABASE_URL_FILE", "hunter2")
    assert line == "Error: SCHEDULER_DATABASE_URL_FILE mysql://u:***@h/db: 'mysql' is not supported: " + (
        "use SQLite or PostgreSQL (e.g. sqlite:///scheduler.db or postgresql+psycopg://user:password@host/db)"
    )
    url_file.write_text("postgresql+psycopg://u:hunter2@127.0.0.1:1/db")  # passes the checks, fails to connect
    line = assert_one_line(CliRunner().invoke(main, ["jobs"], env=env).stderr, "SCHEDULER_DATABASE_URL_FILE", "hunter2")
    assert "u:***@127.0.0.1:1/db" in line and "Connection refused" in line


def test_several_bad_settings_are_all_named_in_the_one_line(folder: Path) -> None:
    env = environment(folder, CEKURA_BASE_URL="not-a-url", SCHEDULER_LOG_LEVEL="LOUD")
    line = assert_one_line(CliRunner().invoke(main, ["jobs"], env=env).stderr, "CEKURA_BASE_URL")
    assert "SCHEDULER_LOG_LEVEL 'LOUD'" in line


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scheduler", *args],
        env=clean_environment(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


# These pass the checks at start and fail when the database is opened: still one line, password hidden.
FAILING_DATABASES = [
    ("sqlite:///{file}", "file is not a database"),
    ("postgresql+psycopg://u:hunter2@127.0.0.1:1/db", "Connection refused"),
]


@pytest.mark.parametrize(("value", "says"), FAILING_DATABASES)
def test_a_database_that_fails_when_opened_stops_every_command_in_one_line(folder: Path, value: str, says: str) -> None:
    value = value.format(file=a_file(folder))
    for command in COMMANDS:
        if command[0] in ("validate", "alerts"):
            continue  # they do not open the database
        result = CliRunner().invoke(main, command, env=environment(folder, SCHEDULER_DATABASE_URL=value))
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), (command, result.output)
        line = assert_one_line(result.stderr, "SCHEDULER_DATABASE_URL", secret="hunter2")
        assert says in line, line
        assert "hunter2" not in value or "u:***@" in line  # the URL is shown with its password hidden


@pytest.mark.parametrize(
    ("value", "says"),
    [("notaurl", "not a database URL"), ("sqlite:///{file}/x/y.db", "is a file, so"), *FAILING_DATABASES],
)
def test_the_real_daemon_prints_one_line_for_a_bad_database(folder: Path, value: str, says: str) -> None:
    result = cli("run", env=environment(folder, SCHEDULER_DATABASE_URL=value.format(file=a_file(folder))))
    assert result.returncode == 1, result.stderr
    assert says in assert_one_line(result.stderr, "SCHEDULER_DATABASE_URL", secret="hunter2")


def test_the_real_process_rejects_a_base_url_that_is_not_a_url(folder: Path) -> None:
    result = cli("run", env=environment(folder, CEKURA_BASE_URL="not-a-url"))
    assert result.returncode == 1
    assert assert_one_line(result.stderr, "CEKURA_BASE_URL") == (
        "Error: CEKURA_BASE_URL 'not-a-url': use an http(s) URL with a host, e.g. https://api.cekura.ai"
    )


def test_good_values_are_read_as_meant(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in environment(folder).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SCHEDULER_LOG_LEVEL", "debug")
    monkeypatch.setenv("SCHEDULER_LOG_FORMAT", "JSON")
    monkeypatch.setenv("CEKURA_BASE_URL", "http://127.0.0.1:8080")
    settings = load_settings()
    assert (settings.log_level, settings.log_format, settings.base_url) == ("DEBUG", "json", "http://127.0.0.1:8080")
    assert settings.http_trust_forwarded is False  # no proxy unless told
    for word, meant in (("true", True), ("1", True), ("yes", True), ("false", False), ("0", False)):
        monkeypatch.setenv("SCHEDULER_HTTP_TRUST_FORWARDED", word)
        assert load_settings().http_trust_forwarded is meant
    monkeypatch.setenv("SCHEDULER_HTTP_ADDR", "[::1]:0")
    assert load_settings().http_host_port == ("::1", 0)
    for url in ("sqlite://", f"sqlite:///{folder / 'new' / 'deeper' / 'x.db'}", "postgresql+psycopg://u:p@h/db"):
        assert load_settings(database_url=url).database_url == url


def test_the_health_probe_can_skip_the_database_check(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHEDULER_DATABASE_URL", "notaurl")
    with pytest.raises(SettingsError, match="SCHEDULER_DATABASE_URL notaurl: not a database URL"):
        load_settings()
    assert load_settings(check_database=False).http_host_port == ("127.0.0.1", 8787)
