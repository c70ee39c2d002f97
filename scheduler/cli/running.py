"""The commands that run something: the daemon (``run``), one fire (``trigger``), ``demo``, ``simulator`` and
``db upgrade``."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import tempfile
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import click
from pydantic import SecretStr

from scheduler import __version__, memory
from scheduler.cli import common
from scheduler.cli.options import settings_options
from scheduler.config import ConfigSource
from scheduler.errors import SchedulerError
from scheduler.logs import configure_logging
from scheduler.settings import load_settings
from scheduler.store import Fire

logger = logging.getLogger("scheduler")  # the name its start line has always had in the log


@click.command()
@settings_options
def run() -> None:
    """Run the daemon: fire the jobs of SCHEDULER_CONFIG (./jobs.toml) until SIGTERM or Ctrl-C."""
    early = common.EarlyReload()
    memory.limit_malloc_arenas()
    settings, api_key = common.daemon_settings()
    source = ConfigSource(settings.config_path, env=os.environ)
    config = common.loaded(source.load)
    store = common.open_store(settings)
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
        "webhook_secret": settings.webhook_secret,
    }

    async def main_loop() -> None:
        async with (
            common.connected_daemon(settings, config, store, api_key, source) as daemon,
            WebServer(daemon=daemon, **web_options),
        ):
            # What start-up built (modules, the config, the engine) lives as long as the process: out of the
            # cyclic collector's sight, so that its full collections during a burst of fires stay short
            # (a sixth of the CPU of a 1,000-job burst went to collections, half of it to these objects).
            gc.freeze()
            await common.run_until_signalled(daemon, early=early)

    try:
        asyncio.run(main_loop())
    except SchedulerError as error:
        raise click.ClickException(str(error)) from None


@click.command()
@click.argument("job")
@settings_options
@click.option("--wait", is_flag=True, help="Follow the result until it has an outcome, and exit 1 if it failed.")
def trigger(job: str, wait: bool) -> None:
    """Fire JOB now, recorded like a scheduled fire (the running daemon follows it unless --wait)."""
    settings, api_key = common.daemon_settings()
    config = common.read_config(settings.config_path)
    if job not in config.jobs:
        raise click.ClickException(f"no job named {job!r} in {config.path} (jobs: {', '.join(config.jobs)})")
    store = common.open_store(settings)

    async def fire_once() -> Fire:
        async with common.connected_daemon(settings, config, store, api_key) as daemon:
            return await daemon.trigger(job, wait=wait)

    try:
        fire = asyncio.run(fire_once())
    except SchedulerError as error:
        raise click.ClickException(str(error)) from None
    click.echo(common.fire_line(fire))
    if fire.outcome == "failed" or fire.state == "claimed":
        raise click.exceptions.Exit(1)


@click.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@settings_options
def db_upgrade() -> None:
    """Upgrade the database (SCHEDULER_DATABASE_URL) to the newest schema; `run` also does this on start."""
    settings = common.read_settings()
    configure_logging(settings.log_level, settings.log_format)
    common.open_store(settings)
    click.echo(f"{settings.database_url_for_humans}: schema is up to date")


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True)
@click.option("--api-key", default="sim-key", show_default=True, help="The key clients must send.")
@click.option("--run-duration", default=3.0, show_default=True, help="Seconds until a result ends.")
@click.option("--latency", default=0.0, show_default=True, help="Seconds before every answer.")
@click.option("--error-500-rate", default=0.0, show_default=True)
@click.option("--error-429-rate", default=0.0, show_default=True)
@click.option("--drop-rate", default=0.0, show_default=True, help="Submissions created but left unanswered.")
@click.option("--fail", "failing", multiple=True, type=int, help="A scenario id whose runs fail (repeatable).")
@click.option("--webhook-url", default=None, help="Send Cekura's result.completed webhook here as results end.")
@click.option(
    "--webhook-secret", default="sim-webhook-secret", show_default=True, help="The X-CEKURA-SECRET it carries."
)
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
    webhook_url: str | None,
    webhook_secret: str,
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
        webhook_url=webhook_url,
        webhook_secret=webhook_secret,
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


@click.command()
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
        config = common.config_with(config_path, {"DEMO_ALERTS": "console://"})
        store = common.open_store(settings)
        click.echo(
            f"demo: simulator at {sim.base_url}, database in {config_path.parent}, "
            f"running for {duration:.0f}s (Ctrl-C stops earlier)\n",
            err=True,
        )

        async def main_loop() -> None:
            from scheduler.web import WebServer

            async with common.connected_daemon(settings, config, store, SecretStr("demo-key")) as daemon:
                web = WebServer(daemon=daemon, host="127.0.0.1", port=0)
                async with web:
                    click.echo(f"demo: status page at {web.url}/\n", err=True)
                    await common.run_until_signalled(daemon, duration=duration)

        asyncio.run(main_loop())
        click.echo("\nWhat the demo recorded (cekura-scheduler history):")
        for fire in reversed(store.recent_fires(limit=50)):
            click.echo(common.fire_line(fire))
        store.engine.dispose()
