"""The command line: ``cekura-scheduler run | validate | jobs | trigger | history | check | demo | simulator | db |
alerts | silence | pause | resume``.

This is the only module that configures logging and reads ``os.environ`` for jobs.toml interpolation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import click
from pydantic import SecretStr
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from scheduler import __version__, redaction
from scheduler.alerts import AppriseSender
from scheduler.cekura import CekuraClient, http_client
from scheduler.config import Config, ConfigSource, Job, load_config
from scheduler.daemon import READS_IN_FLIGHT, Daemon
from scheduler.errors import ConfigError, SchedulerError, SettingsError, count_errors
from scheduler.schedules import format_duration, parse_duration
from scheduler.settings import Settings, load_settings
from scheduler.store import Fire, Hold, Store, create_db_engine, upgrade_database
from scheduler.views import outcome_word as _fire_outcome

logger = logging.getLogger("scheduler")

_EXTRAS = ("job", "slot", "result_id", "outcome")


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = [f"{key}={getattr(record, key)}" for key in _EXTRAS if getattr(record, key, None) is not None]
        return f"{text} [{' '.join(extras)}]" if extras else text


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({key: getattr(record, key) for key in _EXTRAS if getattr(record, key, None) is not None})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str, fmt: str) -> None:
    """Send log lines to stderr as text or JSON; quiet the chatty libraries."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    redaction.install()  # secrets become *** in every record, whichever library logs it
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "apprise", "aiohttp.access", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as error:
        raise click.ClickException(str(error)) from None


def _config(path: Path) -> Config:
    try:
        return load_config(path, env=os.environ)
    except ConfigError as error:
        for issue in error.issues:
            click.echo(f"error: {issue}", err=True)
        raise click.exceptions.Exit(1) from None


def _store(settings: Settings, *, upgrade: bool = True) -> Store:
    """The store of SCHEDULER_DATABASE_URL; whatever fails on the way is one line naming the variable."""
    try:
        engine = create_db_engine(settings.database_url)
        if upgrade:
            upgrade_database(engine)
    except (SchedulerError, SQLAlchemyError, OSError, ImportError) as error:
        raise click.ClickException(
            f"SCHEDULER_DATABASE_URL {settings.database_url_for_humans}: {_database_failure(error, settings)}"
        ) from None
    return Store(engine=engine)


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
async def _daemon(
    settings: Settings, config: Config, store: Store, api_key: SecretStr, source: ConfigSource | None = None
) -> AsyncIterator[Daemon]:
    # Hidden from every log line from now on (the daemon adds the API key and the config's own secrets).
    redaction.register([settings.http_token.get_secret_value()] if settings.http_token else [])
    async with http_client(max_connections=config.daemon.max_concurrent_submissions + READS_IN_FLIGHT) as http:
        cekura = CekuraClient(http=http, base_url=settings.base_url, api_key=api_key)
        yield Daemon(config=config, store=store, cekura=cekura, alerts=AppriseSender(), config_source=source)


async def _run_until_signalled(daemon: Daemon, *, duration: float | None = None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, daemon.request_reload)
    if duration is not None:
        loop.call_later(duration, stop.set)
    await daemon.run(stop)


class _Commands(click.Group):
    """The command group: an error the scheduler raises on purpose ends a command in one line, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SchedulerError as error:
            raise click.ClickException(str(error)) from None


@click.group(cls=_Commands)
@click.version_option(__version__, prog_name="cekura-scheduler")
def main() -> None:
    """Run Cekura test scenarios on a schedule kept in jobs.toml.

    Settings come from the environment (or a .env file): CEKURA_API_KEY (or CEKURA_API_KEY_FILE),
    CEKURA_BASE_URL, SCHEDULER_CONFIG, SCHEDULER_DATABASE_URL, SCHEDULER_LOG_LEVEL, SCHEDULER_LOG_FORMAT,
    SCHEDULER_HTTP_ADDR, SCHEDULER_HTTP_TOKEN, SCHEDULER_HTTP_TRUST_FORWARDED.
    """


@main.command()
def run() -> None:
    """Run the daemon: fire the jobs of SCHEDULER_CONFIG (./jobs.toml) until SIGTERM or Ctrl-C."""
    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    try:
        api_key = settings.require_api_key()
    except SettingsError as error:
        raise click.ClickException(str(error)) from None
    source = ConfigSource(settings.config_path, env=os.environ)
    try:
        config = source.load()
    except ConfigError as error:
        for issue in error.issues:
            click.echo(f"error: {issue}", err=True)
        raise click.exceptions.Exit(1) from None
    store = _store(settings)
    logger.info(
        "cekura-scheduler %s: database %s, Cekura at %s",
        __version__,
        settings.database_url_for_humans,
        settings.base_url,
    )

    from scheduler.web import WebServer  # here: aiohttp is not needed by the other commands

    host, port = settings.http_host_port
    web_options: dict[str, Any] = {
        "host": host,
        "port": port,
        "token": settings.http_token,
        "trust_forwarded": settings.http_trust_forwarded,
    }

    async def main_loop() -> None:
        async with (
            _daemon(settings, config, store, api_key, source) as daemon,
            WebServer(daemon=daemon, **web_options),
        ):
            await _run_until_signalled(daemon)

    try:
        asyncio.run(main_loop())
    except SchedulerError as error:
        raise click.ClickException(str(error)) from None


def _when(instant: datetime | None, zone: Any = None) -> str:
    if instant is None:
        return "-"
    if zone is not None and str(zone) != "UTC":
        return f"{instant.astimezone(zone):%Y-%m-%d %H:%M:%S %Z} ({instant:%H:%M:%S} UTC)"
    return f"{instant:%Y-%m-%d %H:%M:%S} UTC"


def _job_summary(job: Job, now: datetime, count: int) -> dict[str, Any]:
    """What validate says of one job: its schedule in words, its next fires, and what it will cost."""
    month = job.schedule.fires_between(now, now + timedelta(days=30)) if job.enabled else 0
    upcoming = job.schedule.upcoming(now, count) if job.enabled else []
    return {
        "name": job.name,
        "enabled": job.enabled,
        "schedule": job.schedule.in_words(),
        "cron": job.cron,
        "every": format_duration(job.every) if job.every else None,
        "timezone": str(job.timezone),
        "endpoint": job.endpoint,
        "agent": job.agent,
        "runs_per_fire": job.runs_per_fire,
        "runs_per_day": round(month * job.runs_per_fire / 30, 1),
        "runs_per_month": month * job.runs_per_fire,
        "next": [
            {"local": slot.astimezone(job.timezone).isoformat(), "utc": slot.isoformat().replace("+00:00", "Z")}
            for slot in upcoming
        ],
    }


@main.command()
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--count", default=5, show_default=True, help="How many upcoming fire times to show per job.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def validate(path: Path | None, count: int, fmt: str) -> None:
    """Check a jobs.toml (default SCHEDULER_CONFIG): every error with its place, else each job's schedule in
    words, its next fire times and the Cekura runs it will create. Exits 1 when the file has errors."""
    target = path or _settings().config_path
    try:
        config = load_config(target, env=os.environ)
    except ConfigError as error:
        if fmt == "json":
            click.echo(
                json.dumps(
                    {"file": str(target), "valid": False, "errors": [issue.as_dict() for issue in error.issues]},
                    indent=2,
                )
            )
        else:
            for issue in error.issues:
                click.echo(f"error: {issue}", err=True)
            click.echo(f"{target}: {count_errors(error.issues)}", err=True)
        raise click.exceptions.Exit(1) from None
    now = datetime.now(UTC)
    summaries = [_job_summary(job, now, count) for job in config.jobs.values()]
    per_day = round(sum(item["runs_per_day"] for item in summaries), 1)
    per_month = sum(item["runs_per_month"] for item in summaries)
    if fmt == "json":
        click.echo(
            json.dumps(
                {
                    "file": str(config.path),
                    "valid": True,
                    "errors": [],
                    "jobs": summaries,
                    "runs_per_day": per_day,
                    "runs_per_month": per_month,
                },
                indent=2,
            )
        )
        return
    for item in summaries:
        state = "" if item["enabled"] else " (disabled: never fires)"
        click.echo(f"{item['name']}{state}: {item['schedule']}")
        agent = f", agent {item['agent']}" if item["agent"] is not None else ""
        click.echo(
            f"  {item['endpoint']}{agent}; {item['runs_per_fire']} runs per fire, "
            f"~{item['runs_per_day']:g} runs/day, {item['runs_per_month']} runs/month"
        )
        job = config.jobs[item["name"]]
        for slot in job.schedule.upcoming(now, count) if job.enabled else []:
            click.echo(f"  next: {slot.astimezone(job.timezone):%a %Y-%m-%d %H:%M %Z}  ({slot:%Y-%m-%d %H:%M} UTC)")
    click.echo(
        f"{config.path}: valid; {len(config.jobs)} jobs, {len(config.channels)} alert channels; "
        f"~{per_day:g} Cekura runs per day, {per_month} per month (next 30 days)"
    )


@main.command()
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def jobs(fmt: str) -> None:
    """List the jobs of SCHEDULER_CONFIG: schedule, state, next fire and last outcome.

    The state says whether a job is enabled, and who paused or silenced it, why and until when.
    When the file is invalid, says so first: a running daemon keeps the last valid version until it is fixed.
    """
    from scheduler.views import fire_as_dict

    settings = _settings()
    store = _store(settings)
    last = store.last_fires_by_job()
    now = datetime.now(UTC)
    holds = _holds_by_job(store, now)
    try:
        config = load_config(settings.config_path, env=os.environ)
    except ConfigError as error:
        applied = store.latest_config_change()
        if fmt == "json":
            _echo_json(
                {
                    "file": str(settings.config_path),
                    "valid": False,
                    "errors": [issue.as_dict() for issue in error.issues],
                    "jobs": [{"name": name, "last_fire": fire_as_dict(fire)} for name, fire in sorted(last.items())],
                }
            )
            raise click.exceptions.Exit(1) from None
        click.echo(
            f"CONFIG INVALID: {settings.config_path} has {count_errors(error.issues)}; a running daemon keeps "
            "the last valid version" + (f" (checked {applied.at:%Y-%m-%d %H:%M:%S} UTC)" if applied else "")
        )
        for issue in error.issues:
            click.echo(f"  {issue}")
        _print_table(
            ["job", "last", "slot"],
            [[name, _fire_outcome(newest), _when(newest.slot)] for name, newest in sorted(last.items())],
        )
        raise click.exceptions.Exit(1) from None
    items = []
    for job in config.jobs.values():
        fire = last.get(job.name)
        upcoming = job.schedule.next_after(now) if job.enabled else None
        items.append((job, fire, upcoming))
    if fmt == "json":
        _echo_json(
            {
                "file": str(config.path),
                "valid": True,
                "errors": [],
                "jobs": [
                    {
                        "name": job.name,
                        "schedule": job.schedule.in_words(),
                        "describe": job.schedule.describe(),
                        "timezone": str(job.timezone),
                        "enabled": job.enabled,
                        "paused": (job.name, "pause") in holds,
                        "pause": _hold_as_dict(holds.get((job.name, "pause"))),
                        "silenced": (job.name, "silence") in holds,
                        "silence": _hold_as_dict(holds.get((job.name, "silence"))),
                        "next_fire": upcoming.isoformat() if upcoming else None,
                        "last_outcome": _fire_outcome(fire) if fire else None,
                        "last_fire": fire_as_dict(fire) if fire else None,
                    }
                    for job, fire, upcoming in items
                ],
            }
        )
        return
    _print_table(
        ["job", "state", "schedule", "next fire", "last"],
        [
            [
                job.name,
                _job_state(job, holds, now),
                job.schedule.describe(),
                _when(upcoming, job.timezone) if upcoming else "-",
                _fire_outcome(fire) if fire else "never fired",
            ]
            for job, fire, upcoming in items
        ],
    )


def _holds_by_job(store: Store, now: datetime) -> dict[tuple[str, str], Hold]:
    """Each job's pause and silence in force, by (job, kind); of several, the one that lasts longest."""
    found: dict[tuple[str, str], Hold] = {}
    for hold in store.active_holds(at=now):
        key = (hold.job, hold.kind)
        held = found.get(key)
        if held is None or (held.until is not None and (hold.until is None or hold.until > held.until)):
            found[key] = hold
    return found


def _hold_as_dict(hold: Hold | None) -> dict[str, Any] | None:
    if hold is None:
        return None
    until = hold.until.isoformat() if hold.until is not None else None
    return {"by": hold.created_by, "reason": hold.reason, "since": hold.starts_at.isoformat(), "until": until}


def _job_state(job: Job, holds: dict[tuple[str, str], Hold], now: datetime) -> str:
    """``enabled``, ``disabled``, ``paused (by ana until 14:00 UTC: deploy)``, ``enabled, silenced (...)``."""
    pause, silence = holds.get((job.name, "pause")), holds.get((job.name, "silence"))
    states = [] if job.enabled and pause else ["enabled" if job.enabled else "disabled"]
    states += [_hold_words(word, hold, now) for word, hold in (("paused", pause), ("silenced", silence)) if hold]
    return ", ".join(states)


def _hold_words(word: str, hold: Hold, now: datetime) -> str:
    until = ""
    if hold.until is not None:
        end = hold.until.astimezone(UTC)
        until = f" until {end:%H:%M} UTC" if end.date() == now.date() else f" until {end:%Y-%m-%d %H:%M} UTC"
    reason = f": {hold.reason}" if hold.reason else ""
    return f"{word} (by {hold.created_by}{until}{reason})"


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _print_table(columns: list[str], rows: list[list[str]]) -> None:
    """A tidy table on stdout; piped output gets a wide one, so that lines are not wrapped for grep."""
    table = Table(*columns, box=box.SIMPLE_HEAD, show_edge=False, header_style="bold")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))  # Text: no rich markup in job names or error messages
    console = Console(width=None if sys.stdout.isatty() else 200, highlight=False)
    with console.capture() as captured:
        console.print(table)
    click.echo("\n".join(line.rstrip() for line in captured.get().splitlines()))


@main.command()
@click.argument("job")
@click.option("--wait", is_flag=True, help="Follow the result until it has an outcome, and exit 1 if it failed.")
def trigger(job: str, wait: bool) -> None:
    """Fire JOB now, recorded like a scheduled fire (the running daemon follows it unless --wait)."""
    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    try:
        api_key = settings.require_api_key()
    except SettingsError as error:
        raise click.ClickException(str(error)) from None
    config = _config(settings.config_path)
    if job not in config.jobs:
        raise click.ClickException(f"no job named {job!r} in {config.path} (jobs: {', '.join(config.jobs)})")
    store = _store(settings)

    async def fire_once() -> Fire:
        async with _daemon(settings, config, store, api_key) as daemon:
            return await daemon.trigger(job, wait=wait)

    try:
        fire = asyncio.run(fire_once())
    except SchedulerError as error:
        raise click.ClickException(str(error)) from None
    click.echo(_fire_line(fire))
    if fire.outcome == "failed" or fire.state == "claimed":
        raise click.exceptions.Exit(1)


def _fire_line(fire: Fire) -> str:
    result = f"result {fire.result_id}" if fire.result_id is not None else "no result"
    error = f"  {fire.error}" if fire.error else ""
    return f"{fire.id:>6}  {fire.job:<24} {_when(fire.slot)}  {_fire_outcome(fire):<18} {result}{error}"


@main.command()
@click.argument("job", required=False)
@click.option("--limit", default=20, show_default=True, help="How many fires to show.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def history(job: str | None, limit: int, fmt: str) -> None:
    """Show recent fires (of JOB, or of every job): slot, outcome and Cekura result id."""
    from scheduler.views import fire_as_dict

    settings = _settings()
    fires = _store(settings).recent_fires(job=job, limit=limit)
    if fmt == "json":
        _echo_json([fire_as_dict(fire, redact=redaction.redact) for fire in fires])
    elif not fires:
        click.echo("no fires recorded yet")
    else:
        _print_table(
            ["id", "job", "slot", "outcome", "result", "error"],
            [
                [
                    str(fire.id),
                    fire.job,
                    _when(fire.slot),
                    _fire_outcome(fire),
                    str(fire.result_id) if fire.result_id is not None else "-",
                    fire.error or "",
                ]
                for fire in fires
            ],
        )


@main.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Upgrade the database (SCHEDULER_DATABASE_URL) to the newest schema; `run` also does this on start."""
    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    _store(settings)
    click.echo(f"{settings.database_url_for_humans}: schema is up to date")


@main.command()
@click.option("--timeout", default=5.0, show_default=True, help="Seconds to wait for the answer.")
def check(timeout: float) -> None:
    """Ask the running daemon (SCHEDULER_HTTP_ADDR) whether it is alive: exit 0 if so, else 1.

    For Docker's HEALTHCHECK and other probes: GET /healthz, which answers 200 while the scheduler loop turns.
    """
    from scheduler.health import check as check_health

    raise click.exceptions.Exit(check_health(timeout))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True)
@click.option("--api-key", default="sim-key", show_default=True, help="The key clients must send.")
@click.option("--run-duration", default=3.0, show_default=True, help="Seconds until a result ends.")
@click.option("--latency", default=0.0, show_default=True, help="Seconds before every answer.")
@click.option("--error-500-rate", default=0.0, show_default=True)
@click.option("--error-429-rate", default=0.0, show_default=True)
@click.option("--drop-rate", default=0.0, show_default=True, help="Submissions created but left unanswered.")
@click.option("--fail", "failing", multiple=True, type=int, help="A scenario id whose runs fail (repeatable).")
def simulator(
    host: str,
    port: int,
    api_key: str,
    run_duration: float,
    latency: float,
    error_500_rate: float,
    error_429_rate: float,
    drop_rate: float,
    failing: tuple[int, ...],
) -> None:
    """Run a local Cekura-compatible API for trying the scheduler without credentials."""
    from scheduler.simulator import SimulatorConfig, serve

    configure_logging("INFO", "text")
    config = SimulatorConfig(
        api_key=api_key,
        run_duration=run_duration,
        latency=latency,
        error_500_rate=error_500_rate,
        error_429_rate=error_429_rate,
        drop_rate=drop_rate,
        behaviours={scenario: ["fail"] for scenario in failing},
    )

    async def serve_until_signalled() -> None:
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
        await serve(config, host=host, port=port, stop=stop)

    asyncio.run(serve_until_signalled())


@contextlib.contextmanager
def _demo_environment() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="cekura-scheduler-demo-") as folder:
        path = Path(folder) / "jobs.toml"
        path.write_text(resources.files("scheduler").joinpath("demo.toml").read_text(encoding="utf-8"))
        yield path


@main.command()
@click.option("--duration", default=30.0, show_default=True, help="Seconds to run before printing the history.")
def demo(duration: float) -> None:
    """Run the simulator and the daemon together on a demo config: no credentials, a temporary database.

    Within a minute you see jobs firing, results completing, one job failing with its alert, and recovering.
    """
    from scheduler.simulator import SimulatorConfig, running_simulator

    configure_logging("INFO", "text")
    logging.getLogger("scheduler.simulator").setLevel(logging.WARNING)
    # checkout-flow's scenario 203 passes, fails once, then passes again: one alert, then one recovery.
    sim_config = SimulatorConfig(api_key="demo-key", run_duration=2.5, behaviours={203: ["pass", "fail", "pass"]})
    with _demo_environment() as config_path, running_simulator(sim_config) as sim:
        settings = load_settings(
            api_key="demo-key",
            base_url=sim.base_url,
            config_path=config_path,
            database_url=f"sqlite:///{config_path.parent / 'demo.db'}",
        )
        config = _config_with(config_path, {"DEMO_ALERTS": "console://"})
        store = _store(settings)
        click.echo(
            f"demo: simulator at {sim.base_url}, database in {config_path.parent}, "
            f"running for {duration:.0f}s (Ctrl-C stops earlier)\n",
            err=True,
        )

        async def main_loop() -> None:
            from scheduler.web import WebServer

            async with _daemon(settings, config, store, SecretStr("demo-key")) as daemon:
                web = WebServer(daemon=daemon, host="127.0.0.1", port=0)
                async with web:
                    click.echo(f"demo: status page at {web.url}/\n", err=True)
                    await _run_until_signalled(daemon, duration=duration)

        asyncio.run(main_loop())
        click.echo("\nWhat the demo recorded (cekura-scheduler history):")
        for fire in reversed(store.recent_fires(limit=50)):
            click.echo(_fire_line(fire))
        store.engine.dispose()


def _config_with(path: Path, extra_env: dict[str, str]) -> Config:
    try:
        return load_config(path, env={**os.environ, **extra_env})
    except ConfigError as error:  # pragma: no cover - the packaged demo config is tested
        raise click.ClickException(str(error)) from None


@main.group()
def alerts() -> None:
    """Alert channels."""


@alerts.command("test")
@click.argument("channel")
def alerts_test(channel: str) -> None:
    """Send a test message to CHANNEL (an [alerts.<name>] of SCHEDULER_CONFIG) and report what it answered."""
    from scheduler.alerts import TEST, AppriseSender, render

    settings = _settings()
    configure_logging("WARNING", settings.log_format)
    config = _config(settings.config_path)
    target = config.channels.get(channel)
    if target is None:
        raise click.ClickException(
            f"no alert channel {channel!r} in {config.path} (channels: {', '.join(config.channels)})"
        )
    delivery = asyncio.run(AppriseSender().send(target, render({"event": TEST}, target)))
    if delivery.ok:
        click.echo(f"{channel}: delivered" + (f" ({delivery.detail})" if delivery.detail else ""))
        return
    click.echo(f"{channel}: NOT delivered: {delivery.detail or 'the channel refused it'}", err=True)
    raise click.exceptions.Exit(1)


@main.command()
@click.argument("job")
@click.option("--for", "duration", help="How long, e.g. 2h or 30m (default: until --end).")
@click.option("--reason", default="", help="Why, for the record and the status page.")
@click.option("--by", default=lambda: os.environ.get("USER", "unknown"), show_default="$USER", help="Who.")
@click.option("--end", is_flag=True, help="End the job's silences now.")
def silence(job: str, duration: str | None, reason: str, by: str, end: bool) -> None:
    """Hold JOB's alerts (its runs go on): for unplanned work. Recorded with who and why; every replica obeys."""
    settings = _settings()
    _configured_job(settings, job)
    store = _store(settings)
    now = datetime.now(UTC)
    if end:
        ended = store.end_holds(job=job, kind="silence", at=now)
        click.echo(f"{job}: {ended} silence{'' if ended == 1 else 's'} ended")
        return
    until, by = _until(now, duration), _who(by)
    store.add_hold(job=job, kind="silence", at=now, until=until, created_by=by, reason=reason)
    click.echo(
        f"{job}: alerts held until {_when(until) if until else 'silence --end'} (by {by}: {reason or 'no reason'})"
    )


def _until(now: datetime, duration: str | None) -> datetime | None:
    """``now`` plus ``--for``, or None (open-ended); a bad duration is one line."""
    if not duration:
        return None
    try:
        return now + parse_duration(duration)
    except (ValueError, OverflowError) as error:
        raise click.ClickException(f"--for: {error}") from None


def _who(by: str) -> str:
    """``--by``, as the holds table keeps it (100 characters)."""
    if not by.strip() or len(by) > 100:
        raise click.ClickException("--by: give a name of 1 to 100 characters")
    return by.strip()


def _configured_job(settings: Settings, job: str) -> None:
    config = _config(settings.config_path)
    if job not in config.jobs:
        raise click.ClickException(f"no job named {job!r} in {config.path} (jobs: {', '.join(config.jobs)})")


@main.command()
@click.argument("job")
@click.option("--for", "duration", help="How long, e.g. 2h or 30m (default: until `resume`).")
@click.option("--reason", required=True, help="Why, for the record, `jobs` and the status page.")
@click.option("--by", default=lambda: os.environ.get("USER", "unknown"), show_default="$USER", help="Who.")
def pause(job: str, duration: str | None, reason: str, by: str) -> None:
    """Stop firing JOB: its slots are recorded as skipped (paused) until `resume` or --for ends.

    Recorded with who and why; the running daemon (every replica) obeys within a second.
    """
    now = datetime.now(UTC)
    until, by = _until(now, duration), _who(by)
    if not reason.strip():
        raise click.ClickException("--reason: say why the job is paused")
    settings = _settings()
    _configured_job(settings, job)
    store = _store(settings)
    store.add_hold(job=job, kind="pause", at=now, until=until, created_by=by, reason=reason)
    click.echo(f"{job}: paused until {_when(until) if until else 'resume'} (by {by}: {reason})")


@main.command()
@click.argument("job")
def resume(job: str) -> None:
    """Fire JOB again from its next slot (ends its pauses); slots skipped meanwhile are not run."""
    settings = _settings()
    _configured_job(settings, job)
    ended = _store(settings).end_holds(job=job, kind="pause", at=datetime.now(UTC))
    click.echo(f"{job}: resumed" if ended else f"{job}: was not paused")


if __name__ == "__main__":  # pragma: no cover
    main()
