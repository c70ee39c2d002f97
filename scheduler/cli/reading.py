"""The commands that read the database: list the ``jobs``, show the ``history`` of fires.

They load SQLAlchemy and rich, never the daemon; ``jobs`` also reads the config, ``history`` does not.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from scheduler import redaction
from scheduler.cli import common
from scheduler.cli.options import settings_options
from scheduler.errors import ConfigError, count_errors
from scheduler.store import Hold
from scheduler.views import fire_as_dict, hold_as_dict, iso, longest_holds, outcome_word

if TYPE_CHECKING:
    from scheduler.config import Job


@click.command()
@settings_options
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def jobs(fmt: str) -> None:
    """List the jobs of SCHEDULER_CONFIG: schedule, state, next fire and last outcome.

    The state says whether a job is enabled, and who paused or silenced it, why and until when.
    When the file is invalid, says so first: a running daemon keeps the last valid version until it is fixed.
    """
    from scheduler.config import load_config  # here: history, in this module too, reads no config

    settings = common.read_settings()
    store = common.open_store(settings)
    now = datetime.now(UTC)
    holds = longest_holds(store.active_holds(at=now))
    try:
        config = load_config(settings.config_path, env=os.environ)
    except ConfigError as error:
        last = store.last_fires_by_job(store.jobs_with_fires())
        applied = store.latest_config_change()
        if fmt == "json":
            common.echo_json(
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
        common.print_table(
            ["job", "last", "slot"],
            [[name, outcome_word(newest), common.when(newest.slot)] for name, newest in sorted(last.items())],
        )
        raise click.exceptions.Exit(1) from None
    last = store.last_fires_by_job(list(config.jobs))
    items = []
    for job in config.jobs.values():
        fire = last.get(job.name)
        upcoming = job.schedule.next_after(now) if job.enabled else None
        items.append((job, fire, upcoming))
    if fmt == "json":
        common.echo_json(
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
                        "pause": hold_as_dict(holds.get((job.name, "pause"))),
                        "silenced": (job.name, "silence") in holds,
                        "silence": hold_as_dict(holds.get((job.name, "silence"))),
                        "next_fire": iso(upcoming),
                        "last_outcome": outcome_word(fire) if fire else None,
                        "last_fire": fire_as_dict(fire) if fire else None,
                    }
                    for job, fire, upcoming in items
                ],
            }
        )
        return
    common.print_table(
        ["job", "state", "schedule", "next fire", "last"],
        [
            [
                job.name,
                _job_state(job, holds, now),
                job.schedule.describe(),
                common.when(upcoming, job.timezone) if upcoming else "-",
                outcome_word(fire) if fire else "never fired",
            ]
            for job, fire, upcoming in items
        ],
    )


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


@click.command()
@click.argument("job", required=False)
@settings_options
@click.option("--limit", default=20, show_default=True, help="How many fires to show.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def history(job: str | None, limit: int, fmt: str) -> None:
    """Show recent fires (of JOB, or of every job): slot, outcome, Cekura result id and the runs it created."""
    settings = common.read_settings()
    fires = common.open_store(settings).recent_fires(job=job, limit=limit)
    if fmt == "json":
        common.echo_json([fire_as_dict(fire, redact=redaction.redact) for fire in fires])
    elif not fires:
        click.echo("no fires recorded yet")
    else:
        common.print_table(
            ["id", "job", "slot", "outcome", "result", "runs", "error"],
            [
                [
                    str(fire.id),
                    fire.job,
                    common.when(fire.slot),
                    outcome_word(fire),
                    str(fire.result_id) if fire.result_id is not None else "-",
                    str(fire.runs_created) if fire.runs_created is not None else "-",
                    fire.error or "",
                ]
                for fire in fires
            ],
        )
