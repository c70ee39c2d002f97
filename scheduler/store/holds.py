"""Holds: a job paused (its slots skipped) or silenced (its alerts held), by whom, why and until when."""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import or_, select, update

from scheduler.store.alerting import PENDING, OutboxRow
from scheduler.store.database import Sessions
from scheduler.store.schema import Hold, HoldRow


def _hold(row: HoldRow) -> Hold:
    return Hold(
        id=row.id,
        job=row.job,
        kind=row.kind,
        starts_at=row.starts_at,
        until=row.until,
        created_by=row.created_by,
        reason=row.reason,
    )


class HoldQueries(Sessions):
    """Pauses and silences (mixed into ``Store``)."""

    def add_hold(
        self, *, job: str, kind: str, at: datetime, until: datetime | None, created_by: str, reason: str
    ) -> Hold:
        """Pause a job or silence its alerts, from ``at`` until ``until`` (None: until ended)."""
        row = HoldRow(job=job, kind=kind, starts_at=at, until=until, created_by=created_by, reason=reason)
        with self._session(f"recording a {kind} of {job}") as session:
            session.add(row)
            session.flush()
            return _hold(row)

    def end_holds(self, *, job: str, kind: str, at: datetime) -> int:
        """End the job's active holds of this kind now; returns how many were ended.

        Ending the job's last silence lets the alerts it held go out at once (they waited in the outbox for its
        end, which for an open-ended silence is never).
        """
        with self._session(f"ending the {kind} of {job}") as session:
            active = (
                HoldRow.job == job,
                HoldRow.kind == kind,
                HoldRow.ended_at.is_(None),
                or_(HoldRow.until.is_(None), HoldRow.until > at),
            )
            ended = int(
                session.execute(  # type: ignore[attr-defined]
                    update(HoldRow).where(*active).values(ended_at=at).execution_options(synchronize_session=False)
                ).rowcount
            )
            if ended and kind == "silence" and session.scalars(select(HoldRow.id).where(*active)).first() is None:
                held = session.scalars(
                    select(OutboxRow).where(OutboxRow.state == PENDING, OutboxRow.next_attempt_at > at)
                )
                for row in held:
                    if json.loads(row.payload).get("job") == job:
                        row.next_attempt_at = at
            return ended

    def active_holds(self, *, at: datetime, job: str | None = None) -> list[Hold]:
        """The pauses and silences in force at ``at``."""
        with self._session("reading pauses and silences") as session:
            query = select(HoldRow).where(
                HoldRow.ended_at.is_(None), HoldRow.starts_at <= at, or_(HoldRow.until.is_(None), HoldRow.until > at)
            )
            if job is not None:
                query = query.where(HoldRow.job == job)
            return [_hold(row) for row in session.scalars(query.order_by(HoldRow.id))]
