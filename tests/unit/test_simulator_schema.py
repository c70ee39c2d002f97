"""Every answer of the simulator, held against the response schema of its operation in Cekura's API document.

The schemas are copies kept in `tests/unit/cekura_openapi/` (see its README). They are OpenAPI 3.0 flavoured, so
`"nullable": true` is turned into an allowed null before a Draft 2020-12 validator reads them. Status codes the
document does not list for an operation must carry the `{"detail": "..."}` body every Cekura error has.
"""

from __future__ import annotations

import itertools
import json
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from jsonschema import Draft202012Validator, FormatChecker

from scheduler.simulator import (
    FAILED_REASONS,
    METRIC_FORMS,
    OUTCOMES,
    PHASES,
    TERMINAL,
    Simulator,
)
from tests.conftest import FakeClock

OPENAPI = Path(__file__).parent / "cekura_openapi"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "cekura-openapi"
KEY = {"X-CEKURA-API-KEY": "sim-key"}
VERSIONS = ("v1", "v2")
# Errors every endpoint can answer that no operation of the document lists; 404 is listed for detail and
# end_calls but not for the list, which answers it for a page out of range.
UNDOCUMENTED = {401, 402, 404, 429, 500}
BODIES: dict[str, dict[str, Any]] = {
    "run_scenarios_livekit_v2": {"scenarios": [{"scenario": 101}, {"scenario": 102}], "agent": 12},
    "run_scenarios_pipecat_v2": {"scenarios": [{"scenario": 101}, {"scenario": 102, "publish_data_message": {}}]},
    "run_scenarios": {"scenarios": [101, 102], "agent_id": 12},
    "run_scenarios_text": {"scenarios": [101, 102], "agent_id": 12},
}
INVALID: list[dict[str, Any]] = [
    {"scenarios": []},
    {"scenarios": "101"},
    {"frequency": 0},
    {"frequency": "often"},
    {"name": 7},
    {"name": "n" * 256},
]


# -- the document ------------------------------------------------------------------------------------------


@cache
def _operation_text(slug: str) -> str:
    return (OPENAPI / f"{slug}.json").read_text()


def operation(slug: str) -> dict[str, Any]:
    """One operation of Cekura's API document: its request schema and its response schemas by status code."""
    data: dict[str, Any] = json.loads(_operation_text(slug))
    return data


@cache
def statuses() -> frozenset[str]:
    """Cekura's one status list, shared by results and runs."""
    return frozenset(json.loads((OPENAPI / "status_enum.json").read_text()))


# Keywords whose value is a map from names (not keywords) to schemas.
_NAMED = ("properties", "patternProperties", "$defs", "definitions")


def allow_null(schema: Any) -> Any:
    """An OpenAPI 3.0 schema as JSON Schema: ``nullable: true`` allows null, and ``oneOf: [{}, {type: null}]``
    (the document's "any JSON or null", which taken literally rejects null since null matches both) is ``anyOf``."""
    if isinstance(schema, list):
        return [allow_null(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    converted: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _NAMED and isinstance(value, dict):
            converted[key] = {name: allow_null(item) for name, item in value.items()}
        elif key != "nullable":
            converted[key] = allow_null(value)
    if converted.get("oneOf") == [{}, {"type": "null"}]:
        converted["anyOf"] = converted.pop("oneOf")
    if schema.get("nullable") is True:
        kind = converted.get("type")
        if "enum" in converted:
            enum = {**converted, "enum": [*converted["enum"], None]}
            return {"anyOf": [enum, {"type": "null"}]}
        if isinstance(kind, str):
            converted["type"] = [kind, "null"]
        elif isinstance(kind, list) and "null" not in kind:
            converted["type"] = [*kind, "null"]
    return converted


_formats = FormatChecker()


@_formats.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    return not isinstance(value, str) or datetime.fromisoformat(value.replace("Z", "+00:00")).tzinfo is not None


@_formats.checks("uri", raises=ValueError)
def _uri(value: object) -> bool:
    return not isinstance(value, str) or bool(urlsplit(value).scheme and urlsplit(value).netloc)


def _errors(schema: Any, instance: Any) -> list[str]:
    validator = Draft202012Validator(allow_null(schema), format_checker=_formats)
    return [
        f"{'/'.join(str(part) for part in error.absolute_path) or 'body'}: {error.message}"
        for error in validator.iter_errors(instance)
    ]


def check(response: httpx.Response, slug: str) -> Any:
    """Hold an answer against the schema of its operation and status code; return its body."""
    body: Any = response.json() if response.content else None
    documented = operation(slug)["responses"]
    code = str(response.status_code)
    if code in documented:
        schema = documented[code]
        if schema is not None:
            problems = _errors(schema, body)
            assert not problems, f"{slug} {code} does not conform: {problems}\n{body}"
    else:
        assert response.status_code in UNDOCUMENTED, f"{slug} answered {code}, which nothing documents"
        assert isinstance(body, dict) and set(body) == {"detail"} and isinstance(body["detail"], str), body
    if response.status_code == 200 and slug.startswith("results_retrieve"):
        assert {run["status"] for run in body["runs"].values()} <= statuses()
    if response.status_code == 200 and slug.startswith("results_list"):
        for hit in body["results"]:
            assert {summary["status"] for summary in hit["runs"].values()} <= statuses()
    return body


# -- the simulator -----------------------------------------------------------------------------------------


def configure(client: httpx.Client, **changes: Any) -> None:
    assert client.post("/_simulator/config", json=changes).status_code == 200


def submit(client: httpx.Client, endpoint: str = "run_scenarios_livekit_v2", **fields: Any) -> Any:
    """Send a documented body (checked against the request schema) and check the answer."""
    body = {**BODIES[endpoint], **fields}
    assert not _errors(operation(endpoint)["request"], body)
    response = client.post(f"/test_framework/v1/scenarios/{endpoint}/", json=body)
    assert response.status_code in (200, 201), response.text
    return check(response, endpoint)


def look(client: httpx.Client, result_id: int, search: str = "") -> dict[str, Any]:
    """Check the detail and the search answers of both versions; return the detail."""
    details = []
    for version in VERSIONS:
        response = client.get(f"/test_framework/{version}/results/{result_id}/")
        assert response.status_code == 200
        details.append(check(response, f"results_retrieve_{version}"))
        listed = client.get(f"/test_framework/{version}/results/", params={"search": search})
        assert listed.status_code == 200
        check(listed, f"results_list_{version}")
    assert details[0] == details[1]
    detail: dict[str, Any] = details[0]
    return detail


def walk(client: httpx.Client, clock: FakeClock, result_id: int, search: str = "", steps: int = 12) -> list[str]:
    """Check every answer about a result from its start to past its end; return the statuses it showed."""
    seen = []
    for _ in range(steps):
        seen.append(look(client, result_id, search)["status"])
        clock.advance(1.0)
    return seen


# -- the tests ---------------------------------------------------------------------------------------------


def test_the_copies_are_the_shared_document_unchanged() -> None:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is not beside the repository")
    copies = sorted(OPENAPI.glob("*.json"))
    assert copies
    for copy in copies:
        assert copy.read_bytes() == (SHARED / copy.name).read_bytes(), f"{copy.name} differs from {SHARED}"


def test_nullable_becomes_an_allowed_null() -> None:
    assert allow_null({"type": "string", "nullable": True}) == {"type": ["string", "null"]}
    assert allow_null({"properties": {"next": {"type": "string", "nullable": True, "format": "uri"}}}) == {
        "properties": {"next": {"type": ["string", "null"], "format": "uri"}}
    }
    assert allow_null({"enum": ["a"], "nullable": True}) == {"anyOf": [{"enum": ["a", None]}, {"type": "null"}]}
    assert allow_null({"type": ["integer", "null"], "nullable": False}) == {"type": ["integer", "null"]}
    assert allow_null({"oneOf": [{}, {"type": "null"}]}) == {"anyOf": [{}, {"type": "null"}]}
    assert allow_null({"oneOf": [{"type": "string"}, {"type": "null"}]}) == {
        "oneOf": [{"type": "string"}, {"type": "null"}]
    }
    assert allow_null({"properties": {"nullable": {"type": "boolean"}}}) == {
        "properties": {"nullable": {"type": "boolean"}}
    }
    assert _errors({"type": "string", "nullable": True}, None) == []
    assert _errors({"type": "string"}, None) != []
    assert _errors({"oneOf": [{}, {"type": "null"}]}, None) == []


def test_every_schema_used_is_valid_json_schema() -> None:
    slugs = [
        *BODIES,
        *(f"results_{kind}_{version}" for kind in ("retrieve", "list", "end_calls") for version in VERSIONS),
    ]
    for slug in slugs:
        for schema in operation(slug)["responses"].values():
            if schema is not None:
                Draft202012Validator.check_schema(allow_null(schema))
    assert statuses() == {*PHASES, *TERMINAL}


@pytest.mark.parametrize("endpoint", sorted(BODIES))
@pytest.mark.parametrize("named", [True, False], ids=["named", "unnamed"])
def test_run_endpoints_and_the_results_they_start_conform(
    client: httpx.Client, clock: FakeClock, endpoint: str, named: bool
) -> None:
    fields = {"name": f"{endpoint}@1", "frequency": 2} if named else {}
    started = submit(client, endpoint, **fields)

    seen = walk(client, clock, started["id"], f"{endpoint}@" if named else "")

    assert len(started["runs"]) == (4 if named else 2)
    assert ("name" in started) is named
    assert seen[0] == "pending"
    assert seen[-1] == "completed"


@pytest.mark.parametrize("endpoint", sorted(BODIES))
@pytest.mark.parametrize("invalid", INVALID, ids=[f"{next(iter(body))}{i}" for i, body in enumerate(INVALID)])
def test_400_answers_conform(client: httpx.Client, sim: Simulator, endpoint: str, invalid: dict[str, Any]) -> None:
    response = client.post(f"/test_framework/v1/scenarios/{endpoint}/", json={**BODIES[endpoint], **invalid})

    assert response.status_code == 400
    check(response, endpoint)
    assert sim.submissions[-1].result_id is None


@pytest.mark.parametrize("endpoint", sorted(BODIES))
def test_400_for_a_bad_item_an_unknown_scenario_or_a_body_that_is_not_json(
    client: httpx.Client, sim: Simulator, endpoint: str
) -> None:
    sim.config.unknown_scenarios = {404}
    path = f"/test_framework/v1/scenarios/{endpoint}/"
    v2 = endpoint.endswith("_v2")
    bad_item = [{"scenario": 101}, {"publish_data_message": 1}] if v2 else [101, "x"]
    unknown = [{"scenario": 404}] if v2 else [404]
    answers = [
        client.post(path, json={**BODIES[endpoint], "scenarios": bad_item}),
        client.post(path, json={**BODIES[endpoint], "scenarios": unknown}),
        client.post(path, content=b"[1, 2", headers={"Content-Type": "application/json"}),
        client.post(path, json={key: value for key, value in BODIES[endpoint].items() if key != "scenarios"}),
    ]

    assert [answer.status_code for answer in answers] == [400] * 4
    for answer in answers:
        check(answer, endpoint)


@pytest.mark.parametrize("endpoint", sorted(BODIES))
def test_402_429_and_500_answer_a_detail(client: httpx.Client, sim: Simulator, endpoint: str) -> None:
    path = f"/test_framework/v1/scenarios/{endpoint}/"
    sim.config.balance = 1
    poor = client.post(path, json=BODIES[endpoint])
    sim.config.balance = None
    sim.config.error_500_rate = 1.0
    broken = client.post(path, json=BODIES[endpoint])
    sim.config.error_500_rate = 0.0
    sim.config.error_429_rate = 1.0
    throttled = [
        (client.post(path, json=BODIES[endpoint]), endpoint),
        *((client.get(f"/test_framework/{v}/results/"), f"results_list_{v}") for v in VERSIONS),
        *((client.get(f"/test_framework/{v}/results/9001/"), f"results_retrieve_{v}") for v in VERSIONS),
        *((client.post(f"/test_framework/{v}/results/9001/end_calls/"), f"results_end_calls_{v}") for v in VERSIONS),
    ]

    assert (poor.status_code, broken.status_code) == (402, 500)
    check(poor, endpoint)
    check(broken, endpoint)
    for response, slug in throttled:
        assert response.status_code == 429
        check(response, slug)


def test_401_everywhere_answers_a_detail(sim: Simulator) -> None:
    with httpx.Client(base_url=sim.base_url, headers={"X-CEKURA-API-KEY": "wrong"}) as wrong:
        answers = [
            *(
                (wrong.post(f"/test_framework/v1/scenarios/{endpoint}/", json=body), endpoint)
                for endpoint, body in BODIES.items()
            ),
            *((wrong.get(f"/test_framework/{v}/results/"), f"results_list_{v}") for v in VERSIONS),
            *((wrong.get(f"/test_framework/{v}/results/9001/"), f"results_retrieve_{v}") for v in VERSIONS),
            *((wrong.post(f"/test_framework/{v}/results/9001/end_calls/"), f"results_end_calls_{v}") for v in VERSIONS),
        ]

    for response, slug in answers:
        assert response.status_code == 401
        check(response, slug)


@pytest.mark.parametrize("version", VERSIONS)
def test_404_for_an_unknown_result_or_page_conforms(client: httpx.Client, version: str) -> None:
    results = f"/test_framework/{version}/results/"
    detail = client.get(f"{results}777/")
    ended = client.post(f"{results}777/end_calls/")
    page = client.get(results, params={"page": 2})

    assert (detail.status_code, ended.status_code, page.status_code) == (404, 404, 404)
    check(detail, f"results_retrieve_{version}")
    check(ended, f"results_end_calls_{version}")
    check(page, f"results_list_{version}")


@pytest.mark.parametrize("version", VERSIONS)
def test_end_calls_answers_conform(client: httpx.Client, clock: FakeClock, sim: Simulator, version: str) -> None:
    configure(client, behaviours={"102": ["hang"]})
    result_id = submit(client, name="e@1")["id"]
    clock.advance(5)

    ended = client.post(f"/test_framework/{version}/results/{result_id}/end_calls/")

    assert ended.status_code == 200
    check(ended, f"results_end_calls_{version}")
    assert look(client, result_id, "e@")["status"] == "cancelled"
    assert sim.ended_calls == [result_id]


@pytest.mark.parametrize("outcome", sorted(OUTCOMES))
def test_each_outcome_conforms_through_its_timeline(
    client: httpx.Client, clock: FakeClock, sim: Simulator, outcome: str
) -> None:
    configure(client, behaviours={"101": [outcome]})
    result_id = submit(client, name=f"{outcome}@1")["id"]

    seen = walk(client, clock, result_id, f"{outcome}@")

    assert seen[-1] == {"hang": "running", "error": "failed"}.get(outcome, "completed")
    client.post(f"/test_framework/v1/results/{result_id}/end_calls/")
    look(client, result_id, f"{outcome}@")


@pytest.mark.parametrize(("shape", "form"), list(itertools.product(FAILED_REASONS, METRIC_FORMS)))
def test_each_failed_reasons_shape_and_metric_form_conforms(
    client: httpx.Client, clock: FakeClock, shape: str, form: str
) -> None:
    configure(
        client,
        failed_reasons=shape,
        metric_form=form,
        behaviours={"101": ["pass", "fail", "error", "unjudged", "null", "timeout", "cancelled"]},
    )
    failing = submit(client, name="mixed@1", frequency=7)["id"]
    passing = submit(client, name="clean@1", scenarios=[{"scenario": 102}])["id"]
    clock.advance(10)

    detail = look(client, failing, "mixed@")
    look(client, passing, "clean@")

    assert detail["status"] == "failed"
    assert detail["failed_runs_count"] == "2"


@pytest.mark.parametrize("status", [None, *TERMINAL])
def test_each_result_status_conforms(client: httpx.Client, clock: FakeClock, status: str | None) -> None:
    configure(client, result_status=status, behaviours={"102": ["fail"]})
    result_id = submit(client, name="r@1")["id"]

    seen = walk(client, clock, result_id, "r@")

    assert seen[-1] == (status or "completed")


@pytest.mark.parametrize("phase", PHASES)
def test_each_phase_conforms(client: httpx.Client, clock: FakeClock, phase: str) -> None:
    configure(client, phases=[phase])
    result_id = submit(client, name="p@1")["id"]

    seen = walk(client, clock, result_id, "p@")

    assert set(seen) == {phase, "completed"}


def test_phases_and_result_status_give_each_of_the_ten_statuses(client: httpx.Client, clock: FakeClock) -> None:
    configure(client, phases=list(PHASES))
    seen: set[str] = set()
    for status in TERMINAL:
        configure(client, result_status=status)
        result_id = submit(client, name=f"{status}@1")["id"]
        seen.update(walk(client, clock, result_id, f"{status}@", steps=13))

    assert seen == statuses()


@pytest.mark.parametrize("sparse", [False, True], ids=["full", "sparse"])
@pytest.mark.parametrize("version", VERSIONS)
def test_search_pages_conform(client: httpx.Client, clock: FakeClock, sparse: bool, version: str) -> None:
    configure(client, sparse_search=sparse, behaviours={"102": ["fail", "hang", "error"]})
    for name in ("s@1", "s@2", "s@3"):
        submit(client, name=name)
    client.post("/test_framework/v1/scenarios/run_scenarios/", json=BODIES["run_scenarios"])  # no name
    clock.advance(10)

    pages = []
    response = client.get(f"/test_framework/{version}/results/", params={"page_size": 1})
    while True:
        assert response.status_code == 200
        pages.append(check(response, f"results_list_{version}"))
        if pages[-1]["next"] is None:
            break
        response = client.get(pages[-1]["next"])

    hits = [hit for page in pages for hit in page["results"]]
    assert [hit["name"] for hit in hits] == ["", "s@3", "s@2", "s@1"]
    assert all(("status" in hit) is not sparse for hit in hits)
