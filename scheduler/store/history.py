"""Reading the record: fires past and in flight, the slots already taken, config versions; and pruning it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, select

from scheduler.redaction import redact
from scheduler.store.alerting import IncidentRow, OutboxRow
from scheduler.store.database import Sessions
from scheduler.store.schema import (
    CLAIMED,
    FINISHED,
    SKIPPED,
    SUBMITTED,
    ConfigChange,
    ConfigChangeRow,
    Fire,
    FireRow,
    RunRow,
    _fire,
)


class HistoryQueries(Sessions):
    """What has been recorded, read back; the config file's versions; old history deleted (mixed into ``Store``)."""

    def get_fire(self, fire_id: int) -> Fire | None:
        """One fire with its runs."""
        with self._session(f"reading fire {fire_id}") as session:
            row = session.get(FireRow, fire_id)
            return _fire(row, with_runs=True) if row is not None else None

    def find_fire(self, job: str, slot: datetime) -> Fire | None:
        """The fire of one job's slot, if any."""
        with self._session(f"reading {job}'s fire") as session:
            row = session.scalars(select(FireRow).where(FireRow.job == job, FireRow.slot == slot)).first()
            return _fire(row, with_runs=True) if row is not None else None

    def fire_for_result(self, result_id: int | None, name: str | None) -> Fire | None:
        """The fire a result pushed by Cekura belongs to: by result id (any state, so that a webhook delivered
        again finds its fire finished), else a submitted fire by submission name; None when it is not ours."""
        with self._session("finding the fire of a result") as session:
            if result_id is not None:
                row = session.scalars(select(FireRow).where(FireRow.result_id == result_id).limit(1)).first()
                if row is not None:
                    return _fire(row)
            if name:
                query = select(FireRow).where(FireRow.state == SUBMITTED, FireRow.submission_name == name).limit(1)
                if (row := session.scalars(query).first()) is not None:
                    return _fire(row)
            return None

    def in_flight(self) -> list[Fire]:
        """Submitted fires whose result has no outcome yet (to poll, also after a restart)."""
        with self._session("listing results in flight") as session:
            rows = session.scalars(select(FireRow).where(FireRow.state == SUBMITTED).order_by(FireRow.id))
            return [_fire(row) for row in rows]

    def in_flight_by_job(self, jobs: Sequence[str]) -> dict[str, list[Fire]]:
        """The fires of these jobs that are claimed or whose result is still running, by job (one query)."""
        if not jobs:
            return {}
        with self._session("checking which jobs are running") as session:
            rows = session.scalars(
                select(FireRow)
                .where(FireRow.job.in_(list(jobs)), FireRow.state.in_([CLAIMED, SUBMITTED]))
                .order_by(FireRow.id)
            )
            busy: dict[str, list[Fire]] = {}
            for row in rows:
                busy.setdefault(row.job, []).append(_fire(row))
            return busy

    def recent_fires(self, *, job: str | None = None, limit: int = 20) -> list[Fire]:
        """The newest fires first, of one job or all."""
        with self._session("listing fires") as session:
            query = select(FireRow).order_by(FireRow.id.desc()).limit(limit)
            if job is not None:
                query = query.where(FireRow.job == job)
            return [_fire(row) for row in session.scalars(query)]

    def last_fires_by_job(self) -> dict[str, Fire]:
        """Each job's newest fire."""
        with self._session("reading each job's last fire") as session:
            newest = select(func.max(FireRow.id)).group_by(FireRow.job).scalar_subquery()
            rows = session.scalars(select(FireRow).where(FireRow.id.in_(newest)))
            return {row.job: _fire(row) for row in rows}

    def slot_bounds(self, jobs: Sequence[str]) -> dict[str, tuple[datetime, datetime]]:
        """The oldest and newest scheduled slot recorded for each of these jobs (claimed, finished or skipped)."""
        with self._session("reading the jobs' recorded slots") as session:
            rows = session.execute(
                select(FireRow.job, func.min(FireRow.slot), func.max(FireRow.slot))
                .where(FireRow.job.in_(list(jobs)), FireRow.trigger == "schedule")
                .group_by(FireRow.job)
            )
            return {job: (first, last) for job, first, last in rows if first is not None and last is not None}

    def recorded_slots(self, job: str, *, since: datetime) -> set[datetime]:
        """The scheduled slots of a job that have a row, from ``since`` on."""
        with self._session(f"reading {job}'s recorded slots") as session:
            return set(
                session.scalars(
                    select(FireRow.slot).where(FireRow.job == job, FireRow.trigger == "schedule", FireRow.slot >= since)
                )
            )

    def record_config_change(self, *, at: datetime, path: str, digest: str, valid: bool, summary: str) -> None:
        """Remember a version of the config file: applied, with its diff, or rejected, with its errors."""
        with self._session("recording a config change") as session:
            session.add(ConfigChangeRow(at=at, path=path, digest=digest, valid=valid, summary=redact(summary)))

    def latest_config_change(self) -> ConfigChange | None:
        """The newest version of the config file the daemon saw."""
        with self._session("reading the latest config change") as session:
            row = session.scalars(select(ConfigChangeRow).order_by(ConfigChangeRow.id.desc()).limit(1)).first()
            if row is None:
                return None
            return ConfigChange(
                id=row.id, at=row.at, path=row.path, digest=row.digest, valid=row.valid, summary=row.summary
            )

    def prune(self, *, before: datetime, batch: int = 500) -> int:
        """Delete one batch of finished or skipped fires (with their runs) whose slot is before ``before``,
        and the delivered or cancelled alerts and resolved incidents older than that; returns the fires deleted.

        Call it until it returns less than ``batch``: short transactions keep the daemon's own writes flowing.
        """
        with self._session("pruning old history") as session:
            ids = list(
                session.scalars(
                    select(FireRow.id)
                    .where(FireRow.slot < before, FireRow.state.in_([FINISHED, SKIPPED]))
                    .order_by(FireRow.id)
                    .limit(batch)
                )
            )
            if ids:
                session.execute(delete(RunRow).where(RunRow.fire_id.in_(ids)))
                session.execute(delete(FireRow).where(FireRow.id.in_(ids)))
            outbox = list(
                session.scalars(
                    select(OutboxRow.id)
                    .where(OutboxRow.created_at < before, OutboxRow.state.in_(["sent", "cancelled"]))
                    .limit(batch)
                )
            )
            if outbox:
                session.execute(delete(OutboxRow).where(OutboxRow.id.in_(outbox)))
            session.execute(
                delete(IncidentRow).where(IncidentRow.resolved_at.is_not(None), IncidentRow.resolved_at < before)
            )
            return len(ids)
