"""Every run endpoint: its description held against Cekura's request schema, what validate says of a job's body,
and the body the scheduler builds, which the document must accept."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from scheduler.cekura import build_submission
from scheduler.config import Config, parse_config
from scheduler.endpoints import ENDPOINTS, BodyErrors, check_value
from scheduler.errors import ConfigError, ConfigIssue
from scheduler.simulator import Simulator
from tests.unit.test_simulator_schema import _formats, allow_null, check, operation

PATH = Path("/etc/cekura/jobs.toml")
# Values each field is probed with: our check and the document's schema must agree on every one.
PROBES: list[Any] = [
    None,
    0,
    1,
    -1,
    100,
    101,
    1.5,
    True,
    "x",
    "same_number",
    "a@example.com",
    "n" * 256,
    [],
    [1],
    ["a"],
    [1, "a"],
    [{"scenario": 1}],
    [{"scenario": "x"}],
    [{"scenario": 1, "publish_data_message": {"a": 1}}],
    [{"scenario": 1, "websocket_url": 7}],
    [{"websocket_url": "wss://a"}],
    {},
    {"url": "u"},
    {"url": 1},
    {"agent_name": None},
    {"pipecat_agent_name": 3},
    {"elevenlabs_branch_id": "b"},
]
# Where the document's schema checks a format our description does not (Cekura checks it when it answers).
UNCHECKED_FORMAT = {("json", "file")}

# One job per endpoint, as a user would write it: each must validate, and its body must satisfy the document.
JOBS: dict[str, str] = {
    "livekit_v2": 'scenarios = [101, { id = 102, publish_data_message = { lang = "en" } }]\n'
    'body = { livekit_data = { agent_name = "support" }, concurrency_limit = 2 }',
    "pipecat_v2": 'scenarios = [101]\nbody = { pipecat_data = { pipecat_agent_name = "bot" } }',
    "voice": 'agent = 12\ntags = ["smoke"]\nbody = { mode = "different_numbers", personality_ids = [3] }',
    "text": 'assistant_id = "asst_1"\nfolder_path = "Sales.Inbound"\nproject_id = 7\n'
    'body = { websocket_url = "wss://agent/ws" }',
    "sip": 'agent = 12\nscenarios = [101]\nbody = { sip_endpoint = "sip:agent@example.com" }',
    "chirp": 'agent = 12\nscenarios = [101]\nbody = { websocket_url = "wss://pcm" }',
    "agora": "agent = 12\nscenarios = [101]\nfrequency = 150",
    "elevenlabs": 'agent = 12\nscenarios = [101]\nbody = { elevenlabs_data = { elevenlabs_branch_id = "b" } }',
    "vapi_webrtc": 'scenarios = [101]\nbody = { vapi_assistant_id = "va_1" }',
    "retell_webrtc": 'agent = 12\nscenarios = [101]\nbody = { retell_agent_id = "r_1" }',
    "websockets": 'agent = 12\nscenarios = [{ id = 101, websocket_url = "wss://a/chat" }]\nfrequency = 3',
    "email": 'agent = 12\nscenarios = [101]\nbody = { agent_email = "agent@example.com" }',
    "json": 'agent = 12\nspec = { name = "suite", scenarios = [{ instructions = "Ask for a refund" }] }\n'
    'body = { channel = "text" }',
}


def parse(text: str) -> Config:
    return parse_config(dedent(text), path=PATH, env={})


def issues_of(text: str) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    return caught.value.issues


def job(endpoint: str, lines: str) -> str:
    return f'[jobs.nightly]\ncron = "0 3 * * *"\nendpoint = "{endpoint}"\n{dedent(lines)}\n'


def document_accepts(schema: dict[str, Any], value: Any) -> bool:
    return not any(Draft202012Validator(allow_null(schema), format_checker=_formats).iter_errors(value))


def ours_accept(endpoint: str, name: str, value: Any) -> bool:
    errors = BodyErrors()
    check_value(ENDPOINTS[endpoint].fields[name], value, (name,), errors, strict=False)
    return not errors.items


# --- the descriptions, against the document -------------------------------------------------------------------


def test_every_run_endpoint_that_names_stored_scenarios_is_described() -> None:
    assert sorted(endpoint.path for endpoint in ENDPOINTS.values()) == sorted(
        path.stem for path in (Path(__file__).parent / "cekura_openapi").glob("run_scenarios*.json")
    )


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_each_description_has_the_documents_fields_required_fields_and_answer_code(endpoint: str) -> None:
    described = ENDPOINTS[endpoint]
    document = operation(described.path)

    assert set(described.fields) == set(document["request"]["properties"])
    assert set(described.required) == set(document["request"].get("required", []))
    assert str(described.created) in document["responses"]


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_each_field_accepts_exactly_what_the_document_accepts(endpoint: str) -> None:
    properties = operation(ENDPOINTS[endpoint].path)["request"]["properties"]
    disagreements = [
        (name, value)
        for name, schema in properties.items()
        if (endpoint, name) not in UNCHECKED_FORMAT
        for value in PROBES
        if ours_accept(endpoint, name, value) != document_accepts(schema, value)
    ]
    assert disagreements == []


# --- validate: what a job writes, checked against its endpoint -------------------------------------------------


@pytest.mark.parametrize("endpoint", sorted(JOBS))
def test_a_job_on_each_endpoint_builds_a_body_the_document_accepts(endpoint: str) -> None:
    config = parse(job(endpoint, JOBS[endpoint]))
    submission = build_submission(config.jobs["nightly"], "nightly@2026-12-01T03:00:00Z")
    schema = operation(submission.endpoint)["request"]

    assert submission.endpoint == ENDPOINTS[endpoint].path
    assert not list(Draft202012Validator(allow_null(schema), format_checker=_formats).iter_errors(submission.body))
    assert set(submission.body) <= set(schema["properties"])  # nothing Cekura would silently ignore


def test_each_body_shape_carries_scenarios_agent_and_name_where_its_endpoint_wants_them() -> None:
    bodies = {
        endpoint: build_submission(parse(job(endpoint, JOBS[endpoint])).jobs["nightly"], "n@1").body
        for endpoint in JOBS
    }
    assert bodies["livekit_v2"]["scenarios"] == [
        {"scenario": 101},
        {"scenario": 102, "publish_data_message": {"lang": "en"}},
    ]
    assert "agent" not in bodies["livekit_v2"]  # its scenarios carry their agent
    assert bodies["voice"] | {"name": "-"} == {
        "name": "-",
        "frequency": 1,
        "tags": ["smoke"],
        "agent_id": 12,
        "mode": "different_numbers",
        "personality_ids": [3],
    }
    assert (bodies["text"]["folder_path"], bodies["text"]["project_id"], bodies["text"]["assistant_id"]) == (
        "Sales.Inbound",
        7,
        "asst_1",
    )
    assert bodies["websockets"] == {
        "scenarios": [{"scenario": 101, "websocket_url": "wss://a/chat"}],
        "frequency": 3,
        "agent": 12,
    }
    assert "name" not in bodies["email"] and bodies["email"]["agent_id"] == 12
    assert "frequency" not in bodies["json"] and bodies["json"]["spec"]["name"] == "suite"
    assert bodies["agora"]["frequency"] == 150  # the voice family has no ceiling on frequency


@pytest.mark.parametrize(
    ("endpoint", "lines", "line", "message"),
    [
        ("sip", "agent = 12\nscenarios = [1]\n[jobs.nightly.body]\nsip_endpont = \"sip:a\"", 7,
         "unknown key 'body.sip_endpont' for run_scenarios_sip (did you mean 'sip_endpoint'?)"),
        ("voice", "agent = 12\nscenarios = [1]\n[jobs.nightly.body]\nconcurrency_limit = \"two\"", 7,
         "body.concurrency_limit: a valid integer is required"),
        ("voice", "agent = 12\nscenarios = [1]\n[jobs.nightly.body]\nconcurrency_limit = 0", 7,
         "body.concurrency_limit: ensure this value is greater than or equal to 1"),
        ("voice", 'agent = 12\nscenarios = [1]\n[jobs.nightly.body]\nmode = "same"', 7,
         'body.mode: "same" is not a valid choice (one of same_number, different_numbers)'),
        ("livekit_v2", "scenarios = [1]\n[jobs.nightly.body]\nlivekit_data = { agent_nam = \"a\" }", 6,
         "unknown key 'body.livekit_data.agent_nam' for run_scenarios_livekit_v2"),
        ("livekit_v2", "scenarios = [1]\nfrequency = 101", 5, "frequency: at most 100 on the livekit_v2 endpoint"),
        ("email", "scenarios = [1]\nfrequency = 101", 5, "frequency: at most 100 on the email endpoint"),
        ("vapi_webrtc", "scenarios = [1]", 1, 'the vapi_webrtc endpoint needs body.vapi_assistant_id = "..."'),
        ("voice", "scenarios = [1]", 1, 'the voice endpoint needs agent = <agent id> (or assistant_id = "...")'),
        ("voice", 'agent = 12\nscenarios = [1]\ntags = ["smoke"]', 1,
         "scenarios, tags: set only one (Cekura takes them as alternatives)"),
        ("sip", 'agent = 12\nfolder_path = "Sales.Inbound"', 5,
         "folder_path needs project_id = <Cekura project id> (Cekura requires it)"),
        ("livekit_v2", 'tags = ["smoke"]', 4, "the livekit_v2 endpoint takes no tags: set scenarios"),
        ("voice", "agent = 12", 1,
         "the voice endpoint needs scenarios = [<scenario id>, ...] or tags = ... or folder_path = ..."),
        ("voice", 'agent = 12\nassistant_id = "asst_1"\nscenarios = [1]', 5, "set agent or assistant_id, not both"),
        ("retell_webrtc", 'assistant_id = "a"\nscenarios = [1]', 4,
         "the retell_webrtc endpoint takes no assistant_id: set agent"),
        ("voice", 'agent = 12\nscenarios = [{ id = 1, publish_data_message = "hi" }]', 5,
         "scenarios[0].publish_data_message: not taken by the voice endpoint (it takes only scenario ids)"),
        ("json", "agent = 12\nscenarios = [1]", 5, "the json endpoint takes no scenarios: set spec"),
        ("json", "agent = 12\nspec = { a = 1 }\nfrequency = 2", 6, "the json endpoint takes no frequency"),
        ("pipecat_v2", "agent = 12\nscenarios = [1]", 4,
         "the pipecat_v2 endpoint takes no agent (the agent is in pipecat_data)"),
        ("sipp", "agent = 12\nscenarios = [1]", 3, "endpoint: unknown endpoint 'sipp' (did you mean 'sip'?)"),
    ],
)  # fmt: skip
def test_validate_places_each_problem_of_a_body_at_its_line(endpoint: str, lines: str, line: int, message: str) -> None:
    issues = issues_of(job(endpoint, lines))
    assert [(issue.line, issue.job) for issue in issues if issue.message.startswith(message)] == [(line, "nightly")], [
        str(issue) for issue in issues
    ]


def test_a_default_frequency_beyond_an_endpoints_ceiling_is_said_at_the_job() -> None:
    text = '[defaults]\nfrequency = 150\n\n[jobs.calls]\nevery = "1h"\nendpoint = "voice"\nagent = 1\nscenarios = [1]\n'
    text += '\n[jobs.rooms]\nevery = "1h"\nscenarios = [1]\n'
    issues = issues_of(text)
    assert [(issue.job, issue.message) for issue in issues] == [
        ("rooms", "frequency: at most 100 on the livekit_v2 endpoint")
    ]


def test_tag_folder_and_spec_jobs_have_no_run_count_until_they_fire() -> None:
    config = parse(job("voice", JOBS["voice"]) + job("text", JOBS["text"]).replace("nightly", "inbound"))
    assert (config.jobs["nightly"].runs_per_fire, config.jobs["inbound"].runs_per_fire) == (None, None)
    assert parse(job("sip", JOBS["sip"])).jobs["nightly"].runs_per_fire == 1


def test_the_readme_endpoint_table_names_every_endpoint_and_its_path() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for endpoint in ENDPOINTS.values():
        assert f"| `{endpoint.key}` | `{endpoint.path}` |" in readme, endpoint.key


@pytest.mark.parametrize("endpoint", sorted(JOBS))
def test_the_simulator_answers_each_endpoints_body_as_the_document_says(
    client: httpx.Client, sim: Simulator, endpoint: str
) -> None:
    sim.config.tags, sim.config.folders = {"smoke": [101, 102]}, {"Sales.Inbound": [201]}
    submission = build_submission(parse(job(endpoint, JOBS[endpoint])).jobs["nightly"], "nightly@1")

    answer = client.post(f"/test_framework/v1/scenarios/{submission.endpoint}/", json=submission.body)
    refused = client.post(
        f"/test_framework/v1/scenarios/{submission.endpoint}/", json={**submission.body, "frequency": "often"}
    )

    assert answer.status_code == ENDPOINTS[endpoint].created, answer.text
    assert check(answer, submission.endpoint)["runs"]
    if "frequency" in ENDPOINTS[endpoint].fields and "400" in operation(submission.endpoint)["responses"]:
        assert refused.status_code == 400 and refused.json() == {"frequency": ["A valid integer is required."]}
        check(refused, submission.endpoint)


def test_a_spec_is_sent_as_json_so_a_toml_date_in_it_is_an_error_at_its_line() -> None:
    issues = issues_of(job("json", "agent = 12\n[jobs.nightly.spec]\nname = 'suite'\nwhen = 2026-01-01"))
    assert [(issue.line, issue.message.split(":")[0]) for issue in issues] == [
        (7, "dates and times cannot be sent as JSON")
    ]
