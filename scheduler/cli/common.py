"""What the commands share: settings, config and store that fail in one line, the daemon, tables and times.

The config (pydantic models, APScheduler) and the daemon are imported where they are used: ``history`` reads only
the settings and the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from pydantic import SecretStr
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from scheduler import redaction
from scheduler.cli import options
from scheduler.cli.options import OPTION_NAMES
from scheduler.errors import ConfigError, SchedulerError, SettingsError
from scheduler.logs import configure_logging
from scheduler.settings import Settings, load_settings
from scheduler.store import Fire, Store, create_db_engine, upgrade_database
from scheduler.views import outcome_word

if TYPE_CHECKING:
    from scheduler.config import Config, ConfigSource
    from scheduler.daemon import Daemon


def read_settings() -> Settings:
    """The settings: the environment, with what ``--config`` and ``--database`` gave instead."""
    try:
        given = options.given()
        return load_settings(database_named=OPTION_NAMES["database_url"] if "database_url" in given else None, **given)
    except SettingsError as error:
        raise click.ClickException(str(error)) from None


def daemon_settings() -> tuple[Settings, SecretStr]:
    """The settings of a command that talks to Cekura, with the API key; logging is configured from them."""
    settings = read_settings()
    configure_logging(settings.log_level, settings.log_format)
    try:
        return settings, settings.require_api_key()
    except SettingsError as error:
        raise click.ClickException(str(error)) from None


def read_config(path: Path) -> Config:
    from scheduler.config import load_config

    return loaded(lambda: load_config(path, env=os.environ))


def loaded(load: Callable[[], Config]) -> Config:
    """The config ``load`` gives; its errors, each on a line of stderr, end the command with exit code 1."""
    try:
        return load()
    except ConfigError as error:
        for issue in error.issues:
            click.echo(f"error: {issue}", err=True)
        raise click.exceptions.Exit(1) from None


def open_store(settings: Settings, *, upgrade: bool = True) -> Store:
    """The store of SCHEDULER_DATABASE_URL (or --database); whatever fails on the way is one line naming it."""
    try:
        engine = create_db_engine(settings.database_url)
        if upgrade:
            upgrade_database(engine)
    except (SchedulerError, SQLAlchemyError, OSError, ImportError) as error:
        raise click.ClickException(
            f"{_database_named(settings)} {settings.database_url_for_humans}: {_database_failure(error, settings)}"
        ) from None
    return Store(engine=engine)


def _database_named(settings: Settings) -> str:
    """Where the database URL came from: --database, SCHEDULER_DATABASE_URL or SCHEDULER_DATABASE_URL_FILE."""
    return OPTION_NAMES["database_url"] if "database_url" in options.given() else settings.database_url_variable


def _database_failure(error: Exception, settings: Settings) -> str:
    """What went wrong with the database, in one line and without its password."""
    if isinstance(error, OSError) and error.strerror:
        reason = f"{error.filename}: {error.strerror}" if error.filename else error.strerror
    else:
        reason = str(getattr(error, "orig", None) or error).strip()
    reason = (reason.splitlines() or [type(error).__name__])[0]
    with contextlib.suppress(SQLAlchemyError, ValueError):
        password = make_url(settings.database_url).password
        if password:
            reason = reason.replace(str(password), "***")
    return reason


@contextlib.asynccontextmanager
async def connected_daemon(
    settings: Settings, config: Config, store: Store, api_key: SecretStr, source: ConfigSource | None = None
) -> AsyncIterator[Daemon]:
    # Imported here: the commands that only read the database never load the engine, httpx or Apprise.
    from scheduler import memory
    from scheduler.cekura import CekuraClient
    from scheduler.daemon import READS_IN_FLIGHT, Daemon
    from scheduler.delivery import AppriseSender
    from scheduler.transport import http_client

    # Hidden from every log line from now on (the daemon adds the API key and the config's own secrets).
    redaction.register(
        [secret.get_secret_value() for secret in (settings.http_token, settings.webhook_secret) if secret]
    )
    async with http_client(max_connections=config.daemon.max_concurrent_submissions + READS_IN_FLIGHT) as http:
        cekura = CekuraClient(http=http, base_url=settings.base_url, api_key=api_key)
        yield Daemon(
            config=config,
            store=store,
            cekura=cekura,
            alerts=AppriseSender(),
            config_source=source,
            webhooks=settings.webhook_secret is not None,
            release_memory=memory.release_free_memory,
        )


class EarlyReload:
    """A SIGHUP that arrives while the daemon starts (reading the config, upgrading the database), remembered.

    Its default action ends the process: a ``systemctl reload`` during a slow start-up killed the daemon. Made
    first thing in ``run``; once the event loop listens, a reload asked for meanwhile is done.
    """

    def __init__(self) -> None:
        self.asked = False
        signal.signal(signal.SIGHUP, self._remember)

    def _remember(self, signum: int, frame: object) -> None:
        self.asked = True


async def run_until_signalled(
    daemon: Daemon, *, duration: float | None = None, early: EarlyReload | None = None
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, daemon.request_reload)
    if early is not None and early.asked:
        daemon.request_reload()  # the file may have changed after start-up read it
    if duration is not None:
        loop.call_later(duration, stop.set)
    await daemon.run(stop)


def when(instant: datetime | None, zone: Any = None) -> str:
    if instant is None:
        return "-"
    if zone is not None and str(zone) != "UTC":
        return f"{instant.astimezone(zone):%Y-%m-%d %H:%M:%S %Z} ({instant:%H:%M:%S} UTC)"
    return f"{instant:%Y-%m-%d %H:%M:%S} UTC"


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def print_table(columns: list[str], rows: list[list[str]]) -> None:
    """An aligned table on stdout: a header, a rule, one line per row, never wrapped (so that grep finds a row).

    Plain text rather than rich's tables: 1,000 jobs are drawn in milliseconds, where rich took 0.3 s.
    """
    cells = [columns, *rows]
    widths = [max(len(row[index]) for row in cells) for index in range(len(columns))]

    def line(row: list[str]) -> str:
        return " " + "   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()

    rule = "─" * (sum(widths) + 3 * len(widths) - 1)
    click.echo("\n".join([line(columns), rule, *(line(row) for row in rows)]))


def fire_line(fire: Fire) -> str:
    result = f"result {fire.result_id}" if fire.result_id is not None else "no result"
    error = f"  {fire.error}" if fire.error else ""
    return f"{fire.id:>6}  {fire.job:<24} {when(fire.slot)}  {outcome_word(fire):<18} {result}{error}"


def until(now: datetime, duration: str | None) -> datetime | None:
    """``now`` plus ``--for``, or None (open-ended); a bad duration is one line."""
    if not duration:
        return None
    from scheduler.schedules import parse_duration

    try:
        return now + parse_duration(duration)
    except (ValueError, OverflowError) as error:
        raise click.ClickException(f"--for: {error}") from None


def who(by: str) -> str:
    """``--by``, as the holds table keeps it (100 characters)."""
    if not by.strip() or len(by) > 100:
        raise click.ClickException("--by: give a name of 1 to 100 characters")
    return by.strip()


def configured_job(settings: Settings, job: str) -> None:
    config = read_config(settings.config_path)
    if job not in config.jobs:
        raise click.ClickException(f"no job named {job!r} in {config.path} (jobs: {', '.join(config.jobs)})")


def config_with(path: Path, extra_env: dict[str, str]) -> Config:
    from scheduler.config import load_config

    try:
        return load_config(path, env={**os.environ, **extra_env})
    except ConfigError as error:  # pragma: no cover - the packaged demo config is tested
        raise click.ClickException(str(error)) from None
