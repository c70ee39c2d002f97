"""The Cekura simulator over real HTTP on 127.0.0.1, with an injected clock instead of sleeping."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

import httpx
import pytest

from scheduler.simulator import Simulator, SimulatorConfig, running_simulator, serve
from tests.conftest import FakeClock

KEY = {"X-CEKURA-API-KEY": "sim-key"}
LIVEKIT = "/test_framework/v1/scenarios/run_scenarios_livekit_v2/"
PIPECAT = "/test_framework/v1/scenarios/run_scenarios_pipecat_v2/"
VOICE = "/test_framework/v1/scenarios/run_scenarios/"
TEXT = "/test_framework/v1/scenarios/run_scenarios_text/"
RESULTS = "/test_framework/v1/results/"
RESULTS_V2 = "/test_framework/v2/results/"
REQUIRED = "This field is required."
NOT_INT = "A valid integer is required."
TOO_BIG = "Ensure this value is less than or equal to 100."
TOO_SMALL = "Ensure this value is greater than or equal to 1."
ONE_OF = "Either scenarios, tags, or folder_path must be provided."
ONE_V2 = [{"scenario": 101}]
TWO_V2 = [{"scenario": 101}, {"scenario": 102, "publish_data_message": {"room": "r1"}}]
INTERRUPTIONS = {
    "id": 702,
    "name": "Interruptions",
    "type": "numeric",
    "score": 0,
    "explanation": ["No interruptions."],
}


def submit(client: httpx.Client, name: str = "n", *scenarios: int, frequency: int = 1) -> httpx.Response:
    items = [{"scenario": scenario} for scenario in scenarios or (101,)]
    return client.post(LIVEKIT, json={"scenarios": items, "agent": 12, "name": name, "frequency": frequency})


def result(client: httpx.Client, result_id: int) -> dict[str, Any]:
    response = client.get(f"{RESULTS}{result_id}/")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize(
    ("path", "body", "status", "agent", "as_text"),
    [
        (LIVEKIT, {"scenarios": TWO_V2, "agent": 12}, 200, 12, False),
        (PIPECAT, {"scenarios": TWO_V2}, 200, 1, False),  # a pipecat body names no agent: a fixed one
        (VOICE, {"scenarios": [101, 102], "agent_id": 12}, 201, 12, False),
        (TEXT, {"scenarios": [101, 102], "agent_id": 12}, 201, 12, True),
    ],
)
def test_each_endpoint_starts_scenarios_times_frequency_runs(
    client: httpx.Client, path: str, body: dict[str, Any], status: int, agent: int, as_text: bool
) -> None:
    response = client.post(path, json={**body, "name": "nightly@1", "frequency": 2, "ignored": True})

    assert response.status_code == status
    started = response.json()
    assert started["id"] == 9001
    assert (started["agent"], started["run_as_text"], started["status"]) == (agent, as_text, "pending")
    assert started["name"] == "nightly@1"
    assert started["created_at"] == "2026-01-05T10:00:00Z"
    assert [run["id"] for run in started["runs"]] == [55501, 55502, 55503, 55504]
    assert [run["scenario"] for run in started["runs"]] == [101, 101, 102, 102]
    assert started["runs"][0] == {
        "id": 55501,
        "status": "pending",
        "scenario": 101,
        "scenario_name": "Scenario 101",
        "inbound_number": "+11234567890",
        "test_profile_data": None,
    }
    assert result(client, 9001)["agent"] == agent


def test_each_personality_and_test_profile_named_multiplies_the_runs(client: httpx.Client) -> None:
    overrides = {"personality_ids": [7, 8], "personality_id": 9, "test_profile_ids": [3, 4]}
    body = {"scenarios": [101], "agent_id": 12, "name": "n", "frequency": 2, **overrides}
    started = client.post(VOICE, json=body).json()
    assert len(started["runs"]) == 1 * 2 * 3 * 2  # scenarios x frequency x personalities x test profiles
    again = client.post(VOICE, json={**body, "name": "m", "personality_id": 7, "test_profile_ids": None}).json()
    assert len(again["runs"]) == 2 * 2  # a single id already in the list is merged, not added


def test_result_and_run_ids_keep_increasing(client: httpx.Client) -> None:
    first = submit(client, "a", 101, frequency=2).json()
    second = submit(client, "b", 101).json()

    assert (first["id"], second["id"]) == (9001, 9002)
    assert second["runs"][0]["id"] == 55503


@pytest.mark.parametrize(
    ("path", "body", "errors"),
    [
        (LIVEKIT, {"agent": 12}, {"scenarios": [REQUIRED]}),
        (LIVEKIT, {"scenarios": ONE_V2, "agent": "twelve"}, {"agent": [NOT_INT]}),
        (LIVEKIT, {"scenarios": [], "agent": 12}, {"scenarios": ["This list may not be empty."]}),
        (PIPECAT, {"scenarios": "101"}, {"scenarios": ['Expected a list of items but got type "str".']}),
        (PIPECAT, {"scenarios": ONE_V2, "frequency": 101}, {"frequency": [TOO_BIG]}),
        (PIPECAT, {"scenarios": ONE_V2, "frequency": 0}, {"frequency": [TOO_SMALL]}),
        (
            PIPECAT,
            {"scenarios": [*ONE_V2, {"publish_data_message": 1}]},
            {"scenarios": ["1.scenario: This field is required."]},
        ),
        (VOICE, {"scenarios": [101]}, {"agent_id": [REQUIRED]}),
        (
            VOICE,
            {"scenarios": [101], "agent_id": 12, "tags": ["smoke"]},
            {"non_field_errors": ["Only one of scenarios, tags or folder_path may be given."]},
        ),
        (VOICE, {"agent_id": 12, "tags": ["nothing"]}, {"tags": ["No scenarios found for the given tags."]}),
        (VOICE, {"agent_id": 12}, {"scenarios": [ONE_OF]}),
        (VOICE, {"scenarios": [101], "agent_id": 12, "frequency": 0}, {"frequency": [TOO_SMALL]}),
        (TEXT, {"scenarios": [101], "agent_id": "twelve"}, {"agent_id": [NOT_INT]}),
        (
            TEXT,
            {"agent_id": 12, "folder_path": "Sales.Inbound"},
            {"project_id": ["project_id is required when using folder_path."]},
        ),
    ],
)
def test_invalid_submissions_answer_400_field_maps_and_create_nothing(
    client: httpx.Client, sim: Simulator, path: str, body: dict[str, Any], errors: dict[str, Any]
) -> None:
    response = client.post(path, json={**body, "name": "bad@1"})

    assert response.status_code == 400
    assert response.json() == errors
    assert client.get(RESULTS, params={"search": "bad@1"}).json()["count"] == 0
    assert (sim.submissions[-1].status_code, sim.submissions[-1].result_id) == (400, None)


def test_voice_frequency_has_no_upper_bound(client: httpx.Client) -> None:
    response = client.post(VOICE, json={"scenarios": [101], "agent_id": 12, "frequency": 150})

    assert response.status_code == 201
    assert len(response.json()["runs"]) == 150


def test_unknown_scenario_answers_400_like_cekura(client: httpx.Client, sim: Simulator) -> None:
    sim.config.unknown_scenarios = {404}

    response = submit(client, "x", 101, 404)

    assert response.status_code == 400
    assert response.json() == {"scenarios": ["Invalid scenario IDs or scenarios not found"]}
    assert sim.submissions[-1].result_id is None


def test_body_that_is_not_a_json_object_answers_400(client: httpx.Client) -> None:
    response = client.post(LIVEKIT, content=b"[1, 2", headers={"Content-Type": "application/json"})

    assert response.status_code == 400
    assert "JSON" in response.json()["detail"]


def test_unknown_endpoints_answer_404_and_are_not_logged(client: httpx.Client, sim: Simulator) -> None:
    unknown_submit = client.post("/test_framework/v1/scenarios/run_scenarios_pipecat/", json={})
    unknown_path = client.get("/test_framework/v1/nothing/here/")

    assert (unknown_submit.status_code, unknown_path.status_code) == (404, 404)
    assert unknown_submit.json() == unknown_path.json() == {"detail": "Not found."}
    assert client.get(f"{RESULTS}123/").json() == {"detail": "Not found."}
    assert sim.submissions == []


@pytest.mark.parametrize("headers", [{}, {"X-CEKURA-API-KEY": "wrong"}])
def test_bad_or_missing_key_answers_401_everywhere(
    sim: Simulator, client: httpx.Client, headers: dict[str, str]
) -> None:
    with httpx.Client(base_url=sim.base_url, headers=headers) as anonymous:
        answers = [
            anonymous.post(LIVEKIT, json={"scenarios": [{"scenario": 1}], "agent": 1, "name": "n"}),
            anonymous.get(RESULTS),
            anonymous.get(f"{RESULTS}9001/"),
            anonymous.post(f"{RESULTS}9001/end_calls/"),
        ]

    assert [answer.status_code for answer in answers] == [401] * 4
    assert answers[0].json() == {"detail": "Invalid API key."}
    assert (sim.submissions[0].status_code, sim.submissions[0].result_id, sim.submissions[0].name) == (
        401,
        None,
        "n",
    )
    assert client.get(RESULTS).json()["count"] == 0


def test_api_key_none_accepts_any_non_empty_key(sim: Simulator) -> None:
    sim.config.api_key = None
    with httpx.Client(base_url=sim.base_url) as http:
        assert http.get(RESULTS, headers={"X-CEKURA-API-KEY": "anything"}).status_code == 200
        assert http.get(RESULTS).status_code == 401


def test_status_follows_the_clock_to_completed(client: httpx.Client, clock: FakeClock) -> None:
    result_id = submit(client, "support@1", 101, 102).json()["id"]
    seen = [result(client, result_id)]
    for seconds in (3.3, 0.1, 3.2, 0.1, 3.2, 0.1):  # three phases, a third of run_duration each
        clock.advance(seconds)
        seen.append(result(client, result_id))

    assert [body["status"] for body in seen] == [
        "pending",
        "pending",
        "running",
        "running",
        "evaluating",
        "evaluating",
        "completed",
    ]
    assert [body["success_rate"] for body in seen[:-1]] == [0.0] * 6
    done = seen[-1]
    assert done["success_rate"] == 100.0
    assert (done["total_runs_count"], done["success_runs_count"], done["failed_runs_count"]) == (
        "2",
        "2",
        "0",
    )
    assert list(done["runs"]) == ["55501", "55502"]
    run = done["runs"]["55501"]
    assert (run["id"], run["scenario"], run["scenario_name"]) == (55501, 101, "Scenario 101")
    assert (run["status"], run["success"], run["error_message"]) == ("completed", True, None)
    assert re.fullmatch(r"\d\d:\d\d", run["duration"])
    assert run["evaluation"]["metrics"] == [
        {
            "id": 701,
            "name": "Refund policy followed",
            "eval_type": "binary",
            "passed": True,
            "explanation": ["Agent confirmed the refund amount."],
        },
        INTERRUPTIONS,
    ]
    assert done["failed_reasons"] == {"issues": [], "total_failed_runs": 0}
    assert seen[2]["runs"]["55501"]["success"] is None


def test_fail_and_error_outcomes(client: httpx.Client, sim: Simulator, clock: FakeClock) -> None:
    sim.config.behaviours = {101: ["fail"], 102: ["error"]}
    failing = submit(client, "f", 101, 100).json()["id"]
    broken = submit(client, "e", 102, 100).json()["id"]
    clock.advance(10)

    failed_test = result(client, failing)
    assert failed_test["status"] == "completed"  # tests that fail are not an infrastructure failure
    assert (failed_test["failed_runs_count"], failed_test["success_runs_count"]) == ("1", "1")
    assert failed_test["success_rate"] == 50.0
    run = failed_test["runs"]["55501"]
    assert (run["status"], run["success"]) == ("completed", False)
    assert run["evaluation"]["metrics"][0]["passed"] is False
    assert run["evaluation"]["metrics"][0]["explanation"] == ["Agent did not confirm the refund amount."]
    assert run["evaluation"]["metrics"][1] == INTERRUPTIONS  # a numeric 0 is not what failed
    assert failed_test["failed_reasons"] == {
        "issues": [
            {
                "rank": 1,
                "run_ids": [55501],
                "description": "Agent did not confirm the refund amount.",
                "affected_count": 1,
            }
        ],
        "total_failed_runs": 1,
    }

    infra = result(client, broken)
    assert infra["status"] == "failed"
    run = infra["runs"]["55503"]
    assert (run["status"], run["success"], run["error_message"]) == ("failed", False, "Call did not connect")
    assert infra["failed_reasons"]["issues"][0]["description"] == "Call did not connect"


def test_behaviours_cycle_one_outcome_per_run(client: httpx.Client, sim: Simulator, clock: FakeClock) -> None:
    sim.config.behaviours = {101: ["pass", "fail"]}
    first = submit(client, "a", 101, frequency=3).json()["id"]
    second = submit(client, "b", 101).json()["id"]
    clock.advance(10)

    assert [run["success"] for run in result(client, first)["runs"].values()] == [True, False, True]
    assert [run["success"] for run in result(client, second)["runs"].values()] == [False]


def test_hang_runs_until_end_calls(client: httpx.Client, sim: Simulator, clock: FakeClock) -> None:
    sim.config.behaviours = {102: ["hang"]}
    result_id = submit(client, "h", 101, 102).json()["id"]
    clock.advance(3600)

    stuck = result(client, result_id)
    assert (stuck["status"], stuck["success_rate"]) == ("running", 0.0)
    assert stuck["runs"]["55502"]["status"] == "running"

    ended = client.post(f"{RESULTS}{result_id}/end_calls/")

    assert (ended.status_code, ended.json()) == (200, {"detail": "Calls ended."})
    after = result(client, result_id)
    assert after["status"] == "cancelled"
    assert after["runs"]["55502"]["status"] == "cancelled"
    assert after["runs"]["55501"]["status"] == "completed"  # finished runs keep their outcome
    assert client.post(f"{RESULTS}777/end_calls/").status_code == 404


def test_end_calls_on_a_pending_result_cancels_every_run(client: httpx.Client, clock: FakeClock) -> None:
    result_id = submit(client, "p", 101, frequency=2).json()["id"]
    client.post(f"{RESULTS}{result_id}/end_calls/")
    clock.advance(3600)

    body = result(client, result_id)
    assert body["status"] == "cancelled"
    assert {run["status"] for run in body["runs"].values()} == {"cancelled"}


def test_terminal_state_is_logged_once(
    client: httpx.Client, sim: Simulator, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    sim.config.behaviours = {102: ["fail"]}
    result_id = submit(client, "support@2026-01-05T10:00", 101, 102).json()["id"]
    clock.advance(10)
    with caplog.at_level(logging.INFO, logger="scheduler.simulator"):
        result(client, result_id)
        result(client, result_id)

    lines = [record.getMessage() for record in caplog.records if "runs failed" in record.getMessage()]
    assert lines == ["simulator: result 9001 (support@2026-01-05T10:00) completed, 1/2 runs failed"]


def test_search_by_name_newest_first_with_pagination(client: httpx.Client) -> None:
    for name in ("nightly@1", "other@1", "nightly@2", "Nightly@3"):
        submit(client, name)

    first = client.get(RESULTS, params={"search": "nightly@", "page": 1, "page_size": 2}).json()
    assert first["count"] == 3
    assert [item["name"] for item in first["results"]] == ["Nightly@3", "nightly@2"]
    assert set(first["results"][0]) == {"id", "name", "status", "agent", "created_at", "success_rate", "runs"}
    assert first["previous"] is None
    second = client.get(first["next"]).json()
    assert [item["id"] for item in second["results"]] == [9001]
    assert second["next"] is None
    assert client.get(second["previous"]).json() == first
    assert client.get(RESULTS, params={"search": "nightly", "page": 3, "page_size": 2}).status_code == 404
    assert client.get(RESULTS, params={"search": "nobody"}).json() == {
        "count": 0,
        "next": None,
        "previous": None,
        "results": [],
    }


def configure(client: httpx.Client, **changes: Any) -> dict[str, Any]:
    """Change the simulator's knobs as a demo or another process does: through its config endpoint."""
    response = client.post("/_simulator/config", json=changes)
    assert response.status_code == 200, response.text
    config: dict[str, Any] = response.json()
    return config


def test_v2_results_paths_answer_as_the_v1_ones(client: httpx.Client, clock: FakeClock) -> None:
    configure(client, behaviours={"102": ["hang"]})
    result_id = submit(client, "v2@1", 101, 102).json()["id"]
    clock.advance(10)

    assert client.get(f"{RESULTS_V2}{result_id}/").json() == result(client, result_id)
    v1_hits = client.get(RESULTS, params={"search": "v2@"}).json()
    v2_hits = client.get(RESULTS_V2, params={"search": "v2@"}).json()
    assert v2_hits["results"] == v1_hits["results"]
    assert v2_hits["count"] == 1
    ended = client.post(f"{RESULTS_V2}{result_id}/end_calls/")
    assert (ended.status_code, result(client, result_id)["status"]) == (200, "cancelled")
    assert client.get(f"{RESULTS_V2}777/").status_code == 404
    assert client.post(f"{RESULTS_V2}777/end_calls/").status_code == 404
    # Run endpoints exist under v1 only: the v2 `scenarios` paths are another resource.
    v2_run = client.post("/test_framework/v2/scenarios/run_scenarios_livekit_v2/", json={"scenarios": ONE_V2})
    assert v2_run.status_code == 404


def test_a_submission_without_a_name_shows_none(client: httpx.Client) -> None:
    started = client.post(LIVEKIT, json={"scenarios": ONE_V2, "agent": 12})

    assert "name" not in started.json()
    assert "name" not in result(client, started.json()["id"])
    assert client.get(RESULTS).json()["results"][0]["name"] == ""  # a search hit must carry a name


def test_a_name_longer_than_the_document_allows_answers_400(client: httpx.Client, sim: Simulator) -> None:
    response = submit(client, "n" * 256)

    assert response.status_code == 400
    assert response.json() == {"name": ["Ensure this field has no more than 255 characters."]}
    assert submit(client, "n" * 255).status_code == 200


@pytest.mark.parametrize(
    ("outcome", "status", "has_success", "metrics"),
    [
        ("timeout", "timeout", False, []),
        ("cancelled", "cancelled", False, []),
        ("unjudged", "completed", False, [INTERRUPTIONS]),
        ("null", "completed", True, [INTERRUPTIONS]),
    ],
)
def test_outcomes_that_end_without_a_verdict(
    client: httpx.Client, clock: FakeClock, outcome: str, status: str, has_success: bool, metrics: list[Any]
) -> None:
    configure(client, behaviours={"101": [outcome]})
    result_id = submit(client, "v", 101, 102).json()["id"]
    clock.advance(10)

    body = result(client, result_id)
    run = body["runs"]["55501"]
    assert run["status"] == status
    assert ("success" in run) is has_success
    assert run.get("success") is None
    assert run["evaluation"]["metrics"] == metrics
    assert body["status"] == "completed"  # a run can end timeout or cancelled inside a completed result
    assert (body["success_runs_count"], body["failed_runs_count"], body["success_rate"]) == ("1", "0", 50.0)
    assert body["failed_reasons"] == {"issues": [], "total_failed_runs": 0}


def test_a_result_fails_only_when_one_of_its_runs_errors(client: httpx.Client, clock: FakeClock) -> None:
    configure(client, behaviours={"101": ["timeout"], "102": ["cancelled"], "103": ["error"]})
    quiet = submit(client, "q", 101, 102).json()["id"]
    broken = submit(client, "b", 101, 103).json()["id"]
    clock.advance(10)

    assert result(client, quiet)["status"] == "completed"
    assert result(client, broken)["status"] == "failed"


def test_phases_are_spread_evenly_over_run_duration(client: httpx.Client, clock: FakeClock) -> None:
    before = submit(client, "before", 101).json()["id"]
    configure(client, phases=["in_queue", "scaling_up", "running", "in_progress"])
    started = submit(client, "p", 101).json()
    seen = []
    for _ in range(5):
        body = result(client, started["id"])
        seen.append((body["status"], body["runs"]["55502"]["status"]))
        clock.advance(2.5)

    assert started["status"] == started["runs"][0]["status"] == "pending"
    assert seen == [
        ("in_queue", "in_queue"),
        ("scaling_up", "scaling_up"),
        ("running", "running"),
        ("in_progress", "in_progress"),
        ("completed", "completed"),
    ]
    assert result(client, before)["status"] == "completed"  # a result keeps the timeline it started with


@pytest.mark.parametrize(
    ("phases", "expected"),
    [
        (["in_queue", "running", "evaluating"], ["in_queue", "running", "running", "running"]),
        (["scaling_up", "evaluating"], ["scaling_up", "running", "running", "running"]),
    ],
)
def test_hang_walks_its_phases_up_to_running_and_stays_there(
    client: httpx.Client, clock: FakeClock, phases: list[str], expected: list[str]
) -> None:
    configure(client, phases=phases, behaviours={"101": ["hang"]})
    result_id = submit(client, "h", 101).json()["id"]
    seen = []
    for seconds in (0, 5.5, 3, 3600):
        clock.advance(seconds)
        body = result(client, result_id)
        assert body["runs"]["55501"]["status"] == body["status"]
        seen.append(body["status"])

    assert seen == expected


@pytest.mark.parametrize("status", ["completed", "failed", "timeout", "cancelled"])
def test_result_status_replaces_the_end_of_every_result(client: httpx.Client, clock: FakeClock, status: str) -> None:
    configure(client, result_status=status, behaviours={"102": ["error"], "103": ["hang"]})
    result_id = submit(client, "r", 101, 102).json()["id"]
    hanging = submit(client, "h", 103).json()["id"]
    assert result(client, result_id)["status"] == "pending"
    clock.advance(10)

    body = result(client, result_id)
    assert body["status"] == status
    assert [run["status"] for run in body["runs"].values()] == ["completed", "failed"]  # runs keep theirs
    assert result(client, hanging)["status"] == "running"  # a result that never ends never reports it
    client.post(f"{RESULTS}{hanging}/end_calls/")
    ended = result(client, hanging)
    assert (ended["status"], ended["runs"]["55503"]["status"]) == (status, "cancelled")


FAILED_ISSUES = [
    {"rank": 1, "run_ids": [55501], "description": "Agent did not confirm the refund amount.", "affected_count": 1},
    {"rank": 2, "run_ids": [55502], "description": "Call did not connect", "affected_count": 1},
]


@pytest.mark.parametrize(
    ("shape", "failures", "clean"),
    [
        ("dict", {"issues": FAILED_ISSUES, "total_failed_runs": 2}, {"issues": [], "total_failed_runs": 0}),
        ("list", FAILED_ISSUES, []),
        (
            "string",
            "2 of 3 runs failed: Agent did not confirm the refund amount (1 run); Call did not connect (1 run).",
            "",
        ),
        ("null", None, None),
    ],
)
def test_failed_reasons_take_each_shape_the_document_allows(
    client: httpx.Client, clock: FakeClock, shape: str, failures: Any, clean: Any
) -> None:
    configure(client, behaviours={"101": ["fail"], "102": ["error"]})
    failing = submit(client, "f", 101, 102, 103).json()["id"]
    passing = submit(client, "p", 103).json()["id"]
    clock.advance(10)
    configure(client, failed_reasons=shape)  # a shape of the answer: applies to results that already exist

    assert result(client, failing)["failed_reasons"] == failures
    assert result(client, passing)["failed_reasons"] == clean


def test_metric_form_score_gives_the_deprecated_binary_metrics(client: httpx.Client, clock: FakeClock) -> None:
    configure(client, behaviours={"101": ["pass", "fail"]}, metric_form="score")
    result_id = submit(client, "m", 101, frequency=2).json()["id"]
    clock.advance(10)

    metrics = [run["evaluation"]["metrics"] for run in result(client, result_id)["runs"].values()]
    binary = {"id": 701, "name": "Refund policy followed", "type": "binary_workflow_adherence"}
    assert metrics == [
        [{**binary, "score": 5, "explanation": ["Agent confirmed the refund amount."]}, INTERRUPTIONS],
        [{**binary, "score": 0, "explanation": ["Agent did not confirm the refund amount."]}, INTERRUPTIONS],
    ]


def test_search_hits_carry_run_summaries_and_a_success_rate_from_0_to_1(client: httpx.Client, clock: FakeClock) -> None:
    configure(client, behaviours={"102": ["fail"]})
    submit(client, "hit@1", 101, 102)
    assert client.get(RESULTS, params={"search": "hit@"}).json()["results"][0]["success_rate"] == 0.0
    clock.advance(10)

    assert client.get(RESULTS, params={"search": "hit@"}).json()["results"] == [
        {
            "id": 9001,
            "name": "hit@1",
            "status": "completed",
            "agent": 12,
            "created_at": "2026-01-05T10:00:00Z",
            "success_rate": 0.5,
            "runs": {"55501": {"id": 55501, "status": "completed"}, "55502": {"id": 55502, "status": "completed"}},
        }
    ]
    assert result(client, 9001)["success_rate"] == 50.0  # the detail's is a percentage


def test_sparse_search_hits_carry_only_id_name_and_run_statuses(client: httpx.Client) -> None:
    submit(client, "sparse@1", 101, 102)
    configure(client, sparse_search=True)

    assert client.get(RESULTS, params={"search": "sparse@"}).json()["results"] == [
        {"id": 9001, "name": "sparse@1", "runs": {"0": {"status": "pending"}, "1": {"status": "pending"}}}
    ]


def test_end_calls_are_recorded_and_served(client: httpx.Client, sim: Simulator) -> None:
    result_id = submit(client, "e").json()["id"]
    assert client.get("/_simulator/end_calls").json() == []

    client.post(f"{RESULTS}{result_id}/end_calls/")
    client.post(f"{RESULTS_V2}{result_id}/end_calls/")
    client.post(f"{RESULTS}777/end_calls/")
    with httpx.Client(base_url=sim.base_url) as anonymous:
        assert anonymous.post(f"{RESULTS}{result_id}/end_calls/").status_code == 401  # refused: not recorded
        served = anonymous.get("/_simulator/end_calls").json()

    assert sim.ended_calls == served == [9001, 9001, 777]


def test_knobs_have_defaults_and_are_patched_through_the_config_endpoint(client: httpx.Client) -> None:
    defaults = SimulatorConfig().to_json()
    knobs = ("phases", "result_status", "failed_reasons", "metric_form", "sparse_search")
    assert {knob: defaults[knob] for knob in knobs} == {
        "phases": ["pending", "running", "evaluating"],
        "result_status": None,
        "failed_reasons": "dict",
        "metric_form": "eval_type",
        "sparse_search": False,
    }

    changed = {
        "phases": ["in_queue", "evaluating"],
        "result_status": "timeout",
        "failed_reasons": "string",
        "metric_form": "score",
        "sparse_search": True,
        "behaviours": {"101": ["timeout", "cancelled", "unjudged", "null"]},
    }
    config = configure(client, **changed)

    assert {key: config[key] for key in changed} == changed
    assert configure(client, result_status=None)["result_status"] is None


@pytest.mark.parametrize(
    "changes",
    [
        {"behaviours": {"101": ["explode"]}},
        {"behaviours": {"101": "pass"}},
        {"behaviours": {"101": []}},
        {"phases": []},
        {"phases": ["completed"]},
        {"phases": "running"},
        {"result_status": "running"},
        {"failed_reasons": "set"},
        {"metric_form": "stars"},
        {"sparse_search": "yes"},
    ],
)
def test_invalid_knobs_are_refused(client: httpx.Client, sim: Simulator, changes: dict[str, Any]) -> None:
    before = sim.config.to_json()

    response = client.post("/_simulator/config", json=changes)

    assert response.status_code == 400
    assert "invalid config" in response.json()["detail"]
    assert sim.config.to_json() == before
    fields: dict[str, Any] = {
        key: {int(k): v for k, v in value.items()} if key == "behaviours" else value for key, value in changes.items()
    }
    with pytest.raises(ValueError):
        SimulatorConfig(**fields)


def test_429_carries_retry_after_and_changes_nothing(client: httpx.Client, sim: Simulator) -> None:
    sim.config.error_429_rate = 1.0
    sim.config.retry_after = 7

    throttled = submit(client, "t")
    poll = client.get(RESULTS)

    assert (throttled.status_code, poll.status_code) == (429, 429)
    assert throttled.headers["Retry-After"] == "7"
    assert (sim.submissions[0].status_code, sim.submissions[0].result_id) == (429, None)
    sim.config.error_429_rate = 0.0
    assert client.get(RESULTS).json()["count"] == 0


def test_500_creates_no_result(client: httpx.Client, sim: Simulator) -> None:
    sim.config.error_500_rate = 1.0

    failed = submit(client, "boom")

    assert (failed.status_code, failed.json()) == (500, {"detail": "Internal server error"})
    assert client.get(RESULTS, params={"search": "boom"}).json()["count"] == 0
    assert (sim.submissions[0].status_code, sim.submissions[0].result_id) == (500, None)
    sim.config.error_500_rate = 0.0
    assert submit(client, "ok").json()["id"] == 9001


def test_dropped_answer_still_creates_the_result(client: httpx.Client, sim: Simulator) -> None:
    sim.config.drop_rate = 1.0

    with pytest.raises(httpx.TransportError):
        submit(client, "lost@1")

    assert (sim.submissions[0].status_code, sim.submissions[0].result_id) == (None, 9001)
    found = client.get(RESULTS, params={"search": "lost@1"}).json()
    assert [item["id"] for item in found["results"]] == [9001]
    assert result(client, 9001)["name"] == "lost@1"


def test_balance_refuses_submissions_needing_more_runs(client: httpx.Client, sim: Simulator) -> None:
    sim.config.balance = 3

    too_big = submit(client, "big", 101, 102, frequency=2)
    fits = submit(client, "fits", 101, 102)
    over = submit(client, "over", 101, 102)

    assert (too_big.status_code, fits.status_code, over.status_code) == (402, 200, 402)
    assert over.json() == {"detail": "Insufficient balance for this operation"}
    assert sim.config.balance == 1


def test_latency_delays_every_api_request(client: httpx.Client, sim: Simulator) -> None:
    sim.config.latency = 0.2
    started = time.monotonic()

    client.get(RESULTS)

    assert time.monotonic() - started >= 0.2


def test_seeded_faults_replay_the_same_way() -> None:
    def statuses() -> list[int]:
        config = SimulatorConfig(error_429_rate=0.5, seed=42)
        with (
            running_simulator(config) as simulator,
            httpx.Client(base_url=simulator.base_url, headers=KEY) as http,
        ):
            return [http.get(RESULTS).status_code for _ in range(12)]

    first = statuses()
    assert first == statuses()
    assert {200, 429} == set(first)


def test_control_endpoints_show_submissions_and_patch_config(
    client: httpx.Client, sim: Simulator, clock: FakeClock
) -> None:
    assert client.get("/_simulator/health").json() == {"ok": True}
    submit(client, "logged@1")
    with httpx.Client(base_url=sim.base_url) as no_key:
        log = no_key.get("/_simulator/submissions").json()
        patched = no_key.post("/_simulator/config", json={"behaviours": {"101": ["fail"]}, "balance": 5})
        rejected = no_key.post("/_simulator/config", json={"error_429_rate": 2})
        unknown = no_key.post("/_simulator/config", json={"colour": "blue"})

    assert log == [
        {
            "result_id": 9001,
            "endpoint": "run_scenarios_livekit_v2",
            "name": "logged@1",
            "body": {"scenarios": [{"scenario": 101}], "agent": 12, "name": "logged@1", "frequency": 1},
            "received_at": "2026-01-05T10:00:00Z",
            "status_code": 200,
        }
    ]
    assert patched.status_code == 200
    assert (patched.json()["behaviours"], patched.json()["balance"]) == ({"101": ["fail"]}, 5)
    assert (sim.config.behaviours, sim.config.balance) == ({101: ["fail"]}, 5)
    assert (rejected.status_code, unknown.status_code) == (400, 400)
    assert sim.config.error_429_rate == 0.0
    result_id = submit(client, "now failing").json()["id"]
    clock.advance(10)
    assert result(client, result_id)["failed_runs_count"] == "1"


def test_start_and_stop_inside_an_event_loop(clock: FakeClock) -> None:
    async def scenario() -> tuple[int, int, str]:
        simulator = Simulator(SimulatorConfig(api_key=None), clock=clock)
        url = await simulator.start()
        try:
            async with httpx.AsyncClient(base_url=url, headers={"X-CEKURA-API-KEY": "k"}) as http:
                started = await http.post(VOICE, json={"agent_id": 3, "scenarios": [5]})
                listed = await http.get(RESULTS)
        finally:
            await simulator.stop()
        return started.status_code, listed.json()["count"], url

    status, count, url = asyncio.run(scenario())

    assert (status, count) == (201, 1)
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)


class ListeningLine(logging.Handler):
    """Catches the line `serve` logs once it listens."""

    def __init__(self) -> None:
        super().__init__()
        self.url = ""
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "listening on" in record.getMessage():
            self.url = record.getMessage().rsplit(" ", 1)[-1]
            self.seen.set()


def test_serve_logs_its_url_and_stops_on_the_event(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> tuple[str, dict[str, Any]]:
        listening = ListeningLine()
        logging.getLogger("scheduler.simulator").addHandler(listening)
        stop = asyncio.Event()
        task = asyncio.create_task(serve(SimulatorConfig(), host="127.0.0.1", port=0, stop=stop))
        try:
            await asyncio.wait_for(listening.seen.wait(), 5)
            async with httpx.AsyncClient(base_url=listening.url) as http:
                health: dict[str, Any] = (await http.get("/_simulator/health")).json()
        finally:
            logging.getLogger("scheduler.simulator").removeHandler(listening)
            stop.set()
            await asyncio.wait_for(task, 5)
        return listening.url, health

    with caplog.at_level(logging.INFO, logger="scheduler.simulator"):
        url, health = asyncio.run(scenario())

    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
    assert health == {"ok": True}
