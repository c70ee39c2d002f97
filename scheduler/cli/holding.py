"""The commands that hold a job or test a channel: ``silence``, ``pause``, ``resume``, ``alerts test``."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime

import click

from scheduler.cli import common
from scheduler.cli.options import settings_options
from scheduler.logs import configure_logging


@click.group()
def alerts() -> None:
    """Alert channels."""


@alerts.command("test")
@click.argument("channel")
@settings_options
def alerts_test(channel: str) -> None:
    """Send a test message to CHANNEL (an [alerts.<name>] of SCHEDULER_CONFIG) and report what it answered."""
    from scheduler.alerts import TEST, render
    from scheduler.delivery import AppriseSender

    settings = common.read_settings()
    configure_logging("WARNING", settings.log_format)
    config = common.read_config(settings.config_path)
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


@click.command()
@click.argument("job")
@settings_options
@click.option("--for", "duration", help="How long, e.g. 2h or 30m (default: until --end).")
@click.option("--reason", default="", help="Why, for the record and the status page.")
@click.option("--by", default=lambda: os.environ.get("USER", "unknown"), show_default="$USER", help="Who.")
@click.option("--end", is_flag=True, help="End the job's silences now.")
def silence(job: str, duration: str | None, reason: str, by: str, end: bool) -> None:
    """Hold JOB's alerts (its runs go on): for unplanned work. Recorded with who and why; every replica obeys."""
    settings = common.read_settings()
    common.configured_job(settings, job)
    store = common.open_store(settings)
    now = datetime.now(UTC)
    if end:
        ended = store.end_holds(job=job, kind="silence", at=now)
        click.echo(f"{job}: {ended} silence{'' if ended == 1 else 's'} ended")
        return
    until, by = common.until(now, duration), common.who(by)
    store.add_hold(job=job, kind="silence", at=now, until=until, created_by=by, reason=reason)
    held = common.when(until) if until else "silence --end"
    click.echo(f"{job}: alerts held until {held} (by {by}: {reason or 'no reason'})")


@click.command()
@click.argument("job")
@settings_options
@click.option("--for", "duration", help="How long, e.g. 2h or 30m (default: until `resume`).")
@click.option("--reason", required=True, help="Why, for the record, `jobs` and the status page.")
@click.option("--by", default=lambda: os.environ.get("USER", "unknown"), show_default="$USER", help="Who.")
def pause(job: str, duration: str | None, reason: str, by: str) -> None:
    """Stop firing JOB: its slots are recorded as skipped (paused) until `resume` or --for ends.

    Recorded with who and why; the running daemon (every replica) obeys within a second.
    """
    now = datetime.now(UTC)
    until, by = common.until(now, duration), common.who(by)
    if not reason.strip():
        raise click.ClickException("--reason: say why the job is paused")
    settings = common.read_settings()
    common.configured_job(settings, job)
    store = common.open_store(settings)
    store.add_hold(job=job, kind="pause", at=now, until=until, created_by=by, reason=reason)
    click.echo(f"{job}: paused until {common.when(until) if until else 'resume'} (by {by}: {reason})")


@click.command()
@click.argument("job")
@settings_options
def resume(job: str) -> None:
    """Fire JOB again from its next slot (ends its pauses); slots skipped meanwhile are not run."""
    settings = common.read_settings()
    common.configured_job(settings, job)
    ended = common.open_store(settings).end_holds(job=job, kind="pause", at=datetime.now(UTC))
    click.echo(f"{job}: resumed" if ended else f"{job}: was not paused")
