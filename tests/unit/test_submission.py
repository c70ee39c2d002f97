"""Submission on a virtual clock: retries at the announced instants, a lost answer adopted, never a second POST."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from pathlib import Path

import pytest

from scheduler.clock import VirtualClock
from scheduler.daemon.submission import LOOK_UP_PAUSES, SUBMIT_ATTEMPTS, Submitter
from scheduler.schedules import submission_name
from scheduler.simulator import Simulator
from scheduler.simulator.results import Submission
from scheduler.store import Fire
from tests.conftest import Parts, claim_slot, daemon_parts, submissions_by_name

JOBS = '\n[jobs.smoke]\nevery = "10m"\nagent = 12\nscenarios = [101, 102]\n'


def claimed(parts: Parts) -> Fire:
    slot = parts.clock.now()
    fire = claim_slot(parts.store, "smoke", slot, owner=parts.runtime.owner, lease_until=slot + timedelta(minutes=5))
    assert fire is not None
    return fire


def submit(tmp_path: Path, simulator: Simulator, clock: VirtualClock) -> tuple[Fire, Parts]:
    async def scenario() -> tuple[Fire, Parts]:
        async with daemon_parts(tmp_path, JOBS, simulator, clock) as parts:
            fire = claimed(parts)
            return await Submitter(parts.runtime).submit(parts.job("smoke"), fire), parts

    return asyncio.run(scenario())


def test_a_throttled_submission_is_retried_after_each_retry_after_then_recorded_failed(
    tmp_path: Path, virtual_simulator: Simulator, virtual_clock: VirtualClock
) -> None:
    virtual_simulator.config.error_429_rate = 1.0
    virtual_simulator.config.retry_after = 7
    start = virtual_clock.now()

    fire, _ = submit(tmp_path, virtual_simulator, virtual_clock)

    assert fire.outcome == "failed" and "429" in (fire.error or "")
    assert len(virtual_simulator.submissions) == SUBMIT_ATTEMPTS
    assert all(entry.result_id is None for entry in virtual_simulator.submissions)  # nothing was ever created
    pauses = [(at - start, seconds) for at, seconds in virtual_clock.slept]
    assert pauses == [(timedelta(seconds=7 * n), 7) for n in range(SUBMIT_ATTEMPTS - 1)]


def test_a_lost_answer_is_looked_up_by_name_and_adopted_without_a_second_post(
    tmp_path: Path, virtual_simulator: Simulator, virtual_clock: VirtualClock
) -> None:
    virtual_simulator.config.drop_rate = 1.0  # the result is created, the answer never arrives

    fire, parts = submit(tmp_path, virtual_simulator, virtual_clock)

    name = submission_name("smoke", fire.slot)
    assert submissions_by_name(virtual_simulator) == {name: 1}
    created = virtual_simulator.submissions[0].result_id
    assert fire.state == "submitted" and fire.result_id == created
    assert [seconds for _, seconds in virtual_clock.slept] == [LOOK_UP_PAUSES[0]]
    stored = parts.store.get_fire(fire.id)
    assert stored is not None and stored.result_id == created


def test_a_server_error_without_a_result_is_sent_again_only_after_the_search_finds_nothing(
    tmp_path: Path, virtual_simulator: Simulator, virtual_clock: VirtualClock
) -> None:
    virtual_simulator.config.error_500_rate = 1.0  # 500 and nothing created, every time

    fire, _ = submit(tmp_path, virtual_simulator, virtual_clock)

    assert fire.outcome == "failed" and "500" in (fire.error or "")
    assert len(virtual_simulator.submissions) == SUBMIT_ATTEMPTS
    # Each 500 is followed by a search by name (after 1 s) that finds nothing, before the next POST.
    assert [seconds for _, seconds in virtual_clock.slept] == [LOOK_UP_PAUSES[0]] * SUBMIT_ATTEMPTS


def test_a_refused_key_stops_submissions_at_once_without_blaming_the_job(
    tmp_path: Path, virtual_simulator: Simulator, virtual_clock: VirtualClock
) -> None:
    async def scenario() -> tuple[Fire, Parts]:
        async with daemon_parts(tmp_path, JOBS, virtual_simulator, virtual_clock) as parts:
            virtual_simulator.config.api_key = "another-key"  # rotated at Cekura, not here
            fire = await Submitter(parts.runtime).submit(parts.job("smoke"), claimed(parts))
            await parts.runtime.outbox.deliver_due()
            assert parts.runtime.key_rejected  # the next slots are skipped, not POSTed
            return fire, parts

    fire, parts = asyncio.run(scenario())
    assert fire.outcome == "failed" and fire.error_status_code == 401
    assert len(virtual_simulator.submissions) == 1 and virtual_clock.slept == []
    assert parts.sender.titles() == ["[cekura-scheduler] Cekura rejects the API key"]  # ops only, no job alert


def test_an_answer_another_process_recorded_first_is_taken_as_it_is_without_a_duplicate_warning(
    tmp_path: Path, virtual_simulator: Simulator, virtual_clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    async def scenario() -> tuple[Fire, Parts]:
        async with daemon_parts(tmp_path, JOBS, virtual_simulator, virtual_clock) as parts:
            fire = claimed(parts)

            def found_by_another_process(entry: Submission) -> None:
                # What a replica's sweep does when this one's lease ran out: it finds the result by name.
                assert entry.result_id is not None
                at = virtual_clock.now() - timedelta(seconds=1)  # its own instant, not this process's
                parts.store.record_submitted(
                    fire.id, result_id=entry.result_id, status="pending", runs=[], at=at, poll_deadline=at
                )

            virtual_simulator.on_submission = found_by_another_process
            return await Submitter(parts.runtime).submit(parts.job("smoke"), fire), parts

    fire, _ = asyncio.run(scenario())

    (entry,) = virtual_simulator.submissions
    assert (fire.state, fire.result_id) == ("submitted", entry.result_id)
    messages = [record.getMessage() for record in caplog.records]
    assert f"{fire.submission_name}: result {entry.result_id} was recorded by another process" in messages
    assert not [message for message in messages if "check for a duplicate" in message]
