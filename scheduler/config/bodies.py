"""What a job asks of its endpoint, held against that endpoint's request schema (``scheduler.endpoints``).

The agent (``agent`` or ``assistant_id``, or none), the scenario selection (exactly one of ``scenarios``,
``tags``, ``folder_path`` with ``project_id``, or ``spec``, as the endpoint offers), the endpoint's own frequency
range, and the ``body`` table: unknown keys, wrong types, required fields. Each problem is placed at its
file:line like every other one.
"""

from __future__ import annotations

import difflib
from typing import Any

from scheduler.config.issues import Issues
from scheduler.config.models import RESERVED_BODY_KEYS, SELECTIONS, ScenarioRef
from scheduler.endpoints import Endpoint, check_body


def check_request(where: tuple[str, ...], job: dict[str, Any], endpoint: Endpoint, issues: Issues) -> bool:
    """What a job asks of its endpoint, held against that endpoint's request schema; False when it cannot go."""
    before = len(issues.items)
    name = endpoint.key
    if endpoint.agent_field is None and "agent" in job:
        where_agent = " (the agent is in pipecat_data)" if "pipecat_data" in endpoint.fields else ""
        issues.add((*where, "agent"), f"the {name} endpoint takes no agent{where_agent}")
    if "assistant_id" in job:
        if "assistant_id" not in endpoint.fields:
            issues.add((*where, "assistant_id"), f"the {name} endpoint takes no assistant_id: set agent")
        elif "agent" in job:
            issues.add((*where, "assistant_id"), "set agent or assistant_id, not both")
    if endpoint.agent_needed and "agent" not in job and "assistant_id" not in job:
        issues.add(where, f'the {name} endpoint needs agent = <agent id> (or assistant_id = "...")')
    _check_selection(where, job, endpoint, issues)
    frequency = endpoint.frequency
    if frequency is None and "frequency" in job:
        issues.add((*where, "frequency"), f"the {name} endpoint takes no frequency")
    elif (
        frequency
        and frequency.maximum is not None
        and _is_int(job.get("frequency"))
        and job["frequency"] > frequency.maximum
    ):
        issues.add((*where, "frequency"), f"frequency: at most {frequency.maximum} on the {name} endpoint")
    body = job.get("body", {})
    if isinstance(body, dict):
        checked = {key: value for key, value in body.items() if key not in RESERVED_BODY_KEYS}
        for place, message in check_body(endpoint, checked, strict=True, required=False).items:
            _body_issue(where, place, message, endpoint, issues)
        for key in endpoint.required:
            if key not in RESERVED_BODY_KEYS and key not in body:
                issues.add((*where, "body"), f'the {name} endpoint needs body.{key} = "..."')
    return len(issues.items) == before


def _check_selection(where: tuple[str, ...], job: dict[str, Any], endpoint: Endpoint, issues: Issues) -> None:
    """Exactly one of scenarios, tags, folder_path (with project_id) or spec, as the endpoint allows."""
    name = endpoint.key
    allowed = (
        ("spec",)
        if endpoint.takes_spec
        else ("scenarios", "tags", "folder_path")
        if endpoint.selects
        else ("scenarios",)
    )
    given = [key for key in SELECTIONS if key in job]
    for key in given:
        if key not in allowed:
            issues.add((*where, key), f"the {name} endpoint takes no {key}: set {' or '.join(allowed)}")
    if not given:
        what = {"spec": "spec = { ... } (a test-suite spec)", "scenarios": "scenarios = [<scenario id>, ...]"}
        issues.add(where, f"the {name} endpoint needs " + " or ".join(what.get(key, f"{key} = ...") for key in allowed))
    elif len([key for key in given if key in allowed]) > 1:
        issues.add(where, f"{', '.join(given)}: set only one (Cekura takes them as alternatives)")
    if "folder_path" in job and "project_id" not in job:
        issues.add((*where, "folder_path"), "folder_path needs project_id = <Cekura project id> (Cekura requires it)")
    scenarios = job.get("scenarios")
    if scenarios == []:
        issues.add((*where, "scenarios"), "scenarios: list at least one scenario id")
    if isinstance(scenarios, list):
        for index, item in enumerate(scenarios):
            extra = (
                [key for key in item if key not in ("id", *endpoint.scenario_keys)] if isinstance(item, dict) else []
            )
            for key in extra:
                if key in ScenarioRef.model_fields:  # unknown keys are the model's to report
                    takes = ", ".join(endpoint.scenario_keys) or "only scenario ids"
                    issues.add(
                        (*where, "scenarios"),
                        f"scenarios[{index}].{key}: not taken by the {name} endpoint (it takes {takes})",
                    )


def _body_issue(
    where: tuple[str, ...], place: tuple[str | int, ...], message: str, endpoint: Endpoint, issues: Issues
) -> None:
    keys = tuple(str(part) for part in place)
    written = "body." + ".".join(keys)
    if message == "unknown key":
        known = list(endpoint.fields) if len(place) == 1 else []
        close = difflib.get_close_matches(keys[-1], known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        message = f"unknown key {written!r} for {endpoint.path}{hint}"
    else:
        message = f"{written}: {message[0].lower()}{message[1:]}".removesuffix(".")
    issues.add((*where, "body", *(part for part in keys if not part.isdigit())), message)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
