"""The limits of what jobs.toml may hold (README: "Bounds"), and the checks of single values the models share."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ValidationInfo

from scheduler.schedules import LONGEST, Schedule, format_duration, parse_duration

_SECOND, _MINUTE, _HOUR, _DAY = timedelta(seconds=1), timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)
DURATION_BOUNDS: dict[str, tuple[timedelta, timedelta]] = {
    "every": (_SECOND, 366 * _DAY),
    "result_timeout": (_SECOND, 7 * _DAY),
    "catch_up_window": (_SECOND, 7 * _DAY),
    "jitter": (_SECOND, _DAY),
    "remind_every": (_MINUTE, 30 * _DAY),
    "poll_interval": (_SECOND, _HOUR),
    "poll_max_interval": (_SECOND, _HOUR),
    "webhook_poll_interval": (_SECOND, _HOUR),
    "lease": (_SECOND, _HOUR),
    "retention": (_DAY, LONGEST),
    "duration": (_MINUTE, 31 * _DAY),  # of a recurring maintenance window
}
"""The shortest and longest value of each duration key (README: "Bounds")."""

MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 32  # tables and arrays inside one another, counted from the top of the file
MAX_URL_LENGTH = 8192
INT64 = 2**63 - 1  # every integer must fit the database's and JSON consumers' 64 bits
MIN_SECRET_LENGTH = 4  # shorter strings ("UTC", "12") are not worth redacting, and would garble every log line
_ZONE_KEY = re.compile(r"[A-Za-z0-9_+-]+(?:/[A-Za-z0-9_+-]+)*", re.ASCII)


def read_duration(value: object, info: ValidationInfo) -> object:
    """A duration key's text as a timedelta within its bounds (a pydantic "before" validator)."""
    assert info.field_name is not None
    at_least, at_most = DURATION_BOUNDS[info.field_name]
    if isinstance(value, str):
        return parse_duration(value, at_least=at_least, at_most=at_most)
    if isinstance(value, timedelta):  # already parsed, e.g. inherited from [defaults] (within the same bounds)
        return value
    raise ValueError(f"write durations as text with a unit, e.g. '30s', '15m', '1h', '1d' (got {value!r})")


def out_of_order(value: timedelta, limit: timedelta, other: str, *, at_most: bool, why: str) -> str | None:
    """What is wrong with a duration that must be at most (or at least) the duration ``other``; None if it is."""
    if value <= limit if at_most else value >= limit:
        return None
    side = "longer" if at_most else "shorter"
    return f"{format_duration(value)} is {side} than {other} ({format_duration(limit)}): {why}"


def read_zone(value: object) -> object:
    """A timezone key's text as a ZoneInfo (a pydantic "before" validator)."""
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


def check_cron(value: str | None) -> str | None:
    """A cron expression that is valid and ever fires (a pydantic validator)."""
    if value is not None:
        Schedule.from_cron(value, UTC)  # whether it is valid and ever fires does not depend on the zone
    return value


def plausible(instant: datetime) -> bool:
    """Whether an instant falls between the years 1970 and 2999 (in UTC)."""
    try:
        return 1970 <= instant.astimezone(UTC).year <= 2999
    except OverflowError:  # 9999-12-31T23:59-01:00 is past the last datetime in UTC
        return False
