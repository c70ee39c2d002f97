"""Results pushed by Cekura: a ``result.completed`` webhook's result matched to its fire and its verdict recorded.

The verdict is the same rule's (``Result.verdict``) and is recorded through the follower's own path
(``Follower.conclude``, batched and conditional on the fire still waiting for its outcome): a webhook delivered
twice, or one racing the poller, records one outcome and one alert. Polling goes on as the fallback, so a lost
webhook still ends in a verdict.
"""

from __future__ import annotations

import logging

from scheduler.daemon.following import Follower
from scheduler.daemon.runtime import Runtime
from scheduler.results import Result
from scheduler.store import SUBMITTED

logger = logging.getLogger(__name__)

RECORDED, ALREADY, RUNNING, UNMATCHED = "recorded", "already recorded", "not ended", "not ours"


class Pushed:
    """Receives the results Cekura pushes."""

    def __init__(self, runtime: Runtime, *, follower: Follower) -> None:
        self._rt = runtime
        self._follower = follower

    async def receive(self, result: Result) -> str:
        """Record the verdict of a pushed result; say what became of it (``RECORDED``, ``ALREADY``, ...)."""
        rt = self._rt
        fire = await rt.db(rt.store.fire_for_result, result.id, result.name)
        extra: dict[str, object] = {"result_id": result.id}
        if fire is None:
            logger.info("webhook for result %s (%r): no fire of this scheduler's", result.id, result.name, extra=extra)
            return UNMATCHED
        extra |= {"job": fire.job, "slot": fire.slot}
        if fire.state != SUBMITTED or (fire.result_id is not None and fire.result_id != result.id):
            logger.info(
                "webhook for result %s: %s is %s already", result.id, fire.submission_name, fire.state, extra=extra
            )
            return ALREADY
        verdict = result.verdict()
        if verdict is None:
            logger.info(
                "webhook for result %s, which is still %s: left to polling", result.id, result.status, extra=extra
            )
            return RUNNING
        logger.debug("webhook for result %s: %s", result.id, result.status, extra=extra)
        await self._follower.conclude(fire, result, verdict)
        self._follower.stop_following(fire.id)  # its poller need not read it again
        return RECORDED
