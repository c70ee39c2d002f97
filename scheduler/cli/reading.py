"""The commands that read: ``validate`` a jobs.toml, list the ``jobs``, show the ``history`` of fires."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from scheduler import redaction
from scheduler.cli import common, options
from scheduler.cli.options import settings_options
from scheduler.config import Job, load_config
from scheduler.errors import ConfigError, count_errors
from scheduler.schedules import Schedule, format_duration
from scheduler.store import Hold
from scheduler.views import fire_as_dict, hold_as_dict, iso, longest_holds, outcome_word


@dataclass(frozen=True)
class _Timing:
    """What validate says of a schedule: in words, the next fire times, the fires in the next 30 days."""

    words: str
    upcoming: list[datetime]
    month: int


def _timings(now: datetime, count: int) -> Callable[[Schedule], _Timing]:
    """Each distinct schedule worked out once: a file of 40,000 jobs mostly repeats a few hundred schedules."""

    @functools.cache
    def timing(schedule: Schedule) -> _Timing:
        return _Timing(
            words=schedule.in_words(),
            upcoming=schedule.upcoming(now, count),
            month=schedule.fires_between(now, now + timedelta(days=30)),
        )

    return timing


def _job_summary(job: Job, timing: _Timing) -> dict[str, Any]:
    """What validate says of one job: its schedule in words, its next fires, and what it will cost."""
    month = timing.month if job.enabled else 0
    upcoming = timing.upcoming if job.enabled else []
    return {
        "name": job.name,
        "enabled": job.enabled,
        "schedule": timing.words,
        "cron": job.cron,
        "every": format_duration(job.every) if job.every else None,
        "timezone": str(job.timezone),
        "endpoint": job.endpoint,
        "agent": job.agent,
        "selection": _selection(job),
        "runs_per_fire": job.runs_per_fire,  # None: only known at fire time (tags, folder, spec)
        "runs_per_day": round(month * job.runs_per_fire / 30, 1) if job.runs_per_fire is not None else None,
        "runs_per_month": month * job.runs_per_fire if job.runs_per_fire is not None else None,
        "next": [{"local": slot.astimezone(job.timezone).isoformat(), "utc": iso(slot)} for slot in upcoming],
    }


def _selection(job: Job) -> str:
    """Which scenarios a fire of the job runs, in words."""
    if job.tags is not None:
        return f"scenarios tagged {', '.join(job.tags)}"
    if job.folder_path is not None:
        return f"scenarios in folder {job.folder_path} of project {job.project_id}"
    if job.spec is not None:
        return "a test-suite spec"
    return f"{len(job.scenarios)} scenarios"


@click.command()
@click.argument("path", required=False, type=click.Path(path_type=Path))
@settings_options
@click.option("--count", default=5, show_default=True, help="How many upcoming fire times to show per job.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def validate(path: Path | None, count: int, fmt: str) -> None:
    """Check a jobs.toml (default SCHEDULER_CONFIG): every error with its place, else each job's schedule in
    words, its next fire times and the Cekura runs it will create. Exits 1 when the file has errors."""
    if path is not None and "config_path" in options.given():
        raise click.UsageError("give the file as PATH or as --config, not both")
    target = path or common.read_settings().config_path
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
    timing = _timings(datetime.now(UTC), count)
    summaries = [_job_summary(job, timing(job.schedule)) for job in config.jobs.values()]
    per_day = round(sum(item["runs_per_day"] or 0 for item in summaries), 1)
    per_month = sum(item["runs_per_month"] or 0 for item in summaries)
    unknown = sum(1 for item in summaries if item["runs_per_fire"] is None and item["enabled"])
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
                    "jobs_counted_at_fire_time": unknown,
                },
                indent=2,
            )
        )
        return
    lines = []
    for item in summaries:
        state = "" if item["enabled"] else " (disabled: never fires)"
        lines.append(f"{item['name']}{state}: {item['schedule']}")
        agent = f", agent {item['agent']}" if item["agent"] is not None else ""
        if item["runs_per_fire"] is None:
            lines.append(
                f"  {item['endpoint']}{agent}; {item['selection']}: how many runs a fire creates is only known at "
                "fire time (history shows it for each fire)"
            )
        else:
            lines.append(
                f"  {item['endpoint']}{agent}; {item['runs_per_fire']} runs per fire, "
                f"~{item['runs_per_day']:g} runs/day, {item['runs_per_month']} runs/month"
            )
        job = config.jobs[item["name"]]
        for slot in timing(job.schedule).upcoming if job.enabled else []:
            lines.append(f"  next: {slot.astimezone(job.timezone):%a %Y-%m-%d %H:%M %Z}  ({slot:%Y-%m-%d %H:%M} UTC)")
    if lines:
        click.echo("\n".join(lines))
    click.echo(
        f"{config.path}: valid; {len(config.jobs)} jobs, {len(config.channels)} alert channels; "
        f"~{per_day:g} Cekura runs per day, {per_month} per month (next 30 days)"
        + (f", besides {unknown} jobs whose runs are counted at fire time" if unknown else "")
    )


@click.command()
@settings_options
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def jobs(fmt: str) -> None:
    """List the jobs of SCHEDULER_CONFIG: schedule, state, next fire and last outcome.

    The state says whether a job is enabled, and who paused or silenced it, why and until when.
    When the file is invalid, says so first: a running daemon keeps the last valid version until it is fixed.
    """
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
