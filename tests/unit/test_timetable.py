"""The timetable and the catch-up plan: pure rules, checked at exact instants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from scheduler.config import Config, diff_configs, parse_config
from scheduler.daemon.timetable import (
    SKIP_CATCH_UP,
    SKIP_SUPERSEDED,
    SKIP_TOO_OLD,
    Timetable,
    catch_up_plan,
    catch_up_start,
)
from scheduler.schedules import jitter_offset

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def config(jobs: str) -> Config:
    return parse_config(jobs, path=Path("jobs.toml"), env={})


JOBS = """
[jobs.nightly]
cron = "0 3 * * *"
agent = 1
scenarios = [1]

[jobs.often]
every = "10m"
agent = 1
scenarios = [1]
"""


def test_due_slots_come_out_in_order_once_and_the_next_one_is_planned_from_the_slot() -> None:
    jobs = config(JOBS).jobs
    table = Timetable()
    table.plan(jobs["often"], after=T0)
    table.plan(jobs["nightly"], after=T0)

    assert table.pop_due(T0) is None
    assert table.seconds_until_next(T0) == 600.0
    due = table.pop_due(T0 + timedelta(minutes=10))
    assert due is not None and due.job == "often" and due.slot == T0 + timedelta(minutes=10)
    assert table.pop_due(T0 + timedelta(minutes=10)) is None  # taken once
    table.plan(jobs["often"], after=due.slot)
    assert table.next_fire("often") == T0 + timedelta(minutes=20)
    assert table.next_fire("nightly") == datetime(2026, 3, 3, 3, 0, tzinfo=UTC)
    assert [d.job for d in table.upcoming(5)] == ["often", "nightly"]


def test_a_slot_put_back_is_due_again() -> None:
    table = Timetable()
    table.plan(config(JOBS).jobs["often"], after=T0)
    due = table.pop_due(T0 + timedelta(hours=1))
    assert due is not None
    table.put_back(due)
    assert table.pop_due(T0 + timedelta(hours=1)) == due


def test_jitter_moves_the_fire_not_the_slot() -> None:
    job = config(JOBS.replace('every = "10m"', 'every = "10m"\njitter = "2m"')).jobs["often"]
    table = Timetable()
    assert job.jitter is not None
    due = table.plan(job, after=T0)
    assert due.slot == T0 + timedelta(minutes=10)
    assert due.fire_at == due.slot + jitter_offset("often", due.slot, job.jitter)
    assert table.pop_due(due.fire_at - timedelta(microseconds=1)) is None
    assert table.pop_due(due.fire_at) == due


def test_replanning_after_a_reload_drops_removed_jobs_and_restarts_changed_schedules() -> None:
    old = config(JOBS)
    table = Timetable()
    for job in old.jobs.values():
        table.plan(job, after=T0)
    new = config(JOBS.replace("[jobs.nightly]", "[jobs.renamed]").replace('"10m"', '"15m"'))
    now = T0 + timedelta(minutes=3)

    table.replan(old, new, diff_configs(old, new), now)

    assert table.next_fire("nightly") is None
    assert table.next_fire("renamed") == datetime(2026, 3, 3, 3, 0, tzinfo=UTC)
    assert table.next_fire("often") == now.replace(minute=15)  # the new interval, from the reload on
    assert table.pop_due(T0 + timedelta(minutes=10)) is None  # the old plan of "often" is gone
    later = datetime(2026, 3, 3, 3, 0, tzinfo=UTC)
    popped = [table.pop_due(later), table.pop_due(later), table.pop_due(later)]
    assert [(d.job, d.slot) for d in popped if d] == [("often", now.replace(minute=15)), ("renamed", later)]


def test_a_job_disabled_by_a_reload_leaves_the_timetable() -> None:
    old = config(JOBS)
    table = Timetable()
    table.plan(old.jobs["often"], after=T0)
    new = config(JOBS.replace('every = "10m"', 'every = "10m"\nenabled = false'))
    table.replan(old, new, diff_configs(old, new), T0)
    assert table.next_fire("often") is None
    assert table.seconds_until_next(T0) is None


HOURLY = (
    '[jobs.hourly]\ncron = "0 * * * *"\nagent = 1\nscenarios = [1]\ncatch_up_window = "3h"\ncatch_up = "{policy}"\n'
)
MISSED = [datetime(2026, 3, 2, hour, 0, tzinfo=UTC) for hour in range(4, 10)]  # 04:00 .. 09:00
NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def test_catch_up_all_submits_every_slot_within_the_window_and_skips_older_ones() -> None:
    plan = catch_up_plan(config(HOURLY.format(policy="all")).jobs["hourly"], MISSED, NOW)
    assert plan.submit == MISSED[3:]  # 07:00, 08:00, 09:00: within 3 h of 09:30
    assert plan.skip == [(slot, SKIP_TOO_OLD) for slot in MISSED[:3]]


def test_catch_up_latest_submits_only_the_newest() -> None:
    plan = catch_up_plan(config(HOURLY.format(policy="latest")).jobs["hourly"], reversed(MISSED), NOW)
    assert plan.submit == [MISSED[-1]]
    assert plan.skip == [(s, SKIP_TOO_OLD) for s in MISSED[:3]] + [(s, SKIP_SUPERSEDED) for s in MISSED[3:5]]


def test_catch_up_skip_submits_nothing_and_says_why_for_each_slot() -> None:
    plan = catch_up_plan(config(HOURLY.format(policy="skip")).jobs["hourly"], MISSED, NOW)
    assert plan.submit == []
    assert plan.skip == [(s, SKIP_TOO_OLD) for s in MISSED[:3]] + [(s, SKIP_CATCH_UP) for s in MISSED[3:]]


def test_the_search_for_missed_slots_looks_back_a_day_at_least_and_never_before_the_first_row() -> None:
    job = config(HOURLY.format(policy="all")).jobs["hourly"]
    first, last = datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 2, 4, 0, tzinfo=UTC)
    assert catch_up_start(job, first, last, NOW) == datetime(2026, 3, 1, 9, 30, tzinfo=UTC)  # a day back, not 3 h
    assert catch_up_start(job, first, NOW - timedelta(hours=1), NOW) == datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    recent = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    assert catch_up_start(job, recent, recent, NOW) == recent  # a job younger than a day
