"""The verdict rule, table-driven: every status of Cekura's list for a result and for a run, every ``success``,
zero runs, and each shape ``failed_reasons`` can take, read from answers as Cekura's API document allows them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scheduler.results import Result
from scheduler.verdicts import (
    FAILED,
    PASSED,
    RUNNING_STATUSES,
    TERMINAL_STATUSES,
    RunState,
    failure_analysis,
    judge,
    run_problem,
)

STATUS_LIST = json.loads((Path(__file__).parent / "cekura_openapi" / "status_enum.json").read_text())
MISSING = object()  # the key is absent from the answer


def detail(status: str, *runs: dict[str, Any], **fields: Any) -> Result:
    """A result detail as Cekura sends it: runs keyed by run id."""
    return Result.model_validate(
        {"id": 9001, "status": status, "runs": {str(run["id"]): run for run in runs}, **fields}
    )


def run(run_id: int, status: object = "completed", success: object = True) -> dict[str, Any]:
    data: dict[str, Any] = {"id": run_id, "scenario": 101, "status": status}
    if success is not MISSING:
        data["success"] = success
    return data


def test_the_status_lists_are_cekuras_whole_list() -> None:
    assert set(STATUS_LIST) == RUNNING_STATUSES | TERMINAL_STATUSES
    assert not RUNNING_STATUSES & TERMINAL_STATUSES


@pytest.mark.parametrize("status", sorted(RUNNING_STATUSES))
def test_a_result_still_going_has_no_verdict_yet(status: str) -> None:
    assert detail(status, run(1, status="running", success=None)).verdict() is None


@pytest.mark.parametrize("status", ["failed", "timeout", "cancelled"])
def test_a_result_that_ended_other_than_completed_fails_even_if_its_runs_passed(status: str) -> None:
    verdict = detail(status, run(1)).verdict()
    assert verdict is not None and verdict.outcome == FAILED
    assert verdict.reason == f"the result ended {status}"


def test_a_completed_result_whose_runs_all_passed_passes() -> None:
    verdict = detail("completed", run(1), run(2)).verdict()
    assert verdict is not None and (verdict.outcome, verdict.reason) == (PASSED, None)


def test_a_completed_result_without_runs_fails() -> None:
    empties: list[object] = [{}, [], None]
    for runs in empties:
        verdict = Result.model_validate({"id": 9001, "status": "completed", "runs": runs}).verdict()
        assert verdict is not None and (verdict.outcome, verdict.reason) == (FAILED, "the result has no runs")


@pytest.mark.parametrize(
    ("status", "success", "problem"),
    [
        ("completed", True, None),
        ("completed", False, "run 55501 failed"),
        ("completed", None, "run 55501 has no verdict"),
        ("completed", MISSING, "run 55501 has no verdict"),
        ("completed", "true", None),  # a boolean sent as a string is still read
        ("completed", "yes", "run 55501 has no verdict"),
        *[
            (status, success, f"run 55501 ended {status}")
            for status in ("failed", "timeout", "cancelled")
            for success in (True, False, None, MISSING)
        ],
        *[(status, MISSING, f"run 55501 is still {status}") for status in sorted(RUNNING_STATUSES)],
        (None, True, "run 55501 has no status"),
        (MISSING, True, "run 55501 has no status"),
        (42, True, "run 55501 has no status"),
        ("exploded", True, "run 55501 has the unknown status 'exploded'"),
    ],
)
def test_each_run_status_and_success_in_a_completed_result(status: object, success: object, problem: str) -> None:
    data = run(55501, success=success)
    if status is MISSING:
        del data["status"]
    else:
        data["status"] = status
    verdict = detail("completed", data).verdict()
    assert verdict is not None
    assert verdict.outcome == (PASSED if problem is None else FAILED)
    assert verdict.reason == problem


def test_several_failing_runs_are_counted_and_named() -> None:
    runs = [run(1, "timeout", MISSING), run(2, success=None), run(3, success=False), run(4)]
    verdict = detail("completed", *runs).verdict()
    assert verdict is not None and verdict.headline == "3 of 4 runs failed"
    assert verdict.reason == "3 of 4 runs failed: run 1 ended timeout; run 2 has no verdict; run 3 failed"
    assert verdict.failed_run_ids == (1, 2, 3)


def test_a_long_list_of_failing_runs_is_cut_short() -> None:
    verdict = detail("completed", *[run(n, success=False) for n in range(1, 9)]).verdict()
    assert verdict is not None and verdict.reason is not None
    assert verdict.reason.startswith("8 of 8 runs failed: run 1 failed; run 2 failed")
    assert verdict.reason.endswith("run 5 failed; and 3 more")


def test_cekuras_failed_count_is_heard_when_every_listed_run_passed() -> None:
    for count in (2, "2", 2.0):
        verdict = detail("completed", run(1), failed_runs_count=count).verdict()
        assert verdict is not None and verdict.outcome == FAILED
        assert verdict.reason == "Cekura counts 2 failed runs, though every listed run passed"
    for heard_as_none in (0, "0", None, "n/a", [1]):
        verdict = detail("completed", run(1), failed_runs_count=heard_as_none).verdict()
        assert verdict is not None and verdict.outcome == PASSED


@pytest.mark.parametrize(
    "failed_reasons",
    [
        {"issues": [{"rank": 1, "run_ids": [1], "description": "Agent did not confirm.", "affected_count": 1}]},
        [{"rank": 1, "run_ids": [1], "description": "Agent did not confirm."}],
        "Agent did not confirm.",
        None,
        {},
        [],
        "",
        42,
        {"issues": None},
        {"issues": "Agent did not confirm."},
    ],
)
def test_any_shape_of_failed_reasons_leaves_the_result_readable(failed_reasons: object) -> None:
    result = detail("completed", run(1, success=False), failed_reasons=failed_reasons)
    verdict = result.verdict()
    assert verdict is not None and verdict.reason == "run 1 failed"
    analysis = failure_analysis(result.failed_reasons)
    has_sentence = failed_reasons not in (None, {}, [], "", 42, {"issues": None})
    assert analysis == (["Agent did not confirm."] if has_sentence else [])


@pytest.mark.parametrize(
    "fields",
    [
        {"total_runs_count": "2", "success_runs_count": "1", "failed_runs_count": "0"},
        {"total_runs_count": 2, "success_runs_count": 1.0, "failed_runs_count": None},
        {"total_runs_count": "lots", "success_rate": "50.0"},
        {"success_rate": None, "name": 7, "created_at": "yesterday"},
        {"success_rate": [], "name": None, "created_at": None, "brand_new": {"x": 1}},
    ],
)
def test_fields_of_unexpected_types_are_unknown_not_unreadable(fields: dict[str, Any]) -> None:
    verdict = detail("completed", run(1), **fields).verdict()
    assert verdict is not None and verdict.outcome == PASSED


def test_runs_as_a_list_read_like_runs_keyed_by_id() -> None:
    listed = Result.model_validate({"id": 1, "status": "completed", "runs": [run(1), run(2, success=False)]})
    keyed = detail("completed", run(1), run(2, success=False))
    assert listed.verdict() == keyed.verdict()


def test_failed_metrics_in_both_forms_and_a_numeric_zero_that_is_not_a_failure() -> None:
    metrics = [
        {"name": "Confirms refund", "eval_type": "binary", "passed": False, "explanation": ["No.", "Never said."]},
        {"name": "Greets", "eval_type": "binary", "passed": True, "explanation": "Yes."},
        {"name": "Old form", "type": "binary_workflow_adherence", "score": 0, "explanation": "Missed a step."},
        {"name": "Old form ok", "type": "binary_workflow_adherence", "score": 5},
        {"name": "Interruptions", "type": "numeric", "score": 0},
        {"name": "Tone", "type": "continuous_qualitative", "score": "0"},
        "not a metric",
    ]
    data = {**run(1, success=False), "evaluation": {"metrics": metrics}}
    failed = detail("completed", data).runs[0].failed_metrics()
    assert [(metric.name, metric.explanation) for metric in failed] == [
        ("Confirms refund", "No. Never said."),
        ("Old form", "Missed a step."),
    ]


@pytest.mark.parametrize("evaluation", [None, "n/a", {"metrics": None}, {"metrics": "x"}, [], {"metrics": {}}])
def test_an_evaluation_of_any_shape_leaves_the_run_readable(evaluation: object) -> None:
    data = {**run(1), "evaluation": evaluation, "error_message": ["a", "b"], "duration": 95}
    result = detail("completed", data)
    assert result.runs[0].failed_metrics() == []
    assert (result.runs[0].error_message, result.runs[0].duration) == ("a b", "95")


@pytest.mark.parametrize("body", [{"status": "completed"}, {"id": 9001}, {"id": 9001, "status": None}])
def test_only_a_detail_without_id_or_status_is_unreadable(body: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Result.model_validate(body)


def test_the_rule_on_stored_runs_agrees_with_the_rule_on_answers() -> None:
    states = [RunState(1, "completed", True), RunState(2, "cancelled", None)]
    assert judge("completed", states) == detail("completed", run(1), run(2, "cancelled", MISSING)).verdict()
    assert [run_problem(state) for state in states] == [None, "run 2 ended cancelled"]
    assert judge("running", states) is None
