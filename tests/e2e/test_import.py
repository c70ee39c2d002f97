"""``cekura-scheduler import``: Cekura's cron jobs, read over HTTP from the simulator, become a jobs.toml that
``validate`` passes, every shape of cron job included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from click.testing import CliRunner
from jsonschema import Draft202012Validator

from scheduler.cli import main
from scheduler.config import load_config
from scheduler.simulator import Simulator
from tests.conftest import API_KEY
from tests.unit.test_simulator_schema import _formats, allow_null, operation

CRON_JOBS: list[dict[str, Any]] = [
    {  # scenarios, a zone, personalities, active
        "id": 11,
        "agent": 12,
        "name": "Nightly support",
        "crontab_expression": "0 3 * * *",
        "timezone": "America/New_York",
        "scenario_ids": [101, 102],
        "personalities": [7],
        "tags": [],
        "frequency": 2,
        "execution_mode": "voice",
        "notify_on": "failure",
        "is_active": True,
    },
    {  # tags, text by the deprecated flag, inactive, no zone, a name that is no job name
        "id": 12,
        "agent": 12,
        "name": "smoke: tagged / every 15'",
        "crontab_expression": "*/15 9-17 * * 1-5",
        "tags": ["smoke"],
        "run_as_text": True,
        "is_active": False,
    },
    {  # LiveKit, scenarios only in scenarios_data, the same name as the first
        "id": 13,
        "agent": 34,
        "name": "Nightly support",
        "crontab_expression": "30 2 * * 0",
        "timezone": "Europe/Paris",
        "scenarios_data": [{"id": 301, "name": "Greeting", "agent": 34}],
        "execution_mode": "livekit_v2",
        "frequency": 1,
    },
    {  # Pipecat: the agent is in pipecat_data, never sent
        "id": 14,
        "agent": 34,
        "name": "pipecat",
        "crontab_expression": "0 * * * *",
        "scenario_ids": [401],
        "execution_mode": "pipecat_v2",
    },
    {  # needs a person: VAPI needs an assistant id the cron job does not hold
        "id": 15,
        "agent": 12,
        "name": "vapi",
        "crontab_expression": "0 6 * * *",
        "scenario_ids": [501],
        "execution_mode": "vapi_webrtc",
    },
    {  # needs a person: no run endpoint for ello, and a cron Cekura took that is not 5 fields
        "id": 16,
        "name": "ello",
        "crontab_expression": "0 6 * * * *",
        "scenario_ids": [601],
        "execution_mode": "ello",
    },
    {"id": 17, "crontab_expression": "not a cron", "scenario_ids": [701]},  # only the required field, wrong
]


def environment(simulator: Simulator, **extra: str) -> dict[str, str]:
    return {"CEKURA_API_KEY": API_KEY, "CEKURA_BASE_URL": simulator.base_url, **extra}


def test_import_prints_each_shape_of_cron_job_as_entries_validate_passes(simulator: Simulator, tmp_path: Path) -> None:
    assert not list(
        Draft202012Validator(allow_null(operation("cron_jobs_list")["responses"]["200"]), format_checker=_formats)
        .iter_errors(CRON_JOBS)
    )  # fmt: skip
    simulator.config.cron_jobs = CRON_JOBS

    imported = CliRunner().invoke(main, ["import"], env=environment(simulator))

    assert imported.exit_code == 0, imported.output
    assert imported.stderr.strip() == "7 cron jobs imported, 3 of them commented out to finish by hand"
    path = tmp_path / "jobs.toml"
    path.write_text(imported.stdout)
    config = load_config(path, env={})
    assert sorted(config.jobs) == ["Nightly-support", "Nightly-support-2", "pipecat", "smoke-tagged-every-15"]
    nightly, smoke = config.jobs["Nightly-support"], config.jobs["smoke-tagged-every-15"]
    assert (nightly.cron, str(nightly.timezone), nightly.endpoint, nightly.agent) == (
        "0 3 * * *",
        "America/New_York",
        "voice",
        12,
    )
    assert ([ref.id for ref in nightly.scenarios], nightly.frequency, nightly.enabled) == ([101, 102], 2, True)
    assert nightly.body == {"personality_ids": [7]}
    assert (smoke.endpoint, smoke.tags, smoke.enabled, str(smoke.timezone)) == ("text", ("smoke",), False, "UTC")
    livekit = config.jobs["Nightly-support-2"]
    assert (livekit.endpoint, [ref.id for ref in livekit.scenarios], livekit.agent) == ("livekit_v2", [301], 34)
    assert config.jobs["pipecat"].agent is None
    assert "Deactivate each one in Cekura once it runs here" in imported.stdout
    assert "# note: Cekura notified on failure: set alerts = [...] to hear about it here" in imported.stdout
    assert "# to finish by hand: the vapi_webrtc endpoint needs body.vapi_assistant_id" in imported.stdout
    assert "# to finish by hand: execution mode 'ello' has no run endpoint in cekura-scheduler" in imported.stdout
    assert "# [jobs.cekura-17]" in imported.stdout

    validated = CliRunner().invoke(main, ["validate", str(path)], env=environment(simulator))
    assert validated.exit_code == 0, validated.output


def test_import_filters_by_agent_and_says_what_cekura_answered_when_it_refuses(
    simulator: Simulator, tmp_path: Path
) -> None:
    simulator.config.cron_jobs = CRON_JOBS
    output = tmp_path / "agent34.toml"

    imported = CliRunner().invoke(main, ["import", "--agent-id", "34", "-o", str(output)], env=environment(simulator))
    refused = CliRunner().invoke(main, ["import"], env=environment(simulator, CEKURA_API_KEY="wrong"))

    assert imported.exit_code == 0 and imported.stdout == ""
    assert sorted(load_config(output, env={}).jobs) == ["Nightly-support", "pipecat"]
    assert refused.exit_code == 1
    assert "401" in refused.stderr and "Invalid API key" in refused.stderr
