"""The store's contract, written once and run on a real SQLite file and on PostgreSQL (``store`` is parametrized).

One section per group of queries (fires, leases, holds, history, incidents and the outbox), covering every public
method of ``Store``; each test states what a user of the scheduler would notice if it broke.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scheduler.errors import StoreError
from scheduler.store import Fire, IncidentAction, JobHistory, Notice, RunRecord, Store, create_db_engine
from tests.conftest import POSTGRES_URL, claim_slot

SLOT = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)
NOW = SLOT + timedelta(seconds=1)
EARLIER = NOW - timedelta(milliseconds=250)
LATER = NOW + timedelta(hours=1)


def claim(
    store: Store,
    job: str = "nightly",
    slot: datetime = SLOT,
    *,
    owner: str | None = None,
    lease_until: datetime | None = None,
    runs_requested: int = 2,
) -> Fire | None:
    return claim_slot(
        store, job, slot, fired_at=NOW, runs_requested=runs_requested, owner=owner, lease_until=lease_until
    )


def claimed(store: Store, job: str = "nightly", slot: datetime = SLOT, **options: Any) -> Fire:
    """A claim the test knows is free."""
    fire = claim(store, job, slot, **options)
    assert fire is not None
    return fire


def skip(store: Store, job: str = "nightly", slot: datetime = SLOT, reason: str = "overlap") -> Fire | None:
    return store.record_skipped(
        job=job,
        slot=slot,
        trigger="schedule",
        fired_at=NOW,
        submission_name=f"{job}@{slot:%H%M}",
        endpoint="run_scenarios",
        runs_requested=1,
        reason=reason,
    )


def submit(store: Store, fire: Fire, result_id: int = 9001, runs: list[RunRecord] | None = None) -> bool:
    return store.record_submitted(
        fire.id, result_id=result_id, status="pending", runs=runs or [], at=NOW, poll_deadline=LATER
    )


def notice(kind: str = "opened", job: str = "nightly", at: datetime = NOW) -> Notice:
    return Notice(kind=kind, payload={"job": job, "title": f"{job} {kind}"}, deliver_at=at)


# -- fires: claims, answers, outcomes, skips ------------------------------------------------------------------


def test_a_slot_is_claimed_once(store: Store) -> None:
    first = claim(store)
    assert first is not None and first.state == "claimed"
    assert claim(store) is None  # a second claim of the same (job, slot) loses, whoever makes it
    assert claim(store, job="other") is not None
    assert claim(store, slot=SLOT + timedelta(minutes=1)) is not None


def test_claiming_many_slots_at_once_takes_only_the_free_ones(store: Store) -> None:
    taken = claimed(store)

    def slot(minute: int) -> dict[str, object]:
        at = SLOT + timedelta(minutes=minute)
        return {
            "job": "nightly",
            "slot": at,
            "trigger": "schedule",
            "fired_at": NOW,
            "submission_name": f"nightly@{minute}",
            "endpoint": "run_scenarios",
            "runs_requested": 1,
        }

    fires = store.claim_many([slot(0), slot(1), slot(2)])
    assert fires[0] is None  # a replica's claim of the taken slot yields nothing
    assert [fire.slot.minute for fire in fires[1:] if fire is not None] == [1, 2]
    assert {fire.id for fire in store.in_flight_by_job(["nightly"])["nightly"]} == {
        taken.id,
        *(fire.id for fire in fires if fire is not None),
    }
    assert store.claim_many([]) == []


def test_scheduled_time_is_kept_apart_from_the_fire_time_as_utc(store: Store) -> None:
    fire = claimed(store)
    again = store.get_fire(fire.id)
    assert again is not None
    assert again.slot == SLOT and again.slot.tzinfo is not None
    assert again.fired_at == NOW


def test_submission_then_outcome_with_runs(store: Store) -> None:
    fire = claimed(store)
    started = [RunRecord(run_id=1, scenario=101, status="pending"), RunRecord(run_id=2, scenario=102, status="pending")]
    assert submit(store, fire, runs=started)
    assert [f.id for f in store.in_flight()] == [fire.id]
    done = [
        RunRecord(run_id=1, scenario=101, status="completed", success=True, duration="01:10"),
        RunRecord(
            run_id=2,
            scenario=102,
            status="completed",
            success=False,
            failed_metrics=[{"name": "Greeting", "explanation": "no greeting"}],
        ),
    ]
    assert store.finish(
        fire.id,
        outcome="failed",
        at=NOW,
        result_status="completed",
        success_rate=50.0,
        runs=done,
        failed_reasons={"issues": [{"description": "no greeting"}]},
    )
    recorded = store.get_fire(fire.id)
    assert recorded is not None
    assert (recorded.state, recorded.outcome, recorded.result_id, recorded.result_status) == (
        "finished",
        "failed",
        9001,
        "completed",
    )
    assert [(r.run_id, r.success) for r in recorded.runs] == [(1, True), (2, False)]
    assert recorded.runs[1].failed_metrics == [{"name": "Greeting", "explanation": "no greeting"}]
    assert recorded.failed_reasons == {"issues": [{"description": "no greeting"}]}
    assert store.in_flight() == []


def test_answers_recorded_together_land_only_on_fires_still_waiting_for_one(store: Store) -> None:
    settled, waiting = claimed(store), claimed(store, slot=SLOT + timedelta(minutes=1))
    taken = claimed(store, slot=SLOT + timedelta(minutes=2))
    store.finish(settled.id, outcome="failed", at=NOW, error="timed out")
    # Another process recorded an answer for this one first (it adopted the result found by name).
    assert store.record_submitted(taken.id, result_id=3, status="running", runs=[], at=EARLIER, poll_deadline=LATER)
    answers = [
        {
            "fire_id": fire.id,
            "result_id": result_id,
            "status": "pending",
            "runs": [RunRecord(run_id=result_id, status="pending")],
            "at": NOW,
            "poll_deadline": LATER,
        }
        for fire, result_id in ((settled, 1), (waiting, 2), (taken, 3))
    ]
    assert store.record_submitted_many(answers) == [False, True, False]
    lost, kept, theirs = store.get_fire(settled.id), store.get_fire(waiting.id), store.get_fire(taken.id)
    assert lost is not None and (lost.state, lost.result_id, lost.runs) == ("finished", None, [])
    assert kept is not None and (kept.state, kept.result_id, [r.run_id for r in kept.runs]) == ("submitted", 2, [2])
    assert theirs is not None and (theirs.result_status, theirs.submitted_at, theirs.runs) == ("running", EARLIER, [])


def test_an_outcome_is_recorded_once(store: Store) -> None:
    fire = claimed(store)
    assert store.finish(fire.id, outcome="failed", at=NOW, error="Cekura answered 400")
    # A second process following the same result must learn it lost, so that it does not alert again.
    assert not store.finish(fire.id, outcome="passed", at=NOW)
    recorded = store.get_fire(fire.id)
    assert recorded is not None and recorded.outcome == "failed" and recorded.error == "Cekura answered 400"


def test_an_answer_is_not_recorded_on_a_settled_fire(store: Store) -> None:
    fire = claimed(store)
    store.finish(fire.id, outcome="failed", at=NOW, error="lost")
    assert not submit(store, fire, result_id=1)


def test_the_last_status_seen_while_polling_is_shown_until_the_outcome(store: Store) -> None:
    fire = claimed(store)
    submit(store, fire)
    store.record_poll(fire.id, result_status="running")
    polled = store.get_fire(fire.id)
    assert polled is not None and polled.result_status == "running"
    store.finish(fire.id, outcome="error", at=LATER, error="no outcome in time")
    store.record_poll(fire.id, result_status="completed")  # a late poll does not rewrite a finished fire
    finished = store.get_fire(fire.id)
    assert finished is not None and (finished.outcome, finished.result_status) == ("error", "running")


def test_skipped_slots_are_recorded_with_their_reason(store: Store) -> None:
    skipped = skip(store)
    assert skipped is not None and skipped.skip_reason == "overlap"
    assert claim(store) is None  # a skipped slot is taken too
    assert skip(store) is None  # and only once


def test_a_claim_that_will_never_be_sent_becomes_a_skipped_slot_once(store: Store) -> None:
    fire = claimed(store, owner="me", lease_until=LATER)
    assert store.skip_claimed(fire.id, reason="paused", at=NOW, error="paused by ana")
    assert not store.skip_claimed(fire.id, reason="budget", at=NOW)  # settled: a second skip changes nothing
    skipped = store.get_fire(fire.id)
    assert skipped is not None
    assert (skipped.state, skipped.skip_reason, skipped.error, skipped.owner) == (
        "skipped",
        "paused",
        "paused by ana",
        None,
    )
    sent = claimed(store, slot=SLOT + timedelta(minutes=1))
    submit(store, sent)
    assert not store.skip_claimed(sent.id, reason="paused", at=NOW)  # already sent to Cekura: not skippable


def route_to_team(history: JobHistory) -> list[IncidentAction]:
    """Open the team's incident on a failure, resolve it on a pass; each with a message."""
    if history.fire.outcome == "failed":
        return [IncidentAction(action="open", channel="team", notice=notice("opened"), failing_since=NOW)]
    return [IncidentAction(action="resolve", channel="team", notice=notice("resolved"))]


def test_an_outcome_and_the_alert_it_causes_are_recorded_together_and_once(store: Store) -> None:
    failed = claimed(store)
    assert store.finish(failed.id, outcome="failed", at=NOW, route=route_to_team)
    assert not store.finish(failed.id, outcome="failed", at=NOW, route=route_to_team)  # the loser alerts nobody
    [incident] = store.open_incidents()
    assert (incident.scope, incident.subject, incident.channel, incident.failing_since) == (
        "job",
        "nightly",
        "team",
        NOW,
    )
    [opened] = store.claim_outbox("me", now=NOW, until=LATER)
    store.outbox_delivered(opened.id, at=NOW)
    passed = claimed(store, slot=SLOT + timedelta(minutes=1))
    assert store.finish(passed.id, outcome="passed", at=NOW, route=route_to_team)
    assert store.open_incidents() == []
    assert [(item.kind, item.state) for item in store.outbox()] == [("resolved", "pending"), ("opened", "sent")]


# -- leases -----------------------------------------------------------------------------------------------------


def test_work_whose_lease_ran_out_is_taken_over_by_one_process(store: Store) -> None:
    live = claimed(store, owner="alive", lease_until=NOW + timedelta(seconds=30))
    dead = claimed(store, job="other", owner="dead", lease_until=NOW - timedelta(seconds=1))
    taken = store.take_over("me", now=NOW, until=NOW + timedelta(seconds=30))
    assert [(fire.id, fire.owner) for fire in taken] == [(dead.id, "me")]
    assert store.take_over("someone else", now=NOW, until=NOW + timedelta(seconds=30)) == []  # one taker
    assert store.renew_leases("alive", [live.id, dead.id], until=NOW + timedelta(minutes=1)) == {live.id}


def test_a_renewed_lease_is_taken_over_only_after_its_new_end(store: Store) -> None:
    fire = claimed(store, owner="a", lease_until=NOW + timedelta(seconds=30))
    assert store.renew_leases("a", [fire.id], until=NOW + timedelta(seconds=90)) == {fire.id}
    assert store.take_over("b", now=NOW + timedelta(seconds=60), until=LATER) == []
    [taken] = store.take_over("b", now=NOW + timedelta(seconds=91), until=LATER)
    assert taken.id == fire.id and taken.owner == "b"
    assert store.renew_leases("a", [fire.id], until=LATER) == set()  # the first owner learns it lost the fire
    assert store.renew_leases("a", [], until=LATER) == set()


def test_renewing_many_leases_renews_each_one_held_and_only_those(store: Store) -> None:
    mine = [claimed(store, job=f"j{index}", owner="a", lease_until=NOW) for index in range(5)]
    other = claimed(store, job="other", owner="b", lease_until=NOW)
    ids = [fire.id for fire in mine]
    assert store.renew_leases("a", [*ids, other.id], until=LATER) == set(ids)
    taken = store.take_over("c", now=NOW + timedelta(seconds=1), until=LATER)
    assert [fire.id for fire in taken] == [other.id]  # only the other owner's lease ran out


def test_finished_fires_are_never_taken_over(store: Store) -> None:
    fire = claimed(store, owner="a", lease_until=NOW)
    store.finish(fire.id, outcome="passed", at=NOW)
    assert store.take_over("b", now=LATER, until=LATER) == []


def test_released_fires_are_taken_over_at_once(store: Store) -> None:
    one = claimed(store, owner="a", lease_until=LATER)
    two = claimed(store, slot=SLOT + timedelta(minutes=1), owner="a", lease_until=LATER)
    other = claimed(store, job="other", owner="c", lease_until=LATER)
    store.release_leases("a", [], at=NOW)  # nothing to hand back
    store.release_leases("a", [one.id], at=NOW)
    assert [fire.id for fire in store.take_over("b", now=NOW + timedelta(seconds=1), until=LATER)] == [one.id]
    submit(store, two)
    store.release_leases("a", at=NOW)  # at shutdown: everything unfinished it holds, submitted ones included
    assert [fire.id for fire in store.take_over("b", now=NOW + timedelta(seconds=1), until=LATER)] == [two.id]
    assert store.renew_leases("c", [other.id], until=LATER) == {other.id}  # another process's lease is untouched


# -- holds: pauses and silences -----------------------------------------------------------------------------------


def test_a_hold_is_in_force_from_its_start_to_its_end_with_who_and_why(store: Store) -> None:
    hold = store.add_hold(job="nightly", kind="pause", at=NOW, until=LATER, created_by="ana", reason="deploy")
    store.add_hold(job="other", kind="silence", at=NOW, until=None, created_by="bob", reason="noisy")
    assert [
        (h.id, h.job, h.kind, h.created_by, h.reason, h.until) for h in store.active_holds(at=NOW, job="nightly")
    ] == [(hold.id, "nightly", "pause", "ana", "deploy", LATER)]
    assert store.active_holds(at=NOW - timedelta(seconds=1)) == []
    assert [h.job for h in store.active_holds(at=LATER)] == ["other"]  # the pause is over, the silence is open-ended


def test_ending_a_hold_ends_only_that_kind_and_counts_what_it_ended(store: Store) -> None:
    store.add_hold(job="nightly", kind="pause", at=NOW, until=None, created_by="ana", reason="")
    store.add_hold(job="nightly", kind="silence", at=NOW, until=None, created_by="ana", reason="")
    assert store.end_holds(job="nightly", kind="pause", at=NOW) == 1
    assert store.end_holds(job="nightly", kind="pause", at=NOW) == 0  # "it was not paused"
    assert [h.kind for h in store.active_holds(at=NOW)] == ["silence"]


def test_ending_a_jobs_last_silence_lets_its_held_alerts_out_at_once(store: Store) -> None:
    store.add_hold(job="nightly", kind="silence", at=NOW, until=None, created_by="ana", reason="")
    held = Notice(kind="opened", payload={"job": "nightly"}, deliver_at=datetime.max.replace(tzinfo=UTC))
    store.enqueue(channel="team", notice=held, at=NOW)
    store.enqueue(channel="team", notice=Notice("opened", {"job": "other"}, held.deliver_at), at=NOW)
    assert store.claim_outbox("me", now=NOW, until=LATER) == []
    store.end_holds(job="nightly", kind="silence", at=NOW)
    assert [item.payload["job"] for item in store.claim_outbox("me", now=NOW, until=LATER)] == ["nightly"]


# -- history: reading the record back, config versions, pruning ---------------------------------------------------


def test_a_fire_is_found_by_its_job_and_slot_with_its_runs(store: Store) -> None:
    fire = claimed(store)
    submit(store, fire, runs=[RunRecord(run_id=7, scenario=101, status="pending")])
    found = store.find_fire("nightly", SLOT)
    assert found is not None and found.id == fire.id and [run.run_id for run in found.runs] == [7]
    assert store.find_fire("nightly", SLOT + timedelta(minutes=1)) is None
    assert store.get_fire(fire.id + 1000) is None


def test_a_job_is_busy_while_its_fire_is_claimed_or_running(store: Store) -> None:
    waiting, running = claimed(store), claimed(store, slot=SLOT + timedelta(minutes=1))
    done = claimed(store, slot=SLOT + timedelta(minutes=2))
    claimed(store, job="other")
    submit(store, running)
    store.finish(done.id, outcome="passed", at=NOW)
    busy = store.in_flight_by_job(["nightly", "idle"])
    assert {job: [fire.id for fire in fires] for job, fires in busy.items()} == {"nightly": [waiting.id, running.id]}
    assert store.in_flight_by_job([]) == {}
    assert [fire.id for fire in store.in_flight()] == [running.id]  # what to poll: submitted ones only


def test_history_lists_the_newest_fires_first(store: Store) -> None:
    outcomes = ["passed", "failed", "passed"]
    ids = []
    for minute, outcome in enumerate(outcomes):
        fire = claimed(store, slot=SLOT + timedelta(minutes=minute))
        store.finish(fire.id, outcome=outcome, at=NOW)
        ids.append(fire.id)
    other = claimed(store, job="other")
    assert [f.outcome for f in store.recent_fires(job="nightly", limit=2)] == ["passed", "failed"]
    assert [f.id for f in store.recent_fires(limit=2)] == [other.id, ids[2]]
    assert {job: fire.id for job, fire in store.last_fires_by_job(["nightly", "other", "idle"]).items()} == {
        "nightly": ids[2],
        "other": other.id,
    }


def test_the_newest_fires_of_many_jobs_are_read_at_once_newest_first(store: Store) -> None:
    """What the status page shows on each job's row: its last fires, whichever job fired in between."""
    ids: dict[str, list[int]] = {"nightly": [], "other": [], "third": []}
    for minute in range(4):
        for job in ("nightly", "other") if minute < 3 else ("nightly",):
            ids[job].append(claimed(store, job=job, slot=SLOT + timedelta(minutes=minute)).id)
    ids["third"].append(claimed(store, job="third").id)
    recent = store.recent_fires_by_job(["nightly", "other", "idle", "nightly"], limit=2)
    assert {job: [fire.id for fire in fires] for job, fires in recent.items()} == {
        "nightly": ids["nightly"][:-3:-1],
        "other": ids["other"][:-3:-1],
    }
    assert [fire.slot for fire in recent["nightly"]] == [SLOT + timedelta(minutes=3), SLOT + timedelta(minutes=2)]
    last = store.last_fires_by_job(["third", "other", "idle"])
    assert {job: fire.id for job, fire in last.items()} == {"third": ids["third"][0], "other": ids["other"][-1]}
    assert store.recent_fires_by_job([], limit=20) == {} and store.last_fires_by_job([]) == {}
    # More names than one statement takes: read in batches, none lost.
    many = [f"job{index:04d}" for index in range(1200)] + ["third"]
    assert [fire.id for fire in store.recent_fires_by_job(many, limit=5)["third"]] == ids["third"]
    assert store.jobs_with_fires() == ["nightly", "other", "third"]


def test_the_slots_already_recorded_are_known_so_none_is_fired_twice(store: Store) -> None:
    minutes = [SLOT + timedelta(minutes=minute) for minute in range(4)]
    claimed(store, slot=minutes[0])
    skip(store, slot=minutes[1])
    claimed(store, slot=minutes[3])
    store.claim(  # a manual trigger is no scheduled slot
        job="nightly",
        slot=minutes[0] + timedelta(days=1),
        trigger="manual",
        fired_at=NOW,
        submission_name="nightly@manual",
        endpoint="run_scenarios",
        runs_requested=1,
    )
    assert store.recorded_slots({"nightly": minutes[1], "idle": minutes[0]}) == {
        "nightly": {minutes[1], minutes[3]},
        "idle": set(),
    }
    assert store.slot_bounds(["nightly", "idle"]) == {"nightly": (minutes[0], minutes[3])}
    many = [f"job-{index}" for index in range(600)]  # more names than one statement takes
    assert store.slot_bounds([*many, "nightly"]) == {"nightly": (minutes[0], minutes[3])}


def test_the_latest_config_version_is_the_one_shown(store: Store) -> None:
    assert store.latest_config_change() is None
    store.record_config_change(at=NOW, path="jobs.toml", digest="a1", valid=True, summary="2 jobs")
    store.record_config_change(at=LATER, path="jobs.toml", digest="b2", valid=False, summary="line 3: bad cron")
    latest = store.latest_config_change()
    assert latest is not None
    assert (latest.at, latest.digest, latest.valid, latest.summary) == (LATER, "b2", False, "line 3: bad cron")


def test_prune_deletes_old_history_in_batches_and_keeps_the_rest(store: Store) -> None:
    for minute in range(5):
        fire = claim_slot(store, slot=SLOT + timedelta(minutes=minute))  # fired at its slot
        assert fire is not None
        store.finish(fire.id, outcome="passed", at=NOW, runs=[RunRecord(run_id=minute, status="completed")])
    in_flight = claim_slot(store, slot=SLOT - timedelta(days=1))  # old but unfinished: never pruned
    assert in_flight is not None

    assert store.prune(before=SLOT + timedelta(minutes=3), batch=2) == 2
    assert store.prune(before=SLOT + timedelta(minutes=3), batch=2) == 1
    assert store.prune(before=SLOT + timedelta(minutes=3), batch=2) == 0
    left = sorted(fire.slot.minute for fire in store.recent_fires(job="nightly", limit=10) if fire.state == "finished")
    assert left == [3, 4]
    assert store.get_fire(in_flight.id) is not None


def test_prune_forgets_delivered_alerts_and_resolved_incidents_but_not_what_is_still_due(store: Store) -> None:
    def opening(subject: str) -> Callable[[str], Notice]:
        return lambda _channel: notice(f"opened-{subject}")

    store.open_incident(scope="daemon", subject="db", channels=["ops"], at=NOW, detail="", notice=opening("db"))
    store.resolve_incident(scope="daemon", subjects=["db"], at=NOW, notice=None)  # its opening alert is cancelled
    store.open_incident(scope="daemon", subject="key", channels=["ops"], at=NOW, detail="", notice=opening("key"))
    store.enqueue(channel="team", notice=notice("skipped"), at=NOW)
    [sent] = [item for item in store.claim_outbox("me", now=NOW, until=LATER) if item.kind == "skipped"]
    store.outbox_delivered(sent.id, at=NOW)
    store.prune(before=LATER)
    assert [(item.kind, item.state) for item in store.outbox()] == [("opened-key", "pending")]
    assert [incident.subject for incident in store.open_incidents()] == ["key"]


# -- incidents and the outbox ---------------------------------------------------------------------------------------


def test_an_incident_opens_once_per_channel_and_says_so_once(store: Store) -> None:
    def opening(channel: str) -> Notice:
        return notice(f"opened-{channel}")

    opened = store.open_incident(
        scope="daemon", subject="db", channels=["team", "ops"], at=NOW, detail="down", notice=opening
    )
    assert opened == ["team", "ops"]
    again = store.open_incident(
        scope="daemon", subject="db", channels=["ops", "new"], at=NOW, detail="", notice=opening
    )
    assert again == ["new"]
    assert sorted(i.channel for i in store.open_incidents()) == ["new", "ops", "team"]
    # One message per channel: "ops", already open, was not told a second time.
    assert sorted(item.kind for item in store.outbox()) == ["opened-new", "opened-ops", "opened-team"]


def test_budget_notices_are_listed_only_when_asked_for(store: Store) -> None:
    store.open_incident(scope="budget", subject="daemon", channels=["ops"], at=NOW, detail="", notice=None)
    store.open_incident(scope="daemon", subject="db", channels=["ops"], at=NOW, detail="", notice=None)
    assert [i.scope for i in store.open_incidents()] == ["daemon"]
    assert [i.scope for i in store.open_incidents(scope="budget")] == ["budget"]


def test_a_resolved_incident_says_so_only_to_channels_that_were_told_it_opened(store: Store) -> None:
    store.open_incident(scope="daemon", subject="db", channels=["told"], at=NOW, detail="", notice=lambda _: notice())
    [opened] = store.claim_outbox("me", now=NOW, until=LATER)
    store.outbox_delivered(opened.id, at=NOW)
    held = Notice("opened", {"job": "db"}, deliver_at=LATER)  # e.g. held by a maintenance window
    store.open_incident(scope="daemon", subject="db", channels=["held"], at=NOW, detail="", notice=lambda _: held)
    resolved = store.resolve_incident(
        scope="daemon", subjects=["db"], at=NOW, notice=lambda channel: notice(f"resolved-{channel}")
    )
    assert sorted(resolved) == ["held", "told"]
    assert store.open_incidents() == []
    assert sorted((item.channel, item.kind, item.state) for item in store.outbox()) == [
        ("held", "opened", "cancelled"),  # nobody on "held" ever heard of it
        ("told", "opened", "sent"),
        ("told", "resolved-told", "pending"),
    ]


def test_an_open_incident_can_be_announced_late_or_reminded_until_it_resolves(store: Store) -> None:
    store.open_incident(scope="daemon", subject="db", channels=["ops"], at=NOW, detail="", notice=None)
    [incident] = store.open_incidents()
    assert incident.notified_at is None
    assert store.notify_incident(incident.id, notice=notice("opened"), at=NOW, opening=True)
    assert store.notify_incident(incident.id, notice=notice("reminder"), at=LATER, opening=False)
    [told] = store.open_incidents()
    assert (told.notified_at, told.last_notified_at) == (NOW, LATER)
    store.resolve_incident(scope="daemon", subjects=["db"], at=LATER, notice=None)
    assert not store.notify_incident(incident.id, notice=notice("reminder"), at=LATER, opening=False)
    assert [item.kind for item in store.outbox()] == ["reminder", "opened"]


def test_an_alert_is_delivered_once_by_one_process(store: Store) -> None:
    store.enqueue(channel="team", notice=notice("skipped"), at=NOW)
    [item] = store.claim_outbox("a", now=NOW, until=NOW + timedelta(seconds=30))
    assert (item.channel, item.kind, item.payload["job"], item.attempts) == ("team", "skipped", "nightly", 0)
    assert store.claim_outbox("b", now=NOW, until=LATER) == []  # leased to "a"
    store.outbox_delivered(item.id, at=NOW)
    assert store.claim_outbox("b", now=LATER, until=LATER) == []  # sent: never again
    [sent] = store.outbox()
    assert (sent.state, sent.attempts) == ("sent", 1)


def test_an_alert_whose_sender_died_is_delivered_by_another_after_the_lease(store: Store) -> None:
    store.enqueue(channel="team", notice=notice(), at=NOW)
    store.claim_outbox("a", now=NOW, until=NOW + timedelta(seconds=30))
    assert store.claim_outbox("b", now=NOW + timedelta(seconds=29), until=LATER) == []
    assert len(store.claim_outbox("b", now=NOW + timedelta(seconds=31), until=LATER)) == 1


def test_an_alert_is_not_delivered_before_it_is_due(store: Store) -> None:
    store.enqueue(channel="team", notice=notice(at=LATER), at=NOW)
    assert store.claim_outbox("a", now=NOW, until=LATER) == []
    assert len(store.claim_outbox("a", now=LATER, until=LATER)) == 1


def test_a_failed_delivery_is_retried_when_asked_and_kept_when_given_up(store: Store) -> None:
    store.enqueue(channel="team", notice=notice(), at=NOW)
    [item] = store.claim_outbox("a", now=NOW, until=LATER)
    store.outbox_failed(item.id, error="HTTP 500", retry_at=NOW + timedelta(minutes=1))
    assert store.claim_outbox("a", now=NOW + timedelta(seconds=30), until=LATER) == []
    [retry] = store.claim_outbox("a", now=NOW + timedelta(minutes=1), until=LATER)
    assert retry.attempts == 1
    store.outbox_failed(retry.id, error="HTTP 500 again", retry_at=None)
    assert store.claim_outbox("a", now=LATER, until=LATER) == []
    [failed] = store.outbox()
    assert (failed.state, failed.attempts, failed.last_error) == ("failed", 2, "HTTP 500 again")


def test_the_budget_counts_the_runs_requested_by_fires_not_skipped(store: Store) -> None:
    claimed(store, runs_requested=2)
    claimed(store, slot=SLOT + timedelta(minutes=1), runs_requested=3)
    claimed(store, job="other", runs_requested=5)
    skip(store, slot=SLOT + timedelta(minutes=2))
    assert store.runs_submitted_since(NOW) == 10
    assert store.runs_submitted_since(NOW, job="nightly") == 5
    assert store.runs_submitted_since(NOW + timedelta(seconds=1)) == 0


def test_a_fire_whose_run_count_only_cekura_knows_counts_one_until_answered_then_what_it_created(
    store: Store,
) -> None:
    assert store.last_runs_created("tagged") is None
    first = claimed(store, job="tagged", runs_requested=0)
    assert store.runs_submitted_since(NOW, job="tagged") == 1
    store.record_submitted(
        first.id, result_id=7, status="pending", runs=[], at=NOW, poll_deadline=LATER, runs_created=4
    )
    claimed(store, job="tagged", slot=SLOT + timedelta(minutes=1), runs_requested=0)  # in flight, unanswered
    assert store.runs_submitted_since(NOW, job="tagged") == 4 + 1
    assert store.last_runs_created("tagged") == 4
    assert store.last_runs_created("nightly") is None


# -- the database itself -------------------------------------------------------------------------------------------


def test_a_working_database_answers_a_ping(store: Store) -> None:
    store.ping()


def test_an_unreachable_database_is_a_store_error() -> None:
    store = Store(engine=create_db_engine("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2"))
    with pytest.raises(StoreError, match="claiming nightly"):
        claim(store)
    with pytest.raises(StoreError, match="checking that the database answers"):
        store.ping()


@pytest.mark.parametrize(("query", "idle"), [("", "30"), ("keepalives_idle=5", "5")])
def test_postgresql_connections_notice_a_server_that_vanished(query: str, idle: str) -> None:
    # Without keepalives a query to a server that disappeared without closing (a host gone, a firewall dropping
    # the connection) waits forever; with them the database error arrives, and the daemon alerts and retries.
    if not POSTGRES_URL:
        pytest.skip("SCHEDULER_TEST_POSTGRES_URL is not set")
    separator = "&" if "?" in POSTGRES_URL else "?"
    engine = create_db_engine(POSTGRES_URL + (separator + query if query else ""))
    try:
        with engine.connect() as connection:
            driver = connection.connection.driver_connection
            assert driver is not None
            parameters = driver.info.get_parameters()
    finally:
        engine.dispose()
    assert parameters["keepalives"] == "1" and parameters["keepalives_idle"] == idle  # the URL's own setting wins
    assert parameters["tcp_user_timeout"] == "60000"
