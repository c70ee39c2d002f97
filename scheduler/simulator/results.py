"""The simulator's state: the submissions it received, and each result and its runs along their timeline.

What happens to a result is decided when it is submitted, from the config of that moment; where it is on its
timeline is a function of the time alone.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime

from scheduler.simulator.config import RUN_ENDS, TERMINAL, Json, SimulatorConfig
from scheduler.simulator.validation import Order


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Submission:
    """One submission the simulator received, whatever it answered."""

    result_id: int | None
    endpoint: str
    name: str | None
    body: Json
    received_at: datetime
    status_code: int | None

    def to_json(self) -> Json:
        return {**dataclasses.asdict(self), "received_at": iso(self.received_at)}


@dataclass
class Run:
    id: int
    scenario: int
    outcome: str
    cancelled: bool = False


@dataclass
class Result:
    id: int
    name: str | None
    agent: int
    run_as_text: bool
    created_at: datetime
    duration: float
    phases: tuple[str, ...]
    end_status: str | None
    runs: list[Run]
    cancelled: bool = False


def phase(result: Result, now: datetime) -> int | None:
    """Return the index of the phase a result's timeline is in, or None once its duration has passed."""
    if result.duration <= 0:
        return None
    share = (now - result.created_at).total_seconds() / result.duration
    if share >= 1.0:
        return None
    return min(max(int(share * len(result.phases)), 0), len(result.phases) - 1)


def _hanging(phases: tuple[str, ...], index: int | None) -> str:
    """Return the status of a hanging run (or result): it walks its phases up to `running`, then stays there."""
    stop = phases.index("running") if "running" in phases else 1
    return phases[index] if index is not None and index < stop else "running"


def run_status(run: Run, phases: tuple[str, ...], index: int | None) -> str:
    """Return the status of a run at phase `index` of its result's timeline (None once it has ended)."""
    if run.cancelled:
        return "cancelled"
    if run.outcome == "hang":
        return _hanging(phases, index)
    return phases[index] if index is not None else RUN_ENDS[run.outcome]


def result_status(result: Result, index: int | None) -> str:
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


class Results:
    """Every result created so far, by id, and where each scenario is in its cycle of behaviours."""

    def __init__(self) -> None:
        self._results: dict[int, Result] = {}
        self._next_result_id = 9001
        self._next_run_id = 55501
        self._cycle_position: dict[int, int] = {}
        self._reported: set[int] = set()

    def create(
        self, entry: Submission, order: Order, *, run_as_text: bool, at: datetime, config: SimulatorConfig
    ) -> Result:
        """Create the result of a submission: each run draws the next outcome of its scenario's cycle."""
        runs = []
        for scenario in order.scenarios:
            for _ in range(order.frequency * order.variants):
                runs.append(Run(self._next_run_id, scenario, self._next_outcome(scenario, config)))
                self._next_run_id += 1
        result = Result(
            id=self._next_result_id,
            name=entry.name,
            agent=order.agent,
            run_as_text=run_as_text,
            created_at=at,
            duration=config.run_duration,
            phases=tuple(config.phases),
            end_status=config.result_status,
            runs=runs,
        )
        self._results[result.id] = result
        self._next_result_id += 1
        return result

    def _next_outcome(self, scenario: int, config: SimulatorConfig) -> str:
        cycle = config.behaviours.get(scenario)
        if not cycle:
            return "pass"
        position = self._cycle_position.get(scenario, 0)
        self._cycle_position[scenario] = position + 1
        return cycle[position % len(cycle)]

    def restart_cycles(self) -> None:
        """Start every scenario's cycle of behaviours from its first outcome again."""
        self._cycle_position.clear()

    def get(self, result_id: int) -> Result | None:
        return self._results.get(result_id)

    def newest_first(self) -> list[Result]:
        return sorted(self._results.values(), key=lambda result: result.id, reverse=True)

    def end_calls(self, result: Result, now: datetime) -> None:
        """Cancel the runs of a result that have not ended, and the result itself if it has not."""
        index = phase(result, now)
        for run in result.runs:
            if run_status(run, result.phases, index) not in TERMINAL:
                run.cancelled = True
        if result_status(result, index) not in TERMINAL:
            result.cancelled = True

    def first_seen_ended(self, result: Result, status: str) -> bool:
        """Whether a result shows this terminal status for the first time (to log each end once)."""
        if status not in TERMINAL or result.id in self._reported:
            return False
        self._reported.add(result.id)
        return True
