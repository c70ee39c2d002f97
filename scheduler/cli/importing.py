"""The ``import`` command: Cekura's own scheduled jobs, printed as jobs.toml entries."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import click

from scheduler.errors import CekuraError, SettingsError
from scheduler.logs import configure_logging
from scheduler.settings import load_settings


@click.command("import")
@click.option("--agent-id", type=int, default=None, help="Only the cron jobs of this Cekura agent.")
@click.option("--project-id", type=int, default=None, help="Only the cron jobs of this Cekura project.")
@click.option("--output", "-o", type=click.Path(path_type=Path), default=None, help="Write here instead of stdout.")
def import_jobs(agent_id: int | None, project_id: int | None, output: Path | None) -> None:
    """Read the team's scheduled jobs from Cekura (/schedules/v1/cron-jobs/) and print them as jobs.toml
    entries: cron, timezone, endpoint, agent, scenarios or tags, frequency, enabled. An entry that needs a person
    (no run endpoint here, a required field Cekura's job does not hold) is printed commented out, with why."""
    from pydantic import SecretStr

    from scheduler.cekura import CekuraClient
    from scheduler.importing import cron_jobs_as_toml
    from scheduler.transport import http_client

    try:
        settings = load_settings(check_database=False)
        key: SecretStr = settings.require_api_key()
    except SettingsError as error:
        raise click.ClickException(str(error)) from None
    configure_logging(settings.log_level, settings.log_format)

    async def read() -> list[object]:
        async with http_client(max_connections=2) as http:
            client = CekuraClient(http=http, base_url=settings.base_url, api_key=key)
            return await client.cron_jobs(agent_id=agent_id, project_id=project_id)

    try:
        jobs = asyncio.run(read())
    except CekuraError as error:
        raise click.ClickException(str(error)) from None
    source = f"{settings.base_url}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    text, written, commented = cron_jobs_as_toml(jobs, source=source)
    if output is not None:
        output.write_text(text, encoding="utf-8")
    else:
        click.echo(text, nl=False)
    finished = f", {commented} of them commented out to finish by hand" if commented else ""
    click.echo(f"{written} cron jobs imported{finished}", err=True)
