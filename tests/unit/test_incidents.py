"""Incidents and their alerts: thresholds, reminders, restarts, mute windows, delivery retries, the budget.

Outcomes are recorded through the real store (SQLite file) with the daemon's own routing, and every alert is
received by a real local HTTP endpoint through Apprise's json:// target. Time is an injected clock.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from scheduler.cekura import CekuraClient
from scheduler.clock import VirtualClock
from scheduler.config import load_config
from scheduler.daemon import Daemon
from scheduler.delivery import AppriseSender
from scheduler.simulator import Simulator
from scheduler.store import Fire, Store
from tests.conftest import HEADER, AlertInbox, claim_slot, clean_environment, prepare, submissions_by_name

START = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)


def job_toml(settings: str = "") -> str:
    return f'\n[jobs.nightly]\ncron = "0 3 * * *"\nagent = 12\nscenarios = [101]\n{settings}\n'


class Harness:
    """A daemon that is not running: the test records outcomes and delivers the outbox itself."""

    def __init__(self, tmp_path: Path, inbox: AlertInbox, sqlite_url: str, jobs: str, clock: VirtualClock) -> None:
        self.config, self.store = prepare(tmp_path, jobs, inbox=inbox, database_url=sqlite_url)
        self.clock, self.inbox, self.slot = clock, inbox, START

    def daemon(self) -> Daemon:
        """A fresh daemon on the same database, as after a restart."""
        http = httpx.AsyncClient()  # never used: nothing is submitted here
        cekura = CekuraClient(http=http, base_url="http://127.0.0.1:9", api_key=SecretStr("unused"))
        daemon = Daemon(
            config=self.config,
            store=self.store,
            cekura=cekura,
            alerts=AppriseSender(),
            clock=self.clock,
            alert_backoff=timedelta(seconds=10),
        )
        asyncio.run(http.aclose())
        return daemon

    def claim(self, job: str = "nightly") -> Fire:
        """Claim the job's current slot, as the daemon does before submitting it."""
        fire = claim_slot(self.store, job, self.slot)
        assert fire is not None
        return fire

    def outcome(self, daemon: Daemon, outcome: str, job: str = "nightly") -> None:
        """Record one finished fire of the job, as the daemon does, then deliver what is due."""
        fire = self.claim(job)
        self.slot += timedelta(days=1)
        self.clock.move_to(max(self.clock.now(), self.slot))
        daemon.runtime.record_outcome(
            fire.id,
            job,
            outcome=outcome,
            at=self.clock.now(),
            result_status="completed",
            error=None if outcome == "passed" else "1 of 1 runs failed",
        )
        self.deliver(daemon)

    def deliver(self, daemon: Daemon) -> None:
        asyncio.run(daemon.outbox.deliver_due())

    def events(self) -> list[str]:
        return [document["event"] for document in self.inbox.documents()]


def harness(tmp_path: Path, inbox: AlertInbox, sqlite_url: str, settings: str = "", extra: str = "") -> Harness:
    return Harness(tmp_path, inbox, sqlite_url, job_toml(settings) + extra, VirtualClock(START))


def test_an_incident_opens_at_the_failure_threshold_not_below(
    tmp_path: Path, alert_inbox: AlertInbox, sqlite_url: str
) -> None:
    h = harness(tmp_path, alert_inbox, sqlite_url, "failure_threshold = 3")
    daemon = h.daemon()
    h.outcome(daemon, "failed")
    h.outcome(daemon, "failed")
    assert h.events() == []  # below the threshold: no alert
    h.outcome(daemon, "failed")
    assert h.events() == ["opened"]
    opened = alert_inbox.documents()[0]
    assert opened["failing_since"] == "2026-11-29T03:00:00Z"  # the first failure of the streak
    h.outcome(daemon, "failed")
    assert h.events() == ["opened"]  # one alert per incident, not one per failure


def test_an_incident_resolves_after_the_success_threshold_and_says_so(
    tmp_path: Path, alert_inbox: AlertInbox, sqlite_url: str
) -> None:
    h = harness(tmp_path, alert_inbox, sqlite_url, "success_threshold = 2")
    daemon = h.daemon()
    h.outcome(daemon, "failed")
    h.outcome(daemon, "passed")
    assert h.events() == ["opened"]
    h.outcome(daemon, "passed")
    assert h.events() == ["opened", "resolved"]
    assert alert_inbox.documents()[1]["title"] == "[cekura-scheduler] RECOVERED nightly"


def test_send_resolved_false_closes_quietly(tmp_path: Path, alert_inbox: AlertInbox, sqlite_url: str) -> None:
    h = harness(tmp_path, alert_inbox, sqlite_url, "send_resolved = false")
    daemon = h.daemon()
    h.outcome(daemon, "failed")
    h.outcome(daemon, "passed")
    assert h.events() == ["opened"]
    assert h.store.open_incidents() == []


def test_reminders_come_every_remind_every_while_the_incident_stays_open(
    tmp_path: Path, alert_inbox: AlertInbox, sqlite_url: str
) -> None:
    h = harness(tmp_path, alert_inbox, sqlite_url, 'remind_every = "4h"')
    daemon = h.daemon()
    h.outcome(daemon, "failed")
    h.clock.advance(timedelta(hours=3, minutes=59))
    asyncio.run(daemon.incidents.remind())
    h.deliver(daemon)
    assert h.events() == ["opened"]
    h.clock.advance(timedelta(minutes=2))
    asyncio.run(daemon.incidents.remind())
    h.deliver(daemon)
    assert h.events() == ["opened", "reminder"]
    reminder = alert_inbox.documents()[1]
    assert reminder["title"].startswith("[cekura-scheduler] REMINDER nightly still failing (for 1 day, 4:01:00)")
    h.clock.advance(timedelta(hours=1))
    asyncio.run(daemon.incidents.remind())
    h.deliver(daemon)
    assert h.events() == ["opened", "reminder"]  # the next one is due 4 h after the last


def test_a_restart_neither_repeats_an_alert_nor_forgets_an_open_incident(
    tmp_path: Path, alert_inbox: AlertInbox, sqlite_url: str
) -> None:
    h = harness(tmp_path, alert_inbox, sqlite_url)
    h.outcome(h.daemon(), "failed")
    restarted = h.daemon()
    h.outcome(restarted, "failed")
    assert h.events() == ["opened"]
    h.outcome(h.daemon(), "passed")
    assert h.events() == ["opened", "resolved"]


MUTE = """
[maintenance.upgrade]
start = "2026-11-30T02:00:00Z"
end = "2026-11-30T05:00:00Z"
jobs = ["nightly"]
mode = "mute"
"""


def test_a_mute_window_holds_alerts_and_sends_an_incident_still_open_at_its_end(
    tmp_path: Path, alert_inbox: AlertInbox, sqlite_url: str
) -> None:
    h = harness(tmp_path, alert_inbox, sqlite_url, extra=MUTE)
    daemon = h.daemon()
    h.outcome(daemon, "failed")  # 2026-11-30T03:00Z: inside the window
    assert h.events() == []
    h.clock.move_to(datetime(2026, 11, 30, 4, 59, tzinfo=UTC))
    h.deliver(daemon)
    assert h.events() == []
    h.clock.move_to(datetime(2026, 11, 30, 5, 0, 1, tzinfo=UTC))
    h.deliver(daemon)
    assert h.events() == ["opened"]  # still open when the window ended: told then


def test_an_incident_that_resolves_inside_a_mute_window_is_never_announced(
    tmp_path: Path, alert_inbox: AlertInbox, sqlite_url: str
) -> None:
    h = harness(tmp_path, alert_inbox, sqlite_url, extra=MUTE.replace('"2026-11-30T05:00:00Z"', '"2026-12-02T00:00Z"'))
    daemon = h.daemon()
    h.outcome(daemon, "failed")
    h.outcome(daemon, "passed")
    h.clock.move_to(datetime(2026, 12, 3, tzinfo=UTC))
    h.deliver(daemon)
    assert h.events() == []


def test_a_failing_delivery_is_retried_with_backoff_then_marked_sent(
    tmp_path: Path, alert_inbox: AlertInbox, sqlite_url: str
) -> None:
    h = harness(tmp_path, alert_inbox, sqlite_url)
    daemon = h.daemon()
    alert_inbox.fail_next = 2  # the webhook answers 500 twice
    h.outcome(daemon, "failed")
    [item] = h.store.outbox()
    assert (item.state, item.attempts) == ("pending", 1) and item.last_error
    h.deliver(daemon)
    assert h.events() == []  # not due yet: backing off
    for _ in range(2):
        h.clock.advance(timedelta(minutes=1))
        h.deliver(daemon)
    assert h.events() == ["opened"]
    [item] = h.store.outbox()
    assert (item.state, item.attempts) == ("sent", 3)


def test_a_channel_that_keeps_failing_does_not_hold_up_the_others(
    tmp_path: Path, alert_inbox: AlertInbox, sqlite_url: str
) -> None:
    jobs = job_toml('alerts = ["team", "broken"]') + '\n[alerts.broken]\nurl = "json://127.0.0.1:9/nothing"\n'
    h = Harness(tmp_path, alert_inbox, sqlite_url, jobs, VirtualClock(START))
    daemon = h.daemon()
    h.outcome(daemon, "failed")
    assert h.events() == ["opened"]  # the team channel got it at once
    states = {item.channel: (item.state, item.attempts) for item in h.store.outbox()}
    assert states == {"team": ("sent", 1), "broken": ("pending", 1)}


def test_a_silence_holds_a_jobs_alerts_for_its_duration(
    tmp_path: Path, alert_inbox: AlertInbox, sqlite_url: str
) -> None:
    h = harness(tmp_path, alert_inbox, sqlite_url)
    h.store.add_hold(
        job="nightly",
        kind="silence",
        at=START,
        until=datetime(2026, 11, 30, 6, 0, tzinfo=UTC),
        created_by="ana",
        reason="agent redeploy",
    )
    daemon = h.daemon()
    h.outcome(daemon, "failed")
    assert h.events() == []
    h.clock.move_to(datetime(2026, 11, 30, 6, 0, 1, tzinfo=UTC))
    h.deliver(daemon)
    assert h.events() == ["opened"]


@pytest.mark.parametrize("until", [None, datetime(2026, 11, 30, 6, 0, tzinfo=UTC)], ids=["open-ended", "timed"])
def test_a_silence_ended_early_lets_its_held_alert_out_at_once(
    tmp_path: Path, alert_inbox: AlertInbox, sqlite_url: str, until: datetime | None
) -> None:
    h = harness(tmp_path, alert_inbox, sqlite_url)
    h.store.add_hold(job="nightly", kind="silence", at=START, until=until, created_by="ana", reason="redeploy")
    daemon = h.daemon()
    h.outcome(daemon, "failed")
    assert h.events() == []  # held
    h.clock.advance(timedelta(minutes=5))
    assert h.store.end_holds(job="nightly", kind="silence", at=h.clock.now()) == 1  # `silence nightly --end`
    h.deliver(daemon)
    assert h.events() == ["opened"]  # now, not at the silence's planned end (never, for an open-ended one)


def test_a_daemon_problem_is_one_incident_that_resolves(
    tmp_path: Path, alert_inbox: AlertInbox, sqlite_url: str
) -> None:
    h = harness(tmp_path, alert_inbox, sqlite_url)
    daemon = h.daemon()
    for _ in range(3):
        asyncio.run(daemon.incidents.problem("Cekura rejects the API key", "401 Invalid API key."))
    h.deliver(daemon)
    assert [d["title"] for d in alert_inbox.documents()] == ["[cekura-scheduler] Cekura rejects the API key"]
    restarted = h.daemon()  # a restart remembers the open problem
    asyncio.run(restarted.incidents.load_open_problems())
    asyncio.run(restarted.incidents.problem("Cekura rejects the API key", "401 Invalid API key."))
    asyncio.run(restarted.incidents.solved("Cekura rejects the API key"))
    h.deliver(restarted)
    assert [d["title"] for d in alert_inbox.documents()] == [
        "[cekura-scheduler] Cekura rejects the API key",
        "[cekura-scheduler] RESOLVED: Cekura rejects the API key",
    ]


def test_the_dashboard_link_is_given_when_project_id_is_set(
    tmp_path: Path, alert_inbox: AlertInbox, sqlite_url: str
) -> None:
    h = harness(tmp_path, alert_inbox, sqlite_url, "project_id = 77")
    daemon = h.daemon()
    fire = h.claim()
    h.store.record_submitted(fire.id, result_id=9123, status="pending", runs=[], at=START, poll_deadline=START)
    daemon.runtime.record_outcome(fire.id, "nightly", outcome="failed", at=START, result_status="failed")
    h.deliver(daemon)
    assert alert_inbox.documents()[0]["dashboard_url"] == "https://dashboard.cekura.ai/77/results/9123"


def test_the_budget_skips_fires_beyond_max_runs_per_day_and_says_so_once(
    run: Callable[..., Store], simulator: Simulator, alert_inbox: AlertInbox
) -> None:
    jobs = '\n[jobs.greedy]\nevery = "1s"\nagent = 12\nscenarios = [101, 102]\nmax_runs_per_day = 4\n'
    store = run(jobs=jobs, until=lambda s: sum(f.skip_reason == "budget" for f in s.recent_fires(job="greedy")) >= 3)

    submitted = [f for f in store.recent_fires(job="greedy", limit=100) if f.result_id is not None]
    assert len(submitted) == 2  # 2 fires x 2 scenarios = the 4 runs allowed today
    assert len({name for name in (e.name for e in simulator.submissions)}) == 2
    budget = [d for d in alert_inbox.documents() if d["event"] == "budget"]
    assert len(budget) == 1 and budget[0]["title"] == "[cekura-scheduler] SKIPPED greedy: budget"
    assert "max_runs_per_day of job greedy is 4" in budget[0]["detail"]


def test_the_daemon_wide_budget_holds_when_many_jobs_fall_due_in_the_same_second(
    run: Callable[..., Store], simulator: Simulator
) -> None:
    # Six jobs due at the same instants are claimed together: the third claim must already see the first two.
    jobs = "".join(f'\n[jobs.j{n}]\nevery = "2s"\nagent = 12\nscenarios = [101]\n' for n in range(6))
    header = HEADER.replace("[daemon]\n", "[daemon]\nmax_runs_per_day = 2\n", 1)

    def skipped(store: Store) -> int:
        return sum(f.skip_reason == "budget" for f in store.recent_fires(limit=100))

    store = run(jobs=jobs, header=header, until=lambda s: skipped(s) >= 6)
    assert len(submissions_by_name(simulator)) == 2  # the 2 runs allowed today, not more
    assert sum(f.result_id is not None for f in store.recent_fires(limit=100)) == 2


def test_a_pause_window_skips_slots_as_maintenance(run: Callable[..., Store], simulator: Simulator) -> None:
    now = datetime.now(UTC)
    window = (
        f'\n[maintenance.freeze]\nstart = "{(now - timedelta(hours=1)).isoformat()}"\n'
        f'end = "{(now + timedelta(hours=1)).isoformat()}"\nmode = "pause"\n'
    )
    jobs = '\n[jobs.frozen]\nevery = "1s"\nagent = 12\nscenarios = [101]\n' + window
    store = run(jobs=jobs, until=lambda s: len(s.recent_fires(job="frozen")) >= 2)
    assert {f.skip_reason for f in store.recent_fires(job="frozen")} == {"maintenance"}
    assert simulator.submissions == []


def cli(tmp_path: Path, *args: str, inbox: AlertInbox) -> subprocess.CompletedProcess[str]:
    (tmp_path / "jobs.toml").write_text(HEADER + job_toml() + '\n[alerts.dead]\nurl = "json://127.0.0.1:9/x"\n')
    env = clean_environment(
        SCHEDULER_CONFIG=str(tmp_path / "jobs.toml"),
        SCHEDULER_DATABASE_URL=f"sqlite:///{tmp_path / 's.db'}",
        INBOX=inbox.url,
    )
    return subprocess.run(
        [sys.executable, "-m", "scheduler", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_alerts_test_reports_what_the_channel_answered(tmp_path: Path, alert_inbox: AlertInbox) -> None:
    good = cli(tmp_path, "alerts", "test", "team", inbox=alert_inbox)
    assert good.returncode == 0 and "team: delivered" in good.stdout
    assert alert_inbox.titles() == ["[cekura-scheduler] test message"]
    bad = cli(tmp_path, "alerts", "test", "dead", inbox=alert_inbox)
    assert bad.returncode == 1 and "dead: NOT delivered:" in bad.stderr


def test_silence_command_records_who_and_why(tmp_path: Path, alert_inbox: AlertInbox) -> None:
    result = cli(
        tmp_path, "silence", "nightly", "--for", "2h", "--reason", "agent redeploy", "--by", "ana", inbox=alert_inbox
    )
    assert result.returncode == 0, result.stderr
    assert "nightly: alerts held until" in result.stdout and "(by ana: agent redeploy)" in result.stdout
    config = load_config(tmp_path / "jobs.toml", env={"INBOX": alert_inbox.url})
    assert "nightly" in config.jobs
    from scheduler.store import create_db_engine

    engine = create_db_engine(f"sqlite:///{tmp_path / 's.db'}")
    [hold] = Store(engine=engine).active_holds(at=datetime.now(UTC))
    engine.dispose()
    assert (hold.kind, hold.created_by, hold.reason) == ("silence", "ana", "agent redeploy")
    assert hold.until is not None and timedelta(hours=1, minutes=59) < hold.until - datetime.now(UTC) <= timedelta(
        hours=2
    )
