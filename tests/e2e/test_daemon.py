"""The real daemon against the simulator over HTTP on 127.0.0.1, with a real SQLite file and real alerts.

Alerts go through Apprise's json:// target to a local HTTP endpoint. Jobs fire every second; the daemon's
retry and poll pauses are shortened by an injected sleep, so nothing here waits for the wall clock longer
than a few slots.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from scheduler.cekura import CekuraClient
from scheduler.daemon import Daemon
from scheduler.delivery import AppriseSender
from scheduler.schedules import jitter_offset
from scheduler.simulator import Simulator
from scheduler.store import Fire, Store
from tests.conftest import (
    API_KEY,
    HEADER,
    JOB,
    AlertInbox,
    QuickClock,
    cekura_http,
    eventually,
    finished,
    make_daemon,
    prepare,
    run_daemon,
    submissions_by_name,
)


def test_a_job_fires_is_recorded_and_followed_to_its_outcome(
    run: Callable[..., Store], simulator: Simulator, alert_inbox: AlertInbox
) -> None:
    store = run(
        until=lambda s: len(finished(s, "smoke")) >= 2,
    )

    fire = finished(store, "smoke")[0]
    assert fire.outcome == "passed" and fire.result_status == "completed"
    assert fire.submission_name == f"smoke@{fire.slot:%Y-%m-%dT%H:%M:%S}Z"
    assert fire.slot.microsecond == 0 and fire.fired_at >= fire.slot
    recorded = store.get_fire(fire.id)
    assert recorded is not None and [run.success for run in recorded.runs] == [True, True]
    sent = next(entry for entry in simulator.submissions if entry.name == fire.submission_name)
    assert sent.endpoint == "run_scenarios_livekit_v2"
    assert sent.body["agent"] == 12
    assert sent.body["scenarios"] == [{"scenario": 101}, {"scenario": 102, "publish_data_message": {"lang": "en"}}]
    assert all(count == 1 for count in submissions_by_name(simulator).values())
    assert alert_inbox.received == []  # passing runs alert no one


def test_a_failing_job_alerts_and_then_recovers(
    run: Callable[..., Store], simulator: Simulator, alert_inbox: AlertInbox
) -> None:
    simulator.config.behaviours = {102: ["fail", "pass"]}
    run(
        until=lambda s: any("RECOVERED" in t for t in alert_inbox.titles()),
    )

    failed = next(doc for doc in alert_inbox.documents() if doc["event"] == "opened")
    assert failed["title"] == "[cekura-scheduler] FAILED smoke: 1 of 2 runs failed"
    assert failed["job"] == "smoke" and failed["slot"].endswith("Z") and failed["result_id"] >= 9001
    [failed_run] = failed["failed_runs"]  # which scenario failed, and why
    assert failed_run["scenario_name"] == "Scenario 102"
    assert failed_run["failed_metrics"] == [
        {"name": "Refund policy followed", "explanation": "Agent did not confirm the refund amount."}
    ]
    assert failed["failure_analysis"] == ["Agent did not confirm the refund amount."]
    recovered = next(doc for doc in alert_inbox.documents() if doc["event"] == "resolved")
    assert recovered["title"] == "[cekura-scheduler] RECOVERED smoke"
    assert alert_inbox.titles().index(failed["title"]) < alert_inbox.titles().index(recovered["title"])


@pytest.mark.parametrize(
    ("behaviour", "problem"),
    [
        ("timeout", "ended timeout"),
        ("cancelled", "ended cancelled"),
        ("unjudged", "has no verdict"),
        ("null", "has no verdict"),
    ],
)
def test_a_run_that_ended_without_passing_fails_the_fire_and_the_alert_says_the_same(
    run: Callable[..., Store], simulator: Simulator, alert_inbox: AlertInbox, behaviour: str, problem: str
) -> None:
    # Each of these runs has no `success: true` (most have no `success` at all) inside a `completed` result.
    simulator.config.behaviours = {102: [behaviour]}
    simulator.config.failed_reasons = "string"
    store = run(until=lambda s: bool(finished(s, "smoke")) and bool(alert_inbox.received))

    fire = finished(store, "smoke")[0]
    recorded = store.get_fire(fire.id)
    assert recorded is not None
    [bad] = [record for record in recorded.runs if record.scenario == 102]
    assert (fire.outcome, fire.result_status) == ("failed", "completed")
    assert fire.error == f"1 of 2 runs failed: run {bad.run_id} {problem}"
    document = next(doc for doc in alert_inbox.documents() if doc["event"] == "opened")
    assert document["title"] == "[cekura-scheduler] FAILED smoke: 1 of 2 runs failed"
    assert [item["run_id"] for item in document["failed_runs"]] == [bad.run_id]
    assert document["failed_runs"][0]["problem"] == f"run {bad.run_id} {problem}"


def test_a_rejected_submission_is_recorded_and_alerted_once(
    run: Callable[..., Store], simulator: Simulator, alert_inbox: AlertInbox
) -> None:
    simulator.config.unknown_scenarios = {102}

    def alerts() -> list[dict[str, Any]]:
        return [doc for doc in alert_inbox.documents() if doc["title"].startswith("[cekura-scheduler] FAILED smoke")]

    # The alert goes out through the outbox, a moment after the outcome is recorded: wait for both.
    store = run(until=lambda s: len(finished(s, "smoke")) >= 1 and bool(alerts()))

    fire = finished(store, "smoke")[0]
    assert fire.outcome == "failed" and fire.result_id is None and fire.error_status_code == 400
    assert fire.error is not None and "Invalid scenario IDs or scenarios not found" in fire.error
    rejected = [entry for entry in simulator.submissions if entry.name == fire.submission_name]
    assert len(rejected) == 1  # a 400 is never retried
    alert = alerts()[0]
    assert "submission failed" in alert["title"] and "Invalid scenario IDs" in alert["error"]


def test_a_refused_api_key_skips_slots_without_posting_alerts_once_and_recovers_by_itself(
    tmp_path: Path, simulator: Simulator, alert_inbox: AlertInbox, sqlite_url: str
) -> None:
    jobs = JOB.format(extra="") + '\n[jobs.other]\nevery = "1s"\nagent = 12\nscenarios = [7]\n'
    config, store = prepare(tmp_path, jobs, inbox=alert_inbox, database_url=sqlite_url)
    simulator.config.api_key = "the-new-key"  # the daemon still has the old one

    def skipped() -> list[Fire]:
        return [f for f in store.recent_fires(limit=200) if f.skip_reason == "api-key-rejected"]

    async def scenario() -> None:
        async with cekura_http() as http:
            daemon = Daemon(
                config=config,
                store=store,
                cekura=CekuraClient(http=http, base_url=simulator.base_url, api_key=SecretStr("the-new-key")),
                alerts=AppriseSender(),
                clock=QuickClock(),
                alert_backoff=timedelta(milliseconds=100),
                key_check_every=0.3,
            )
            stop = asyncio.Event()
            simulator.config.api_key = "rotated-again"  # refused from the start
            task = asyncio.create_task(daemon.run(stop))
            await eventually(lambda: len({f.job for f in skipped()}) == 2)
            assert simulator.submissions == []  # nothing was POSTed while the key was refused
            simulator.config.api_key = "the-new-key"  # the key is accepted again: firing resumes by itself
            await eventually(lambda: len(finished(store, "smoke")) >= 1)
            await eventually(lambda: any("RESOLVED" in t for t in alert_inbox.titles()))
            stop.set()
            await task

    asyncio.run(scenario())
    key_alerts = [t for t in alert_inbox.titles() if "API key" in t]
    assert key_alerts == [
        "[cekura-scheduler] Cekura rejects the API key",
        "[cekura-scheduler] RESOLVED: Cekura rejects the API key",
    ]
    assert not any("FAILED" in t for t in alert_inbox.titles())  # no job is blamed for the key
    assert all(f.error == "Cekura rejected the API key; nothing was sent" for f in skipped())
    assert "the-new-key" not in str(alert_inbox.received)


def test_cekura_out_of_reach_is_one_daemon_incident_resolved_at_the_first_answer(
    tmp_path: Path, simulator: Simulator, alert_inbox: AlertInbox, sqlite_url: str
) -> None:
    from tests.e2e.test_exactly_once import TcpProxy

    proxy = TcpProxy(("127.0.0.1", int(simulator.base_url.rpartition(":")[2])))
    config, store = prepare(
        tmp_path, JOB.format(extra="").replace('"1s"', '"1h"'), inbox=alert_inbox, database_url=sqlite_url
    )

    async def scenario() -> None:
        async with cekura_http() as http:
            daemon = Daemon(
                config=config,
                store=store,
                cekura=CekuraClient(http=http, base_url=f"http://127.0.0.1:{proxy.port}", api_key=SecretStr(API_KEY)),
                alerts=AppriseSender(),
                clock=QuickClock(),
                alert_backoff=timedelta(milliseconds=100),
                key_check_every=0.1,
            )
            stop = asyncio.Event()
            task = asyncio.create_task(daemon.run(stop))
            await eventually(lambda: bool(daemon.loop_health()))
            proxy.cut()  # Cekura goes out of reach: every check fails to connect
            await eventually(lambda: "[cekura-scheduler] cannot reach Cekura" in alert_inbox.titles())
            proxy.restore()
            await eventually(lambda: "[cekura-scheduler] RESOLVED: cannot reach Cekura" in alert_inbox.titles())
            stop.set()
            await task

    try:
        asyncio.run(scenario())
    finally:
        proxy.close()
    reach = [title for title in alert_inbox.titles() if "reach Cekura" in title]
    assert reach == ["[cekura-scheduler] cannot reach Cekura", "[cekura-scheduler] RESOLVED: cannot reach Cekura"]


def test_rate_limited_submissions_are_retried_and_sent_once(run: Callable[..., Store], simulator: Simulator) -> None:
    simulator.config.error_429_rate = 0.4

    def retried(_: Store) -> bool:
        limited = {entry.name for entry in simulator.submissions if entry.status_code == 429}
        return any(entry.name in limited and entry.result_id for entry in simulator.submissions)

    run(until=retried)
    assert all(count == 1 for count in submissions_by_name(simulator).values())


def test_a_lost_answer_is_found_by_name_and_never_sent_twice(run: Callable[..., Store], simulator: Simulator) -> None:
    simulator.config.drop_rate = 0.5
    simulator.config.error_500_rate = 0.2
    store = run(
        until=lambda s: len(finished(s, "smoke")) >= 4,
    )

    dropped = [entry for entry in simulator.submissions if entry.status_code is None and entry.result_id]
    assert dropped, "the simulator dropped no connection; the test proves nothing"
    fires = finished(store, "smoke")
    adopted = [fire for fire in fires if fire.submission_name in {entry.name for entry in dropped}]
    assert adopted and all(fire.result_id is not None and fire.outcome == "passed" for fire in adopted)
    assert all(count == 1 for count in submissions_by_name(simulator).values())


def test_a_result_that_never_ends_times_out_and_its_calls_are_ended(
    simulator: Simulator, alert_inbox: AlertInbox, tmp_path: Path, sqlite_url: str
) -> None:
    simulator.config.behaviours = {102: ["hang"]}
    jobs = JOB.format(extra='result_timeout = "2s"').replace('every = "1s"', 'every = "1h"')
    config, store = prepare(tmp_path, jobs, inbox=alert_inbox, database_url=sqlite_url)

    async def main() -> Fire:
        # An hourly job does not fire during a test: fire it by hand, as `cekura-scheduler trigger --wait` does.
        async with cekura_http() as http:
            return await make_daemon(config, store, http, simulator).trigger("smoke", wait=True)

    fire = asyncio.run(main())
    assert fire.outcome == "failed" and fire.result_status == "timeout"
    assert fire.error is not None and "result_timeout (2s)" in fire.error
    assert fire.trigger == "manual"
    assert any("FAILED smoke" in t for t in alert_inbox.titles())
    # end_calls was called: the simulator shows the result cancelled.
    detail = httpx.get(
        f"{simulator.base_url}/test_framework/v1/results/{fire.result_id}/", headers={"X-CEKURA-API-KEY": API_KEY}
    ).json()
    assert detail["status"] == "cancelled"


def test_results_in_flight_are_followed_after_a_restart(run: Callable[..., Store], simulator: Simulator) -> None:
    simulator.config.run_duration = 4.0
    # Leases of 2 s: a fire the first daemon did not hand back is taken over within seconds, not 30.
    header = HEADER.replace("[daemon]\n", '[daemon]\nlease = "2s"\n')
    first = run(until=lambda s: bool(s.in_flight()), header=header)
    left = first.in_flight()[0]  # the first daemon stopped while this result was still running

    second = run(
        until=lambda s: (f := s.get_fire(left.id)) is not None and f.state == "finished", timeout=30, header=header
    )
    fire = second.get_fire(left.id)
    assert fire is not None and fire.outcome == "passed" and fire.result_id == left.result_id
    assert submissions_by_name(simulator)[left.submission_name] == 1


def test_the_same_daemon_runs_on_postgresql(
    tmp_path: Path, simulator: Simulator, alert_inbox: AlertInbox, database_url: str
) -> None:
    simulator.config.behaviours = {101: ["fail"]}
    store = run_daemon(
        tmp_path,
        JOB.format(extra=""),
        simulator=simulator,
        inbox=alert_inbox,
        database_url=database_url,
        until=lambda s: len(finished(s, "smoke")) >= 2,
    )
    fires = finished(store, "smoke")
    assert all(fire.outcome == "failed" for fire in fires)
    recorded = store.get_fire(fires[0].id)
    assert recorded is not None and [run.success for run in recorded.runs] == [False, True]
    assert any("FAILED smoke" in title for title in alert_inbox.titles())


def test_many_jobs_due_at_once_are_each_submitted_once(run: Callable[..., Store], simulator: Simulator) -> None:
    simulator.config.latency = 0.3  # with 10 submissions at a time, 25 jobs need three rounds
    names = [f"job{number:02d}" for number in range(25)]
    jobs = "".join(f'\n[jobs.{name}]\nevery = "2s"\nagent = 1\nscenarios = [5]\n' for name in names)
    store = run(jobs=jobs, until=lambda s: all(finished(s, name) for name in names), timeout=30)

    first_slots = {finished(store, name)[0].slot for name in names}
    assert len(first_slots) <= 2  # they fired together, not one after the other
    assert all(count == 1 for count in submissions_by_name(simulator).values())


def test_jitter_delays_each_fire_by_its_own_offset_but_keeps_the_slot(run: Callable[..., Store]) -> None:
    jobs = '\n[jobs.spread]\nevery = "2s"\njitter = "1s"\nagent = 12\nscenarios = [101]\n'
    store = run(jobs=jobs, until=lambda s: len(finished(s, "spread")) >= 3)
    for fire in finished(store, "spread"):
        assert fire.slot.second % 2 == 0 and fire.slot.microsecond == 0  # the slot is the schedule's
        assert fire.fired_at >= fire.slot + jitter_offset("spread", fire.slot, timedelta(seconds=1))
