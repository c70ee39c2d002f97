"""jobs.toml: parse, interpolate ``${VAR}`` from the environment, validate, and report every problem at once.

Every problem becomes a ``ConfigIssue`` naming the file, the line and column, and the job. Unknown keys are
rejected (with a suggestion when one is close), so a misspelt setting never silently does nothing. Whatever the
bytes of the file, the loader raises nothing but a ``ConfigError``: a daemon that reloads a bad save keeps
running the previous version and says why. A value that came from ``${VAR}`` is never shown in an error (the
error names the variable), and ``Config.secrets`` lists what other modules must redact.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import hashlib
import logging
import math
import os
import re
import stat
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, date, datetime, timedelta
from datetime import time as time_of_day
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import tomli
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from scheduler.errors import ConfigError, ConfigIssue
from scheduler.schedules import LONGEST, Schedule, parse_duration

logger = logging.getLogger(__name__)

ENDPOINTS: dict[str, str] = {
    "livekit_v2": "run_scenarios_livekit_v2",
    "pipecat_v2": "run_scenarios_pipecat_v2",
    "voice": "run_scenarios",
    "text": "run_scenarios_text",
}
"""The endpoint names jobs.toml accepts, and the Cekura path segment each one posts to."""

# Body fields the scheduler writes itself; a job sets them with its own keys, not under [jobs.<name>.body].
RESERVED_BODY_KEYS = {"scenarios", "agent", "agent_id", "name", "frequency"}
_JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

_SECOND, _MINUTE, _HOUR, _DAY = timedelta(seconds=1), timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)
DURATION_BOUNDS: dict[str, tuple[timedelta, timedelta]] = {
    "every": (_SECOND, 366 * _DAY),
    "result_timeout": (_SECOND, 7 * _DAY),
    "catch_up_window": (_SECOND, 7 * _DAY),
    "jitter": (_SECOND, _DAY),
    "remind_every": (_MINUTE, 30 * _DAY),
    "poll_interval": (_SECOND, _HOUR),
    "poll_max_interval": (_SECOND, _HOUR),
    "lease": (_SECOND, _HOUR),
    "retention": (_DAY, LONGEST),
    "duration": (_MINUTE, 31 * _DAY),  # of a recurring maintenance window
}
"""The shortest and longest value of each duration key (README: "Bounds")."""

MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 32  # tables and arrays inside one another, counted from the top of the file
MAX_URL_LENGTH = 8192
_INT64 = 2**63 - 1  # every integer must fit the database's and JSON consumers' 64 bits
_MAX_MESSAGE = 400  # an issue's message, cut beyond this (a 1 MB value is not repeated in the log)
MIN_SECRET_LENGTH = 4  # shorter strings ("UTC", "12") are not worth redacting, and would garble every log line
CUSTOM_SCHEMES = frozenset({"console"})
"""Alert URL schemes this program teaches Apprise itself (scheduler.alerts, at send time)."""
_ZONE_KEY = re.compile(r"[A-Za-z0-9_+-]+(?:/[A-Za-z0-9_+-]+)*", re.ASCII)
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]{0,31}", re.ASCII)


def _duration(value: object, info: ValidationInfo) -> object:
    assert info.field_name is not None
    at_least, at_most = DURATION_BOUNDS[info.field_name]
    if isinstance(value, str):
        return parse_duration(value, at_least=at_least, at_most=at_most)
    if isinstance(value, timedelta):  # already parsed, e.g. inherited from [defaults] (within the same bounds)
        return value
    raise ValueError(f"write durations as text with a unit, e.g. '30s', '15m', '1h', '1d' (got {value!r})")


def _zone(value: object) -> object:
    if not isinstance(value, str):
        return value
    hint = "use an IANA zone name such as 'Europe/Paris' or 'UTC'"
    # A key is a relative path under the zone database: one that is not a zone's shape never reaches the disk.
    if len(value) > 64 or not _ZONE_KEY.fullmatch(value):
        raise ValueError(f"unknown timezone {value!r}: {hint}")
    try:
        return ZoneInfo(value)
    except IsADirectoryError:  # "US", "America": folders of the database
        raise ValueError(f"unknown timezone {value!r}: that is a group of zones, not a zone; {hint}") from None
    except (ZoneInfoNotFoundError, ValueError, OSError):  # ValueError: a file of the database that is no zone
        raise ValueError(f"unknown timezone {value!r}: {hint}") from None


def _cron(value: str | None) -> str | None:
    if value is not None:
        Schedule.from_cron(value, UTC)  # whether it is valid and ever fires does not depend on the zone
    return value


CatchUp = Literal["skip", "latest", "all"]
"""What to do with slots missed while the daemon was down: skip them all, run the newest, or run them all."""
Overlap = Literal["skip", "allow"]
"""What to do with a slot while the job's previous result is still running."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class ScenarioRef(_Strict):
    """One scenario of a job, with the optional data message LiveKit and Pipecat agents receive."""

    id: int = Field(gt=0)
    publish_data_message: Any = None


class DaemonConfig(_Strict):
    """The ``[daemon]`` table: process-wide behaviour."""

    max_concurrent_submissions: int = Field(50, ge=1, le=1000)
    poll_interval: timedelta = timedelta(seconds=10)
    poll_max_interval: timedelta = timedelta(seconds=60)
    alerts: tuple[str, ...] = ()
    lease: timedelta = timedelta(seconds=30)
    max_runs_per_day: int | None = Field(None, ge=1)

    _durations = field_validator("poll_interval", "poll_max_interval", "lease", mode="before")(_duration)


class HistoryConfig(_Strict):
    """The ``[history]`` table: how long fires, runs and delivered alerts are kept."""

    retention: timedelta | None = None  # None: forever

    _durations = field_validator("retention", mode="before")(_duration)


class JobDefaults(_Strict):
    """The ``[defaults]`` table: values every job inherits unless it sets its own."""

    timezone: ZoneInfo | None = None
    endpoint: Literal["livekit_v2", "pipecat_v2", "voice", "text"] | None = None
    alerts: tuple[str, ...] | None = None
    result_timeout: timedelta | None = None
    agent: int | None = Field(None, gt=0)
    frequency: int | None = Field(None, ge=1, le=100)
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
        _duration
    )
    _zones = field_validator("timezone", mode="before")(_zone)


class Job(_Strict):
    """One ``[jobs.<name>]`` table, with the defaults already applied."""

    name: str
    cron: str | None = None
    every: timedelta | None = None
    timezone: ZoneInfo = ZoneInfo("UTC")
    endpoint: Literal["livekit_v2", "pipecat_v2", "voice", "text"] = "livekit_v2"
    agent: int | None = Field(None, gt=0)
    scenarios: tuple[ScenarioRef, ...] = Field(min_length=1)
    frequency: int = Field(1, ge=1, le=100)
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
        _duration
    )
    _zones = field_validator("timezone", mode="before")(_zone)

    _crons = field_validator("cron")(_cron)

    @field_validator("scenarios", mode="before")
    @classmethod
    def _scenario_ids(cls, value: object) -> object:
        if isinstance(value, list):
            return [{"id": item} if isinstance(item, int) else item for item in value]
        return value

    @field_validator("body")
    @classmethod
    def _no_reserved_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        reserved = sorted(RESERVED_BODY_KEYS & value.keys())
        if reserved:
            raise ValueError(
                f"{', '.join(reserved)} cannot be set under body: use the job's own keys "
                "(scenarios, agent, frequency); the scheduler sets name itself"
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
    def runs_per_fire(self) -> int:
        """How many Cekura runs (paid calls) one fire of this job creates."""
        return len(self.scenarios) * self.frequency


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

    _durations = field_validator("remind_every", mode="before")(_duration)

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

    _durations = field_validator("duration", mode="before")(_duration)
    _zones = field_validator("timezone", mode="before")(_zone)

    _crons = field_validator("cron")(_cron)

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
            if not all(_plausible(instant) for instant in (self.start, self.end)):
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
        span = min(_MINUTE, self.duration)
        while True:
            starts, _ = schedule.slots_between(instant - span, instant, limit=1)
            if starts:
                return (starts[-1], starts[-1] + self.duration) if instant < starts[-1] + self.duration else None
            if span >= self.duration:
                return None
            span = min(span * 2, self.duration)


def _plausible(instant: datetime) -> bool:
    try:
        return 1970 <= instant.astimezone(UTC).year <= 2999
    except OverflowError:  # 9999-12-31T23:59-01:00 is past the last datetime in UTC
        return False


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


class _Locator:
    """Finds the line and column where a key path is written in a TOML text.

    The TOML parser keeps no positions, so this reads table headers and ``key =`` lines itself; it is only used to
    point at problems, and falls back to the enclosing table when a key is not found.
    """

    _KEY = r"(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')"
    _KEYS = rf"{_KEY}(?:\s*\.\s*{_KEY})*"
    _HEADER = re.compile(rf"^\s*\[\[?\s*({_KEYS})\s*\]\]?")
    _ASSIGN = re.compile(rf"^(\s*)({_KEYS})\s*=")

    def __init__(self, text: str) -> None:
        self.positions: dict[tuple[str, ...], tuple[int, int]] = {}
        table: tuple[str, ...] = ()
        # Split on "\n" only, as TOML counts lines (str.splitlines also breaks at \x0c, \u2028, ...).
        for number, line in enumerate(text.split("\n"), start=1):
            if header := self._HEADER.match(line):
                table = self._split(header.group(1))
                self.positions.setdefault(table, (number, line.index("[") + 1))
            elif assign := self._ASSIGN.match(line):
                path = table + self._split(assign.group(2))
                self.positions.setdefault(path, (number, len(assign.group(1)) + 1))

    @classmethod
    def _split(cls, keys: str) -> tuple[str, ...]:
        return tuple(part.strip().strip("\"'") for part in re.findall(cls._KEY, keys))

    def find(self, path: tuple[str, ...]) -> tuple[int | None, int | None]:
        for end in range(len(path), 0, -1):
            if path[:end] in self.positions:
                return self.positions[path[:end]]
        for keys, position in self.positions.items():  # a path inside a dotted header: [a.b.c] for a.b
            if keys[: len(path)] == path:
                return position
        return None, None


class _Issues:
    """Collects ConfigIssues for one file, placing each one with the locator and keeping ${VAR} values out."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.text = text
        self.items: list[ConfigIssue] = []
        self.unset: set[tuple[str, ...]] = set()  # where a ${VAR} was missing (already said; say nothing more)
        # An interpolated string -> how an error names it (``${VAR}``, or the text as written in the file).
        self._written: dict[str, str] = {}
        self.values: dict[str, str] = {}  # the value of a variable -> ``${VAR}``

    @functools.cached_property
    def locator(self) -> _Locator:
        # Built on the first problem only: reading every line of a big valid file costs ~0.2 s per 10,000 jobs.
        return _Locator(self.text)

    def interpolated(self, written: str, result: str, names: list[str], env: Mapping[str, str]) -> None:
        only = _VARIABLE.fullmatch(written)
        if result:
            self._written[result] = f"${{{only.group(1)}}}" if only else repr(written)
        for name in names:
            self.values.setdefault(env[name], f"${{{name}}}")

    def add(self, where: tuple[str, ...], message: str) -> None:
        self.items.append(self._placed(where, message))

    def add_validation(self, where: tuple[str, ...], error: ValidationError, known: Mapping[str, Any]) -> None:
        details = error.errors()
        flawed = {detail["loc"][0] for detail in details if len(detail["loc"]) > 1}
        for detail in details:
            loc = tuple(str(part) for part in detail["loc"])
            if detail["type"] == "too_short" and detail["loc"] and detail["loc"][0] in flawed:
                continue  # the list's own items are wrong: those errors say more than "too short"
            if (*where, *loc[:1]) in self.unset:
                continue  # a missing ${VAR} left this value empty: that was said
            if detail["type"] == "extra_forbidden":
                message = f"unknown key {loc[-1]!r}"
                keys = ScenarioRef.model_fields if loc[0] == "scenarios" else known
                close = difflib.get_close_matches(loc[-1], list(keys), n=1)
                if close:
                    message += f" (did you mean {close[0]!r}?)"
            else:
                text = detail["msg"].removeprefix("Value error, ")
                message = f"{'.'.join(loc)}: {text}" if loc else text
            self.items.append(self._placed(where + loc, message))

    def _placed(self, where: tuple[str, ...], message: str) -> ConfigIssue:
        line, column = self.locator.find(where)
        job = where[1] if len(where) > 1 and where[0] == "jobs" else None
        return ConfigIssue(path=str(self.path), line=line, column=column, job=job, message=self.redacted(message))

    def redacted(self, message: str) -> str:
        """The message with every ${VAR} value replaced by the variable's name, cut to a readable length."""
        # Validators quote what they reject ('value'): that is named as a whole first, then any value left.
        for result in sorted(self._written, key=len, reverse=True):
            message = message.replace(repr(result), f"(the value of {self._written[result]})")
        for value in sorted(self.values, key=len, reverse=True):
            if len(value) >= MIN_SECRET_LENGTH:
                message = message.replace(value, f"(the value of {self.values[value]})")
        if len(message) <= _MAX_MESSAGE:
            return message
        # Cut in the middle: the start names the key and the value, the end says what is wrong with it.
        return message[: _MAX_MESSAGE // 2] + "…" + message[-(_MAX_MESSAGE // 2 - 1) :]

    def error(self) -> ConfigError:
        return ConfigError(sorted(self.items, key=lambda issue: (issue.line or 0, issue.column or 0)))


def _interpolate(value: Any, where: tuple[str, ...], env: Mapping[str, str], issues: _Issues) -> Any:
    """Replace ``${VAR}`` in every string with the environment's value; a missing variable is an issue."""
    if isinstance(value, str):
        names: list[str] = []

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                issues.add(where, f"environment variable {name} is not set (used as ${{{name}}})")
                issues.unset.add(where)
                return ""
            names.append(name)
            return env[name]

        result = _VARIABLE.sub(replace, value)
        if names:
            issues.interpolated(value, result, names, env)
        return result
    if isinstance(value, dict):
        return {key: _interpolate(item, (*where, key), env, issues) for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolate(item, where, env, issues) for item in value]
    return value


def _check_values(raw: dict[str, Any], issues: _Issues) -> None:
    """Values the models cannot be trusted to refuse cleanly: nesting, huge integers, nan, dates in JSON."""
    stack: list[tuple[dict[str, Any] | list[Any], tuple[str, ...], bool]] = [(raw, (), False)]
    while stack:  # iterative: the file may nest deeper than Python recurses
        container, where, sent_as_json = stack.pop()
        if len(where) >= MAX_DEPTH:
            issues.add(where, f"tables and arrays are nested more than {MAX_DEPTH} levels deep")
            continue
        pairs = container.items() if isinstance(container, dict) else (("", item) for item in container)
        for key, value in pairs:
            if isinstance(value, str | bool):  # most values: nothing to check
                continue
            inner = (*where, key) if key else where
            if isinstance(value, dict | list):
                json = sent_as_json or (key in ("body", "publish_data_message") and len(where) >= 2)
                # An array adds no key to the path, so its depth is counted with a placeholder key.
                stack.append((value, inner if key else (*where, "[]"), json))
            elif isinstance(value, int) and not -_INT64 - 1 <= value <= _INT64:
                issues.add(
                    inner, "integer out of range: jobs.toml integers fit in 64 bits (at most 9223372036854775807)"
                )
            elif isinstance(value, float) and not math.isfinite(value):
                issues.add(inner, "nan and inf are not accepted: write a number")
            elif sent_as_json and isinstance(value, date | time_of_day):  # datetime is a date too
                issues.add(inner, 'dates and times cannot be sent as JSON: write them as strings, e.g. "2026-01-31"')


def _build_job(name: str, raw: Any, defaults: JobDefaults, issues: _Issues) -> Job | None:
    where = ("jobs", name)
    if not isinstance(raw, dict):
        issues.add(where, "a job must be a table, e.g. [jobs.nightly]")
        return None
    ok = True
    if not _JOB_NAME.match(name):
        issues.add(
            where,
            "job names use letters, digits, '-', '_' and '.', start with a letter or digit, "
            "and are at most 100 characters",
        )
        ok = False
    inherited = {key: value for key, value in defaults.model_dump(exclude_none=True).items() if key not in raw}
    endpoint = raw.get("endpoint", inherited.get("endpoint", "livekit_v2"))
    if endpoint == "pipecat_v2":
        inherited.pop("agent", None)  # a Pipecat agent is named in pipecat_data; a default agent does not apply
    merged = {**inherited, **raw}
    # The rules across fields are checked on the raw table, so they are reported with the field errors.
    if ("cron" in merged) == ("every" in merged):
        issues.add(where, 'set exactly one of cron = "..." or every = "..."')
        ok = False
    if endpoint == "pipecat_v2" and "agent" in merged:
        issues.add((*where, "agent"), "the pipecat_v2 endpoint takes no agent (the agent is in pipecat_data)")
        ok = False
    if endpoint in ("voice", "text", "livekit_v2") and "agent" not in merged:
        issues.add(where, f"the {endpoint} endpoint needs agent = <agent id>")
        ok = False
    try:
        job = Job.model_validate({**merged, "name": name})
    except ValidationError as error:
        issues.add_validation(where, error, Job.model_fields)
        return None
    return job if ok else None


def parse_config(text: str, *, path: Path, env: Mapping[str, str], previous: Config | None = None) -> Config:
    """Validate the text of a jobs.toml; raise ConfigError listing every problem found, and nothing else.

    With ``previous`` (the version running now), a job whose table and [defaults] are unchanged is taken from it
    as it is: a reload of a big file validates only what changed.
    """
    try:
        return _parse(text, path=path, env=env, previous=previous)
    except ConfigError:
        raise
    except Exception as error:
        # A bug of ours or of a library, met on some file: still a config error, so that a reload keeps the
        # running version and says so instead of dying. The traceback holds code, not the file's values.
        logger.error(
            "reading %s failed with %s (a bug of cekura-scheduler):\n%s",
            path,
            type(error).__name__,
            "".join(traceback.format_tb(error.__traceback__)),
        )
        message = f"cannot read this file: the loader failed with {type(error).__name__} (a bug: please report it)"
        raise ConfigError([ConfigIssue(path=str(path), message=message)]) from None


def _parse(text: str, *, path: Path, env: Mapping[str, str], previous: Config | None) -> Config:
    line: int | None
    column: int | None
    try:
        text.encode()
    except UnicodeEncodeError as error:  # only a str made in Python can hold a lone surrogate; a file cannot
        line, column = _position(text, error.start)
        issue = ConfigIssue(path=str(path), line=line, column=column, message="not valid Unicode (a lone surrogate)")
        raise ConfigError([issue]) from None
    issues = _Issues(path, text)
    try:
        raw = tomli.loads(text)
    except tomli.TOMLDecodeError as error:
        issue = ConfigIssue(
            path=str(path), line=error.lineno, column=error.colno, message=f"not valid TOML: {error.msg}"
        )
        raise ConfigError([issue]) from None
    except RecursionError:  # tomli refuses 400 nested levels, or a key of 1,000 parts, this way (without a place)
        line, column = _too_deep(text)
        message = f"tables and arrays are nested more than {MAX_DEPTH} levels deep"
        raise ConfigError([ConfigIssue(path=str(path), line=line, column=column, message=message)]) from None
    except ValueError:  # an integer of more than 4,300 digits (Python's limit on reading one)
        found = re.search(r"[0-9][0-9_]{4000,}", text)
        line, column = _position(text, found.start()) if found else (None, None)
        message = "integer out of range: jobs.toml integers fit in 64 bits"
        raise ConfigError([ConfigIssue(path=str(path), line=line, column=column, message=message)]) from None
    _check_values(raw, issues)
    if issues.items:  # the models below would recurse into such values, or fail on them in ways not worth naming
        raise issues.error()
    if "${" in text:  # nothing to replace otherwise, and walking every value of a big file is not free
        raw = _interpolate(raw, (), env, issues)
    for name in ("daemon", "defaults", "jobs", "alerts", "maintenance", "history"):
        if name in raw and not isinstance(raw[name], dict):
            issues.add((name,), f"{name} must be a table, e.g. [{name}]")
            raw.pop(name)
    sections = {"daemon", "defaults", "jobs", "alerts", "maintenance", "history"}
    for key in raw.keys() - sections:
        close = difflib.get_close_matches(key, sections, n=1)
        hint = f" (did you mean [{close[0]}]?)" if close else ""
        issues.add((key,), f"unknown section [{key}]{hint}")

    def section(name: str, model: type[BaseModel]) -> Any:
        try:
            return model.model_validate(raw.get(name, {}))
        except ValidationError as error:
            issues.add_validation((name,), error, model.model_fields)
            return model.model_validate({})

    daemon: DaemonConfig = section("daemon", DaemonConfig)
    defaults: JobDefaults = section("defaults", JobDefaults)
    history: HistoryConfig = section("history", HistoryConfig)

    channels: dict[str, AlertChannel] = {}
    for name, table in raw.get("alerts", {}).items():
        try:
            channel = AlertChannel.model_validate({**table, "name": name} if isinstance(table, dict) else table)
        except ValidationError as error:
            issues.add_validation(("alerts", name), error, AlertChannel.model_fields)
            continue
        url = channel.url.get_secret_value()
        checked = previous is not None and name in previous.channels and previous.channels[name].url == channel.url
        if ("alerts", name, "url") not in issues.unset and not checked and (problem := _apprise_problem(url)):
            issues.add(("alerts", name, "url"), f"url of alert channel {name!r}: {problem}")
        channels[name] = channel

    jobs: dict[str, Job] = {}
    known = previous.jobs if previous is not None and previous.job_defaults == defaults else {}
    tables: dict[str, bytes] = {}
    for name, table in raw.get("jobs", {}).items():
        tables[name] = _fingerprint(table)
        job = known.get(name)
        if job is None or previous is None or previous.job_tables.get(name) != tables[name]:
            job = _build_job(name, table, defaults, issues)
        if job is None:
            continue
        for channel_name in job.alerts:
            if channel_name not in channels:
                issues.add(("jobs", name, "alerts"), f"alert channel {channel_name!r} is not defined under [alerts]")
        jobs[name] = job
    for channel_name in daemon.alerts:
        if channel_name not in channels:
            issues.add(("daemon", "alerts"), f"alert channel {channel_name!r} is not defined under [alerts]")

    maintenance: dict[str, Maintenance] = {}
    for name, table in raw.get("maintenance", {}).items():
        try:
            window = Maintenance.model_validate({**table, "name": name} if isinstance(table, dict) else table)
        except ValidationError as error:
            issues.add_validation(("maintenance", name), error, Maintenance.model_fields)
            continue
        for job_name in window.jobs or ():
            if job_name not in jobs and job_name not in raw.get("jobs", {}):
                issues.add(("maintenance", name, "jobs"), f"job {job_name!r} is not defined under [jobs]")
        maintenance[name] = window

    if issues.items:
        raise issues.error()
    secrets = {value for value in issues.values if len(value) >= MIN_SECRET_LENGTH}
    for channel in channels.values():
        secrets |= alert_url_secrets(channel.url.get_secret_value())
    return Config(
        path=path,
        daemon=daemon,
        jobs=jobs,
        channels=channels,
        digest=digest(text),
        maintenance=maintenance,
        history=history,
        job_tables={name: tables[name] for name in jobs},
        job_defaults=defaults,
        secrets=frozenset(secrets),
    )


def _position(text: str, offset: int) -> tuple[int, int]:
    """The line and column (from 1) of a character of the text."""
    return text.count("\n", 0, offset) + 1, offset - text.rfind("\n", 0, offset)


def _too_deep(text: str) -> tuple[int | None, int | None]:
    """Roughly where a text nests too deeply: the first bracket past MAX_DEPTH, else the first long dotted key."""
    depth = 0
    for offset, character in enumerate(text):
        if character in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return _position(text, offset)
        elif character in "]}":
            depth = max(depth - 1, 0)
    for number, line in enumerate(text.split("\n"), start=1):
        if line.count(".") > MAX_DEPTH:
            return number, 1
    return None, None


def _fingerprint(table: Any) -> bytes:
    # 16 bytes rather than the table itself: 10,000 raw tables would hold ~7 MB for the next reload. Tables that
    # are equal but written in another order get another fingerprint, and are merely validated again.
    return hashlib.blake2b(repr(table).encode(), digest_size=16).digest()


def _read(path: Path) -> bytes:
    """The bytes of a config file; ConfigError when it cannot be read, is no regular file or is too large."""

    def failed(why: str) -> ConfigError:
        return ConfigError([ConfigIssue(path=str(path), message=why)])

    try:
        # O_NONBLOCK: opening a FIFO (or a device) must not wait for a writer; for a file it changes nothing.
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as error:
        raise failed(f"cannot read the file: {error.strerror or type(error).__name__}") from None
    except ValueError:  # a NUL character in the path
        raise failed("cannot read the file: the path is not a valid file name") from None
    try:
        mode = os.fstat(descriptor).st_mode
        if stat.S_ISDIR(mode):
            raise failed("cannot read the file: it is a folder, not a file")
        if not stat.S_ISREG(mode):
            raise failed("cannot read the file: it is not a regular file")
        with os.fdopen(descriptor, "rb", closefd=False) as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise failed(f"cannot read the file: {error.strerror or type(error).__name__}") from None
    finally:
        os.close(descriptor)
    if len(data) > MAX_FILE_BYTES:
        raise failed(f"the file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB")
    return data


def _decoded(data: bytes, path: Path) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        before = data[: error.start]
        line = before.count(b"\n") + 1
        column = len(before[before.rfind(b"\n") + 1 :].decode("utf-8", errors="replace")) + 1
        message = f"not UTF-8: the byte 0x{data[error.start]:02x} cannot be read (save the file as UTF-8)"
        raise ConfigError([ConfigIssue(path=str(path), line=line, column=column, message=message)]) from None


def load_config(path: Path, *, env: Mapping[str, str], previous: Config | None = None) -> Config:
    """Read and validate a jobs.toml file (``previous``: see ``parse_config``); raises only ConfigError."""
    return parse_config(_decoded(_read(path), path), path=path, env=env, previous=previous)


def digest(text: str | bytes) -> str:
    """A short fingerprint of a config text, to tell versions of the file apart in logs and records."""
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()[:12]


# -- alert URLs: what Apprise accepts, and what in them is a credential --------------------------------------


class _QuietApprise(logging.Filter):
    """Drops Apprise's log records in a thread that is checking a URL: Apprise quotes the tokens it rejects."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.local, "checking", False)


_QUIET = _QuietApprise()


@contextlib.contextmanager
def _apprise_quiet() -> Iterator[None]:
    apprise_logger = logging.getLogger("apprise")
    if _QUIET not in apprise_logger.filters:
        apprise_logger.addFilter(_QUIET)
    _QUIET.local.checking = True
    try:
        yield
    finally:
        _QUIET.local.checking = False


def _apprise_problem(url: str) -> str | None:
    """Why Apprise cannot use this URL, in words that do not repeat it (it holds tokens); None when it can."""
    scheme, separator, _ = url.partition("://")
    scheme = scheme.lower()
    if not separator or not _SCHEME.fullmatch(scheme):
        return "not an Apprise URL (scheme://...)"
    if scheme in CUSTOM_SCHEMES:
        return None
    with _apprise_quiet():
        import apprise  # here: loading Apprise's plugins costs 0.3 s, paid only by a file with alert channels

        try:
            usable = apprise.Apprise.instantiate(url) is not None
        except Exception:  # a plugin's parser failing on odd input: Apprise could not send to it either
            usable = False
        try:
            from apprise.manager_plugins import NotificationManager

            known = scheme in NotificationManager() or scheme in ("http", "https")  # type: ignore[no-untyped-call]
        except ImportError:  # pragma: no cover - Apprise before 1.7
            known = True
    if usable:
        return None
    if not known:
        return f"Apprise has no {scheme}:// service (a typo in the scheme?)"
    return f"Apprise cannot use this {scheme}:// URL (check its tokens and options)"


_PLAIN_WORD = re.compile(r"[a-z]{1,20}|[A-Z]{1,7}", re.ASCII)  # "services", "alerts", "POST": not tokens
_CREDENTIAL_KEY = re.compile(r"token|key|secret|pass|auth|sig|code|session|access", re.IGNORECASE)
_HOST_NAME = re.compile(r"[a-z0-9-]+(?:\.[a-z0-9-]+)+|\[[0-9A-Fa-f:.]+\]|[a-z]{1,20}", re.ASCII)


def alert_url_secrets(url: str) -> set[str]:
    """The parts of an alert URL that may be credentials, each as written and percent-decoded.

    Everything after the scheme counts except a plain host name (``hooks.slack.com``, ``127.0.0.1``,
    ``localhost``), a port, query keys, and plain words (``services``, ``POST``) but in the value of a key such as
    ``token``, ``key`` or ``password``: ``slack://TokenA/TokenB/TokenC`` gives the three tokens,
    ``pagerduty://integration_key@api_key`` both keys, ``json://user:pass@host/p?token=t`` the user, the password
    and t. Only strings of 4 characters or more are kept.
    """
    _, separator, rest = url.partition("://")
    if not separator:
        return {url} if len(url) >= MIN_SECRET_LENGTH else set()
    rest, _, fragment = rest.partition("#")
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, host = netloc.rpartition("@")
    parts = userinfo.split(":", 1) if at else []
    if not host.startswith("["):
        host = host.split(":", 1)[0]  # host:port
    if not _HOST_NAME.fullmatch(host):
        parts.append(host)  # slack://TokenA/..., pagerduty://...@api_key: the "host" is a token
    words = [*path.split("/"), fragment]
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        (parts if _CREDENTIAL_KEY.search(key) else words).append(value)  # ?token=abcdefgh: whatever it looks like
    parts.extend(word for word in words if not _PLAIN_WORD.fullmatch(word))
    return {form for part in parts for form in (part, unquote(part)) if len(form) >= MIN_SECRET_LENGTH}


# Job keys whose change moves the job's next slot; other changes apply from the next fire on.
SCHEDULE_KEYS = frozenset({"cron", "every", "timezone", "jitter", "enabled"})


@dataclass(frozen=True)
class ConfigDiff:
    """What changed between two valid versions of jobs.toml."""

    added: list[str]
    removed: list[str]
    changed: dict[str, list[str]]  # job -> the keys that changed
    daemon: list[str]  # keys of [daemon] that changed
    channels: list[str]  # alert channels added, removed or changed

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed or self.daemon or self.channels)

    def summary(self) -> str:
        """One line for the log, e.g. ``added: a; removed: b; changed: c (cron, scenarios)``."""
        parts = []
        if self.added:
            parts.append(f"added: {', '.join(self.added)}")
        if self.removed:
            parts.append(f"removed: {', '.join(self.removed)}")
        if self.changed:
            parts.append("changed: " + ", ".join(f"{name} ({', '.join(keys)})" for name, keys in self.changed.items()))
        if self.daemon:
            parts.append(f"[daemon]: {', '.join(self.daemon)}")
        if self.channels:
            parts.append(f"alert channels: {', '.join(self.channels)}")
        return "; ".join(parts) or "no change"


def _fields(model: BaseModel) -> dict[str, Any]:
    return {name: getattr(model, name) for name in type(model).model_fields}


def diff_configs(old: Config, new: Config) -> ConfigDiff:
    """Compare two configs job by job and key by key."""
    changed: dict[str, list[str]] = {}
    for name in old.jobs.keys() & new.jobs.keys():
        if old.jobs[name] is new.jobs[name] or old.jobs[name] == new.jobs[name]:
            continue  # most jobs of a reload are unchanged: one comparison rather than one per key
        before, after = _fields(old.jobs[name]), _fields(new.jobs[name])
        keys = [key for key in after if before[key] != after[key]]
        if keys:
            changed[name] = keys
    before_daemon, after_daemon = _fields(old.daemon), _fields(new.daemon)
    channel_names = old.channels.keys() | new.channels.keys()
    return ConfigDiff(
        added=sorted(new.jobs.keys() - old.jobs.keys()),
        removed=sorted(old.jobs.keys() - new.jobs.keys()),
        changed=dict(sorted(changed.items())),
        daemon=[key for key in after_daemon if before_daemon[key] != after_daemon[key]],
        channels=sorted(
            name
            for name in channel_names
            if (old.channels.get(name) is None) != (new.channels.get(name) is None)
            or (
                name in old.channels
                and old.channels[name].url.get_secret_value() != new.channels[name].url.get_secret_value()
            )
        ),
    )


_LOOK_AGAIN = (-1, -1, -1)  # a file status no file has


class ConfigSource:
    """The jobs.toml a daemon runs from, watched for edits, and loaded only once a version is finished.

    It polls the file's status once a second rather than subscribing to file-system events: a stat of the path
    follows symlinks and sees a new inode, so editors' rename-on-save, atomic writes, in-place writes, Docker
    bind mounts and Kubernetes ConfigMap symlink swaps are all noticed, including on file systems where inotify
    is silent (network and some container mounts).

    An in-place write (``cp``, ``cat >``) is seen half done: empty, or cut in the middle. So ``load`` reads the
    file twice, ``settle`` seconds apart, and takes a version only when both reads agree byte for byte (parsing
    the first read meanwhile, so a big file costs no more than the settle time). A file still changing after
    ``max_reads`` reads is reported as a ConfigError. The wait goes through ``sleep`` and ``clock`` (seconds,
    monotonic), which tests replace.
    """

    def __init__(
        self,
        path: Path,
        *,
        env: Mapping[str, str],
        settle: float = 0.5,
        max_reads: int = 10,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_reads < 2:
            raise ValueError("max_reads must be at least 2: a version is taken when two reads agree")
        self.path = path
        self.env = env
        self.settle = settle
        self.max_reads = max_reads
        self._sleep = sleep
        self._clock = clock
        self._seen: tuple[int, int, int] | None = self._status()
        self._loaded: Config | None = None  # the last valid version, whose unchanged jobs the next load reuses
        self.last_digest: str | None = None
        """The fingerprint of the version the last ``load`` settled on, valid or not (None: unreadable)."""

    def _status(self) -> tuple[int, int, int] | None:
        try:
            status = self.path.stat()
        except (OSError, ValueError):
            return None
        return (status.st_ino, status.st_mtime_ns, status.st_size)

    def changed(self) -> bool:
        """Whether the file looks different since the last call (or since it was last loaded); cheap, no read."""
        status = self._status()
        if status == self._seen:
            return False
        self._seen = status
        return True

    def load(self) -> Config:
        """Read the file until two reads ``settle`` seconds apart agree, then validate that version.

        Blocks for at least the settle time (run it in a thread). Raises ConfigError listing every problem, and
        nothing else.
        """
        status, data = self._status(), self._take()
        read_at = self._clock()
        for _ in range(self.max_reads - 1):
            outcome = self._parse(data)
            remaining = read_at + self.settle - self._clock()
            if remaining > 0:
                self._sleep(remaining)
            status_again, again = self._status(), self._take()
            read_at = self._clock()
            if again == data or (isinstance(again, ConfigError) and str(again) == str(data)):
                # The status before the first of the two reads: a write after it is noticed by changed().
                self._seen = status
                self.last_digest = digest(data) if isinstance(data, bytes) else None
                if isinstance(outcome, ConfigError):
                    raise outcome
                self._loaded = outcome
                return outcome
            status, data = status_again, again
        self._seen = _LOOK_AGAIN  # the writer may have finished just after the last read: retry at the next poll
        self.last_digest = digest(data) if isinstance(data, bytes) else None
        message = (
            f"the file is still being written: it changed between each of {self.max_reads} reads "
            f"{self.settle:g} s apart (it is read again in a moment)"
        )
        raise ConfigError([ConfigIssue(path=str(self.path), message=message)])

    def _take(self) -> bytes | ConfigError:
        try:
            return _read(self.path)
        except ConfigError as error:
            return error

    def _parse(self, data: bytes | ConfigError) -> Config | ConfigError:
        if isinstance(data, ConfigError):
            return data
        try:
            return parse_config(_decoded(data, self.path), path=self.path, env=self.env, previous=self._loaded)
        except ConfigError as error:
            return error

    def current_digest(self) -> str | None:
        """The fingerprint of the file as it is now (None when it cannot be read)."""
        data = self._take()
        return digest(data) if isinstance(data, bytes) else None
