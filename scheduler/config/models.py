"""The models of a valid jobs.toml: jobs, ``[defaults]``, ``[daemon]``, alert channels, maintenance, history."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator, model_validator

from scheduler.config.bounds import MAX_URL_LENGTH, check_cron, out_of_order, plausible, read_duration, read_zone
from scheduler.endpoints import ENDPOINTS, runs_per_scenario
from scheduler.schedules import Schedule

# Body fields the scheduler writes itself; a job sets them with its own keys, not under [jobs.<name>.body].
RESERVED_BODY_KEYS = {
    "scenarios",
    "agent",
    "agent_id",
    "name",
    "frequency",
    "tags",
    "folder_path",
    "assistant_id",
    "spec",
}
SELECTIONS = ("scenarios", "tags", "folder_path", "spec")
"""The job keys that say which scenarios a fire runs; a job sets exactly one of them."""


def _known_endpoint(value: object) -> object:
    if isinstance(value, str) and value not in ENDPOINTS:
        close = difflib.get_close_matches(value, list(ENDPOINTS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown endpoint {value!r}{hint}; one of {', '.join(ENDPOINTS)}")
    return value


CatchUp = Literal["skip", "latest", "all"]
"""What to do with slots missed while the daemon was down: skip them all, run the newest, or run them all."""
Overlap = Literal["skip", "allow"]
"""What to do with a slot while the job's previous result is still running."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class ScenarioRef(_Strict):
    """One scenario of a job, with the optional data message LiveKit and Pipecat agents receive, or its own
    WebSocket URL (the websockets endpoint)."""

    id: int = Field(gt=0)
    publish_data_message: Any = None
    websocket_url: str | None = None


class DaemonConfig(_Strict):
    """The ``[daemon]`` table: process-wide behaviour."""

    max_concurrent_submissions: int = Field(50, ge=1, le=1000)
    poll_interval: timedelta = timedelta(seconds=10)
    poll_max_interval: timedelta = timedelta(seconds=60)
    webhook_poll_interval: timedelta = timedelta(minutes=5)  # while webhooks are configured: the fallback
    alerts: tuple[str, ...] = ()
    lease: timedelta = timedelta(seconds=30)
    max_runs_per_day: int | None = Field(None, ge=1)

    _durations = field_validator("poll_interval", "poll_max_interval", "webhook_poll_interval", "lease", mode="before")(
        read_duration
    )


class HistoryConfig(_Strict):
    """The ``[history]`` table: how long fires, runs and delivered alerts are kept."""

    retention: timedelta | None = None  # None: forever

    _durations = field_validator("retention", mode="before")(read_duration)


class JobDefaults(_Strict):
    """The ``[defaults]`` table: values every job inherits unless it sets its own."""

    timezone: ZoneInfo | None = None
    endpoint: str | None = None
    alerts: tuple[str, ...] | None = None
    result_timeout: timedelta | None = None
    agent: int | None = Field(None, gt=0)
    frequency: int | None = Field(None, ge=1)  # its endpoint's own ceiling is checked in each job
    enabled: bool | None = None
    catch_up: CatchUp | None = None
    catch_up_window: timedelta | None = None
    overlap: Overlap | None = None
    jitter: timedelta | None = None
    failure_threshold: int | None = Field(None, ge=1)
    success_threshold: int | None = Field(None, ge=1)
    send_resolved: bool | None = None
    remind_every: timedelta | None = None
    project_id: int | None = Field(None, gt=0)
    max_runs_per_day: int | None = Field(None, ge=1)

    _durations = field_validator("result_timeout", "catch_up_window", "jitter", "remind_every", mode="before")(
        read_duration
    )
    _zones = field_validator("timezone", mode="before")(read_zone)
    _endpoints = field_validator("endpoint", mode="before")(_known_endpoint)


class Job(_Strict):
    """One ``[jobs.<name>]`` table, with the defaults already applied."""

    name: str
    cron: str | None = None
    every: timedelta | None = None
    timezone: ZoneInfo = ZoneInfo("UTC")
    endpoint: str = "livekit_v2"
    agent: int | None = Field(None, gt=0)
    assistant_id: str | None = Field(None, min_length=1)
    scenarios: tuple[ScenarioRef, ...] = ()  # exactly one of scenarios, tags, folder_path, spec (parsing checks)
    tags: tuple[str, ...] | None = Field(None, min_length=1)
    folder_path: str | None = Field(None, min_length=1)
    spec: dict[str, Any] | None = None
    frequency: int = Field(1, ge=1)  # its endpoint's own ceiling is checked when the file is parsed
    enabled: bool = True
    alerts: tuple[str, ...] = ()
    result_timeout: timedelta = timedelta(hours=1)
    catch_up: CatchUp = "latest"
    catch_up_window: timedelta = timedelta(hours=1)
    overlap: Overlap = "skip"
    jitter: timedelta | None = None
    failure_threshold: int = Field(1, ge=1)
    success_threshold: int = Field(1, ge=1)
    send_resolved: bool = True
    remind_every: timedelta | None = None
    project_id: int | None = Field(None, gt=0)
    max_runs_per_day: int | None = Field(None, ge=1)
    body: dict[str, Any] = Field(default_factory=dict)

    _durations = field_validator("every", "result_timeout", "catch_up_window", "jitter", "remind_every", mode="before")(
        read_duration
    )
    _zones = field_validator("timezone", mode="before")(read_zone)

    _crons = field_validator("cron")(check_cron)
    _endpoints = field_validator("endpoint", mode="before")(_known_endpoint)

    @field_validator("scenarios", mode="before")
    @classmethod
    def _scenario_ids(cls, value: object) -> object:
        if isinstance(value, list):
            return [{"id": item} if isinstance(item, int) else item for item in value]
        return value

    @field_validator("jitter")
    @classmethod
    def _jitter_within_interval(cls, value: timedelta | None, info: ValidationInfo) -> timedelta | None:
        every = info.data.get("every")  # declared before jitter: None when not set, or not valid (said already)
        if value is not None and every is not None:
            why = "a fire would come after the job's next slot"
            if problem := out_of_order(value, every, "every", at_most=True, why=why):
                raise ValueError(problem)
        return value

    @field_validator("body")
    @classmethod
    def _no_reserved_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        reserved = sorted(RESERVED_BODY_KEYS & value.keys())
        if reserved:
            raise ValueError(
                f"{', '.join(reserved)} cannot be set under body: use the job's own keys "
                "(scenarios, tags, folder_path, spec, agent, assistant_id, frequency); the scheduler sets name itself"
            )
        return value

    @property
    def schedule(self) -> Schedule:
        """The job's schedule (checked when the config was loaded)."""
        if self.cron is not None:
            return Schedule.from_cron(self.cron, self.timezone)
        assert self.every is not None
        return Schedule.from_interval(self.every, self.timezone)

    @property
    def runs_per_fire(self) -> int | None:
        """How many Cekura runs (paid calls) one fire of this job creates: each scenario, ``frequency`` times, for
        each personality and test profile ``body`` names; None when only Cekura knows, at fire time (scenarios
        chosen by tag or folder, or a test-suite spec)."""
        if not self.scenarios:
            return None
        return len(self.scenarios) * self.frequency * runs_per_scenario(self.body)


class AlertChannel(_Strict):
    """An ``[alerts.<name>]`` table: where alerts go, as an Apprise URL (it may hold secrets).

    The incident settings set here override the job's for this channel (e.g. page only after 3 failures).
    """

    name: str
    url: SecretStr
    failure_threshold: int | None = Field(None, ge=1)
    success_threshold: int | None = Field(None, ge=1)
    send_resolved: bool | None = None
    remind_every: timedelta | None = None

    _durations = field_validator("remind_every", mode="before")(read_duration)

    @field_validator("url", mode="before")
    @classmethod
    def _not_too_long(cls, value: object) -> object:
        if isinstance(value, str) and len(value) > MAX_URL_LENGTH:
            raise ValueError(f"longer than {MAX_URL_LENGTH} characters")
        return value


@dataclass(frozen=True)
class IncidentPolicy:
    """When a channel hears about a job's failures: the job's settings, overridden by the channel's."""

    failure_threshold: int
    success_threshold: int
    send_resolved: bool
    remind_every: timedelta | None


def incident_policy(job: Job, channel: AlertChannel) -> IncidentPolicy:
    """The incident settings one channel applies to one job."""
    return IncidentPolicy(
        failure_threshold=channel.failure_threshold or job.failure_threshold,
        success_threshold=channel.success_threshold or job.success_threshold,
        send_resolved=job.send_resolved if channel.send_resolved is None else channel.send_resolved,
        remind_every=channel.remind_every or job.remind_every,
    )


class Maintenance(_Strict):
    """A ``[maintenance.<name>]`` window: planned work during which jobs pause or their alerts are held."""

    name: str
    cron: str | None = None
    duration: timedelta | None = None
    timezone: ZoneInfo = ZoneInfo("UTC")
    start: datetime | None = None
    end: datetime | None = None
    jobs: tuple[str, ...] | None = None  # None: every job
    mode: Literal["pause", "mute"] = "mute"

    _durations = field_validator("duration", mode="before")(read_duration)
    _zones = field_validator("timezone", mode="before")(read_zone)

    _crons = field_validator("cron")(check_cron)

    @model_validator(mode="after")
    def _one_kind(self) -> Maintenance:
        recurring = self.cron is not None or self.duration is not None
        fixed = self.start is not None or self.end is not None
        if (
            recurring == fixed
            or (recurring and (self.cron is None or self.duration is None))
            or (fixed and (self.start is None or self.end is None))
        ):
            raise ValueError("give either cron and duration (a recurring window) or start and end (a fixed one)")
        if fixed:
            assert self.start is not None and self.end is not None
            if self.start.tzinfo is None or self.end.tzinfo is None:
                raise ValueError("start and end need an offset, e.g. 2026-12-01T02:00:00+01:00")
            if not all(plausible(instant) for instant in (self.start, self.end)):
                raise ValueError("start and end must fall between the years 1970 and 2999")
            if self.end <= self.start:
                raise ValueError("end must come after start")
        return self

    def applies_to(self, job: str) -> bool:
        return self.jobs is None or job in self.jobs

    def window_at(self, instant: datetime) -> tuple[datetime, datetime] | None:
        """The (start, end) of the window that contains ``instant``, or None when none does."""
        if self.start is not None and self.end is not None:
            return (self.start, self.end) if self.start <= instant < self.end else None
        assert self.cron is not None and self.duration is not None
        schedule = Schedule.from_cron(self.cron, self.timezone)
        # The newest start at or before the instant, looked for in a span doubling from a minute: a "* * * * *"
        # window of 31 days would otherwise list 44,640 starts on each question.
        span = min(timedelta(minutes=1), self.duration)
        while True:
            starts, _ = schedule.slots_between(instant - span, instant, limit=1)
            if starts:
                return (starts[-1], starts[-1] + self.duration) if instant < starts[-1] + self.duration else None
            if span >= self.duration:
                return None
            span = min(span * 2, self.duration)


@dataclass(frozen=True)
class Config:
    """A whole, valid jobs.toml."""

    path: Path
    daemon: DaemonConfig
    jobs: dict[str, Job]
    channels: dict[str, AlertChannel]
    digest: str = ""
    maintenance: dict[str, Maintenance] = dataclass_field(default_factory=dict)
    history: HistoryConfig = dataclass_field(default_factory=HistoryConfig)
    # What each valid job was built from (a fingerprint of its table, after ${VAR}s, and [defaults]): a reload
    # reuses the jobs whose table and defaults did not change instead of validating them again.
    job_tables: dict[str, bytes] = dataclass_field(default_factory=dict, repr=False, compare=False)
    job_defaults: JobDefaults | None = dataclass_field(default=None, repr=False, compare=False)
    secrets: frozenset[str] = dataclass_field(default=frozenset(), repr=False, compare=False)
    """What must never be shown: every value that came from ${VAR}, and the parts of alert URLs that may be
    credentials (user, password, tokens in the host, path, query and fragment); 4 characters or more each."""

    def maintenance_at(self, job: str, instant: datetime) -> tuple[Maintenance, datetime] | None:
        """The maintenance window covering this job at this instant, with its end; pause wins over mute."""
        found: list[tuple[Maintenance, datetime]] = []
        for window in self.maintenance.values():
            if window.applies_to(job) and (span := window.window_at(instant)) is not None:
                found.append((window, span[1]))
        found.sort(key=lambda item: item[0].mode != "pause")
        return found[0] if found else None
