"""The store on a real SQLite file and on the real PostgreSQL (when SCHEDULER_TEST_POSTGRES_URL is set)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from scheduler.errors import StoreError
from scheduler.store import RunRecord, Store, create_db_engine
from tests.conftest import claim_slot

SLOT = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)
NOW = SLOT + timedelta(seconds=1)


def claim(
    store: Store,
    job: str = "nightly",
    slot: datetime = SLOT,
    *,
    owner: str | None = None,
    lease_until: datetime | None = None,
):
    return claim_slot(store, job, slot, fired_at=NOW, runs_requested=2, owner=owner, lease_until=lease_until)


def test_a_slot_is_claimed_once(store: Store) -> None:
    first = claim(store)
    assert first is not None and first.state == "claimed"
    assert claim(store) is None  # a second claim of the same (job, slot) loses, whoever makes it
    assert claim(store, job="other") is not None
    assert claim(store, slot=SLOT + timedelta(minutes=1)) is not None


def test_scheduled_time_is_kept_apart_from_the_fire_time_as_utc(store: Store) -> None:
    fire = claim(store)
    assert fire is not None
    again = store.get_fire(fire.id)
    assert again is not None
    assert again.slot == SLOT and again.slot.tzinfo is not None
    assert again.fired_at == NOW


def test_submission_then_outcome_with_runs(store: Store) -> None:
    fire = claim(store)
    assert fire is not None
    started = [RunRecord(run_id=1, scenario=101, status="pending"), RunRecord(run_id=2, scenario=102, status="pending")]
    assert store.record_submitted(
        fire.id, result_id=9001, status="pending", runs=started, at=NOW, poll_deadline=NOW + timedelta(hours=1)
    )
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


def test_an_outcome_is_recorded_once(store: Store) -> None:
    fire = claim(store)
    assert fire is not None
    assert store.finish(fire.id, outcome="failed", at=NOW, error="Cekura answered 400")
    # A second process following the same result must learn it lost, so that it does not alert again.
    assert not store.finish(fire.id, outcome="passed", at=NOW)
    recorded = store.get_fire(fire.id)
    assert recorded is not None and recorded.outcome == "failed" and recorded.error == "Cekura answered 400"


def test_an_answer_is_not_recorded_on_a_settled_fire(store: Store) -> None:
    fire = claim(store)
    assert fire is not None
    store.finish(fire.id, outcome="failed", at=NOW, error="lost")
    assert not store.record_submitted(fire.id, result_id=1, status="pending", runs=[], at=NOW, poll_deadline=NOW)


def test_work_whose_lease_ran_out_is_taken_over_by_one_process(store: Store) -> None:
    live = claim(store, owner="alive", lease_until=NOW + timedelta(seconds=30))
    dead = claim(store, job="other", owner="dead", lease_until=NOW - timedelta(seconds=1))
    assert live is not None and dead is not None
    taken = store.take_over("me", now=NOW, until=NOW + timedelta(seconds=30))
    assert [(fire.id, fire.owner) for fire in taken] == [(dead.id, "me")]
    assert store.take_over("someone else", now=NOW, until=NOW + timedelta(seconds=30)) == []  # one taker
    assert store.renew_leases("alive", [live.id, dead.id], until=NOW + timedelta(minutes=1)) == {live.id}


def test_skipped_slots_are_recorded_with_their_reason(store: Store) -> None:
    skipped = store.record_skipped(
        job="nightly",
        slot=SLOT,
        trigger="schedule",
        fired_at=NOW,
        submission_name="nightly@x",
        endpoint="run_scenarios",
        runs_requested=1,
        reason="overlap",
    )
    assert skipped is not None and skipped.skip_reason == "overlap"
    assert claim(store) is None  # a skipped slot is taken too


def test_history_lists_the_newest_fires_first(store: Store) -> None:
    outcomes = ["passed", "failed", "passed"]
    ids = []
    for minute, outcome in enumerate(outcomes):
        fire = claim(store, slot=SLOT + timedelta(minutes=minute))
        assert fire is not None
        store.finish(fire.id, outcome=outcome, at=NOW)
        ids.append(fire.id)
    assert [f.outcome for f in store.recent_fires(job="nightly", limit=2)] == ["passed", "failed"]
    assert store.last_fires_by_job()["nightly"].id == ids[2]


def test_an_unreachable_database_is_a_store_error() -> None:
    store = Store(engine=create_db_engine("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2"))
    with pytest.raises(StoreError, match="claiming nightly"):
        claim(store)


def test_prune_deletes_old_history_in_batches_and_keeps_the_rest(store: Store) -> None:
    for minute in range(5):
        fire = claim(store, slot=SLOT + timedelta(minutes=minute))
        assert fire is not None
        store.finish(fire.id, outcome="passed", at=NOW, runs=[RunRecord(run_id=minute, status="completed")])
    in_flight = claim(store, slot=SLOT - timedelta(days=1))  # old but unfinished: never pruned
    assert in_flight is not None

    assert store.prune(before=SLOT + timedelta(minutes=3), batch=2) == 2
    assert store.prune(before=SLOT + timedelta(minutes=3), batch=2) == 1
    assert store.prune(before=SLOT + timedelta(minutes=3), batch=2) == 0
    left = sorted(fire.slot.minute for fire in store.recent_fires(job="nightly", limit=10) if fire.state == "finished")
    assert left == [3, 4]
    assert store.get_fire(in_flight.id) is not None
