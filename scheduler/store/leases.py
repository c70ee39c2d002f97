"""Leases on unfinished fires: which process follows each one, and taking over the work of one that died."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, update

from scheduler.store.database import Sessions
from scheduler.store.schema import CLAIMED, SUBMITTED, Fire, FireRow, _fire


def _abandoned(now: datetime) -> tuple[Any, ...]:
    """The conditions of an unfinished fire whose lease has run out (or that never had one)."""
    return FireRow.state.in_([CLAIMED, SUBMITTED]), or_(FireRow.lease_until.is_(None), FireRow.lease_until < now)


def _padded(ids: Sequence[int]) -> list[int]:
    """The ids, the last one repeated up to the next power of two: an IN list of one of a few lengths.

    Each length is a statement of its own to the driver, prepared and kept (sqlite3) as a new text. The results in
    flight vary by the dozen from one heartbeat to the next, so unpadded nearly every heartbeat prepared two new
    statements (~80 KB each at a few hundred ids), and their churn through the statement cache fragmented memory.
    """
    size = 1 << (len(ids) - 1).bit_length()
    return [*ids, *[ids[-1]] * (size - len(ids))]


class LeaseQueries(Sessions):
    """Renewing, handing back and taking over leases (mixed into ``Store``)."""

    def renew_leases(self, owner: str, fire_ids: Sequence[int], *, until: datetime) -> set[int]:
        """Extend this owner's leases; returns the ids whose lease it still holds."""
        if not fire_ids:
            return set()
        ids = _padded(fire_ids)
        with self._session("renewing leases") as session:
            session.execute(
                update(FireRow)
                .where(FireRow.id.in_(ids), FireRow.owner == owner)
                .values(lease_until=until)
                .execution_options(synchronize_session=False)
            )
            held = session.scalars(select(FireRow.id).where(FireRow.id.in_(ids), FireRow.owner == owner))
            return set(held)

    def release_leases(self, owner: str, fire_ids: Sequence[int] | None = None, *, at: datetime) -> None:
        """Hand fires back at once, so that another process may take them over.

        Without ``fire_ids`` (at shutdown), every unfinished fire this owner holds is handed back: a fire whose
        answer was recorded a moment before the signal is not yet in any in-memory set, but it is in the table.
        """
        if fire_ids is not None and not fire_ids:
            return
        condition = FireRow.state.in_([CLAIMED, SUBMITTED]) if fire_ids is None else FireRow.id.in_(list(fire_ids))
        with self._session("releasing leases") as session:
            session.execute(
                update(FireRow)
                .where(condition, FireRow.owner == owner)
                .values(lease_until=at)
                .execution_options(synchronize_session=False)
            )

    def take_over(self, owner: str, *, now: datetime, until: datetime, limit: int = 200) -> list[Fire]:
        """Take the unfinished fires whose lease has run out (their process died or let go), oldest first.

        Each one is taken with a conditional update, so when several processes look at once, one gets it.
        """
        with self._session("looking for abandoned fires") as session:
            candidates = list(
                session.scalars(select(FireRow.id).where(*_abandoned(now)).order_by(FireRow.id).limit(limit))
            )
        taken: list[Fire] = []
        for fire_id in candidates:
            with self._session(f"taking over fire {fire_id}") as session:
                changed = session.execute(  # type: ignore[attr-defined]
                    update(FireRow)
                    .where(FireRow.id == fire_id, *_abandoned(now))
                    .values(owner=owner, lease_until=until)
                    .execution_options(synchronize_session=False)
                ).rowcount
                if changed:
                    taken.append(_fire(session.get_one(FireRow, fire_id)))
        return taken
