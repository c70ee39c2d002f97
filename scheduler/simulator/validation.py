"""Checking a submission's body as the real API does, with its field errors worded as Django REST framework's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scheduler.simulator.config import Json, is_int

V2_ENDPOINTS = frozenset({"run_scenarios_livekit_v2", "run_scenarios_pipecat_v2"})
VOICE_ENDPOINTS = frozenset({"run_scenarios", "run_scenarios_text"})
PIPECAT_AGENT = 1  # the detail's `agent` is a required integer, and a pipecat body names none


@dataclass(frozen=True)
class Order:
    """What a valid submission asks for: each scenario, ``frequency`` times, on an agent."""

    scenarios: list[int]
    agent: int
    frequency: int


def check_submission(endpoint: str, body: Json) -> Order | Json:
    """Return what a submission body to ``endpoint`` (one of the run endpoints) orders, or its field errors."""
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
        return errors
    return Order(scenarios=scenarios, agent=agent, frequency=frequency)


def _check_int(value: Any, key: str, errors: Json, high: int | None = None) -> int | None:
    """Validate a positive integer field, worded as Django REST framework does; None when invalid."""
    if value is None:
        errors[key] = ["This field is required."]
    elif not is_int(value):
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
        if not all(is_int(item) for item in value):
            errors["scenarios"] = ["A valid integer is required."]
        return [item for item in value if is_int(item)]
    valid = [isinstance(item, dict) and is_int(item.get("scenario")) for item in value]
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
