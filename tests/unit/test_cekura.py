"""The Cekura client over httpx.MockTransport: request shapes, answer parsing, and HTTP mapped to domain errors."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from pydantic import SecretStr

from scheduler.cekura import CekuraClient, Result, ResultSummary, Submission, build_submission
from scheduler.config import Job, parse_config
from scheduler.errors import (
    CekuraAmbiguousError,
    CekuraAuthError,
    CekuraError,
    CekuraNotFoundError,
    CekuraRejectedError,
    CekuraResponseError,
    CekuraUnavailableError,
)

API_KEY = "ck-live-5f3a9e1d7c"
BASE = "https://api.cekura.test/"
NAME = "nightly@2026-11-29T03:00:00Z"
STARTED = {
    "id": 9001,
    "agent": 12,
    "status": "pending",
    "run_as_text": False,
    "created_at": "2026-01-05T10:00:00Z",
    "runs": [
        {
            "id": 55501,
            "status": "pending",
            "scenario": 101,
            "scenario_name": "Refund request",
            "number": None,
            "inbound_number": "+11234567890",
            "test_profile_data": None,
            "outbound_dial_window_opens_at": None,
        }
    ],
}
DETAIL = {
    "id": 9001,
    "name": NAME,
    "status": "completed",
    "success_rate": 50.0,
    "total_runs_count": "2",
    "success_runs_count": "1",
    "failed_runs_count": "1",
    "runs": {
        "55501": {"id": 55501, "scenario": 101, "status": "completed", "success": True, "duration": "01:12"},
        "55502": {
            "id": 55502,
            "scenario": 102,
            "scenario_name": "Cancel order",
            "status": "completed",
            "success": False,
            "error_message": None,
            "duration": "00:45",
            "evaluation": {
                "metrics": [
                    {"id": 1, "name": "Greets", "type": "binary", "score": 1, "explanation": "ok"},
                    {"id": 2, "name": "Cancels", "type": "binary", "score": 0, "explanation": "never cancelled"},
                ]
            },
            "some_new_field": {"nested": True},
        },
    },
    "failed_reasons": {"issues": [{"rank": 1, "run_ids": [55502], "description": "x"}], "total_failed_runs": 1},
    "brand_new_top_level_field": [1, 2, 3],
}

Handler = Callable[[httpx.Request], httpx.Response]
E = TypeVar("E", bound=CekuraError)


def make_job(toml: str) -> Job:
    config = parse_config(f'[jobs.nightly]\ncron = "0 3 * * *"\n{toml}', path=Path("jobs.toml"), env={})
    return config.jobs["nightly"]


def call(handler: Handler, action: Callable[[CekuraClient], Any]) -> Any:
    """Run one client action against a MockTransport handler."""

    async def main() -> Any:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            client = CekuraClient(http=http, base_url=BASE, api_key=SecretStr(API_KEY))
            return await action(client)

    return asyncio.run(main())


def answer(status: int, body: Any = None, **kwargs: Any) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body, **kwargs) if body is not None else httpx.Response(status, **kwargs)

    return handler


def failing(error: type[httpx.TransportError]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error("boom", request=request)

    return handler


def submit(client: CekuraClient) -> Any:
    return client.submit(Submission(endpoint="run_scenarios_livekit_v2", body={"name": NAME, "scenarios": []}))


def get_result(client: CekuraClient) -> Any:
    return client.get_result(9001)


def raises(error_type: type[E], handler: Handler, action: Callable[[CekuraClient], Any]) -> E:
    with pytest.raises(error_type) as caught:
        call(handler, action)
    assert API_KEY not in str(caught.value)
    return caught.value


# --- build_submission -------------------------------------------------------------------------------------------


def test_livekit_v2_body() -> None:
    job = make_job('agent = 12\nfrequency = 2\nscenarios = [101, { id = 102, publish_data_message = { room = "r1" } }]')
    submission = build_submission(job, NAME)
    assert submission.endpoint == "run_scenarios_livekit_v2"
    assert submission.body == {
        "name": NAME,
        "frequency": 2,
        "agent": 12,
        "scenarios": [{"scenario": 101}, {"scenario": 102, "publish_data_message": {"room": "r1"}}],
    }


def test_pipecat_v2_body_has_no_agent() -> None:
    job = make_job('endpoint = "pipecat_v2"\nscenarios = [{ id = 301, publish_data_message = "go" }]')
    submission = build_submission(job, NAME)
    assert submission.endpoint == "run_scenarios_pipecat_v2"
    assert submission.body == {
        "name": NAME,
        "frequency": 1,
        "scenarios": [{"scenario": 301, "publish_data_message": "go"}],
    }


@pytest.mark.parametrize(("endpoint", "path"), [("voice", "run_scenarios"), ("text", "run_scenarios_text")])
def test_voice_and_text_bodies_use_ids_and_agent_id(endpoint: str, path: str) -> None:
    job = make_job(f'endpoint = "{endpoint}"\nagent = 34\nfrequency = 3\nscenarios = [301, {{ id = 302 }}]')
    submission = build_submission(job, NAME)
    assert submission.endpoint == path
    assert submission.body == {"name": NAME, "frequency": 3, "agent_id": 34, "scenarios": [301, 302]}


def test_body_extras_are_merged() -> None:
    job = make_job(
        'agent = 12\nscenarios = [101]\n[jobs.nightly.body]\nconcurrency_limit = 2\nmock_tool_names = ["lookup"]\n'
        'livekit_data = { agent_name = "front-desk" }\n'
    )
    body = build_submission(job, NAME).body
    assert body["concurrency_limit"] == 2
    assert body["mock_tool_names"] == ["lookup"]
    assert body["livekit_data"] == {"agent_name": "front-desk"}
    assert (body["name"], body["frequency"], body["agent"]) == (NAME, 1, 12)


def test_building_a_submission_leaves_the_job_unchanged() -> None:
    job = make_job("agent = 12\nscenarios = [101]\n[jobs.nightly.body]\nconcurrency_limit = 2\n")
    build_submission(job, NAME)
    assert job.body == {"concurrency_limit": 2}


# --- requests ---------------------------------------------------------------------------------------------------


def test_submit_posts_the_body_with_the_api_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json=STARTED)

    job = make_job("agent = 12\nscenarios = [101]")
    call(handler, lambda client: client.submit(build_submission(job, NAME)))
    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == "https://api.cekura.test/test_framework/v1/scenarios/run_scenarios_livekit_v2/"
    assert request.headers["X-CEKURA-API-KEY"] == API_KEY
    assert json.loads(request.content) == {"name": NAME, "frequency": 1, "agent": 12, "scenarios": [{"scenario": 101}]}


def test_get_result_path() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=DETAIL)

    call(handler, get_result)
    assert seen[0].method == "GET"
    assert seen[0].url.path == "/test_framework/v2/results/9001/"
    assert seen[0].headers["X-CEKURA-API-KEY"] == API_KEY


def test_end_calls_posts_to_its_path() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"detail": "Calls ended."})

    assert call(handler, lambda client: client.end_calls(9001)) is None
    assert (seen[0].method, seen[0].url.path) == ("POST", "/test_framework/v2/results/9001/end_calls/")
    assert seen[0].headers["X-CEKURA-API-KEY"] == API_KEY


def test_end_calls_accepts_an_empty_answer() -> None:
    call(answer(204), lambda client: client.end_calls(9001))


def test_end_calls_on_unknown_result_is_not_found() -> None:
    raises(CekuraNotFoundError, answer(404, {"detail": "Not found."}), lambda client: client.end_calls(9001))


# --- answers ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201])
def test_run_started_answer_is_parsed(status: int) -> None:
    result: Result = call(answer(status, STARTED), submit)
    assert (result.id, result.status, result.terminal) == (9001, "pending", False)
    assert [(run.id, run.scenario, run.scenario_name) for run in result.runs] == [(55501, 101, "Refund request")]


def test_result_detail_with_runs_keyed_by_id_and_counts_as_strings() -> None:
    result: Result = call(answer(200, DETAIL), get_result)
    assert (result.name, result.status, result.terminal) == (NAME, "completed", True)
    assert (result.total_runs_count, result.success_runs_count, result.failed_runs_count) == (2, 1, 1)
    assert [(run.id, run.success) for run in result.runs] == [(55501, True), (55502, False)]
    assert [metric.name for metric in result.runs[1].failed_metrics()] == ["Cancels"]


def test_counts_as_integers_and_missing_optionals() -> None:
    result: Result = call(answer(200, {"id": 9001, "status": "running", "failed_runs_count": 0}), get_result)
    assert result.failed_runs_count == 0
    assert (result.total_runs_count, result.success_rate, result.runs) == (None, None, [])


@pytest.mark.parametrize("status", ["completed", "failed", "timeout", "cancelled"])
def test_terminal_statuses(status: str) -> None:
    result: Result = call(answer(200, {"id": 9001, "status": status}), get_result)
    assert result.terminal


# --- errors -----------------------------------------------------------------------------------------------------


def test_400_field_map_is_rejected_with_cekura_words() -> None:
    body = {"scenarios": ["Invalid scenario IDs or scenarios not found"], "frequency": ["Too big.", "Really."]}
    error = raises(CekuraRejectedError, answer(400, body), submit)
    assert error.status_code == 400
    assert error.permanent
    assert "scenarios: Invalid scenario IDs or scenarios not found" in str(error)
    assert "frequency: Too big.; Really." in str(error)
    assert NAME in str(error)


def test_400_list_is_rejected_with_cekura_words() -> None:
    error = raises(CekuraRejectedError, answer(400, ["Invalid personalities provided."]), submit)
    assert str(error).endswith("Cekura answered 400: Invalid personalities provided.")


def test_insufficient_balance_detail_is_rejected() -> None:
    error = raises(CekuraRejectedError, answer(402, {"detail": "Insufficient balance for this operation"}), submit)
    assert str(error).endswith(": Insufficient balance for this operation")


@pytest.mark.parametrize("status", [401, 403])
def test_bad_key_is_an_auth_error(status: int) -> None:
    error = raises(CekuraAuthError, answer(status, {"detail": "Invalid API key."}), get_result)
    assert error.status_code == status
    assert error.permanent
    assert "Invalid API key." in str(error)


def test_unknown_result_is_not_found() -> None:
    error = raises(CekuraNotFoundError, answer(404, {"detail": "No Result matches the given query."}), get_result)
    assert "result 9001" in str(error)
    assert "No Result matches the given query." in str(error)


@pytest.mark.parametrize("action", [submit, get_result])
def test_429_is_unavailable_with_retry_after(action: Callable[[CekuraClient], Any]) -> None:
    handler = answer(429, {"detail": "Request was throttled."}, headers={"Retry-After": "17"})
    error = raises(CekuraUnavailableError, handler, action)
    assert (error.status_code, error.retry_after, error.permanent) == (429, 17.0, False)


def test_429_without_retry_after() -> None:
    error = raises(CekuraUnavailableError, answer(429), submit)
    assert error.retry_after is None


@pytest.mark.parametrize("action", [submit, get_result])
def test_503_is_unavailable(action: Callable[[CekuraClient], Any]) -> None:
    error = raises(CekuraUnavailableError, answer(503, text="maintenance"), action)
    assert error.status_code == 503
    assert "maintenance" in str(error)


@pytest.mark.parametrize("status", [500, 502, 504])
def test_server_error_on_submit_is_ambiguous(status: int) -> None:
    error = raises(CekuraAmbiguousError, answer(status, text="upstream trouble"), submit)
    assert error.status_code == status
    assert not error.permanent
    assert NAME in str(error)


@pytest.mark.parametrize("status", [500, 502, 504])
def test_server_error_on_get_is_unavailable(status: int) -> None:
    error = raises(CekuraUnavailableError, answer(status, text="upstream trouble"), get_result)
    assert error.status_code == status


@pytest.mark.parametrize("action", [submit, get_result])
@pytest.mark.parametrize("error", [httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout])
def test_connect_failure_is_unavailable(error: type[httpx.TransportError], action: Any) -> None:
    raised = raises(CekuraUnavailableError, failing(error), action)
    assert "cannot connect" in str(raised)


@pytest.mark.parametrize("error", [httpx.ReadError, httpx.ReadTimeout, httpx.RemoteProtocolError])
def test_lost_answer_on_submit_is_ambiguous(error: type[httpx.TransportError]) -> None:
    raised = raises(CekuraAmbiguousError, failing(error), submit)
    assert "the answer was lost" in str(raised)
    assert error.__name__ in str(raised)


@pytest.mark.parametrize("error", [httpx.ReadError, httpx.ReadTimeout])
def test_lost_answer_on_get_is_unavailable(error: type[httpx.TransportError]) -> None:
    raises(CekuraUnavailableError, failing(error), get_result)


def test_non_json_answer_is_a_response_error_naming_the_result() -> None:
    error = raises(CekuraResponseError, answer(200, text="<html>hello</html>"), get_result)
    assert error.permanent
    assert "result 9001" in str(error)
    assert "not JSON" in str(error)


def test_non_json_answer_to_submit_names_the_submission() -> None:
    error = raises(CekuraResponseError, answer(201, text="<html>hello</html>"), submit)
    assert NAME in str(error)


@pytest.mark.parametrize("body", [[1, 2], {"status": "completed"}, {"id": "nine", "status": "completed"}])
def test_wrong_shape_is_a_response_error_naming_the_result(body: Any) -> None:
    error = raises(CekuraResponseError, answer(200, body), get_result)
    assert str(error).startswith("result 9001 does not have the documented shape")


def test_a_run_without_id_takes_the_key_it_is_filed_under_or_stays_unknown() -> None:
    keyed = {"id": 9001, "status": "completed", "runs": {"55501": {"status": "completed", "success": True}}}
    assert [run.id for run in call(answer(200, keyed), get_result).runs] == [55501]
    listed = {"id": 9001, "status": "completed", "runs": [{}, "not a run"]}
    result: Result = call(answer(200, listed), get_result)
    assert [(run.id, run.status) for run in result.runs] == [(None, None)]
    verdict = result.verdict()
    assert verdict is not None and verdict.reason == "a run without an id has no status"


def test_api_key_echoed_by_cekura_is_not_repeated_in_the_error() -> None:
    handler = answer(401, {"detail": f"Invalid API key {API_KEY}."})
    raises(CekuraAuthError, handler, get_result)


# --- find_by_name -----------------------------------------------------------------------------------------------


def test_find_by_name_follows_pages_and_keeps_exact_matches() -> None:
    pages = {
        "1": {
            "count": 4,
            "next": "https://api.cekura.test/test_framework/v2/results/?page=2&search=x",
            "results": [
                {"id": 1, "name": NAME, "status": "running"},
                {"id": 2, "name": NAME + "-copy", "status": "completed"},
            ],
        },
        "2": {
            "count": 4,
            "next": None,
            "results": [
                {"id": 3, "name": "other@" + NAME, "status": "completed"},
                {"id": 4, "name": NAME, "status": "completed", "extra": "ignored"},
            ],
        },
    }
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=pages[request.url.params["page"]])

    found: list[ResultSummary] = call(handler, lambda client: client.find_by_name(NAME))
    assert [result.id for result in found] == [1, 4]
    assert [request.url.path for request in seen] == ["/test_framework/v2/results/"] * 2
    assert [dict(request.url.params) for request in seen] == [
        {"search": NAME, "page": "1", "page_size": "50"},
        {"search": NAME, "page": "2", "page_size": "50"},
    ]
    assert all(request.headers["X-CEKURA-API-KEY"] == API_KEY for request in seen)


def test_find_by_name_with_no_match() -> None:
    empty: dict[str, object] = {"count": 0, "next": None, "previous": None, "results": []}
    assert call(answer(200, empty), lambda client: client.find_by_name(NAME)) == []


def test_find_by_name_unreadable_page() -> None:
    error = raises(CekuraResponseError, answer(200, {"results": "nope"}), lambda client: client.find_by_name(NAME))
    assert NAME in str(error)


def test_find_by_name_server_error_is_unavailable() -> None:
    raises(CekuraUnavailableError, answer(502), lambda client: client.find_by_name(NAME))


def test_find_by_name_needs_only_an_id_and_a_name_on_a_hit() -> None:
    page = {"count": 2, "results": [{"name": NAME, "id": 7, "runs": {"0": {}}}, {"name": "other"}]}
    found: list[ResultSummary] = call(answer(200, page), lambda client: client.find_by_name(NAME))
    assert [(hit.id, hit.status) for hit in found] == [(7, None)]


def test_a_hit_of_that_name_without_an_id_is_no_proof_of_absence() -> None:
    page = {"count": 1, "results": [{"name": NAME, "status": "running"}]}
    error = raises(CekuraResponseError, answer(200, page), lambda client: client.find_by_name(NAME))
    assert "has no id" in str(error)


@pytest.mark.parametrize("failed_reasons", ["3 runs failed to greet", ["x", {"description": "y"}], None, {}])
def test_a_detail_with_failed_reasons_of_any_shape_is_readable(failed_reasons: Any) -> None:
    result: Result = call(answer(200, {**DETAIL, "failed_reasons": failed_reasons}), get_result)
    assert result.failed_reasons == failed_reasons
    verdict = result.verdict()
    assert verdict is not None and verdict.reason == "1 of 2 runs failed: run 55502 failed"


def test_a_run_started_answer_without_a_status_is_taken_as_pending() -> None:
    result: Result = call(answer(200, {"id": 9001, "runs": []}), submit)
    assert (result.id, result.status) == (9001, "pending")


def test_an_answer_larger_than_the_cap_is_not_read_and_a_submission_is_ambiguous() -> None:
    from scheduler.cekura import MAX_ANSWER_BYTES

    huge = b'{"id": 9001, "status": "pending", "padding": "' + b"x" * MAX_ANSWER_BYTES + b'"}'
    error = raises(CekuraAmbiguousError, answer(200, content=huge), submit)
    assert "larger than 10 MB" in str(error)  # looked up by name, never sent again blindly
    raises(CekuraUnavailableError, answer(200, content=huge), get_result)  # a read: read again later


def test_connect_failures_in_a_row_are_counted_until_cekura_answers() -> None:
    attempts = iter([httpx.ConnectError("down"), httpx.ConnectError("down"), None])

    def handler(request: httpx.Request) -> httpx.Response:
        if (error := next(attempts)) is not None:
            raise error
        return httpx.Response(200, json={"count": 0, "results": []})

    async def main() -> list[int]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            client = CekuraClient(http=http, base_url=BASE, api_key=SecretStr(API_KEY))
            seen = []
            for _ in range(3):
                with contextlib.suppress(CekuraUnavailableError):
                    await client.check_key()
                seen.append(client.connect_failures)
            return seen

    assert asyncio.run(main()) == [1, 2, 0]
