"""Cekura's run endpoints as data: where each one posts, its body fields and their types, and checking a body.

One ``Endpoint`` per run endpoint of Cekura's API document whose body names stored scenarios (or, for
``run_scenarios_json``, a test-suite spec). What a job may write follows from its fields: the scenario form
(ids, or tables with ``publish_data_message`` / ``websocket_url``), the agent field (``agent`` or ``agent_id``),
selection by ``tags`` or ``folder_path``, ``assistant_id``, the frequency range. A new endpoint is a few lines in
``ENDPOINTS``; ``tests/unit/test_endpoints.py`` holds every description against the document's request schema.

``check_body`` is used twice: by ``validate`` on what a job writes (strictly: unknown keys are refused, since
Cekura ignores them and a misspelt field would silently do nothing), and by the simulator on what it receives
(as Cekura does: unknown keys ignored). Its messages are worded as Django REST framework's, Cekura's own.
Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True)
class Field:
    """The type of one body field, as the document gives it."""

    type: str  # integer, string, boolean, object, array, any
    nullable: bool = False
    minimum: int | None = None
    maximum: int | None = None
    max_length: int | None = None
    choices: tuple[str, ...] = ()
    items: str | None = None  # an array's item type: integer, string, or object (then ``properties``)
    properties: Mapping[str, Field] | None = None  # an object's (or an array item's) known keys
    required: tuple[str, ...] = ()  # of an object array item
    email: bool = False


INT = Field("integer")
INT_NULL = Field("integer", nullable=True)
INT_MIN1 = Field("integer", minimum=1)
STR = Field("string")
STR_NULL = Field("string", nullable=True)
ANY = Field("any")
INTS = Field("array", items="integer")
INTS_NULL = Field("array", items="integer", nullable=True)
STRS = Field("array", items="string")
STRS_NULL = Field("array", items="string", nullable=True)
OBJECT = Field("object")


def _overrides(*names: str, **extra: Field) -> Field:
    """A per-run overrides object: string-or-null keys, and any others given."""
    return Field("object", properties={**dict.fromkeys(names, STR_NULL), **extra})


def _scenario_items(**extra: Field) -> Field:
    return Field("array", items="object", properties={"scenario": INT, **extra}, required=("scenario",))


# The voice family (run_scenarios and its variations): an agent id or an assistant id, scenarios by id, tag or
# folder, phone-number overrides.
_VOICE: dict[str, Field] = {
    "agent_id": INT,
    "assistant_id": STR,
    "scenarios": INTS,
    "tags": STRS,
    "folder_path": STR,
    "project_id": INT,
    "frequency": INT_MIN1,
    "name": STR,
    "outbound_phone_number": STR,
    "personality_ids": INTS_NULL,
    "test_profile_ids": INTS_NULL,
    "personality_id": INT_NULL,
    "test_profile_id": INT_NULL,
    "mode": Field("string", choices=("same_number", "different_numbers")),
    "agent_number": STR,
    "concurrency_limit": INT_MIN1,
    "mock_tool_names": STRS,
}
_TEXT = {key: value for key, value in _VOICE.items() if key not in ("mode", "personality_id", "test_profile_id")}
# The v2 WebRTC family (LiveKit, Pipecat): scenarios as tables, frequency 1..100, nullable overrides.
_V2: dict[str, Field] = {
    "name": STR_NULL,
    "frequency": Field("integer", minimum=1, maximum=100),
    "scenarios": _scenario_items(publish_data_message=ANY),
    "personality_ids": INTS_NULL,
    "test_profile_ids": INTS_NULL,
    "mock_tool_names": STRS_NULL,
    "concurrency_limit": INT_NULL,
    "personality_id": INT_NULL,
    "test_profile_id": INT_NULL,
}
# Provider WebRTC (VAPI, Retell): scenario ids, an optional agent, a frequency without a documented range.
_PROVIDER: dict[str, Field] = {
    "scenarios": INTS,
    "agent_id": INT,
    "project_id": INT,
    "frequency": INT,
    "name": STR,
    "concurrency_limit": INT,
    "mock_tool_names": STRS,
}


@dataclass(frozen=True)
class Endpoint:
    """One run endpoint: its jobs.toml name, the path segment it posts to, its body fields."""

    key: str
    path: str
    summary: str  # what it reaches, in a few words
    fields: Mapping[str, Field]
    required: tuple[str, ...] = ("scenarios",)  # body fields the document requires
    agent_needed: bool = False  # ours: the voice family cannot tell the agent from the scenarios
    created: int = 200  # the status code of a submission's answer

    @property
    def agent_field(self) -> str | None:
        """Where the job's ``agent`` goes: ``agent`` or ``agent_id``; None when the endpoint takes none."""
        return next((name for name in ("agent", "agent_id") if name in self.fields), None)

    @property
    def selects(self) -> bool:
        """Whether scenarios may be chosen by ``tags`` or ``folder_path`` instead of listed."""
        return "tags" in self.fields

    @property
    def takes_spec(self) -> bool:
        return "spec" in self.fields

    @property
    def scenario_keys(self) -> tuple[str, ...]:
        """The keys a scenario table may hold beside ``id`` (none: the endpoint takes scenario ids)."""
        scenarios = self.fields.get("scenarios")
        if scenarios is None or scenarios.properties is None:
            return ()
        return tuple(key for key in scenarios.properties if key != "scenario")

    @property
    def frequency(self) -> Field | None:
        return self.fields.get("frequency")


ENDPOINTS: dict[str, Endpoint] = {
    endpoint.key: endpoint
    for endpoint in (
        Endpoint("livekit_v2", "run_scenarios_livekit_v2", "LiveKit, project credentials", {
            **_V2,
            "agent": INT_NULL,
            "livekit_data": _overrides("agent_name", "url", config=ANY),
        }),
        Endpoint("pipecat_v2", "run_scenarios_pipecat_v2", "Pipecat Cloud, project credentials", {
            **_V2,
            "pipecat_data": _overrides("pipecat_agent_name", config=ANY, room_properties=ANY),
        }),
        Endpoint("voice", "run_scenarios", "a phone call", _VOICE, (), agent_needed=True, created=201),
        Endpoint("text", "run_scenarios_text", "text, SMS or chat", {
            **_TEXT, "websocket_url": STR, "websocket_headers": OBJECT,
        }, (), agent_needed=True, created=201),
        Endpoint("sip", "run_scenarios_sip", "a direct SIP connection", {**_VOICE, "sip_endpoint": STR}, (),
                 agent_needed=True),
        Endpoint("chirp", "run_scenarios_chirp", "a raw-PCM WebSocket", {**_VOICE, "websocket_url": STR}, (),
                 agent_needed=True),
        Endpoint("agora", "run_scenarios_agora", "an Agora RTC channel", _VOICE, (), agent_needed=True),
        Endpoint("elevenlabs", "run_scenarios_elevenlabs", "an ElevenLabs Conversational agent", {
            **_VOICE,
            "elevenlabs_agent_id": STR,
            "elevenlabs_data": _overrides("elevenlabs_base_url_override", "elevenlabs_environment",
                                          "elevenlabs_branch_id"),
        }, (), agent_needed=True),
        Endpoint("vapi_webrtc", "run_scenarios_vapi_webrtc", "a VAPI assistant over WebRTC", {
            **_PROVIDER, "vapi_assistant_id": STR,
        }, ("scenarios", "vapi_assistant_id")),
        Endpoint("retell_webrtc", "run_scenarios_retell_webrtc", "a Retell agent over WebRTC", {
            **_PROVIDER, "retell_agent_id": STR,
        }),
        Endpoint("websockets", "run_scenarios_with_websockets", "a WebSocket URL per scenario", {
            "agent": INT_NULL,
            "scenarios": _scenario_items(websocket_url=STR),
            "frequency": Field("integer", minimum=1, maximum=100),
            "mock_tool_names": STRS_NULL,
        }, ("frequency", "scenarios"), created=201),
        Endpoint("email", "run_scenarios_email", "an agent that answers email", {
            "agent_id": INT_NULL,
            "scenarios": INTS,
            "frequency": Field("integer", minimum=1, maximum=100),
            "agent_email": Field("string", nullable=True, email=True),
        }, ("frequency", "scenarios")),
        Endpoint("json", "run_scenarios_json", "a test-suite spec instead of stored scenarios", {
            "spec": ANY,
            "file": STR,
            "agent_id": INT,
            "name": Field("string", max_length=255),
            "channel": Field("string", choices=("voice", "text", "elevenlabs", "livekit_v2", "pipecat_v2")),
            "livekit_data": OBJECT,
            "pipecat_data": OBJECT,
        }, ()),
    )
}  # fmt: skip
"""Every run endpoint a job may name, by its jobs.toml name."""

BY_PATH: dict[str, Endpoint] = {endpoint.path: endpoint for endpoint in ENDPOINTS.values()}


@dataclass
class BodyErrors:
    """Problems found in a body, each at its place (a path of keys and list indexes)."""

    items: list[tuple[tuple[str | int, ...], str]] = field(default_factory=list)

    def add(self, where: tuple[str | int, ...], message: str) -> None:
        self.items.append((where, message))

    def as_drf(self) -> dict[str, Any]:
        """The problems shaped as Cekura's 400 answer: a field map of lists of messages."""
        shaped: dict[str, Any] = {}
        for where, message in self.items:
            key = str(where[0]) if where else "non_field_errors"
            text = message if len(where) <= 1 else f"{'.'.join(str(part) for part in where[1:])}: {message}"
            shaped.setdefault(key, []).append(text)
        return shaped


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_value(spec: Field, value: Any, where: tuple[str | int, ...], errors: BodyErrors, *, strict: bool) -> None:
    """Check one value against its field type; ``strict`` also refuses keys an object does not know."""
    if value is None:
        if not spec.nullable and spec.type != "any":
            errors.add(where, "This field may not be null.")
        return
    if spec.type == "integer":
        if not _is_int(value):
            errors.add(where, "A valid integer is required.")
        elif spec.minimum is not None and value < spec.minimum:
            errors.add(where, f"Ensure this value is greater than or equal to {spec.minimum}.")
        elif spec.maximum is not None and value > spec.maximum:
            errors.add(where, f"Ensure this value is less than or equal to {spec.maximum}.")
    elif spec.type == "string":
        if not isinstance(value, str):
            errors.add(where, "Not a valid string.")
        elif spec.choices and value not in spec.choices:
            errors.add(where, f'"{value}" is not a valid choice (one of {", ".join(spec.choices)}).')
        elif spec.max_length is not None and len(value) > spec.max_length:
            errors.add(where, f"Ensure this field has no more than {spec.max_length} characters.")
        elif spec.email and not _EMAIL.match(value):
            errors.add(where, "Enter a valid email address.")
    elif spec.type == "boolean":
        if not isinstance(value, bool):
            errors.add(where, "Must be a valid boolean.")
    elif spec.type == "array":
        if not isinstance(value, list):
            errors.add(where, f'Expected a list of items but got type "{type(value).__name__}".')
            return
        item = Field(spec.items or "any", properties=spec.properties)
        for index, element in enumerate(value):
            check_value(item, element, (*where, index), errors, strict=strict)
            if spec.items == "object" and isinstance(element, dict):
                for key in spec.required:
                    if key not in element:
                        errors.add((*where, index, key), "This field is required.")
    elif spec.type == "object":
        if not isinstance(value, dict):
            errors.add(where, f'Expected a dictionary of items but got type "{type(value).__name__}".')
            return
        for key, inner in value.items():
            if spec.properties is not None and key in spec.properties:
                check_value(spec.properties[key], inner, (*where, key), errors, strict=strict)
            elif strict and spec.properties is not None:
                errors.add((*where, key), "unknown key")


def check_body(endpoint: Endpoint, body: Mapping[str, Any], *, strict: bool, required: bool = True) -> BodyErrors:
    """The problems of a body for ``endpoint``: types and ranges, required fields (with ``required``), and with
    ``strict`` the keys the endpoint does not know."""
    errors = BodyErrors()
    for key, value in body.items():
        spec = endpoint.fields.get(key)
        if spec is not None:
            check_value(spec, value, (key,), errors, strict=strict)
        elif strict:
            errors.add((key,), "unknown key")
    if required:
        for key in endpoint.required:
            if key not in body:
                errors.add((key,), "This field is required.")
    return errors


def runs_per_scenario(body: Mapping[str, Any]) -> int:
    """How many Cekura runs each scenario (and each repeat of it) makes under a body's overrides.

    A run for each personality and each test profile the body names (``personality_ids`` with
    ``personality_id`` merged in, and the same for test profiles); one when it names none, as the scenario's own
    are used. An override is counted each time it is written: an estimate errs on the side of the budget.
    """
    runs = 1
    for many, one in (("personality_ids", "personality_id"), ("test_profile_ids", "test_profile_id")):
        named = [item for item in body.get(many) or () if _is_int(item)]
        single = body.get(one)
        if _is_int(single) and single not in named:
            named.append(single)
        runs *= max(len(named), 1)
    return runs
