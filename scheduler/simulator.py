"""A local server speaking the subset of the Cekura API the scheduler uses, for demos and tests.

Results progress with the injected clock: pending for the first 20% of `run_duration`, running until 80%,
evaluating until 100%, then terminal according to each scenario's configured behaviour. Faults (429, 500,
dropped connections) are drawn from a seeded RNG so a demo or a test can be replayed exactly. The
`/_simulator/` endpoints need no key and let a test or a demo inspect submissions and change the config.
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

OUTCOMES = frozenset({"pass", "fail", "error", "hang"})
TERMINAL = frozenset({"completed", "failed", "timeout", "cancelled"})
V2_ENDPOINTS = frozenset({"run_scenarios_livekit_v2", "run_scenarios_pipecat_v2"})
VOICE_ENDPOINTS = frozenset({"run_scenarios", "run_scenarios_text"})
_METRIC = "Refund policy followed"
_STARTED_RUN = {
    "status": "pending",
    "number": None,
    "inbound_number": "+11234567890",
    "test_profile_data": None,
}
_NUMBERS = ("latency", "run_duration", "error_500_rate", "error_429_rate", "drop_rate", "retry_after")
_FAIL_EXPLANATION = "Agent did not confirm the refund amount."
_ERROR_MESSAGE = "Call did not connect"


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


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
            if not cycle or not set(cycle) <= OUTCOMES:
                raise ValueError(f"behaviours[{scenario}] must be a non-empty list of {sorted(OUTCOMES)}")

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
    agent: int | None
    run_as_text: bool
    created_at: datetime
    duration: float
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
            changes["behaviours"] = {int(key): list(cycle) for key, cycle in changes["behaviours"].items()}
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


def _status(outcomes: set[str], phase: str | None, *, cancelled: bool) -> str:
    """Return the status of a run, or of a result from its runs' outcomes, at a phase of its timeline."""
    if cancelled:
        return "cancelled"
    if phase == "pending":
        return "pending"
    if "hang" in outcomes:
        return "running"
    if phase is not None:
        return phase
    return "failed" if "error" in outcomes else "completed"


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
        self.app.router.add_get("/test_framework/v1/results/", self._list)
        self.app.router.add_get(r"/test_framework/v1/results/{id:\d+}/", self._detail)
        self.app.router.add_post(r"/test_framework/v1/results/{id:\d+}/end_calls/", self._end_calls)
        self.app.router.add_route("*", "/test_framework/{tail:.*}", self._unknown)
        self.app.router.add_get("/_simulator/submissions", self._control_submissions)
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
        if v2:
            livekit = endpoint == "run_scenarios_livekit_v2"
            agent = _check_int(body.get("agent"), "agent", errors) if livekit else None
            frequency = _check_int(body.get("frequency", 1), "frequency", errors, high=100)
        else:
            agent = _check_int(body.get("agent_id"), "agent_id", errors)
            frequency = _check_int(body.get("frequency", 1), "frequency", errors)
            for unsupported in ("tags", "folder_path"):
                if body.get(unsupported) is not None:
                    errors[unsupported] = ["Not supported by the simulator: list scenario ids."]
        if body.get("name") is not None and not isinstance(body["name"], str):
            errors["name"] = ["Not a valid string."]
        if errors or frequency is None:
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
        started = {
            "id": result.id,
            "agent": result.agent,
            "status": "pending",
            "run_as_text": result.run_as_text,
            "created_at": _iso(result.created_at),
            "name": result.name,
            "runs": [
                {
                    "id": run.id,
                    "scenario": run.scenario,
                    "scenario_name": f"Scenario {run.scenario}",
                    **_STARTED_RUN,
                }
                for run in result.runs
            ],
        }
        return _json(started, 200 if v2 else 201)

    def _create(
        self, entry: Submission, agent: int | None, scenarios: list[int], frequency: int, *, run_as_text: bool
    ) -> _Result:
        runs = []
        for scenario in scenarios:
            for _ in range(frequency):
                runs.append(_Run(self._next_run_id, scenario, self._next_outcome(scenario)))
                self._next_run_id += 1
        now, duration = self._clock(), self.config.run_duration
        result = _Result(self._next_result_id, entry.name, agent, run_as_text, now, duration, runs)
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

    def _phase(self, result: _Result) -> str | None:
        """Return the in-progress phase of a result's timeline, or None once its duration has passed."""
        if result.duration <= 0:
            return None
        share = (self._clock() - result.created_at).total_seconds() / result.duration
        if share < 0.2:
            return "pending"
        if share < 0.8:
            return "running"
        return "evaluating" if share < 1.0 else None

    def _result_status(self, result: _Result, phase: str | None) -> str:
        return _status({run.outcome for run in result.runs}, phase, cancelled=result.cancelled)

    def _view(self, result: _Result) -> Json:
        """Render a result as the detail endpoint does, logging its terminal state the first time it shows."""
        phase = self._phase(result)
        runs: dict[str, Json] = {}
        for run in result.runs:
            status = _status({run.outcome}, phase, cancelled=run.cancelled)
            metrics = []
            if status == "completed":
                passed = run.outcome == "pass"
                explanation = "Agent confirmed the refund amount." if passed else _FAIL_EXPLANATION
                metric = {"id": 701, "name": _METRIC, "type": "binary", "score": int(passed)}
                metrics.append({**metric, "explanation": explanation})
            runs[str(run.id)] = {
                "id": run.id,
                "scenario": run.scenario,
                "scenario_name": f"Scenario {run.scenario}",
                "status": status,
                "success": run.outcome == "pass" if status in ("completed", "failed") else None,
                "error_message": _ERROR_MESSAGE if status == "failed" else None,
                "duration": _duration(run) if status == "completed" else "00:00",
                "evaluation": {"metrics": metrics},
            }
        failed = [view for view in runs.values() if view["success"] is False]
        succeeded = sum(1 for view in runs.values() if view["success"] is True)
        issues: dict[str, list[int]] = {}
        for view in failed:
            issues.setdefault(view["error_message"] or _FAIL_EXPLANATION, []).append(view["id"])
        ranked = sorted(issues.items(), key=lambda item: (-len(item[1]), item[0]))
        status = self._result_status(result, phase)
        terminal = status in TERMINAL
        if terminal and result.id not in self._reported:
            self._reported.add(result.id)
            counts = (status, len(failed), len(runs))
            logger.info("simulator: result %d (%s) %s, %d/%d runs failed", result.id, result.name, *counts)
        return {
            "id": result.id,
            "name": result.name,
            "agent": result.agent,
            "status": status,
            "run_as_text": result.run_as_text,
            "created_at": _iso(result.created_at),
            "success_rate": round(100.0 * succeeded / len(runs), 2) if terminal else None,
            "total_runs_count": str(len(runs)),
            "success_runs_count": str(succeeded),
            "failed_runs_count": str(len(failed)),
            "runs": runs,
            "failed_reasons": {
                "issues": [
                    {"rank": rank, "run_ids": ids, "description": description, "affected_count": len(ids)}
                    for rank, (description, ids) in enumerate(ranked, start=1)
                ],
                "total_failed_runs": len(failed),
            },
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
        summaries = []
        for result in matches[(page - 1) * size : page * size]:
            view = self._view(result)
            summaries.append({key: view[key] for key in ("id", "name", "status", "agent", "created_at")})
        return _json(
            {
                "count": len(matches),
                "next": str(request.url.update_query(page=page + 1)) if page < pages else None,
                "previous": str(request.url.update_query(page=page - 1)) if page > 1 else None,
                "results": summaries,
            }
        )

    async def _end_calls(self, request: web.Request) -> web.Response:
        if (denied := await self._gate(request)) is not None:
            return denied
        result = self._results.get(int(request.match_info["id"]))
        if result is None:
            return _not_found()
        phase = self._phase(result)
        for run in result.runs:
            if _status({run.outcome}, phase, cancelled=run.cancelled) not in TERMINAL:
                run.cancelled = True
        if self._result_status(result, phase) not in TERMINAL:
            result.cancelled = True
        self._view(result)  # logs the terminal state
        return _json({"detail": "Calls ended."})

    async def _control_submissions(self, request: web.Request) -> web.Response:
        return _json([entry.to_json() for entry in self.submissions])

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
