"""Reading jobs.toml: the file's bytes, TOML, ``${VAR}`` interpolation, values the models cannot refuse, the models.

Whatever the bytes, ``parse_config`` and ``load_config`` raise nothing but a ConfigError, every problem in it
placed at its file:line:column.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import math
import os
import re
import stat
import traceback
from collections.abc import Mapping
from datetime import date
from datetime import time as time_of_day
from pathlib import Path
from typing import Any, TypeVar

import tomli
from pydantic import BaseModel, ValidationError

from scheduler.config.alert_urls import alert_url_secrets, apprise_problem
from scheduler.config.bodies import check_request
from scheduler.config.bounds import INT64, MAX_DEPTH, MAX_FILE_BYTES, MIN_SECRET_LENGTH, out_of_order
from scheduler.config.issues import VARIABLE, Issues, position, too_deep
from scheduler.config.models import (
    AlertChannel,
    Config,
    DaemonConfig,
    HistoryConfig,
    Job,
    JobDefaults,
    Maintenance,
)
from scheduler.endpoints import ENDPOINTS
from scheduler.errors import ConfigError, ConfigIssue

logger = logging.getLogger(__name__)

_JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_SECTIONS = ("daemon", "defaults", "jobs", "alerts", "maintenance", "history")
_Model = TypeVar("_Model", bound=BaseModel)


def load_config(path: Path, *, env: Mapping[str, str], previous: Config | None = None) -> Config:
    """Read and validate a jobs.toml file (``previous``: see ``parse_config``); raises only ConfigError."""
    return parse_config(decode(read_file(path), path), path=path, env=env, previous=previous)


def digest(text: str | bytes) -> str:
    """A short fingerprint of a config text, to tell versions of the file apart in logs and records."""
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()[:12]


def read_file(path: Path) -> bytes:
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


def decode(data: bytes, path: Path) -> str:
    """The text of a config file's bytes; ConfigError, with the line and column, at a byte that is not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        before = data[: error.start]
        line = before.count(b"\n") + 1
        column = len(before[before.rfind(b"\n") + 1 :].decode("utf-8", errors="replace")) + 1
        message = f"not UTF-8: the byte 0x{data[error.start]:02x} cannot be read (save the file as UTF-8)"
        raise ConfigError([ConfigIssue(path=str(path), line=line, column=column, message=message)]) from None


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
    raw = _toml(text, path)
    issues = Issues(path, text)
    _check_values(raw, issues)
    if issues.items:  # the models below would recurse into such values, or fail on them in ways not worth naming
        raise issues.error()
    if "${" in text:  # nothing to replace otherwise, and walking every value of a big file is not free
        raw = _interpolate(raw, (), env, issues)
    for name in _SECTIONS:
        if name in raw and not isinstance(raw[name], dict):
            issues.add((name,), f"{name} must be a table, e.g. [{name}]")
            raw.pop(name)
    for key in raw.keys() - set(_SECTIONS):
        close = difflib.get_close_matches(key, _SECTIONS, n=1)
        hint = f" (did you mean [{close[0]}]?)" if close else ""
        issues.add((key,), f"unknown section [{key}]{hint}")

    daemon = _section(raw, "daemon", DaemonConfig, issues)
    _check_poll_ceiling(raw.get("daemon", {}), daemon, issues)
    defaults = _section(raw, "defaults", JobDefaults, issues)
    history = _section(raw, "history", HistoryConfig, issues)
    channels = _channels(raw.get("alerts", {}), issues, previous)
    jobs, tables = _jobs(raw.get("jobs", {}), defaults, channels, issues, previous)
    for channel_name in daemon.alerts:
        if channel_name not in channels:
            issues.add(("daemon", "alerts"), f"alert channel {channel_name!r} is not defined under [alerts]")
    maintenance = _maintenance(raw.get("maintenance", {}), raw.get("jobs", {}), issues)

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


def _toml(text: str, path: Path) -> dict[str, Any]:
    """The tables of a TOML text; ConfigError, placed where possible, when it is not TOML we can read."""
    line: int | None
    column: int | None
    try:
        text.encode()
    except UnicodeEncodeError as error:  # only a str made in Python can hold a lone surrogate; a file cannot
        line, column = position(text, error.start)
        issue = ConfigIssue(path=str(path), line=line, column=column, message="not valid Unicode (a lone surrogate)")
        raise ConfigError([issue]) from None
    try:
        return tomli.loads(text)
    except tomli.TOMLDecodeError as error:
        issue = ConfigIssue(
            path=str(path), line=error.lineno, column=error.colno, message=f"not valid TOML: {error.msg}"
        )
        raise ConfigError([issue]) from None
    except RecursionError:  # tomli refuses 400 nested levels, or a key of 1,000 parts, this way (without a place)
        line, column = too_deep(text)
        message = f"tables and arrays are nested more than {MAX_DEPTH} levels deep"
        raise ConfigError([ConfigIssue(path=str(path), line=line, column=column, message=message)]) from None
    except ValueError:  # an integer of more than 4,300 digits (Python's limit on reading one)
        found = re.search(r"[0-9][0-9_]{4000,}", text)
        line, column = position(text, found.start()) if found else (None, None)
        message = "integer out of range: jobs.toml integers fit in 64 bits"
        raise ConfigError([ConfigIssue(path=str(path), line=line, column=column, message=message)]) from None


def _check_values(raw: dict[str, Any], issues: Issues) -> None:
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
                json = sent_as_json or (key in ("body", "publish_data_message", "spec") and len(where) >= 2)
                # An array adds no key to the path, so its depth is counted with a placeholder key.
                stack.append((value, inner if key else (*where, "[]"), json))
            elif isinstance(value, int) and not -INT64 - 1 <= value <= INT64:
                issues.add(
                    inner, "integer out of range: jobs.toml integers fit in 64 bits (at most 9223372036854775807)"
                )
            elif isinstance(value, float) and not math.isfinite(value):
                issues.add(inner, "nan and inf are not accepted: write a number")
            elif sent_as_json and isinstance(value, date | time_of_day):  # datetime is a date too
                issues.add(inner, 'dates and times cannot be sent as JSON: write them as strings, e.g. "2026-01-31"')


def _variable(name: str, env: Mapping[str, str]) -> tuple[str | None, str | None]:
    """``${NAME}``'s value and None, or None and why it has none.

    Unset, ``NAME_FILE`` may name a file holding it (Docker and Kubernetes secrets, as for the settings): its
    text, trimmed of surrounding spaces and newlines.
    """
    if name in env:
        return env[name], None
    path = env.get(f"{name}_FILE")
    if path is None:
        return None, f"environment variable {name} is not set (used as ${{{name}}})"
    try:
        return Path(path).read_text(encoding="utf-8").strip(), None
    except OSError as error:
        return None, f"environment variable {name}_FILE {path!r} (for ${{{name}}}): {error.strerror}"
    except UnicodeDecodeError:
        return None, f"environment variable {name}_FILE {path!r} (for ${{{name}}}): not UTF-8 text"


def _interpolate(value: Any, where: tuple[str, ...], env: Mapping[str, str], issues: Issues) -> Any:
    """Replace ``${VAR}`` in every string with the environment's value; a missing variable is an issue."""
    if isinstance(value, str):
        values: dict[str, str] = {}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            found, problem = _variable(name, env)
            if found is None:
                issues.add(where, problem or name)
                issues.unset.add(where)
                return ""
            values[name] = found
            return found

        result = VARIABLE.sub(replace, value)
        if values:
            issues.interpolated(value, result, values)
        return result
    if isinstance(value, dict):
        return {key: _interpolate(item, (*where, key), env, issues) for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolate(item, where, env, issues) for item in value]
    return value


def _section(raw: dict[str, Any], name: str, model: type[_Model], issues: Issues) -> _Model:
    """A top-level table as its model; with its defaults (and its problems noted) when it is not valid."""
    try:
        return model.model_validate(raw.get(name, {}))
    except ValidationError as error:
        issues.add_validation((name,), error, model.model_fields)
        return model.model_validate({})


def _check_poll_ceiling(table: dict[str, Any], daemon: DaemonConfig, issues: Issues) -> None:
    # Only when the file sets both: a ceiling below the default first pause (10s) has always been accepted.
    if {"poll_interval", "poll_max_interval"} <= table.keys():
        why = "the pause between two reads starts at poll_interval and grows up to poll_max_interval"
        ceiling, first = daemon.poll_max_interval, daemon.poll_interval
        if problem := out_of_order(ceiling, first, "poll_interval", at_most=False, why=why):
            issues.add(("daemon", "poll_max_interval"), f"poll_max_interval: {problem}")


def _named(section: str, name: str, table: Any, model: type[_Model], issues: Issues) -> _Model | None:
    """One ``[section.<name>]`` table as its model, or None (and its problems noted)."""
    try:
        return model.model_validate({**table, "name": name} if isinstance(table, dict) else table)
    except ValidationError as error:
        issues.add_validation((section, name), error, model.model_fields)
        return None


def _channels(tables: dict[str, Any], issues: Issues, previous: Config | None) -> dict[str, AlertChannel]:
    """The ``[alerts.*]`` channels, each URL checked with Apprise (unless the running version had it already)."""
    channels: dict[str, AlertChannel] = {}
    for name, table in tables.items():
        channel = _named("alerts", name, table, AlertChannel, issues)
        if channel is None:
            continue
        url = channel.url.get_secret_value()
        checked = previous is not None and name in previous.channels and previous.channels[name].url == channel.url
        if ("alerts", name, "url") not in issues.unset and not checked and (problem := apprise_problem(url)):
            issues.add(("alerts", name, "url"), f"url of alert channel {name!r}: {problem}")
        channels[name] = channel
    return channels


def _jobs(
    tables: dict[str, Any],
    defaults: JobDefaults,
    channels: dict[str, AlertChannel],
    issues: Issues,
    previous: Config | None,
) -> tuple[dict[str, Job], dict[str, bytes]]:
    """The valid jobs, and the fingerprint of every job's table (see ``Config.job_tables``)."""
    jobs: dict[str, Job] = {}
    known = previous.jobs if previous is not None and previous.job_defaults == defaults else {}
    fingerprints: dict[str, bytes] = {}
    for name, table in tables.items():
        fingerprints[name] = _fingerprint(table)
        job = known.get(name)
        if job is None or previous is None or previous.job_tables.get(name) != fingerprints[name]:
            job = _build_job(name, table, defaults, issues)
        if job is None:
            continue
        for channel_name in job.alerts:
            if channel_name not in channels:
                issues.add(("jobs", name, "alerts"), f"alert channel {channel_name!r} is not defined under [alerts]")
        jobs[name] = job
    return jobs, fingerprints


def _build_job(name: str, raw: Any, defaults: JobDefaults, issues: Issues) -> Job | None:
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
    endpoint_name = raw.get("endpoint", inherited.get("endpoint", "livekit_v2"))
    endpoint = ENDPOINTS.get(endpoint_name) if isinstance(endpoint_name, str) else None
    if endpoint is not None and (endpoint.agent_field is None or "assistant_id" in raw):
        inherited.pop("agent", None)  # e.g. a Pipecat agent is named in pipecat_data: a default agent does not apply
    if endpoint is not None and endpoint.frequency is None:
        inherited.pop("frequency", None)  # a test-suite spec says how often itself
    merged = {**inherited, **raw}
    # The rules across fields are checked on the raw table, so they are reported with the field errors.
    if ("cron" in merged) == ("every" in merged):
        issues.add(where, 'set exactly one of cron = "..." or every = "..."')
        ok = False
    if endpoint is not None:
        ok = check_request(where, merged, endpoint, issues) and ok
    try:
        job = Job.model_validate({**merged, "name": name})
    except ValidationError as error:
        issues.add_validation(where, error, Job.model_fields)
        return None
    return job if ok else None


def _fingerprint(table: Any) -> bytes:
    # 16 bytes rather than the table itself: 10,000 raw tables would hold ~7 MB for the next reload. Tables that
    # are equal but written in another order get another fingerprint, and are merely validated again.
    return hashlib.blake2b(repr(table).encode(), digest_size=16).digest()


def _maintenance(tables: dict[str, Any], jobs: dict[str, Any], issues: Issues) -> dict[str, Maintenance]:
    """The ``[maintenance.*]`` windows; each job they name must be a table of ``[jobs]`` (valid or not)."""
    maintenance: dict[str, Maintenance] = {}
    for name, table in tables.items():
        window = _named("maintenance", name, table, Maintenance, issues)
        if window is None:
            continue
        for job_name in window.jobs or ():
            if job_name not in jobs:
                issues.add(("maintenance", name, "jobs"), f"job {job_name!r} is not defined under [jobs]")
        maintenance[name] = window
    return maintenance
