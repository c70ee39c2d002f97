"""Checking a submission's body as the real API does, with its field errors worded as Django REST framework's.

The body is checked against the same endpoint descriptions ``validate`` uses (``scheduler.endpoints``), which a
test holds against Cekura's request schemas; as Cekura does, unknown fields are ignored. Scenarios chosen by tag
or folder come from the ``tags`` and ``folders`` knobs; a test-suite spec's test cases from its ``scenarios``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scheduler.endpoints import BY_PATH, Endpoint, check_body, runs_per_scenario
from scheduler.simulator.config import Json, SimulatorConfig, is_int

DEFAULT_AGENT = 1  # the result's `agent` is a required integer, and some bodies name none
PIPECAT_AGENT = DEFAULT_AGENT
SPEC_SCENARIO = 900_001  # the first scenario id given to the test cases of a spec


@dataclass(frozen=True)
class Order:
    """What a valid submission asks for: each scenario, ``frequency`` times for each personality and test
    profile it names (``variants``), on an agent."""

    scenarios: list[int]
    agent: int
    frequency: int
    variants: int = 1

    @property
    def runs(self) -> int:
        return len(self.scenarios) * self.frequency * self.variants


def check_submission(path: str, body: Json, config: SimulatorConfig | None = None) -> Order | Json:
    """Return what a submission body to the run endpoint ``path`` orders, or its field errors."""
    endpoint = BY_PATH[path]
    config = config or SimulatorConfig()
    shaped = check_body(endpoint, body, strict=False).as_drf()
    scenarios = _scenarios(endpoint, body, config, shaped)
    if endpoint.agent_needed and not any(body.get(key) is not None for key in ("agent_id", "assistant_id")):
        shaped.setdefault("agent_id", []).append("This field is required.")
    name = body.get("name")
    if isinstance(name, str) and len(name) > 255 and "name" not in shaped:  # the result's name has maxLength 255
        shaped["name"] = ["Ensure this field has no more than 255 characters."]
    if shaped:
        return shaped
    agent = next((body[key] for key in ("agent", "agent_id") if is_int(body.get(key))), DEFAULT_AGENT)
    frequency = body.get("frequency", 1) if "frequency" in endpoint.fields else 1
    return Order(scenarios=scenarios, agent=agent, frequency=frequency, variants=runs_per_scenario(body))


def _scenarios(endpoint: Endpoint, body: Json, config: SimulatorConfig, errors: Json) -> list[int]:
    """The scenario ids a body selects (ids, tables, a tag, a folder, a spec), recording what is wrong."""
    if endpoint.takes_spec:
        spec = body.get("spec")
        cases = spec.get("scenarios") if isinstance(spec, dict) else None
        if "spec" not in body and "file" not in body:
            errors.setdefault("spec", []).append("Either spec or file must be provided.")
        elif not isinstance(cases, list) or not cases:
            errors.setdefault("spec", []).append("scenarios: a spec lists at least one test case.")
        return [SPEC_SCENARIO + index for index in range(len(cases or []))]
    chosen = [key for key in ("scenarios", "tags", "folder_path") if body.get(key) is not None]
    if len(chosen) > 1:
        errors.setdefault("non_field_errors", []).append("Only one of scenarios, tags or folder_path may be given.")
        return []
    if not chosen:
        if "scenarios" not in errors:  # a required field is said once
            message = "Either scenarios, tags, or folder_path must be provided." if endpoint.selects else None
            errors["scenarios"] = [message or "This field is required."]
        return []
    if chosen == ["tags"]:
        return _selected(body["tags"], config.tags, "tags", errors)
    if chosen == ["folder_path"]:
        if not is_int(body.get("project_id")):
            errors.setdefault("project_id", []).append("project_id is required when using folder_path.")
            return []
        return _selected([body["folder_path"]], config.folders, "folder_path", errors)
    value = body["scenarios"]
    if not isinstance(value, list) or "scenarios" in errors:
        return []
    if not value:
        errors["scenarios"] = ["This list may not be empty."]
        return []
    return [item["scenario"] if isinstance(item, dict) else item for item in value]


def _selected(names: Any, known: dict[str, list[int]], key: str, errors: Json) -> list[int]:
    if not isinstance(names, list) or key in errors:
        return []
    found = sorted({scenario for name in names if isinstance(name, str) for scenario in known.get(name, [])})
    if not found:
        what = "tags" if key == "tags" else "folder"
        errors[key] = [f"No scenarios found for the given {what}."]
    return found
