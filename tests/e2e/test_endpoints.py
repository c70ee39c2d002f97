"""Every endpoint family, and scenarios chosen by tag and by folder, fired by the daemon at the simulator over HTTP.

The simulator checks each body as Cekura does (against the same endpoint descriptions, held against the document
by tests/unit/test_endpoints.py); here each body it received is also held against the document's request schema.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner
from jsonschema import Draft202012Validator

from scheduler.cli import main
from scheduler.endpoints import ENDPOINTS
from scheduler.simulator import Simulator
from scheduler.store import Store
from tests.conftest import HEADER, finished
from tests.unit.test_endpoints import JOBS
from tests.unit.test_simulator_schema import _formats, allow_null, operation

TAGGED = """
[jobs.tagged]
every = "1s"
endpoint = "voice"
agent = 12
tags = ["smoke"]

[jobs.foldered]
every = "1s"
endpoint = "sip"
agent = 12
folder_path = "Sales.Inbound"
project_id = 7
"""


def every_endpoint() -> str:
    return "".join(
        f'\n[jobs.{name}]\nevery = "1s"\nendpoint = "{name}"\n{lines}\n'.replace("frequency = 150", "frequency = 2")
        for name, lines in JOBS.items()
    )


def test_a_job_on_each_endpoint_passes_against_the_simulator(run: Callable[..., Store], simulator: Simulator) -> None:
    simulator.config.tags = {"smoke": [101]}
    simulator.config.folders = {"Sales.Inbound": [101]}
    store = run(jobs=every_endpoint(), until=lambda s: all(finished(s, name) for name in JOBS), timeout=30)

    for name in JOBS:
        assert finished(store, name)[0].outcome == "passed", (name, finished(store, name)[0].error)
    accepted = [entry for entry in simulator.submissions if entry.status_code in (200, 201)]
    assert {entry.endpoint for entry in accepted} == {endpoint.path for endpoint in ENDPOINTS.values()}
    for entry in accepted:
        schema = allow_null(operation(entry.endpoint)["request"])
        assert not list(Draft202012Validator(schema, format_checker=_formats).iter_errors(entry.body)), entry


def test_tag_and_folder_jobs_run_what_cekura_selects_and_history_counts_their_runs(
    run: Callable[..., Store], simulator: Simulator, tmp_path: Path, sqlite_url: str
) -> None:
    simulator.config.tags = {"smoke": [101, 102, 103]}
    simulator.config.folders = {"Sales.Inbound": [201]}

    store = run(jobs=TAGGED, until=lambda s: bool(finished(s, "tagged") and finished(s, "foldered")))

    tagged, foldered = finished(store, "tagged")[0], finished(store, "foldered")[0]
    recorded = store.get_fire(tagged.id)
    assert recorded is not None
    assert (tagged.outcome, tagged.runs_created, len(recorded.runs)) == ("passed", 3, 3)
    assert (foldered.outcome, foldered.runs_created) == ("passed", 1)
    bodies = {entry.endpoint: entry.body for entry in simulator.submissions}
    assert bodies["run_scenarios"]["tags"] == ["smoke"] and "scenarios" not in bodies["run_scenarios"]
    assert (bodies["run_scenarios_sip"]["folder_path"], bodies["run_scenarios_sip"]["project_id"]) == (
        "Sales.Inbound",
        7,
    )

    history = CliRunner().invoke(main, ["history", "tagged", "--database", sqlite_url])
    assert history.exit_code == 0
    assert "runs" in history.output.splitlines()[0] and f" {tagged.result_id} " in history.output
    assert any(line.split()[-1] == "3" for line in history.output.splitlines()[1:] if str(tagged.result_id) in line)
    config = tmp_path / "validate.toml"
    config.write_text(HEADER + TAGGED)
    validated = CliRunner().invoke(main, ["validate", str(config)], env={"INBOX": "json://127.0.0.1:9/x"})
    assert validated.exit_code == 0, validated.output
    assert "scenarios tagged smoke: how many runs a fire creates is only known at fire time" in validated.output
    assert "besides 2 jobs whose runs are counted at fire time" in validated.output


def test_a_tag_that_selects_nothing_is_cekuras_rejection_recorded_and_alerted(
    run: Callable[..., Store], simulator: Simulator
) -> None:
    store = run(jobs=TAGGED.split("[jobs.foldered]")[0], until=lambda s: bool(finished(s, "tagged")))

    fire = finished(store, "tagged")[0]
    assert fire.outcome == "failed" and fire.error_status_code == 400
    assert "No scenarios found for the given tags" in (fire.error or "")
