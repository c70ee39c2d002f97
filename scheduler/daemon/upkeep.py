"""Upkeep: the background loops that keep the daemon's hands on its work and its view of the world fresh.

- the sweep takes over fires whose lease ran out (after a restart, from a replica that died, a CLI ``trigger``);
- the heartbeat renews the leases of the fires this process works on;
- pruning deletes history past ``[history] retention``;
- the key check asks Cekura every minute whether it answers and accepts the API key;
- the memory loop, when the process gave one, hands the C heap's free pages back to the system every minute.

Each loop is a ``body(tick)`` run under the daemon's ``Supervisor``; all wait through the clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from scheduler.daemon.admission import SKIP_KEY_REJECTED
from scheduler.daemon.following import Follower
from scheduler.daemon.missed import MissedSlots
from scheduler.daemon.runtime import Runtime
from scheduler.daemon.submission import KEY_REJECTED, Submitter
from scheduler.errors import CekuraAuthError, CekuraError, StoreError
from scheduler.incidents import DATABASE_DOWN
from scheduler.schedules import format_duration
from scheduler.store import SUBMITTED, Incident

logger = logging.getLogger(__name__)

KEY_CHECK_EVERY = 60.0  # seconds between two checks of the key (and of Cekura being reachable)
KEY_CHECK_TIMEOUT = 15.0
UNREACHABLE = "cannot reach Cekura"
UNREACHABLE_AFTER = 3  # requests in a row that could not connect before people are told
PRUNE_EVERY = 3600.0
RELEASE_MEMORY_EVERY = 60.0  # seconds between two returns of malloc's free pages to the system
PRUNE_BATCH = 500


class Upkeep:
    """Sweep, heartbeat, pruning and the key check."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        follower: Follower,
        submitter: Submitter,
        missed: MissedSlots,
        key_check_every: float = KEY_CHECK_EVERY,
        release_memory: Callable[[], None] | None = None,
    ) -> None:
        self._rt = runtime
        self.release_memory = release_memory
        self._follower = follower
        self._submitter = submitter
        self._missed = missed
        self.key_check_every = key_check_every
        self.open_incidents: list[Incident] = []  # as of the last sweep, for the status page

    def sweep_every(self) -> float:
        return min(max(self._rt.lease.total_seconds() / 2, 0.5), 30.0)

    def heartbeat_every(self) -> float:
        return max(self._rt.lease.total_seconds() / 3, 0.2)

    # -- the sweep ----------------------------------------------------------------------------------------

    async def sweep_forever(self, tick: Callable[[], None]) -> None:
        rt = self._rt
        while not rt.stop.is_set():
            tick()
            await self.sweep()
            await rt.clock.wait(rt.stop, within=self.sweep_every())

    async def sweep(self) -> None:
        """Take over the unfinished fires whose lease ran out: follow their results, settle their claims.

        That is how results in flight survive a restart, how a replica takes over the work of one that died, and
        how a ``trigger`` from the command line gets followed. Slots missed while the database was unreachable
        are handled here too, once it answers again.
        """
        rt = self._rt
        now = rt.clock.now()
        try:
            taken = await rt.db(rt.store.take_over, rt.owner, now=now, until=now + rt.lease)
        except StoreError as error:
            await rt.problem(DATABASE_DOWN, f"Cannot read the database: {error}")
            return
        rt.solved(DATABASE_DOWN)
        await rt.incidents.remind()
        self.open_incidents = await rt.db_quietly(rt.store.open_incidents) or []
        rt.metrics.open_incidents.set(len(self.open_incidents))
        for fire in taken:
            if self._follower.is_following(fire.id) or rt.in_flight.is_submitting(fire.id):
                continue
            if fire.state == SUBMITTED:
                self._follower.start(fire)
            else:
                rt.spawn(self._submitter.settle(fire, self._follower.start), f"settle {fire.submission_name}")
        await self._missed.unrecorded()

    # -- leases -------------------------------------------------------------------------------------------

    async def heartbeat_forever(self, tick: Callable[[], None] = lambda: None) -> None:
        """Renew the leases of the fires this process works on; stop following those another process took."""
        rt = self._rt
        while not rt.stop.is_set():
            tick()
            await rt.clock.wait(rt.stop, within=self.heartbeat_every())
            await self.heartbeat()

    async def heartbeat(self) -> None:
        """Renew the leases once; a fire another process holds now is no longer followed here."""
        rt = self._rt
        mine = rt.in_flight.mine()
        try:
            held = await rt.db(rt.store.renew_leases, rt.owner, mine, until=rt.clock.now() + rt.lease)
        except StoreError as error:
            logger.warning("cannot renew leases: %s", error)
            return
        # Only the fires that were asked about: one the sweep took over meanwhile is this process's, not lost.
        for fire_id in (set(mine) & rt.in_flight.following) - held:
            logger.warning("fire %d was taken over by another process; no longer following it", fire_id)
            self._follower.stop_following(fire_id)

    # -- history ------------------------------------------------------------------------------------------

    async def release_memory_forever(self, tick: Callable[[], None]) -> None:
        """Give the system back the memory the C heap keeps free, once a minute.

        The heap fragments as threads allocate and free blocks of every size (SQLite's pages and statements,
        response buffers): its free bytes crept up for as long as the soak benchmark ran, while the bytes in
        use stayed flat.
        """
        rt, release = self._rt, self.release_memory
        assert release is not None
        while not rt.stop.is_set():
            tick()
            release()
            await rt.clock.wait(rt.stop, within=RELEASE_MEMORY_EVERY)

    async def prune_forever(self, tick: Callable[[], None]) -> None:
        """Delete history older than [history] retention, in small batches, once an hour."""
        rt = self._rt
        while not rt.stop.is_set():
            tick()
            await self.prune()
            await rt.clock.wait(rt.stop, within=PRUNE_EVERY)

    async def prune(self) -> int:
        """Delete the fires older than the retention, batch by batch; how many were deleted."""
        rt = self._rt
        retention = rt.config.history.retention
        if retention is None:
            return 0
        before, total = rt.clock.now() - retention, 0
        while not rt.stop.is_set():
            try:
                deleted = await rt.db(rt.store.prune, before=before)
            except StoreError as error:
                logger.warning("pruning history: %s", error)
                break
            total += deleted
            if deleted < PRUNE_BATCH:
                break
            await rt.clock.sleep(0.1)  # let the daemon's own writes through between batches
        if total:
            logger.info("pruned %d fires older than %s", total, format_duration(retention))
        return total

    # -- Cekura and the API key ---------------------------------------------------------------------------

    async def check_key_forever(self, tick: Callable[[], None]) -> None:
        """Check every minute (after the check at start) that Cekura answers and accepts the key.

        While the key is refused, slots are recorded as skipped (``api-key-rejected``) rather than POSTed; firing
        resumes by itself once the key is accepted again. Requests that cannot connect, several in a row (of any
        kind: submissions, reads, these checks), are one daemon-level incident until Cekura answers again.
        """
        rt = self._rt
        while not rt.stop.is_set():
            tick()
            if not await rt.clock.wait(rt.stop, within=self.key_check_every):
                await self.check_key()

    async def check_key(self) -> None:
        """Ask Cekura once whether it answers and accepts the key; alert (once) when not, solve when it does."""
        rt = self._rt
        try:
            async with asyncio.timeout(KEY_CHECK_TIMEOUT):
                await rt.cekura.check_key()
        except TimeoutError:
            logger.warning("checking the API key: Cekura did not answer within %.0fs", KEY_CHECK_TIMEOUT)
        except CekuraAuthError as error:
            rt.key_rejected = True
            await rt.problem(
                KEY_REJECTED,
                f"{error.message}\nNothing is submitted until the key is accepted: slots are recorded as skipped "
                f"({SKIP_KEY_REJECTED}). The key is checked again every minute.",
            )
        except CekuraError as error:
            logger.warning("checking the API key: %s", error)
        else:
            if rt.key_rejected:
                logger.warning("Cekura accepts the API key again; firing resumes")
            rt.key_rejected = False
            rt.solved(KEY_REJECTED)
        failures = rt.cekura.connect_failures
        if failures >= UNREACHABLE_AFTER:
            await rt.problem(
                UNREACHABLE,
                f"{failures} requests in a row got no answer from Cekura ({rt.cekura.base_url}). Slots are "
                "claimed and retried; this alert resolves once Cekura answers again.",
            )
        elif failures == 0:
            rt.solved(UNREACHABLE)
