"""The command line: ``cekura-scheduler run | validate | jobs | trigger | history | check | demo | simulator | db |
alerts | silence | pause | resume | import``; ``main`` is the console script and ``python -m scheduler``.

Each group of commands lives in its own module, imported only when one of its commands runs: ``check``, Docker's
HEALTHCHECK every 30 s, loads the settings and the standard library, not the daemon. Logging is configured by the
commands through ``scheduler.logs``, the only place that does it.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from scheduler import __version__
from scheduler.errors import SchedulerError

# Every command but check: the module that defines it, and the first sentence of its help, which `--help` lists
# without importing the module (that would load the daemon, SQLAlchemy and httpx: 0.4 s). A test holds each
# sentence to the command's own.
_LAZY = {
    "run": ("running", "Run the daemon: fire the jobs of SCHEDULER_CONFIG (./jobs.toml) until SIGTERM or Ctrl-C."),
    "trigger": (
        "running",
        "Fire JOB now, recorded like a scheduled fire (the running daemon follows it unless --wait).",
    ),
    "demo": (
        "running",
        "Run the simulator and the daemon together on a demo config: no credentials, a temporary database.",
    ),
    "simulator": ("running", "Run a local Cekura-compatible API for trying the scheduler without credentials."),
    "db": ("running", "Database maintenance."),
    "validate": (
        "validating",
        "Check a jobs.toml (default SCHEDULER_CONFIG): every error with its place, else each job's schedule in "
        "words, its next fire times and the Cekura runs it will create.",
    ),
    "jobs": ("reading", "List the jobs of SCHEDULER_CONFIG: schedule, state, next fire and last outcome."),
    "history": (
        "reading",
        "Show recent fires (of JOB, or of every job): slot, outcome, Cekura result id and the runs it created.",
    ),
    "alerts": ("holding", "Alert channels."),
    "silence": ("holding", "Hold JOB's alerts (its runs go on): for unplanned work."),
    "pause": ("holding", "Stop firing JOB: its slots are recorded as skipped (paused) until `resume` or --for ends."),
    "resume": ("holding", "Fire JOB again from its next slot (ends its pauses); slots skipped meanwhile are not run."),
    "import": (
        "importing:import_jobs",  # "module:function" where the name is Python's own
        "Read the team's scheduled jobs from Cekura (/schedules/v1/cron-jobs/) and print them as jobs.toml "
        "entries: cron, timezone, endpoint, agent, scenarios or tags, frequency, enabled.",
    ),
}

# What --help says of the environment: the settings' own words (``scheduler.settings.environment_variables``, which
# a test holds this to), written out so that the help loads neither pydantic nor pydantic-settings (0.15 s).
_ENVIRONMENT = [
    ("CEKURA_API_KEY", "the Cekura API key (required by run and trigger)"),
    ("CEKURA_API_KEY_FILE", "a file holding the key, when CEKURA_API_KEY is not set"),
    ("CEKURA_BASE_URL", "the Cekura API [default: https://api.cekura.ai]"),
    ("SCHEDULER_CONFIG", "the jobs file (or --config PATH) [default: jobs.toml]"),
    ("SCHEDULER_DATABASE_URL", "the database, a SQLAlchemy URL (or --database URL) [default: sqlite:///scheduler.db]"),
    ("SCHEDULER_DATABASE_URL_FILE", "a file holding the database URL, when SCHEDULER_DATABASE_URL is not set"),
    ("SCHEDULER_LOG_LEVEL", "DEBUG, INFO, WARNING or ERROR [default: INFO]"),
    ("SCHEDULER_LOG_FORMAT", "text or json [default: text]"),
    ("SCHEDULER_HTTP_ADDR", "host:port of the status page, API, metrics and /healthz [default: 127.0.0.1:8787]"),
    ("SCHEDULER_HTTP_TOKEN", "the token every endpoint but /healthz requires; needed to listen beyond loopback"),
    ("SCHEDULER_HTTP_TOKEN_FILE", "a file holding the token, when SCHEDULER_HTTP_TOKEN is not set"),
    (
        "CEKURA_WEBHOOK_SECRET",
        "the secret of the Cekura project's webhook: results are then pushed to POST /webhooks/cekura and polling "
        "is only the fallback",
    ),
    ("CEKURA_WEBHOOK_SECRET_FILE", "a file holding the webhook's secret, when CEKURA_WEBHOOK_SECRET is not set"),
    (
        "SCHEDULER_HTTP_TRUST_FORWARDED",
        "true behind a reverse proxy: believe its X-Forwarded-* headers [default: false]",
    ),
    ("USER", "who pauses or silences a job (the default of --by)"),
    ("${VAR}", "any variable a value of jobs.toml names"),
]

_EXIT_CODES = [
    ("0", "done; for check, the daemon is alive; for run, stopped by SIGTERM or Ctrl-C"),
    (
        "1",
        "it failed: an invalid jobs.toml or setting, an unreachable database, a fire that failed (trigger --wait), "
        "an unhealthy daemon (check), an alert not delivered",
    ),
    ("2", "a usage error: an unknown command or option, a missing or invalid argument"),
]


class _Commands(click.Group):
    """The command group: its commands are imported when asked for, and an error the scheduler raises on purpose
    ends a command in one line, not a traceback."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_LAZY})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _LAZY:
            module, _, name = _LAZY[cmd_name][0].partition(":")
            command: click.Command = getattr(importlib.import_module(f"scheduler.cli.{module}"), name or cmd_name)
            return command
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The commands, each with the first sentence of its help, cut as click cuts it; none is imported."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            command = click.Command(name, help=_LAZY[name][1]) if name in _LAZY else self.commands[name]
            rows.append((name, command.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Every environment variable the program reads, and the exit codes."""
        with formatter.section("Environment (also read from ./.env; --config and --database override)"):
            formatter.write_dl(_ENVIRONMENT)
        with formatter.section("Exit codes"):
            formatter.write_dl(_EXIT_CODES)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SchedulerError as error:
            raise click.ClickException(str(error)) from None


@click.group(cls=_Commands)
@click.version_option(__version__, prog_name="cekura-scheduler")
def main() -> None:
    """Run Cekura test scenarios on a schedule kept in jobs.toml.

    Settings come from the environment (or a .env file), listed below; every command that reads the jobs file or
    the database also takes --config PATH and --database URL.
    """


@main.command()
@click.option("--timeout", type=float, default=5.0, show_default=True, help="Seconds to wait for the answer.")
def check(timeout: float) -> None:
    """Ask the running daemon (SCHEDULER_HTTP_ADDR) whether it is alive: exit 0 if so, else 1.

    For Docker's HEALTHCHECK and other probes: GET /healthz, which answers 200 while the scheduler loop turns.
    """
    from scheduler.health import check as check_health

    raise click.exceptions.Exit(check_health(timeout))


__all__ = ["main"]
