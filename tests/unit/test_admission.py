"""Admission on a virtual clock: budgets per UTC day, pauses, the overlap rule, one claim per slot."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from scheduler.clock import VirtualClock
from scheduler.daemon.admission import (
    CLAIMS_AT_ONCE,
    SKIP_BUDGET,
    SKIP_OVERLAP,
    SKIP_PAUSED,
    Admission,
    Admitted,
)
from scheduler.daemon.following import Follower
from scheduler.daemon.runtime import MANUAL, SCHEDULED
from scheduler.daemon.submission import Submitter
from scheduler.simulator import Simulator
from tests.conftest import Parts, daemon_parts

BUDGET = '\n[jobs.smoke]\nevery = "1h"\nagent = 12\nscenarios = [101, 102]\nmax_runs_per_day = 3\n'


def admission(parts: Parts) -> Admission:
    return Admission(parts.runtime, still_running=Follower(parts.runtime).still_running)


async def admit_and_submit(parts: Parts, gate: Admission, slot: datetime, trigger: str = SCHEDULED) -> Admitted:
    admitted = await gate.admit(parts.job("smoke"), slot, trigger)
    if admitted.claimed and admitted.fire is not None:
        await Submitter(parts.runtime).submit(parts.job("smoke"), admitted.fire)
        parts.runtime.in_flight.submitted(admitted.fire.id)
    return admitted


def fire_smoke_at(
    tmp_path: Path, jobs: str, simulator: Simulator, clock: VirtualClock, slots: list[datetime]
) -> list[Admitted]:
    """Admit (and submit) the job smoke at each slot in turn, the clock moved to it."""

    async def scenario() -> list[Admitted]:
        async with daemon_parts(tmp_path, jobs, simulator, clock) as parts:
            gate = admission(parts)
            answers = []
            for slot in slots:
                clock.move_to(slot)
                answers.append(await admit_and_submit(parts, gate, slot))
            return answers

    return asyncio.run(scenario())


def test_the_daily_budget_skips_the_fire_that_would_pass_it_and_counts_again_at_midnight_utc(
    tmp_path: Path, virtual_simulator: Simulator, virtual_clock: VirtualClock
) -> None:
    slots = [datetime(2026, 3, 2, hour, 0, tzinfo=UTC) for hour in (22, 23)] + [datetime(2026, 3, 3, 0, 0, tzinfo=UTC)]
    first, second, after_midnight = fire_smoke_at(tmp_path, BUDGET, virtual_simulator, virtual_clock, slots)
    assert first.claimed and after_midnight.claimed
    assert not second.claimed and second.fire is not None and second.fire.skip_reason == SKIP_BUDGET
    assert second.fire.error == (
        "max_runs_per_day of job smoke is 3: 2 Cekura runs since 00:00 UTC, and this fire would add 2"
    )
    assert len(virtual_simulator.submissions) == 2


def test_a_job_whose_scenarios_cekura_chooses_is_budgeted_at_what_its_last_fire_created(
    tmp_path: Path, virtual_simulator: Simulator, virtual_clock: VirtualClock
) -> None:
    virtual_simulator.config.tags = {"smoke": [101, 102, 103]}  # each fire creates three runs
    jobs = '\n[jobs.smoke]\nevery = "1h"\nendpoint = "voice"\nagent = 12\ntags = ["smoke"]\nmax_runs_per_day = 5\n'
    slots = [datetime(2026, 3, 2, hour, 0, tzinfo=UTC) for hour in (10, 11)]
    first, second = fire_smoke_at(tmp_path, jobs, virtual_simulator, virtual_clock, slots)
    # The first fire could only be guessed at one run; the second would have made six of five.
    assert first.claimed and first.fire is not None
    assert not second.claimed and second.fire is not None and second.fire.skip_reason == SKIP_BUDGET
    assert second.fire.error == (
        "max_runs_per_day of job smoke is 5: 3 Cekura runs since 00:00 UTC, and this fire would add about 3, "
        "as its last fire did"
    )
    assert len(virtual_simulator.submissions) == 1


def test_each_personality_and_test_profile_a_body_names_is_a_run_the_budget_counts(
    tmp_path: Path, virtual_simulator: Simulator, virtual_clock: VirtualClock
) -> None:
    jobs = (
        '\n[jobs.smoke]\nevery = "1h"\nagent = 12\nscenarios = [101]\nmax_runs_per_day = 5\n'
        "[jobs.smoke.body]\npersonality_ids = [7, 8]\npersonality_id = 9\ntest_profile_ids = [3]\n"
    )
    slots = [datetime(2026, 3, 2, hour, 0, tzinfo=UTC) for hour in (10, 11)]
    first, second = fire_smoke_at(tmp_path, jobs, virtual_simulator, virtual_clock, slots)
    assert first.claimed and second.fire is not None and second.fire.skip_reason == SKIP_BUDGET
    assert second.fire.error == (
        "max_runs_per_day of job smoke is 5: 3 Cekura runs since 00:00 UTC, and this fire would add 3"
    )
    assert len(virtual_simulator.submissions) == 1


ONE = '\n[jobs.smoke]\nevery = "1h"\nagent = 12\nscenarios = [101]\n{extra}\n'


def test_a_slot_is_claimed_once_however_often_it_is_admitted(
    tmp_path: Path, virtual_simulator: Simulator, virtual_clock: VirtualClock
) -> None:
    slot = virtual_clock.now()

    async def scenario() -> list[Admitted]:
        async with daemon_parts(tmp_path, ONE.format(extra=""), virtual_simulator, virtual_clock) as parts:
            gate, again = admission(parts), admission(parts)  # a second admission: a restart, another replica
            return list(await asyncio.gather(*(g.admit(parts.job("smoke"), slot, SCHEDULED) for g in (gate, again))))

    answers = asyncio.run(scenario())
    assert sorted(answer.claimed for answer in answers) == [False, True]
    assert [answer.fire for answer in answers if not answer.claimed] == [None]


def test_a_paused_job_skips_its_slots_until_resumed_and_a_manual_fire_still_goes(
    tmp_path: Path, virtual_simulator: Simulator, virtual_clock: VirtualClock
) -> None:
    async def scenario() -> list[Admitted]:
        jobs = ONE.format(extra='overlap = "allow"')  # the manual fire is still in flight at the next slot
        async with daemon_parts(tmp_path, jobs, virtual_simulator, virtual_clock) as parts:
            gate = admission(parts)
            await gate.pause("smoke", by="alice", reason="agent redeploy")
            answers = [await gate.admit(parts.job("smoke"), virtual_clock.now(), SCHEDULED)]
            virtual_clock.advance(60)
            answers.append(await gate.admit(parts.job("smoke"), virtual_clock.now(), MANUAL))
            assert await gate.resume("smoke", by="alice")
            virtual_clock.advance(60)
            answers.append(await gate.admit(parts.job("smoke"), virtual_clock.now(), SCHEDULED))
            return answers

    paused, manual, resumed = asyncio.run(scenario())
    assert paused.fire is not None and paused.fire.skip_reason == SKIP_PAUSED and not paused.claimed
    assert manual.claimed and resumed.claimed


def test_overlap_skip_asks_cekura_before_skipping_and_claims_once_the_previous_result_has_ended(
    tmp_path: Path, virtual_simulator: Simulator, virtual_clock: VirtualClock
) -> None:
    virtual_simulator.config.run_duration = 90.0  # longer than the minute between the two slots below

    async def scenario() -> tuple[Admitted, Admitted, Parts]:
        async with daemon_parts(tmp_path, ONE.format(extra='overlap = "skip"'), virtual_simulator, virtual_clock) as p:
            gate = admission(p)
            first = virtual_clock.now()
            await admit_and_submit(p, gate, first)
            virtual_clock.advance(60)
            blocked = await gate.admit(p.job("smoke"), virtual_clock.now(), SCHEDULED)
            virtual_clock.advance(60)  # the first result ended 30 s ago; the database still says running
            claimed = await gate.admit(p.job("smoke"), virtual_clock.now(), SCHEDULED)
            return blocked, claimed, p

    blocked, claimed, parts = asyncio.run(scenario())
    first_result = virtual_simulator.submissions[0].result_id
    assert blocked.fire is not None and blocked.fire.skip_reason == SKIP_OVERLAP
    assert (
        blocked.fire.error == f"the previous result {first_result} is still evaluating"
    )  # phases: pending, running, evaluating
    assert claimed.claimed
    previous = [fire for fire in parts.store.recent_fires(job="smoke") if fire.result_id == first_result]
    assert [fire.outcome for fire in previous] == ["passed"]  # its verdict was recorded before the claim


def test_slots_the_database_cannot_take_are_remembered_for_the_catch_up(
    tmp_path: Path, virtual_simulator: Simulator, virtual_clock: VirtualClock
) -> None:
    async def scenario() -> tuple[Admitted, dict[str, list[datetime]]]:
        async with daemon_parts(tmp_path, ONE.format(extra=""), virtual_simulator, virtual_clock) as parts:
            gate = admission(parts)
            parts.store.engine.dispose()
            (tmp_path / "scheduler.db").unlink()
            (tmp_path / "scheduler.db").mkdir()  # the file is gone and cannot be made again: every query fails
            answer = await gate.admit(parts.job("smoke"), virtual_clock.now(), SCHEDULED)
            return answer, gate.unrecorded

    answer, unrecorded = asyncio.run(scenario())
    assert answer == Admitted(None, False)
    assert unrecorded == {"smoke": [virtual_clock.now()]}


def test_budget_counts_every_claim_of_one_batch(
    tmp_path: Path, virtual_simulator: Simulator, virtual_clock: VirtualClock
) -> None:
    jobs = "".join(f'\n[jobs.j{n}]\nevery = "1h"\nagent = 12\nscenarios = [101]\n' for n in range(6)) + "\n"
    header = "\n[daemon]\nmax_runs_per_day = 4\n"

    async def scenario() -> list[Admitted]:
        async with daemon_parts(tmp_path, jobs, virtual_simulator, virtual_clock, header=header) as parts:
            gate = admission(parts)
            now = virtual_clock.now()
            return list(await asyncio.gather(*(gate.admit(parts.job(f"j{n}"), now, SCHEDULED) for n in range(6))))

    answers = asyncio.run(scenario())
    assert [answer.claimed for answer in answers].count(True) == 4
    assert {answer.fire.skip_reason for answer in answers if not answer.claimed and answer.fire} == {SKIP_BUDGET}


def test_a_burst_larger_than_one_claim_transaction_keeps_the_budget_and_claims_each_slot_once(
    tmp_path: Path, virtual_simulator: Simulator, virtual_clock: VirtualClock
) -> None:
    count = CLAIMS_AT_ONCE * 2 + 50  # three claim transactions
    jobs = "".join(f'\n[jobs.j{n}]\nevery = "1h"\nagent = 12\nscenarios = [101]\n' for n in range(count)) + "\n"
    header = f"\n[daemon]\nmax_runs_per_day = {CLAIMS_AT_ONCE + 30}\n"  # runs out in the second transaction

    async def scenario() -> list[Admitted]:
        async with daemon_parts(tmp_path, jobs, virtual_simulator, virtual_clock, header=header) as parts:
            gate = admission(parts)
            now = virtual_clock.now()
            due = [gate.admit(parts.job(f"j{n}"), now, SCHEDULED) for n in range(count)]
            again = [gate.admit(parts.job(f"j{n}"), now, SCHEDULED) for n in range(3)]  # the same slots, twice
            return list(await asyncio.gather(*due, *again))

    answers = asyncio.run(scenario())
    claimed = [answer.fire.job for answer in answers if answer.claimed and answer.fire]
    assert len(claimed) == len(set(claimed)) == CLAIMS_AT_ONCE + 30
    skipped = {answer.fire.skip_reason for answer in answers[:count] if not answer.claimed and answer.fire}
    assert skipped == {SKIP_BUDGET}
