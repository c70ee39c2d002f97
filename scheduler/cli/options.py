"""The options every command that reads the jobs file or the database takes: ``--config PATH``, ``--database URL``.

They override SCHEDULER_CONFIG and SCHEDULER_DATABASE_URL (which stay the defaults). Kept apart from ``common``
(rich, SQLAlchemy) so that declaring a command costs nothing. The values live in the click context's ``meta``,
which every context of one invocation shares, so the commands' signatures stay as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

_KEY = "scheduler.settings"
# How a setting is named in an error when it came from an option instead of the environment.
OPTION_NAMES = {"config_path": "--config", "database_url": "--database"}

F = TypeVar("F", bound=Callable[..., Any])


def _remember(ctx: click.Context, param: click.Parameter, value: object) -> None:
    if value is not None and param.name is not None:
        ctx.meta.setdefault(_KEY, {})[param.name] = value


def settings_options(command: F) -> F:
    """Give a command ``--config PATH`` and ``--database URL``."""
    command = click.option(
        "--database",
        "database_url",
        metavar="URL",
        expose_value=False,
        callback=_remember,
        help="The database, a SQLAlchemy URL (default: SCHEDULER_DATABASE_URL, else sqlite:///scheduler.db).",
    )(command)
    return click.option(
        "--config",
        "config_path",
        metavar="PATH",
        type=click.Path(path_type=Path, dir_okay=False),
        expose_value=False,
        callback=_remember,
        help="The jobs file (default: SCHEDULER_CONFIG, else ./jobs.toml).",
    )(command)


def given() -> dict[str, Any]:
    """The settings given as options to the running command, by field name (``config_path``, ``database_url``)."""
    context = click.get_current_context(silent=True)
    return dict(context.meta.get(_KEY, {})) if context is not None else {}
