"""Cron and interval schedules: next fire times, slots, durations and submission names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from scheduler.schedules import Schedule, format_duration, jitter_offset, parse_duration, submission_name

NEW_YORK = ZoneInfo("America/New_York")
SUNDAY = datetime(2026, 2, 1, 12, 0, tzinfo=UTC)  # a Sunday, noon UTC


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def days_of(expression: str, count: int = 6) -> list[str]:
    slots = Schedule.from_cron(expression, UTC).upcoming(SUNDAY, count)
    return [slot.strftime("%a %d") for slot in slots]


# --- cron in a timezone ----------------------------------------------------------------------------------------


def test_cron_in_new_york_is_0800_utc_in_winter() -> None:
    schedule = Schedule.from_cron("0 3 * * *", NEW_YORK)
    assert schedule.next_after(utc(2026, 1, 10, 12, 0)) == utc(2026, 1, 11, 8, 0)


def test_cron_in_new_york_is_0700_utc_in_summer() -> None:
    schedule = Schedule.from_cron("0 3 * * *", NEW_YORK)
    assert schedule.next_after(utc(2026, 7, 10, 12, 0)) == utc(2026, 7, 11, 7, 0)


def test_cron_follows_the_switch_to_summer_time() -> None:
    schedule = Schedule.from_cron("0 3 * * *", NEW_YORK)
    # DST starts on 2026-03-08: 03:00 is EST the day before and EDT that day.
    assert schedule.upcoming(utc(2026, 3, 7, 0, 0), 2) == [utc(2026, 3, 7, 8, 0), utc(2026, 3, 8, 7, 0)]


def test_cron_at_a_nonexistent_spring_forward_time_fires_once_after_the_gap() -> None:
    # 02:30 does not exist in New York on 2026-03-08 (clocks jump 02:00 -> 03:00); the job fires once that
    # day, at 03:30 EDT, and at 02:30 EDT the next day.
    schedule = Schedule.from_cron("30 2 * * *", NEW_YORK)
    assert schedule.upcoming(utc(2026, 3, 7, 12, 0), 2) == [utc(2026, 3, 8, 7, 30), utc(2026, 3, 9, 6, 30)]


def test_cron_slots_are_aware_utc() -> None:
    slot = Schedule.from_cron("0 3 * * *", NEW_YORK).next_after(utc(2026, 1, 10, 12, 0))
    assert slot.tzinfo is UTC


def test_next_after_accepts_an_instant_in_another_zone() -> None:
    schedule = Schedule.from_cron("0 3 * * *", NEW_YORK)
    local = datetime(2026, 1, 10, 7, 0, tzinfo=NEW_YORK)  # 12:00 UTC
    assert schedule.next_after(local) == utc(2026, 1, 11, 8, 0)


# --- crontab day rules -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("weekday", ["0", "7", "sun", "SUN"])
def test_sunday_is_0_or_7_or_its_name(weekday: str) -> None:
    assert days_of(f"0 9 * * {weekday}", 3) == ["Sun 08", "Sun 15", "Sun 22"]


@pytest.mark.parametrize("weekday", ["1-5", "mon-fri"])
def test_1_to_5_is_monday_to_friday(weekday: str) -> None:
    assert days_of(f"0 9 * * {weekday}", 6) == ["Mon 02", "Tue 03", "Wed 04", "Thu 05", "Fri 06", "Mon 09"]


def test_weekday_range_may_end_at_7_for_sunday() -> None:
    assert days_of("0 9 * * 5-7", 4) == ["Fri 06", "Sat 07", "Sun 08", "Fri 13"]


def test_weekday_list_and_step() -> None:
    assert days_of("0 9 * * 1,3", 3) == ["Mon 02", "Wed 04", "Mon 09"]
    assert days_of("0 9 * * */2", 4) == ["Tue 03", "Thu 05", "Sat 07", "Sun 08"]


def test_day_of_month_and_weekday_both_restricted_fire_on_either() -> None:
    # crontab(5): "0 9 1 * 1" is the 1st of the month *or* any Monday.
    assert days_of("0 9 1 * 1", 6) == ["Mon 02", "Mon 09", "Mon 16", "Mon 23", "Sun 01", "Mon 02"]


def test_only_day_of_month_restricted_ignores_weekday() -> None:
    assert days_of("0 9 13 * *", 2) == ["Fri 13", "Fri 13"]  # 2026-02-13 and 2026-03-13
    slots = Schedule.from_cron("0 9 13 * *", UTC).upcoming(SUNDAY, 3)
    assert [slot.month for slot in slots] == [2, 3, 4]


# --- strictly after --------------------------------------------------------------------------------------------


def test_next_after_a_slot_is_the_following_slot() -> None:
    schedule = Schedule.from_cron("0 3 * * *", UTC)
    assert schedule.next_after(utc(2026, 1, 10, 3, 0)) == utc(2026, 1, 11, 3, 0)


def test_next_after_just_before_a_slot_is_that_slot() -> None:
    schedule = Schedule.from_cron("0 3 * * *", UTC)
    instant = datetime(2026, 1, 10, 2, 59, 59, 999_999, tzinfo=UTC)
    assert schedule.next_after(instant) == utc(2026, 1, 10, 3, 0)


def test_next_after_a_fraction_past_a_slot_skips_it() -> None:
    schedule = Schedule.from_interval(timedelta(minutes=15), UTC)
    instant = datetime(2026, 1, 10, 3, 0, 0, 500_000, tzinfo=UTC)
    assert schedule.next_after(instant) == utc(2026, 1, 10, 3, 15)


def test_upcoming_lists_distinct_increasing_slots() -> None:
    slots = Schedule.from_cron("*/10 * * * *", UTC).upcoming(utc(2026, 1, 10, 3, 0), 3)
    assert slots == [utc(2026, 1, 10, 3, 10), utc(2026, 1, 10, 3, 20), utc(2026, 1, 10, 3, 30)]


# --- intervals -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "start",
    [utc(2026, 5, 4, 10, 0), utc(2026, 5, 4, 10, 7, 33), datetime(2026, 5, 4, 10, 14, 59, 1, tzinfo=UTC)],
)
def test_every_15m_fires_on_the_quarter_hours_whatever_the_start(start: datetime) -> None:
    slots = Schedule.from_interval(timedelta(minutes=15), UTC).upcoming(start, 4)
    assert slots == [utc(2026, 5, 4, 10, 15), utc(2026, 5, 4, 10, 30), utc(2026, 5, 4, 10, 45), utc(2026, 5, 4, 11, 0)]


def test_interval_is_anchored_at_the_epoch_not_the_timezone() -> None:
    # Kolkata is UTC+05:30; the anchor is the Unix epoch, so slots stay on UTC quarter hours.
    slots = Schedule.from_interval(timedelta(minutes=15), ZoneInfo("Asia/Kolkata")).upcoming(utc(2026, 5, 4, 10, 7), 2)
    assert slots == [utc(2026, 5, 4, 10, 15), utc(2026, 5, 4, 10, 30)]


def test_odd_interval_slots_are_multiples_of_it_since_the_epoch() -> None:
    slots = Schedule.from_interval(timedelta(minutes=7), UTC).upcoming(utc(2026, 5, 4, 10, 7, 33), 3)
    assert [int(slot.timestamp()) % 420 for slot in slots] == [0, 0, 0]
    assert [b - a for a, b in pairwise(slots)] == [timedelta(minutes=7)] * 2


def test_interval_slots_are_aware_utc() -> None:
    slot = Schedule.from_interval(timedelta(hours=1), NEW_YORK).next_after(utc(2026, 5, 4, 10, 7))
    assert slot.tzinfo is UTC
    assert slot == utc(2026, 5, 4, 11, 0)


def test_describe_names_the_schedule() -> None:
    assert Schedule.from_cron("0 3 * * *", NEW_YORK).describe() == "cron '0 3 * * *' (America/New_York)"
    assert Schedule.from_interval(timedelta(minutes=90), UTC).describe() == "every 1h30m"


# --- invalid cron ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("0 3 * *", "expected 5 fields"),
        ("0 3 * * * *", "expected 5 fields"),
        ("", "expected 5 fields"),
        ("61 * * * *", "61"),
        ("0 24 * * *", "24"),
        ("0 3 32 * *", "32"),
        ("0 3 * 13 *", "13"),
        ("0 3 * * 8", "0 and 7 are Sunday"),
        ("0 3 * * funday", "funday"),
        ("0 3 * * 5-1", "5-1"),
        ("0 3 * * */0", "*/0"),
    ],
)
def test_invalid_cron_raises_value_error_naming_the_problem(expression: str, says: str) -> None:
    with pytest.raises(ValueError, match="invalid cron expression") as caught:
        Schedule.from_cron(expression, UTC)
    assert repr(expression) in str(caught.value)
    assert says in str(caught.value)


# --- durations -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("1h", timedelta(hours=1)),
        ("1d", timedelta(days=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1H30M", timedelta(hours=1, minutes=30)),
        (" 2m ", timedelta(minutes=2)),
    ],
)
def test_parse_duration_accepts(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "15x", "15", "m", "0s", "0m0s", "-1m", "1.5h", "1h 30q"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_parse_duration_says_why_zero_is_rejected() -> None:
    with pytest.raises(ValueError, match="longer than zero"):
        parse_duration("0s")


@pytest.mark.parametrize("text", ["30s", "15m", "1h30m", "1d", "1d30s", "2h5m7s"])
def test_format_duration_round_trips(text: str) -> None:
    assert format_duration(parse_duration(text)) == text


def test_format_duration_of_90_seconds() -> None:
    assert format_duration(timedelta(seconds=90)) == "1m30s"


# --- submission names ------------------------------------------------------------------------------------------


def test_submission_name_is_job_at_utc_slot() -> None:
    assert submission_name("support-nightly", utc(2026, 11, 29, 3, 0)) == "support-nightly@2026-11-29T03:00:00Z"


def test_submission_name_converts_to_utc() -> None:
    slot = datetime(2026, 11, 28, 22, 0, tzinfo=NEW_YORK)  # 03:00 UTC the next day
    assert submission_name("job", slot) == "job@2026-11-29T03:00:00Z"


def test_submission_name_keeps_microseconds_when_present() -> None:
    slot = datetime(2026, 11, 29, 3, 0, 0, 250, tzinfo=UTC)
    assert submission_name("job", slot) == "job@2026-11-29T03:00:00.000250Z"


def test_a_fixed_time_repeated_by_a_fall_back_fires_once_at_its_first_occurrence() -> None:
    # 2026-11-01 in New York: 01:30 happens at 05:30 UTC (EDT) and again at 06:30 UTC (EST).
    zone = ZoneInfo("America/New_York")
    daily = Schedule.from_cron("30 1 * * *", zone)
    slots = daily.upcoming(datetime(2026, 11, 1, 4, 0, tzinfo=UTC), 2)
    assert slots == [datetime(2026, 11, 1, 5, 30, tzinfo=UTC), datetime(2026, 11, 2, 6, 30, tzinfo=UTC)]


def test_an_hourly_wildcard_job_keeps_firing_through_the_repeated_hour() -> None:
    zone = ZoneInfo("America/New_York")
    half_hourly = Schedule.from_cron("*/30 * * * *", zone)
    slots = half_hourly.upcoming(datetime(2026, 11, 1, 5, 0, tzinfo=UTC), 4)
    assert slots == [
        datetime(2026, 11, 1, 5, 30, tzinfo=UTC),
        datetime(2026, 11, 1, 6, 0, tzinfo=UTC),
        datetime(2026, 11, 1, 6, 30, tzinfo=UTC),
        datetime(2026, 11, 1, 7, 0, tzinfo=UTC),
    ]


def test_berlin_spring_forward_runs_a_skipped_local_time_once_an_hour_later() -> None:
    # 2026-03-29 in Berlin: 02:00 CET jumps to 03:00 CEST, so 02:30 does not exist that day.
    daily = Schedule.from_cron("30 2 * * *", ZoneInfo("Europe/Berlin"))
    slots = daily.upcoming(datetime(2026, 3, 28, 12, 0, tzinfo=UTC), 3)
    assert slots == [
        datetime(2026, 3, 29, 1, 30, tzinfo=UTC),  # 03:30 CEST, the same offset into the new time
        datetime(2026, 3, 30, 0, 30, tzinfo=UTC),  # 02:30 CEST again from the next day
        datetime(2026, 3, 31, 0, 30, tzinfo=UTC),
    ]


def test_berlin_fall_back_runs_a_repeated_local_time_once_at_its_first_occurrence() -> None:
    # 2026-10-25 in Berlin: 03:00 CEST falls back to 02:00 CET, so 02:30 happens at 00:30 and at 01:30 UTC.
    daily = Schedule.from_cron("30 2 * * *", ZoneInfo("Europe/Berlin"))
    slots = daily.upcoming(datetime(2026, 10, 24, 12, 0, tzinfo=UTC), 2)
    assert slots == [datetime(2026, 10, 25, 0, 30, tzinfo=UTC), datetime(2026, 10, 26, 1, 30, tzinfo=UTC)]


def test_jitter_is_the_same_for_a_slot_everywhere_and_spreads_slots_within_its_span() -> None:
    span = timedelta(seconds=30)
    slots = [datetime(2026, 11, 29, 3, minute, tzinfo=UTC) for minute in range(20)]
    offsets = [jitter_offset("nightly", slot, span) for slot in slots]
    assert offsets == [jitter_offset("nightly", slot, span) for slot in slots]  # replicas and restarts agree
    assert all(timedelta(0) <= offset < span for offset in offsets)
    assert len(set(offsets)) > 15  # spread, not one fixed delay
    assert jitter_offset("other", slots[0], span) != offsets[0]


# --- bounds and crons that never fire (issue 11) ---------------------------------------------------------------


@pytest.mark.parametrize("text", ["99999999999d", "999999999d", "3661d", "9" * 5000 + "s", "1" * 13 + "s"])
def test_a_duration_past_the_longest_is_a_value_error_not_an_overflow(text: str) -> None:
    with pytest.raises(ValueError, match=r"too long \(at most 3660d\)"):
        parse_duration(text)


def test_parse_duration_takes_bounds() -> None:
    assert parse_duration("366d", at_most=timedelta(days=366)) == timedelta(days=366)
    with pytest.raises(ValueError, match=r"invalid duration '367d': too long \(at most 366d\)"):
        parse_duration("367d", at_most=timedelta(days=366))
    with pytest.raises(ValueError, match=r"invalid duration '59s': too short \(at least 1m\)"):
        parse_duration("59s", at_least=timedelta(minutes=1))


@pytest.mark.parametrize(
    "text", ["\u0661d", "\U0001d7d9h", "1\u3000h"]
)  # Arabic-Indic and mathematical digits, a wide space
def test_durations_are_written_with_ascii_digits(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize("expression", ["0 0 30 2 *", "0 0 31 2 *", "0 0 31 4,6,9,11 *", "0 0 30-31 2 *"])
def test_a_cron_that_never_fires_is_a_value_error(expression: str) -> None:
    with pytest.raises(ValueError, match="never fires"):
        Schedule.from_cron(expression, NEW_YORK)


@pytest.mark.parametrize(
    ("expression", "first"),
    [
        ("0 0 29 2 *", utc(2028, 2, 29)),  # leap years only
        ("0 0 30 2 1", utc(2026, 2, 2)),  # day 30 or a Monday: the Mondays of February
        ("0 0 last 2 *", utc(2026, 2, 28)),
    ],
)
def test_a_rare_cron_is_not_mistaken_for_one_that_never_fires(expression: str, first: datetime) -> None:
    assert Schedule.from_cron(expression, UTC).next_after(utc(2026, 1, 1)) == first


def test_a_cron_longer_than_200_characters_is_refused() -> None:
    with pytest.raises(ValueError, match="longer than 200 characters"):
        Schedule.from_cron("0," * 100 + "0 3 * * *", UTC)


def test_a_weekday_written_in_full_is_described_without_failing() -> None:
    # cron_descriptor refuses "sunday", which the schedule accepts: the words fall back to the expression.
    schedule = Schedule.from_cron("0 3 * * sunday", UTC)
    assert schedule.next_after(SUNDAY) == utc(2026, 2, 8, 3)
    assert schedule.in_words() == "cron '0 3 * * sunday', in UTC"


@pytest.mark.parametrize(
    ("every", "after", "until", "limit"),
    [
        (timedelta(seconds=1), utc(2026, 1, 1), utc(2026, 1, 1, 0, 0, 10), 100),
        (timedelta(seconds=1), utc(2026, 1, 1), utc(2026, 1, 1, 0, 0, 10), 3),
        (timedelta(seconds=37), utc(2026, 1, 1, 0, 0, 5), utc(2026, 1, 1, 0, 30), 1000),
        (timedelta(minutes=15), utc(2026, 1, 1, 0, 15), utc(2026, 1, 1, 0, 15), 5),  # (after, until] is empty
        (timedelta(minutes=15), datetime(2026, 1, 1, 0, 14, 59, 500000, tzinfo=UTC), utc(2026, 1, 1, 1), 2),
    ],
)
def test_interval_slots_between_are_counted_exactly_as_they_would_be_listed(
    every: timedelta, after: datetime, until: datetime, limit: int
) -> None:
    schedule = Schedule.from_interval(every, UTC)
    listed = [slot for slot in schedule.upcoming(after, 10_000) if slot <= until]
    slots, dropped = schedule.slots_between(after, until, limit=limit)
    assert slots == listed[-limit:]
    assert dropped == (len(listed) > limit)


def test_a_day_of_one_second_slots_is_counted_at_once() -> None:
    schedule = Schedule.from_interval(timedelta(seconds=1), UTC)
    slots, dropped = schedule.slots_between(utc(2026, 1, 1), utc(2026, 12, 31), limit=1000)
    assert dropped and len(slots) == 1000 and slots[-1] == utc(2026, 12, 31)
