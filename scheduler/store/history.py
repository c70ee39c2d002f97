"""Reading the record: fires past and in flight, the slots already taken, config versions; and pruning it."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import CTE, Select, bindparam, column, delete, select, true, values

from scheduler.redaction import redact
from scheduler.store.alerting import FAILED_DELIVERY, PENDING, IncidentRow, OutboxRow
from scheduler.store.database import Sessions
from scheduler.store.schema import (
    CLAIMED,
    FIRES,
    SUBMITTED,
    ConfigChange,
    ConfigChangeRow,
    Fire,
    FireRow,
    RunRow,
    _fire,
)

_RECORDED_SLOTS = select(FIRES.c.slot).where(
    FIRES.c.job == bindparam("b_job"), FIRES.c.trigger == "schedule", FIRES.c.slot >= bindparam("b_since")
)

_NAMES_PER_QUERY = 500  # names in one statement: well under every backend's limit of bound parameters
_FIELDS = [field.name for field in dataclasses.fields(Fire) if field.name != "runs"]  # columns, in Fire's order
_REASONS = _FIELDS.index("failed_reasons")


def _listed(names: Sequence[str]) -> CTE:
    """Job names as a table of one column, ``job``, for a statement that looks up each of them by index."""
    return values(column("job", FIRES.c.job.type), name="names").data([(name,) for name in names]).cte("names")


def _plain_fire(row: Sequence[Any]) -> Fire:
    """A fire (without its runs) from a row of the ``_FIELDS`` columns: by position, the cheapest way to build
    thousands (reading each by name costs twice as much)."""
    values = list(row)
    values[_REASONS] = json.loads(values[_REASONS]) if values[_REASONS] else None
    return Fire(*values)


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
        """The fires of these jobs that are claimed or whose result is still running, by job (one query).

        Read by state alone (``ix_fires_state_lease``): the fires in flight are few whatever the history holds, while a
        job's rows are all of its history.
        """
        if not jobs:
            return {}
        wanted = set(jobs)
        with self._session("checking which jobs are running") as session:
            rows = session.scalars(select(FireRow).where(FireRow.state.in_([CLAIMED, SUBMITTED])).order_by(FireRow.id))
            busy: dict[str, list[Fire]] = {}
            for row in rows:
                if row.job in wanted:
                    busy.setdefault(row.job, []).append(_fire(row))
            return busy

    def recent_fires(self, *, job: str | None = None, limit: int = 20) -> list[Fire]:
        """The newest fires first, of one job or all."""
        with self._session("listing fires") as session:
            query = select(FireRow).order_by(FireRow.id.desc()).limit(limit)
            if job is not None:
                query = query.where(FireRow.job == job)
            return [_fire(row) for row in session.scalars(query)]

    def jobs_with_fires(self) -> list[str]:
        """Every job name that has a fire recorded, in order (a scan of ``ix_fires_job_id``: for rare readers)."""
        with self._session("listing the jobs that fired") as session:
            return list(session.scalars(select(FIRES.c.job).distinct().order_by(FIRES.c.job)))

    def last_fires_by_job(self, jobs: Sequence[str]) -> dict[str, Fire]:
        """The newest fire of each of these jobs (those that have one), read through ``ix_fires_job_id``."""
        return {job: fires[0] for job, fires in self.recent_fires_by_job(jobs, limit=1).items()}

    def recent_fires_by_job(self, jobs: Sequence[str], *, limit: int) -> dict[str, list[Fire]]:
        """The newest ``limit`` fires of each of these jobs, newest first, by job (jobs without fires left out).

        One statement per ``_NAMES_PER_QUERY`` names, whose cost is about jobs x limit rows however long the
        history: each job's newest ids are read backwards from ``ix_fires_job_id`` (job, id) and stop at
        ``limit``. PostgreSQL does it with a LATERAL join over the list of names; SQLite, which has no LATERAL,
        with ``id IN`` a subquery correlated to each name. (A ROW_NUMBER() window would read every fire of
        these jobs first.)
        """
        names = list(dict.fromkeys(jobs))
        if not names or limit < 1:
            return {}
        found: dict[str, list[Fire]] = {}
        with self._session("reading the jobs' recent fires") as session:
            for start in range(0, len(names), _NAMES_PER_QUERY):
                # Plain rows, not ORM objects: a page of 100 jobs is 2,000 fires, and the ORM costs 4x more.
                for row in session.execute(self._newest_of(names[start : start + _NAMES_PER_QUERY], limit)):
                    fire = _plain_fire(row)
                    found.setdefault(fire.job, []).append(fire)
        for fires in found.values():
            fires.sort(key=lambda fire: fire.id, reverse=True)
        return found

    def _newest_of(self, names: list[str], limit: int) -> Select[Any]:
        """The statement of ``recent_fires_by_job`` for one batch of names."""
        listed = _listed(names)
        if self.engine.dialect.name == "postgresql":
            newest = (
                select(FIRES).where(FIRES.c.job == listed.c.job).order_by(FIRES.c.id.desc()).limit(limit)
            ).lateral("newest")
            return select(*(newest.c[name] for name in _FIELDS)).select_from(listed).join(newest, true())
        inner = FIRES.alias("newest")
        ids = select(inner.c.id).where(inner.c.job == listed.c.job).order_by(inner.c.id.desc()).limit(limit)
        columns = (FIRES.c[name] for name in _FIELDS)
        return select(*columns).select_from(listed).join(FIRES, FIRES.c.id.in_(ids.scalar_subquery()))

    def slot_bounds(self, jobs: Sequence[str]) -> dict[str, tuple[datetime, datetime]]:
        """The oldest and newest scheduled slot recorded for each of these jobs (claimed, finished or skipped).

        One statement per ``_NAMES_PER_QUERY`` names: for each name, two lookups at either end of the unique
        (job, slot) index. A ``min``/``max`` grouped by job would read every row of every job.
        """
        names = list(dict.fromkeys(jobs))
        bounds: dict[str, tuple[datetime, datetime]] = {}
        with self._session("reading the jobs' recorded slots") as session:
            for start in range(0, len(names), _NAMES_PER_QUERY):
                listed = _listed(names[start : start + _NAMES_PER_QUERY])
                scheduled = select(FIRES.c.slot).where(FIRES.c.job == listed.c.job, FIRES.c.trigger == "schedule")
                first = scheduled.order_by(FIRES.c.slot.asc()).limit(1).scalar_subquery()
                last = scheduled.order_by(FIRES.c.slot.desc()).limit(1).scalar_subquery()
                for job, oldest, newest in session.execute(select(listed.c.job, first, last)):
                    if oldest is not None and newest is not None:
                        bounds[job] = (oldest, newest)
        return bounds

    def recorded_slots(self, since: Mapping[str, datetime]) -> dict[str, set[datetime]]:
        """The scheduled slots that have a row, of each job from its own ``since`` on (one transaction)."""
        with self._session("reading the jobs' recorded slots") as session:
            connection = session.connection()
            return {
                job: set(connection.scalars(_RECORDED_SLOTS, {"b_job": job, "b_since": start}))
                for job, start in since.items()
            }

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
        """Delete one batch of finished or skipped fires (with their runs) fired before ``before``,
        and the delivered or cancelled alerts and resolved incidents older than that; returns the fires deleted.

        Call it until it returns less than ``batch``: short transactions keep the daemon's own writes flowing.
        """
        with self._session("pruning old history") as session:
            ids = list(
                session.scalars(
                    select(FireRow.id)
                    # Written as "not in flight" rather than "finished or skipped" (the same fires), so that the
                    # plan walks ix_fires_fired_at and reads only the rows it deletes, not every finished one.
                    .where(FireRow.fired_at < before, FireRow.state.not_in([CLAIMED, SUBMITTED]))
                    .order_by(FireRow.fired_at)
                    .limit(batch)
                )
            )
            if ids:
                session.execute(delete(RunRow).where(RunRow.fire_id.in_(ids)))
                session.execute(delete(FireRow).where(FireRow.id.in_(ids)))
            outbox = list(
                session.scalars(
                    select(OutboxRow.id)  # sent or cancelled, written so that ix_outbox_created_at serves it
                    .where(OutboxRow.created_at < before, OutboxRow.state.not_in([PENDING, FAILED_DELIVERY]))
                    .order_by(OutboxRow.created_at)
                    .limit(batch)
                )
            )
            if outbox:
                session.execute(delete(OutboxRow).where(OutboxRow.id.in_(outbox)))
            session.execute(
                delete(IncidentRow).where(IncidentRow.resolved_at.is_not(None), IncidentRow.resolved_at < before)
            )
            return len(ids)
