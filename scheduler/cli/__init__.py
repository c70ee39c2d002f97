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

# Every command but check, by the module that defines it.
_LAZY = {
    "run": "running",
    "trigger": "running",
    "demo": "running",
    "simulator": "running",
    "db": "running",
    "validate": "reading",
    "jobs": "reading",
    "history": "reading",
    "alerts": "holding",
    "silence": "holding",
    "pause": "holding",
    "resume": "holding",
    "import": "importing:import_jobs",
}

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
            module, _, name = _LAZY[cmd_name].partition(":")  # "module:function" where the name is Python's own
            command: click.Command = getattr(importlib.import_module(f"scheduler.cli.{module}"), name or cmd_name)
            return command
        return super().get_command(ctx, cmd_name)

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Every environment variable the program reads, and the exit codes (built when asked for)."""
        from scheduler.settings import environment_variables

        with formatter.section("Environment (also read from ./.env; --config and --database override)"):
            formatter.write_dl(
                [
                    *environment_variables(),
                    ("USER", "who pauses or silences a job (the default of --by)"),
                    ("${VAR}", "any variable a value of jobs.toml names"),
                ]
            )
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
