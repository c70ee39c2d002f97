"""When jobs fire: cron and interval schedules, slots and submission names.

Pure domain code: no I/O. This is the one module that calls APScheduler (3.x is untyped); the daemon drives
its own timer over these schedules because APScheduler 3 does not hand a job its scheduled fire time, and the
scheduled time (the *slot*) is what makes a submission unique.

A slot is an aware UTC instant. Cron expressions are standard 5-field crontab, evaluated in the job's IANA
timezone, with standard day-of-week numbering (0 and 7 are Sunday) and the standard rule that when both
day-of-month and day-of-week are restricted, a day matching either fires. Intervals are anchored at the Unix
epoch, so ``every = "15m"`` fires at :00, :15, :30 and :45 whatever time the daemon started.

Daylight saving time: a local time that does not exist (skipped by a spring-forward) fires at the same
offset into the new time, e.g. 02:30 becomes 03:30 that day; a local time that happens twice (fall-back) fires
once, at its first occurrence, except in jobs whose hour field is ``*``.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from cron_descriptor import ExpressionDescriptor, Options

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY_NAMES = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
_DURATION_PART = re.compile(r"([0-9]+)\s*([smhd])", re.ASCII)
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
LONGEST = timedelta(days=3660)
"""The longest duration anything accepts (about ten years): longer ones would overflow date arithmetic."""
MAX_CRON_LENGTH = 200
# Years enough for every date, 29 February included, to fall on every weekday (a 28-year cycle): a cron
# expression without a slot in them has none ever.
_PROBE_YEARS = "2000-2040"


def parse_duration(text: str, *, at_least: timedelta = timedelta(seconds=1), at_most: timedelta = LONGEST) -> timedelta:
    """Read a duration such as ``30s``, ``15m``, ``1h``, ``1d`` or ``1h30m``, between ``at_least`` and ``at_most``.

    Raises ValueError with a message meant for the person who wrote it.
    """
    compact = text.strip().lower()
    parts = _DURATION_PART.findall(compact)
    if not compact or "".join(f"{n}{u}" for n, u in parts) != compact.replace(" ", ""):
        raise ValueError(f"invalid duration {text!r}: use a number and a unit, e.g. '30s', '15m', '1h', '1d'")
    if any(len(number) > 12 for number, _ in parts):  # int() of a long digit string costs, and means nothing here
        raise ValueError(f"invalid duration {text!r}: too long (at most {format_duration(at_most)})")
    seconds = sum(int(number) * _DURATION_UNITS[unit] for number, unit in parts)
    if seconds <= 0:
        raise ValueError(f"invalid duration {text!r}: it must be longer than zero")
    # Compared as seconds: timedelta() itself overflows past 999999999 days.
    if seconds > at_most.total_seconds():
        raise ValueError(f"invalid duration {text!r}: too long (at most {format_duration(at_most)})")
    if seconds < at_least.total_seconds():
        raise ValueError(f"invalid duration {text!r}: too short (at least {format_duration(at_least)})")
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """Write a duration the way ``parse_duration`` reads it (``90s`` -> ``1m30s``)."""
    seconds = int(delta.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"


def _day_number(token: str) -> int:
    token = token.strip().lower()
    if token[:3] in _DAY_NAMES and token.isalpha():
        return _DAY_NAMES.index(token[:3])
    if not token.isdigit() or int(token) > 7:
        raise ValueError(f"invalid day of week {token!r}: use 0-7 (0 and 7 are Sunday) or sun..sat")
    return int(token) % 7


def _standard_days(field_text: str) -> str:
    """Translate a crontab day-of-week field to APScheduler's names (APScheduler 3 counts 0 as Monday)."""
    if field_text == "*":
        return "*"
    days: set[int] = set()
    for item in field_text.split(","):
        body, _, step_text = item.partition("/")
        step = int(step_text) if step_text.isdigit() and int(step_text) > 0 else None
        if step_text and step is None:
            raise ValueError(f"invalid step in day of week {item!r}")
        if body == "*":
            first, last = 0, 6
        elif "-" in body:
            start, _, end = body.partition("-")
            first, last = _day_number(start), _day_number(end)
            if end.strip() == "7":
                last = 7
            if last < first:
                raise ValueError(f"invalid day-of-week range {body!r}: the first day must come before the last")
        else:
            first = last = _day_number(body)
        days.update(day % 7 for day in range(first, last + 1, step or 1))
    return ",".join(_DAY_NAMES[day] for day in sorted(days))


@functools.lru_cache(maxsize=4096)
def _cron_trigger(expression: str, zone: tzinfo) -> Any:
    # Cached: building an APScheduler CronTrigger costs ~0.1 ms, and a trigger holds no state, so jobs sharing
    # an expression and zone share one, and a reload (or each Job.schedule) does not build them again.
    if len(expression) > MAX_CRON_LENGTH:
        raise ValueError(f"invalid cron expression: longer than {MAX_CRON_LENGTH} characters")
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(
            f"invalid cron expression {expression!r}: expected 5 fields (minute hour day month weekday), "
            f"got {len(fields)}"
        )
    minute, hour, day, month, weekday = fields
    try:
        days = _standard_days(weekday)
        common = {"minute": minute, "hour": hour, "month": month, "timezone": zone}
        if day != "*" and days != "*":
            # crontab(5): when both day fields are restricted, a day matching either one fires.
            return OrTrigger([CronTrigger(day=day, **common), CronTrigger(day_of_week=days, **common)])
        trigger = CronTrigger(day=day, day_of_week=days, **common)
    except ValueError as error:
        raise ValueError(f"invalid cron expression {expression!r}: {error}") from None
    if _never_fires(minute, hour, day, month, days):
        raise ValueError(f"invalid cron expression {expression!r}: it never fires (no month has such a day)")
    return trigger


@functools.lru_cache(maxsize=1024)
def _never_fires(minute: str, hour: str, day: str, month: str, days: str) -> bool:
    # Only the days of the month can rule out every date (30 February, 31 April); asked of a trigger limited to
    # _PROBE_YEARS, because an unlimited one searches up to the year 9999 before it gives up (0.15 s).
    probe = CronTrigger(
        minute=minute, hour=hour, day=day, month=month, day_of_week=days, year=_PROBE_YEARS, timezone=UTC
    )
    return probe.get_next_fire_time(None, datetime(2000, 1, 1, tzinfo=UTC)) is None


@dataclass(frozen=True)
class Schedule:
    """A job's schedule: either a cron expression in a timezone or a fixed interval."""

    cron: str | None
    every: timedelta | None
    timezone: tzinfo
    _trigger: Any = field(repr=False, compare=False, hash=False)

    @classmethod
    def from_cron(cls, expression: str, timezone: tzinfo) -> Schedule:
        """A cron schedule; raises ValueError naming what is wrong with the expression."""
        return cls(cron=expression, every=None, timezone=timezone, _trigger=_cron_trigger(expression, timezone))

    @classmethod
    def from_interval(cls, every: timedelta, timezone: tzinfo) -> Schedule:
        """A fixed-interval schedule anchored at the Unix epoch."""
        trigger = IntervalTrigger(seconds=int(every.total_seconds()), start_date=EPOCH, timezone=UTC)
        return cls(cron=None, every=every, timezone=timezone, _trigger=trigger)

    def next_after(self, instant: datetime) -> datetime:
        """The first slot strictly after ``instant``, as an aware UTC datetime."""
        # APScheduler's triggers answer "at or after now"; ask from the next whole second.
        probe = instant.astimezone(UTC).replace(microsecond=0) + timedelta(seconds=1)
        while True:
            fire = self._trigger.get_next_fire_time(None, probe)
            if fire is None:  # pragma: no cover - cron and interval triggers never end
                raise ValueError("schedule has no further fire times")
            if not self._repeated_wall_time(fire):
                return fire.astimezone(UTC)  # type: ignore[no-any-return]
            probe = fire.astimezone(UTC) + timedelta(seconds=1)

    def _repeated_wall_time(self, fire: datetime) -> bool:
        """True for the second occurrence of a local time that a fall-back day repeats.

        Such a time fires once, at its first occurrence, like cron does for fixed-time jobs. A cron job whose
        hour field is ``*`` keeps firing through the repeated hour: each of those instants is a distinct hour.
        """
        if self.cron is None or self.cron.split()[1] == "*":
            return False
        return fire.astimezone(self.timezone).fold == 1

    def upcoming(self, instant: datetime, count: int) -> list[datetime]:
        """The next ``count`` slots after ``instant``."""
        slots: list[datetime] = []
        for slot in self.slots_after(instant):
            slots.append(slot)
            if len(slots) == count:
                break
        return slots

    def slots_after(self, instant: datetime) -> Iterator[datetime]:
        """Every slot after ``instant``, in order, without end."""
        while True:
            instant = self.next_after(instant)
            yield instant

    def slots_between(self, after: datetime, until: datetime, *, limit: int) -> tuple[list[datetime], bool]:
        """The slots in ``(after, until]``, oldest first, at most ``limit`` of them (the newest ones).

        The flag says whether older slots were left out because there were more than ``limit``.
        """
        if self.every is not None:
            # Counted rather than listed: a day of a 1-second interval is 86,400 slots (0.3 s one by one).
            first, last = (after - EPOCH) // self.every + 1, (until - EPOCH) // self.every
            start = max(first, last - limit + 1)
            return [EPOCH + number * self.every for number in range(start, last + 1)], start > first
        slots: list[datetime] = []
        dropped = False
        for slot in self.slots_after(after):
            if slot > until:
                break
            slots.append(slot)
            if len(slots) > limit:
                slots.pop(0)
                dropped = True
        return slots, dropped

    def in_words(self) -> str:
        """The schedule as a sentence, e.g. ``At 03:00, every day, in America/New_York``."""
        if self.cron is not None:
            return _cron_in_words(self.cron, str(self.timezone))
        assert self.every is not None
        return f"Every {_duration_in_words(self.every)}"

    def fires_between(self, start: datetime, end: datetime) -> int:
        """How many slots fall in ``(start, end]`` (counted without listing them for intervals)."""
        if self.every is not None:
            step = self.every.total_seconds()
            return int((end - EPOCH).total_seconds() // step) - int((start - EPOCH).total_seconds() // step)
        return len(self.slots_between(start, end, limit=10**7)[0])

    def describe(self) -> str:
        """The schedule in a few words, e.g. ``cron '0 3 * * *' (America/New_York)``."""
        if self.cron is not None:
            return f"cron '{self.cron}' ({self.timezone})"
        assert self.every is not None
        return f"every {format_duration(self.every)}"


@functools.lru_cache(maxsize=4096)
def _cron_in_words(expression: str, zone: str) -> str:
    # Cached: cron_descriptor takes about 1 ms an expression, and the status page and /api/jobs say every job's
    # schedule on each request. The words depend on the expression and the zone's name alone, so a reload that
    # changes a schedule asks for a new key, and one that keeps it finds its words again.
    options = Options()
    options.use_24hour_time_format = True
    options.verbose = True  # "At 03:00, every day" rather than "At 03:00"
    options.day_of_week_start_index_zero = True  # standard crontab: 0 is Sunday
    try:
        words = ExpressionDescriptor(expression, options).get_description()
    except Exception:  # cron_descriptor refuses some forms the schedule takes ("sunday"): say it plainly
        words = f"cron '{expression}'"
    return f"{words}, in {zone}"


def _duration_in_words(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}s" if count != 1 else unit
    return f"{seconds} seconds" if seconds != 1 else "second"


def jitter_offset(job: str, slot: datetime, jitter: timedelta) -> timedelta:
    """How long after its slot a job with ``jitter`` fires: random-looking, but the same for the same slot.

    Deterministic, so every replica and every restart agree on when a slot fires.
    """
    span = int(jitter.total_seconds() * 1000)
    if span <= 0:
        return timedelta(0)
    digest = hashlib.sha256(submission_name(job, slot).encode()).digest()
    return timedelta(milliseconds=int.from_bytes(digest[:8], "big") % span)


def submission_name(job: str, slot: datetime) -> str:
    """The unique name a submission carries to Cekura, e.g. ``support-nightly@2026-11-29T03:00:00Z``.

    It identifies the job and the slot, so a submission whose answer was lost can be found again by name.
    """
    utc = slot.astimezone(UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += f".{utc.microsecond:06d}"
    return f"{job}@{text}Z"
