"""The simulator's behaviour knobs: what each run does, how answers are shaped, latency and faults."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeGuard

Json = dict[str, Any]

# The status a run ends with, per outcome; `hang` never ends.
RUN_ENDS = {
    "pass": "completed",
    "fail": "completed",
    "unjudged": "completed",
    "null": "completed",
    "error": "failed",
    "timeout": "timeout",
    "cancelled": "cancelled",
}
OUTCOMES = frozenset({*RUN_ENDS, "hang"})
PHASES = ("pending", "in_queue", "scaling_up", "running", "in_progress", "evaluating")
TERMINAL = ("completed", "failed", "timeout", "cancelled")
FAILED_REASONS = ("dict", "list", "string", "null")
METRIC_FORMS = ("eval_type", "score")
_NUMBERS = (
    "latency",
    "run_duration",
    "error_500_rate",
    "error_429_rate",
    "drop_rate",
    "retry_after",
    "webhook_drop_rate",
    "webhook_copies",
)


def is_int(value: object) -> TypeGuard[int]:
    """Whether a JSON value is an integer (JSON's true and false are not)."""
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
    tags: dict[str, list[int]] = field(default_factory=dict)  # the scenarios carrying each tag
    folders: dict[str, list[int]] = field(default_factory=dict)  # the scenarios in each folder path
    # Cekura's result.completed webhook: POSTed to this URL as each result ends, with X-CEKURA-SECRET.
    webhook_url: str | None = None
    webhook_secret: str = "sim-webhook-secret"
    webhook_copies: int = 1  # each webhook sent this many times (Cekura's retries can deliver one twice)
    webhook_drop_rate: float = 0.0  # the share of webhooks never sent (lost)
    cron_jobs: list[Json] = field(default_factory=list)  # what GET /schedules/v1/cron-jobs/ lists

    def __post_init__(self) -> None:
        if not (self.api_key is None or isinstance(self.api_key, str)):
            raise ValueError("api_key must be a string or null")
        if not all(value is None or is_int(value) for value in (self.seed, self.balance, self.retry_after)):
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
        if not (self.webhook_url is None or isinstance(self.webhook_url, str)) or not isinstance(
            self.webhook_secret, str
        ):
            raise ValueError("webhook_url must be a string or null, webhook_secret a string")
        if not is_int(self.webhook_copies):
            raise ValueError("webhook_copies must be an integer")
        if not isinstance(self.cron_jobs, list) or not all(isinstance(job, dict) for job in self.cron_jobs):
            raise ValueError("cron_jobs must be a list of objects")
        for knob in (self.tags, self.folders):
            if not isinstance(knob, dict) or not all(
                isinstance(ids, list) and all(is_int(item) for item in ids) for ids in knob.values()
            ):
                raise ValueError("tags and folders map names to lists of scenario ids")
        if not isinstance(self.sparse_search, bool):
            raise ValueError("sparse_search must be true or false")

    def to_json(self) -> Json:
        """Return the config as JSON-ready data (behaviour keys as strings, as JSON needs)."""
        data = dataclasses.asdict(self)
        data["behaviours"] = {str(key): list(cycle) for key, cycle in self.behaviours.items()}
        data["unknown_scenarios"] = sorted(self.unknown_scenarios)
        return data

    def patched(self, patch: Json) -> SimulatorConfig:
        """Return this config with a JSON ``patch`` applied (behaviour keys come as strings); ValueError if invalid."""
        changes = dict(patch)
        unknown = set(changes) - {spec.name for spec in dataclasses.fields(self)}
        try:
            if unknown:
                raise ValueError(f"unknown fields {sorted(unknown)}")
            if "behaviours" in changes:
                changes["behaviours"] = {int(key): cycle for key, cycle in changes["behaviours"].items()}
            if "unknown_scenarios" in changes:
                changes["unknown_scenarios"] = {int(scenario) for scenario in changes["unknown_scenarios"]}
            return dataclasses.replace(self, **changes)
        except (AttributeError, TypeError, ValueError) as exc:
            raise ValueError(f"invalid config: {exc}") from exc
