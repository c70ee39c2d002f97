"""A local server speaking the subset of the Cekura API the scheduler uses, for demos and tests.

Every answer validates against the response schema of its operation in Cekura's OpenAPI document
(`tests/test_simulator_schema.py` holds it to that). It serves the run endpoints `run_scenarios_livekit_v2`,
`run_scenarios_pipecat_v2`, `run_scenarios` and `run_scenarios_text` under `/test_framework/v1/scenarios/`, and
the results endpoints (list and search, detail, `end_calls`) under both `/test_framework/v1/results/` and
`/test_framework/v2/results/`.

What happens to a result is decided when it is submitted, from the config of that moment: each run draws the
next outcome of its scenario's `behaviours` cycle, and the result walks through `phases` spread evenly over
`run_duration` on the injected clock, then ends. Outcomes: `pass` and `fail` (run `completed`, `success` true or
false, a binary metric that passed or failed), `error` (run `failed`, `success` false, an `error_message`),
`hang` (run `running` forever, until `end_calls`), `timeout` and `cancelled` (the run ends so, with no `success`
key), `unjudged` (run `completed` with no `success` key) and `null` (run `completed` with `"success": null`).
A result whose runs include an `error` ends `failed`, one with a `hang` stays `running`, any other ends
`completed`; `result_status`, when set, replaces the status of every result once it has ended (`end_calls`
included), while its runs keep theirs. `phases` and `result_status` together give each of the ten statuses.

How answers are shaped applies to every following answer: `failed_reasons` (`dict`, `list`, `string` or
`null`), `metric_form` (`eval_type`: binary metrics with `eval_type` and `passed`; `score`: the deprecated
`type: binary_workflow_adherence` with `score` 5 or 0) and `sparse_search` (search hits with only `id`, `name`
and id-less run summaries). Every completed run also carries a numeric metric scoring 0, which is not a failure.
The detail's `success_rate` is a percentage, the list's a fraction (0..1); both are 0 until the result ends.
Pipecat submissions name no agent: their results show agent 1.

Faults (429, 500, dropped connections) are drawn from a seeded RNG so a demo or a test can be replayed exactly.
The `/_simulator/` endpoints need no key: `GET submissions` (every submission and its answer), `GET end_calls`
(the result ids `end_calls` was called on), `POST config` (a JSON patch of `SimulatorConfig`), `GET health`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeGuard

from aiohttp import web

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
Json = dict[str, Any]

# The status a run ends with, per outcome; `hang` never ends.
_RUN_ENDS = {
    "pass": "completed",
    "fail": "completed",
    "unjudged": "completed",
    "null": "completed",
    "error": "failed",
    "timeout": "timeout",
    "cancelled": "cancelled",
}
OUTCOMES = frozenset({*_RUN_ENDS, "hang"})
PHASES = ("pending", "in_queue", "scaling_up", "running", "in_progress", "evaluating")
TERMINAL = ("completed", "failed", "timeout", "cancelled")
FAILED_REASONS = ("dict", "list", "string", "null")
METRIC_FORMS = ("eval_type", "score")
V2_ENDPOINTS = frozenset({"run_scenarios_livekit_v2", "run_scenarios_pipecat_v2"})
VOICE_ENDPOINTS = frozenset({"run_scenarios", "run_scenarios_text"})
PIPECAT_AGENT = 1  # the detail's `agent` is a required integer, and a pipecat body names none
_METRIC = "Refund policy followed"
_NUMBERS = ("latency", "run_duration", "error_500_rate", "error_429_rate", "drop_rate", "retry_after")
_PASS_EXPLANATION = "Agent confirmed the refund amount."
_FAIL_EXPLANATION = "Agent did not confirm the refund amount."
_ERROR_MESSAGE = "Call did not connect"
_RESULTS = ("/test_framework/v1/results", "/test_framework/v2/results")


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_strings(value: object, allowed: frozenset[str] | tuple[str, ...]) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, str) and item in allowed for item in value)


@dataclass
class SimulatorConfig:
    """How the simulator behaves; mutable, changes apply to the following requests."""

    api_key: str | None = "sim-key"
    latency: float = 0.0
    run_duration: float = 3.0
    error_500_rate: float = 0.0
    error_429_rate: float = 0.0
    retry_after: int = 1
    drop_rate: float = 0.0
    seed: int | None = None
    behaviours: dict[int, list[str]] = field(default_factory=dict)
    unknown_scenarios: set[int] = field(default_factory=set)
    balance: int | None = None
    phases: list[str] = field(default_factory=lambda: ["pending", "running", "evaluating"])
    result_status: str | None = None
    failed_reasons: str = "dict"
    metric_form: str = "eval_type"
    sparse_search: bool = False

    def __post_init__(self) -> None:
        if not (self.api_key is None or isinstance(self.api_key, str)):
            raise ValueError("api_key must be a string or null")
        if not all(value is None or _is_int(value) for value in (self.seed, self.balance, self.retry_after)):
            raise ValueError("seed, balance and retry_after must be integers")
        for name in _NUMBERS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name} must be a non-negative number")
            if name.endswith("rate") and value > 1:
                raise ValueError(f"{name} must be at most 1")
        for scenario, cycle in self.behaviours.items():
            if not _is_strings(cycle, OUTCOMES):
                raise ValueError(f"behaviours[{scenario}] must be a non-empty list of {sorted(OUTCOMES)}")
        if not _is_strings(self.phases, PHASES):
            raise ValueError(f"phases must be a non-empty list of {list(PHASES)}")
        if self.result_status is not None and self.result_status not in TERMINAL:
            raise ValueError(f"result_status must be null or one of {list(TERMINAL)}")
        if self.failed_reasons not in FAILED_REASONS:
            raise ValueError(f"failed_reasons must be one of {list(FAILED_REASONS)}")
        if self.metric_form not in METRIC_FORMS:
            raise ValueError(f"metric_form must be one of {list(METRIC_FORMS)}")
        if not isinstance(self.sparse_search, bool):
            raise ValueError("sparse_search must be true or false")

    def to_json(self) -> Json:
        """Return the config as JSON-ready data (behaviour keys as strings, as JSON needs)."""
        data = dataclasses.asdict(self)
        data["behaviours"] = {str(key): list(cycle) for key, cycle in self.behaviours.items()}
        data["unknown_scenarios"] = sorted(self.unknown_scenarios)
        return data


@dataclass
class Submission:
    """One submission the simulator received, whatever it answered."""

    result_id: int | None
    endpoint: str
    name: str | None
    body: dict[str, Any]
    received_at: datetime
    status_code: int | None

    def to_json(self) -> Json:
        return {**dataclasses.asdict(self), "received_at": _iso(self.received_at)}


@dataclass
class _Run:
    id: int
    scenario: int
    outcome: str
    cancelled: bool = False


@dataclass
class _Result:
    id: int
    name: str | None
    agent: int
    run_as_text: bool
    created_at: datetime
    duration: float
    phases: tuple[str, ...]
    end_status: str | None
    runs: list[_Run]
    cancelled: bool = False


def _config_patch(config: SimulatorConfig, patch: Json) -> SimulatorConfig:
    """Return `config` with a JSON `patch` applied (behaviour keys come as strings); ValueError if invalid."""
    changes = dict(patch)
    unknown = set(changes) - {spec.name for spec in dataclasses.fields(config)}
    try:
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)}")
        if "behaviours" in changes:
            changes["behaviours"] = {int(key): cycle for key, cycle in changes["behaviours"].items()}
        if "unknown_scenarios" in changes:
            changes["unknown_scenarios"] = {int(scenario) for scenario in changes["unknown_scenarios"]}
        return dataclasses.replace(config, **changes)
    except (AttributeError, TypeError, ValueError) as exc:
        raise ValueError(f"invalid config: {exc}") from exc


def _check_int(value: Any, key: str, errors: Json, high: int | None = None) -> int | None:
    """Validate a positive integer field, worded as Django REST framework does; None when invalid."""
    if value is None:
        errors[key] = ["This field is required."]
    elif not _is_int(value):
        errors[key] = ["A valid integer is required."]
    elif value < 1:
        errors[key] = ["Ensure this value is greater than or equal to 1."]
    elif high is not None and value > high:
        errors[key] = [f"Ensure this value is less than or equal to {high}."]
    else:
        return value
    return None


def _check_scenarios(value: Any, errors: Json, *, v2: bool) -> list[int]:
    """Return the scenario ids of a submission body, recording field errors as the real API shapes them."""
    if value is None:
        errors["scenarios"] = ["This field is required."]
        return []
    if not isinstance(value, list):
        errors["scenarios"] = [f'Expected a list of items but got type "{type(value).__name__}".']
        return []
    if not value:
        errors["scenarios"] = ["This list may not be empty."]
        return []
    if not v2:
        if not all(_is_int(item) for item in value):
            errors["scenarios"] = ["A valid integer is required."]
        return [item for item in value if _is_int(item)]
    valid = [isinstance(item, dict) and _is_int(item.get("scenario")) for item in value]
    if not all(valid):  # a list of per-item error maps, as Django REST framework shapes nested errors
        errors["scenarios"] = [{} if ok else {"scenario": ["A valid integer is required."]} for ok in valid]
    return [item["scenario"] for item, ok in zip(value, valid, strict=True) if ok]


def _check_name(value: Any, errors: Json) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        errors["name"] = ["Not a valid string."]
    elif len(value) > 255:  # the document's maxLength: a longer name could not be answered back
        errors["name"] = ["Ensure this field has no more than 255 characters."]


def _hanging(phases: tuple[str, ...], index: int | None) -> str:
    """Return the status of a hanging run (or result): it walks its phases up to `running`, then stays there."""
    stop = phases.index("running") if "running" in phases else 1
    return phases[index] if index is not None and index < stop else "running"


def _run_status(run: _Run, phases: tuple[str, ...], index: int | None) -> str:
    """Return the status of a run at phase `index` of its result's timeline (None once it has ended)."""
    if run.cancelled:
        return "cancelled"
    if run.outcome == "hang":
        return _hanging(phases, index)
    return phases[index] if index is not None else _RUN_ENDS[run.outcome]


def _success(run: _Run, status: str) -> tuple[bool, bool | None]:
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


def _duration(run: _Run) -> str:
    seconds = 45 + (run.id * 37) % 120  # plausible and stable call lengths
    return f"{seconds // 60:02d}:{seconds % 60:02d}"


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers)


async def _read_json(request: web.Request) -> Any:
    """Return the request's parsed JSON body, or None when it is not JSON."""
    try:
        return await request.json()
    except ValueError:
        return None


def _not_found() -> web.Response:
    return _json({"detail": "Not found."}, 404)


class Simulator:
    """A Cekura-compatible aiohttp application with its own state: results, submissions log, config."""

    def __init__(self, config: SimulatorConfig | None = None, *, clock: Clock = _utc_now) -> None:
        self.config = config if config is not None else SimulatorConfig()
        self.submissions: list[Submission] = []
        self.ended_calls: list[int] = []
        self.base_url = ""
        self._clock = clock
        self._rng = random.Random(self.config.seed)
        self._results: dict[int, _Result] = {}
        self._next_result_id = 9001
        self._next_run_id = 55501
        self._cycle_position: dict[int, int] = {}
        self._reported: set[int] = set()
        self._runner: web.AppRunner | None = None
        self.app = web.Application()
        self.app.router.add_post("/test_framework/v1/scenarios/{endpoint}/", self._submit)
        for results in _RESULTS:
            self.app.router.add_get(f"{results}/", self._list)
            self.app.router.add_get(rf"{results}/{{id:\d+}}/", self._detail)
            self.app.router.add_post(rf"{results}/{{id:\d+}}/end_calls/", self._end_calls)
        self.app.router.add_route("*", "/test_framework/{tail:.*}", self._unknown)
        self.app.router.add_get("/_simulator/submissions", self._control_submissions)
        self.app.router.add_get("/_simulator/end_calls", self._control_end_calls)
        self.app.router.add_post("/_simulator/config", self._control_config)
        self.app.router.add_get("/_simulator/health", self._control_health)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on `host`:`port` (0 picks a free port) and return the base URL."""
        if self._runner is not None:
            raise RuntimeError("simulator already started")
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        self.base_url = f"http://{bound_host}:{bound_port}"
        return self.base_url

    async def stop(self) -> None:
        """Stop listening and close open connections; a no-op when not started."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _gate(self, request: web.Request) -> web.Response | None:
        """Apply latency, authentication and throttling; return the answer that ends the request, if any."""
        if self.config.latency > 0:
            await asyncio.sleep(self.config.latency)
        key = request.headers.get("X-CEKURA-API-KEY", "")
        expected = self.config.api_key
        if not key or (expected is not None and key != expected):
            return _json({"detail": "Invalid API key."}, 401)
        if self._rng.random() < self.config.error_429_rate:
            detail = f"Request was throttled. Expected available in {self.config.retry_after} seconds."
            return _json({"detail": detail}, 429, {"Retry-After": str(self.config.retry_after)})
        return None

    async def _unknown(self, request: web.Request) -> web.Response:
        denied = await self._gate(request)
        return denied if denied is not None else _not_found()

    async def _submit(self, request: web.Request) -> web.StreamResponse:
        endpoint = request.match_info["endpoint"]
        body = await _read_json(request)
        denied = await self._gate(request)
        if endpoint not in V2_ENDPOINTS | VOICE_ENDPOINTS:
            return denied if denied is not None else _not_found()
        data = body if isinstance(body, dict) else {}
        name = data.get("name") if isinstance(data.get("name"), str) else None
        entry = Submission(None, endpoint, name, data, self._clock(), None)
        self.submissions.append(entry)
        answer = denied if denied is not None else self._process(endpoint, body, entry)
        entry.status_code = answer.status if answer is not None else None
        outcome = entry.status_code or "dropped"
        logger.info("simulator: %s %r -> %s, result %s", endpoint, name, outcome, entry.result_id)
        if answer is not None:
            return answer
        # The result exists but the client sees the connection close: it cannot know the POST succeeded.
        if request.transport is not None:
            request.transport.close()
        return web.Response(status=500)  # never sent: aiohttp gives up quietly on the closed transport

    def _process(self, endpoint: str, body: Any, entry: Submission) -> web.Response | None:
        """Validate and create a result; None means the result exists but the answer must be dropped."""
        if not isinstance(body, dict):
            return _json({"detail": "JSON parse error - expected a JSON object."}, 400)
        errors: Json = {}
        v2 = endpoint in V2_ENDPOINTS
        scenarios = _check_scenarios(body.get("scenarios"), errors, v2=v2)
        agent: int | None = PIPECAT_AGENT
        if v2:
            if endpoint == "run_scenarios_livekit_v2":
                agent = _check_int(body.get("agent"), "agent", errors)
            frequency = _check_int(body.get("frequency", 1), "frequency", errors, high=100)
        else:
            agent = _check_int(body.get("agent_id"), "agent_id", errors)
            frequency = _check_int(body.get("frequency", 1), "frequency", errors)
            for unsupported in ("tags", "folder_path"):
                if body.get(unsupported) is not None:
                    errors[unsupported] = ["Not supported by the simulator: list scenario ids."]
        _check_name(body.get("name"), errors)
        if errors or frequency is None or agent is None:
            return _json(errors, 400)
        if set(scenarios) & self.config.unknown_scenarios:
            return _json({"scenarios": ["Invalid scenario IDs or scenarios not found"]}, 400)
        needed = len(scenarios) * frequency
        if self.config.balance is not None and needed > self.config.balance:
            return _json({"detail": "Insufficient balance for this operation"}, 402)
        failing = self._rng.random() < self.config.error_500_rate
        dropping = self._rng.random() < self.config.drop_rate
        if failing:
            return _json({"detail": "Internal server error"}, 500)
        if self.config.balance is not None:
            self.config.balance -= needed
        as_text = endpoint == "run_scenarios_text"
        result = self._create(entry, agent, scenarios, frequency, run_as_text=as_text)
        entry.result_id = result.id
        if dropping:
            return None
        started: Json = {
            "id": result.id,
            "agent": result.agent,
            "status": "pending",
            "run_as_text": result.run_as_text,
            "created_at": _iso(result.created_at),
        }
        if result.name is not None:
            started["name"] = result.name
        # No `number`: the document types it as a string, and these runs have no outbound number.
        started["runs"] = [
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
        return _json(started, 200 if v2 else 201)

    def _create(
        self, entry: Submission, agent: int, scenarios: list[int], frequency: int, *, run_as_text: bool
    ) -> _Result:
        runs = []
        for scenario in scenarios:
            for _ in range(frequency):
                runs.append(_Run(self._next_run_id, scenario, self._next_outcome(scenario)))
                self._next_run_id += 1
        config = self.config
        result = _Result(
            id=self._next_result_id,
            name=entry.name,
            agent=agent,
            run_as_text=run_as_text,
            created_at=self._clock(),
            duration=config.run_duration,
            phases=tuple(config.phases),
            end_status=config.result_status,
            runs=runs,
        )
        self._results[result.id] = result
        self._next_result_id += 1
        return result

    def _next_outcome(self, scenario: int) -> str:
        cycle = self.config.behaviours.get(scenario)
        if not cycle:
            return "pass"
        position = self._cycle_position.get(scenario, 0)
        self._cycle_position[scenario] = position + 1
        return cycle[position % len(cycle)]

    def _phase(self, result: _Result) -> int | None:
        """Return the index of the phase a result's timeline is in, or None once its duration has passed."""
        if result.duration <= 0:
            return None
        share = (self._clock() - result.created_at).total_seconds() / result.duration
        if share >= 1.0:
            return None
        return min(max(int(share * len(result.phases)), 0), len(result.phases) - 1)

    def _result_status(self, result: _Result, index: int | None) -> str:
        """Return a result's status at phase `index` of its timeline; `result_status` replaces any end."""
        if result.cancelled:
            ended = "cancelled"
        elif any(run.outcome == "hang" for run in result.runs):
            return _hanging(result.phases, index)
        elif index is not None:
            return result.phases[index]
        else:
            ended = "failed" if any(run.outcome == "error" for run in result.runs) else "completed"
        return result.end_status or ended

    def _run_view(self, run: _Run, status: str) -> Json:
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
        view["evaluation"] = {"metrics": _metrics(run.outcome, self.config.metric_form) if completed else []}
        return view

    def _view(self, result: _Result) -> Json:
        """Render a result as the detail endpoint does, logging its terminal state the first time it shows."""
        index = self._phase(result)
        runs = {str(run.id): self._run_view(run, _run_status(run, result.phases, index)) for run in result.runs}
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
        status = self._result_status(result, index)
        terminal = status in TERMINAL
        if terminal and result.id not in self._reported:
            self._reported.add(result.id)
            counts = (status, len(failed), len(runs))
            logger.info("simulator: result %d (%s) %s, %d/%d runs failed", result.id, result.name, *counts)
        detail: Json = {"id": result.id}
        if result.name is not None:
            detail["name"] = result.name
        return detail | {
            "agent": result.agent,
            "status": status,
            "run_as_text": result.run_as_text,
            "created_at": _iso(result.created_at),
            "success_rate": round(100.0 * succeeded / len(runs), 2) if terminal else 0.0,
            "total_runs_count": str(len(runs)),
            "success_runs_count": str(succeeded),
            "failed_runs_count": str(len(failed)),
            "runs": runs,
            "failed_reasons": _failed_reasons(issues, len(failed), len(runs), self.config.failed_reasons),
        }

    def _hit(self, result: _Result) -> Json:
        """Render a result as a search hit: run summaries, and a success rate as a fraction."""
        view = self._view(result)
        name = result.name or ""  # `name` is the one field a hit must carry
        if self.config.sparse_search:
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

    async def _detail(self, request: web.Request) -> web.Response:
        if (denied := await self._gate(request)) is not None:
            return denied
        result = self._results.get(int(request.match_info["id"]))
        return _json(self._view(result)) if result is not None else _not_found()

    async def _list(self, request: web.Request) -> web.Response:
        if (denied := await self._gate(request)) is not None:
            return denied
        search = request.query.get("search", "").casefold()
        agent = request.query.get("agent_id")
        try:
            page = int(request.query.get("page", "1"))
            size = min(max(int(request.query.get("page_size", "50")), 1), 100)
        except ValueError:
            return _json({"detail": "Invalid page."}, 404)
        matches = [
            result
            for result in sorted(self._results.values(), key=lambda result: result.id, reverse=True)
            if search in (result.name or "").casefold() and (agent is None or str(result.agent) == agent)
        ]
        pages = max(1, -(-len(matches) // size))
        if not 1 <= page <= pages:
            return _json({"detail": "Invalid page."}, 404)
        return _json(
            {
                "count": len(matches),
                "next": str(request.url.update_query(page=page + 1)) if page < pages else None,
                "previous": str(request.url.update_query(page=page - 1)) if page > 1 else None,
                "results": [self._hit(result) for result in matches[(page - 1) * size : page * size]],
            }
        )

    async def _end_calls(self, request: web.Request) -> web.Response:
        if (denied := await self._gate(request)) is not None:
            return denied
        result_id = int(request.match_info["id"])
        self.ended_calls.append(result_id)
        logger.info("simulator: end_calls on result %d", result_id)
        result = self._results.get(result_id)
        if result is None:
            return _not_found()
        index = self._phase(result)
        for run in result.runs:
            if _run_status(run, result.phases, index) not in TERMINAL:
                run.cancelled = True
        if self._result_status(result, index) not in TERMINAL:
            result.cancelled = True
        self._view(result)  # logs the terminal state
        return _json({"detail": "Calls ended."})

    async def _control_submissions(self, request: web.Request) -> web.Response:
        return _json([entry.to_json() for entry in self.submissions])

    async def _control_end_calls(self, request: web.Request) -> web.Response:
        return _json(self.ended_calls)

    async def _control_config(self, request: web.Request) -> web.Response:
        patch = await _read_json(request)
        if not isinstance(patch, dict):
            return _json({"detail": "Expected a JSON object of config fields."}, 400)
        try:
            self.config = _config_patch(self.config, patch)
        except ValueError as exc:
            return _json({"detail": str(exc)}, 400)
        if "seed" in patch:
            self._rng.seed(self.config.seed)
        if "behaviours" in patch:
            self._cycle_position.clear()  # a new cycle starts from its first outcome
        logger.info("simulator: config changed: %s", sorted(patch))
        return _json(self.config.to_json())

    async def _control_health(self, request: web.Request) -> web.Response:
        return _json({"ok": True})


@contextmanager
def running_simulator(
    config: SimulatorConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    clock: Clock = _utc_now,
) -> Iterator[Simulator]:
    """Run a simulator on its own event loop in a daemon thread; yield it once it listens, stop it on exit."""
    simulator = Simulator(config, clock=clock)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="cekura-simulator", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(simulator.start(host, port), loop).result()
        try:
            yield simulator
        finally:
            asyncio.run_coroutine_threadsafe(simulator.stop(), loop).result()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


async def serve(config: SimulatorConfig, *, host: str, port: int, stop: asyncio.Event) -> None:
    """Serve the simulator until `stop` is set."""
    simulator = Simulator(config)
    url = await simulator.start(host, port)
    logger.info("simulator: listening on %s", url)
    try:
        await stop.wait()
    finally:
        await simulator.stop()
