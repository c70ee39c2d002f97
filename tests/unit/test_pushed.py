"""A pushed result racing its poller, and delivered twice: one outcome recorded, one alert, on virtual time."""

from __future__ import annotations

import asyncio
from pathlib import Path

from scheduler.clock import VirtualClock
from scheduler.daemon.following import Follower
from scheduler.daemon.pushed import ALREADY, RECORDED, Pushed
from scheduler.simulator import Simulator
from tests.conftest import daemon_parts
from tests.unit.test_following import JOBS, submitted


def test_a_webhook_racing_the_poller_and_delivered_twice_records_one_outcome_and_one_alert(
    tmp_path: Path, virtual_simulator: Simulator, virtual_clock: VirtualClock
) -> None:
    virtual_simulator.config.behaviours = {101: ["fail"]}

    async def scenario() -> tuple[list[str], list[str], str | None, int]:
        async with daemon_parts(tmp_path, JOBS.format(timeout="1h"), virtual_simulator, virtual_clock) as parts:
            follower = Follower(parts.runtime)
            pushed = Pushed(parts.runtime, follower=follower)
            fire = await submitted(parts)
            virtual_clock.advance(60)  # the result has ended at Cekura
            assert fire.result_id is not None
            result = await parts.runtime.cekura.get_result(fire.result_id)
            verdict = result.verdict()
            assert verdict is not None
            # The poller and two deliveries of the webhook, at the same moment.
            _, *received = await asyncio.gather(
                follower.conclude(fire, result, verdict), pushed.receive(result), pushed.receive(result)
            )
            again = await pushed.receive(result)
            recorded = parts.store.get_fire(fire.id)
            assert recorded is not None
            messages = [item.kind for item in parts.store.outbox()]
            return [*received, again], messages, recorded.outcome, len(recorded.runs)

    answers, messages, outcome, runs = asyncio.run(scenario())

    assert outcome == "failed" and runs == 1
    assert messages == ["opened"]  # one alert, whoever recorded the verdict
    assert set(answers[:2]) <= {RECORDED, ALREADY} and answers[2] == ALREADY
