"""How the simulator shows a result: the answer to a submission, the detail, and a search hit."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from scheduler.simulator.config import TERMINAL, Json, SimulatorConfig
from scheduler.simulator.results import Result, Run, iso, phase, result_status, run_status

_METRIC = "Refund policy followed"
_PASS_EXPLANATION = "Agent confirmed the refund amount."
_FAIL_EXPLANATION = "Agent did not confirm the refund amount."
_ERROR_MESSAGE = "Call did not connect"


def started(result: Result, *, as_result: bool = False) -> Json:
    """The answer to a submission: the new result, pending, with its runs (``as_result``: keyed by run id, as the
    email endpoint shows them, with the result's ``name`` that its schema requires)."""
    answer: Json = {
        "id": result.id,
        "agent": result.agent,
        "status": "pending",
        "run_as_text": result.run_as_text,
        "created_at": iso(result.created_at),
    }
    if result.name is not None:
        answer["name"] = result.name
    # No `number`: the document types it as a string, and these runs have no outbound number.
    answer["runs"] = [
        {
            "id": run.id,
            "status": "pending",
            "scenario": run.scenario,
            "scenario_name": f"Scenario {run.scenario}",
            "inbound_number": "+11234567890",
            "test_profile_data": None,
        }
        for run in result.runs
    ]
    if as_result:
        answer["name"] = result.name or ""
        answer["runs"] = {str(run["id"]): run for run in answer["runs"]}
    return answer


def detail(result: Result, *, now: datetime, config: SimulatorConfig) -> Json:
    """Render a result as the detail endpoint does."""
    index = phase(result, now)
    runs = {str(run.id): _run_view(run, run_status(run, result.phases, index), config) for run in result.runs}
    failed = [view for view in runs.values() if view.get("success") is False]
    succeeded = sum(1 for view in runs.values() if view.get("success") is True)
    by_cause: dict[str, list[int]] = {}
    for view in failed:
        by_cause.setdefault(view["error_message"] or _FAIL_EXPLANATION, []).append(view["id"])
    ranked = sorted(by_cause.items(), key=lambda item: (-len(item[1]), item[0]))
    issues = [
        {"rank": rank, "run_ids": ids, "description": description, "affected_count": len(ids)}
        for rank, (description, ids) in enumerate(ranked, start=1)
    ]
    status = result_status(result, index)
    terminal = status in TERMINAL
    shown: Json = {"id": result.id}
    if result.name is not None:
        shown["name"] = result.name
    return shown | {
        "agent": result.agent,
        "status": status,
        "run_as_text": result.run_as_text,
        "created_at": iso(result.created_at),
        "success_rate": round(100.0 * succeeded / len(runs), 2) if terminal else 0.0,
        "total_runs_count": str(len(runs)),
        "success_runs_count": str(succeeded),
        "failed_runs_count": str(len(failed)),
        "runs": runs,
        "failed_reasons": _failed_reasons(issues, len(failed), len(runs), config.failed_reasons),
    }


def hit(result: Result, view: Json, *, config: SimulatorConfig) -> Json:
    """Render a result (and its ``detail`` view) as a search hit: run summaries, and a success rate as a fraction."""
    name = result.name or ""  # `name` is the one field a hit must carry
    if config.sparse_search:
        summaries = {str(position): {"status": run["status"]} for position, run in enumerate(view["runs"].values())}
        return {"id": result.id, "name": name, "runs": summaries}
    succeeded = int(view["success_runs_count"])
    return {
        "id": result.id,
        "name": name,
        "status": view["status"],
        "agent": result.agent,
        "created_at": view["created_at"],
        "success_rate": round(succeeded / len(result.runs), 4) if view["status"] in TERMINAL else 0.0,
        "runs": {key: {"id": run["id"], "status": run["status"]} for key, run in view["runs"].items()},
    }


def _run_view(run: Run, status: str, config: SimulatorConfig) -> Json:
    view: Json = {
        "id": run.id,
        "scenario": run.scenario,
        "scenario_name": f"Scenario {run.scenario}",
        "status": status,
    }
    has_success, success = _success(run, status)
    if has_success:
        view["success"] = success
    completed = status == "completed"
    view["error_message"] = _ERROR_MESSAGE if status == "failed" else None
    view["duration"] = _duration(run) if completed else "00:00"
    view["evaluation"] = {"metrics": _metrics(run.outcome, config.metric_form) if completed else []}
    return view


def _success(run: Run, status: str) -> tuple[bool, bool | None]:
    """Return whether a run's view carries `success`, and its value."""
    if status not in TERMINAL:
        return True, None
    if status == "failed":
        return True, False
    if status == "completed" and run.outcome in ("pass", "fail", "null"):
        return True, {"pass": True, "fail": False}.get(run.outcome)
    return False, None  # timeout, cancelled and unjudged runs have no verdict at all


def _metrics(outcome: str, form: str) -> list[Json]:
    """Return the evaluation metrics of a completed run, in the document's current or deprecated form."""
    metrics: list[Json] = []
    if outcome in ("pass", "fail"):
        passed = outcome == "pass"
        metric: Json = {"id": 701, "name": _METRIC}
        if form == "score":
            metric |= {"type": "binary_workflow_adherence", "score": 5 if passed else 0}
        else:
            metric |= {"eval_type": "binary", "passed": passed}
        metric["explanation"] = [_PASS_EXPLANATION if passed else _FAIL_EXPLANATION]
        metrics.append(metric)
    # A numeric 0 is a measurement, not a failure: a client that reads it as one is caught here.
    metrics.append(
        {"id": 702, "name": "Interruptions", "type": "numeric", "score": 0, "explanation": ["No interruptions."]}
    )
    return metrics


def _failed_reasons(issues: list[Json], failed: int, total: int, shape: str) -> Any:
    """Return the detail's `failed_reasons` in the configured shape (the document allows any JSON or null)."""
    if shape == "null":
        return None
    if shape == "list":
        return issues
    if shape == "string":
        if not failed:
            return ""
        parts = "; ".join(
            f"{issue['description'].rstrip('.')} ({issue['affected_count']} run{'s' * (issue['affected_count'] != 1)})"
            for issue in issues
        )
        return f"{failed} of {total} runs failed: {parts}."
    return {"issues": issues, "total_failed_runs": failed}


def _duration(run: Run) -> str:
    seconds = 45 + (run.id * 37) % 120  # plausible and stable call lengths
    return f"{seconds // 60:02d}:{seconds % 60:02d}"
