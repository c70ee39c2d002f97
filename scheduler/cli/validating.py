"""``validate`` a jobs.toml: its errors, or each job's schedule, next fires and cost.

Imports what reading the file needs (pydantic, the schedules' APScheduler triggers; Apprise only when the file has
alert channels) and nothing of the database or the daemon: CI steps and editors run it on every save.
"""

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

from scheduler.cli import options
from scheduler.cli.options import settings_options
from scheduler.config import Job, load_config
from scheduler.errors import ConfigError, SettingsError, count_errors
from scheduler.schedules import Schedule, format_duration
from scheduler.views import iso


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


def _configured_path() -> Path:
    """SCHEDULER_CONFIG, or --config; the database URL is not checked: validate never opens it."""
    from scheduler.settings import load_settings  # here: `validate PATH` reads no settings

    try:
        return load_settings(check_database=False, **options.given()).config_path
    except SettingsError as error:
        raise click.ClickException(str(error)) from None


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
    target = path or _configured_path()
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
