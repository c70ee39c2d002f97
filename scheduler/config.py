"""jobs.toml: parse, interpolate ``${VAR}`` from the environment, validate, and report every problem at once.

Every problem becomes a ``ConfigIssue`` naming the file, the line and column, and the job. Unknown keys are
rejected (with a suggestion when one is close), so a misspelt setting never silently does nothing.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import tomli
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from scheduler.errors import ConfigError, ConfigIssue
from scheduler.schedules import Schedule, parse_duration

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


def _duration(value: object) -> object:
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, timedelta):  # already parsed, e.g. inherited from [defaults]
        return value
    raise ValueError(f"write durations as text with a unit, e.g. '30s', '15m', '1h', '1d' (got {value!r})")


def _zone(value: object) -> object:
    if not isinstance(value, str):
        return value
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {value!r}: use an IANA name such as 'Europe/Paris' or 'UTC'") from None


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

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if value is not None:
            Schedule.from_cron(value, ZoneInfo("UTC"))  # the expression's validity does not depend on the zone
        return value

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

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if value is not None:
            Schedule.from_cron(value, ZoneInfo("UTC"))
        return value

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
        starts, _ = Schedule.from_cron(self.cron, self.timezone).slots_between(
            instant - self.duration, instant, limit=1
        )
        if starts and instant < starts[-1] + self.duration:
            return starts[-1], starts[-1] + self.duration
        return None


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
        for number, line in enumerate(text.splitlines(), start=1):
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
        return None, None


class _Issues:
    """Collects ConfigIssues for one file, placing each one with the locator."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.text = text
        self.items: list[ConfigIssue] = []

    @functools.cached_property
    def locator(self) -> _Locator:
        # Built on the first problem only: reading every line of a big valid file costs ~0.2 s per 10,000 jobs.
        return _Locator(self.text)

    def add(self, where: tuple[str, ...], message: str) -> None:
        self.items.append(self._placed(where, message))

    def add_validation(self, where: tuple[str, ...], error: ValidationError, known: Mapping[str, Any]) -> None:
        details = error.errors()
        flawed = {detail["loc"][0] for detail in details if len(detail["loc"]) > 1}
        for detail in details:
            loc = tuple(str(part) for part in detail["loc"])
            if detail["type"] == "too_short" and detail["loc"] and detail["loc"][0] in flawed:
                continue  # the list's own items are wrong: those errors say more than "too short"
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
        return ConfigIssue(path=str(self.path), line=line, column=column, job=job, message=message)


def _interpolate(value: Any, where: tuple[str, ...], env: Mapping[str, str], issues: _Issues) -> Any:
    """Replace ``${VAR}`` in every string with the environment's value; a missing variable is an issue."""
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                issues.add(where, f"environment variable {name} is not set (used as ${{{name}}})")
                return ""
            return env[name]

        return _VARIABLE.sub(replace, value)
    if isinstance(value, dict):
        return {key: _interpolate(item, (*where, key), env, issues) for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolate(item, where, env, issues) for item in value]
    return value


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
    """Validate the text of a jobs.toml; raise ConfigError listing every problem found.

    With ``previous`` (the version running now), a job whose table and [defaults] are unchanged is taken from it
    as it is: a reload of a big file validates only what changed.
    """
    issues = _Issues(path, text)
    try:
        raw = tomli.loads(text)
    except tomli.TOMLDecodeError as error:
        issue = ConfigIssue(
            path=str(path), line=error.lineno, column=error.colno, message=f"not valid TOML: {error.msg}"
        )
        raise ConfigError([issue]) from None
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
            channels[name] = AlertChannel.model_validate({**table, "name": name} if isinstance(table, dict) else table)
        except ValidationError as error:
            issues.add_validation(("alerts", name), error, AlertChannel.model_fields)

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
        for channel in job.alerts:
            if channel not in channels:
                issues.add(("jobs", name, "alerts"), f"alert channel {channel!r} is not defined under [alerts]")
        jobs[name] = job
    for channel in daemon.alerts:
        if channel not in channels:
            issues.add(("daemon", "alerts"), f"alert channel {channel!r} is not defined under [alerts]")

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
        raise ConfigError(sorted(issues.items, key=lambda issue: (issue.line or 0, issue.column or 0)))
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
    )


def _fingerprint(table: Any) -> bytes:
    # 16 bytes rather than the table itself: 10,000 raw tables would hold ~7 MB for the next reload. Tables that
    # are equal but written in another order get another fingerprint, and are merely validated again.
    return hashlib.blake2b(repr(table).encode(), digest_size=16).digest()


def load_config(path: Path, *, env: Mapping[str, str], previous: Config | None = None) -> Config:
    """Read and validate a jobs.toml file (``previous``: see ``parse_config``)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError([ConfigIssue(path=str(path), message=f"cannot read the file: {error.strerror}")]) from None
    return parse_config(text, path=path, env=env, previous=previous)


def digest(text: str) -> str:
    """A short fingerprint of a config text, to tell versions of the file apart in logs and records."""
    return hashlib.sha256(text.encode()).hexdigest()[:12]


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


class ConfigSource:
    """The jobs.toml a daemon runs from, watched for edits.

    It polls the file's status once a second rather than subscribing to file-system events: a stat of the path
    follows symlinks and sees a new inode, so editors' rename-on-save, atomic writes, in-place writes, Docker
    bind mounts and Kubernetes ConfigMap symlink swaps are all noticed, including on file systems where inotify
    is silent (network and some container mounts).
    """

    def __init__(self, path: Path, *, env: Mapping[str, str]) -> None:
        self.path = path
        self.env = env
        self._seen: tuple[int, int, int] | None = self._status()
        self._loaded: Config | None = None  # the last valid version, whose unchanged jobs the next load reuses

    def _status(self) -> tuple[int, int, int] | None:
        try:
            status = self.path.stat()
        except OSError:
            return None
        return (status.st_ino, status.st_mtime_ns, status.st_size)

    def changed(self) -> bool:
        """Whether the file looks different since the last call (or since it was last loaded)."""
        status = self._status()
        if status == self._seen:
            return False
        self._seen = status
        return True

    def load(self) -> Config:
        """Read and validate the file now; raises ConfigError listing every problem."""
        self._seen = self._status()
        self._loaded = load_config(self.path, env=self.env, previous=self._loaded)
        return self._loaded

    def current_digest(self) -> str | None:
        """The fingerprint of the file as it is now (None when it cannot be read)."""
        try:
            return digest(self.path.read_text(encoding="utf-8"))
        except OSError:
            return None
