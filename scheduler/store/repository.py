"""The repository: engines, schema upgrades, and every read and write the scheduler makes."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import create_engine, delete, event, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from scheduler.errors import StoreError
from scheduler.redaction import redact
from scheduler.store.alerting import PENDING, AlertingQueries, IncidentRow, OutboxRow, Router, route_outcome
from scheduler.store.schema import (
    CLAIMED,
    FINISHED,
    SKIPPED,
    SUBMITTED,
    ConfigChange,
    ConfigChangeRow,
    Fire,
    FireRow,
    Hold,
    HoldRow,
    RunRecord,
    RunRow,
    _fire,
    _replace_runs,
)

logger = logging.getLogger(__name__)


def migrations_dir() -> Path:
    """Where the Alembic scripts are: inside the installed package, or at the top of a source checkout."""
    here = Path(__file__).resolve().parent.parent  # the scheduler package
    for candidate in (here / "migrations", here.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise StoreError(
        "the database migrations are missing from this installation (reinstall cekura-scheduler)", permanent=True
    )


def create_db_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite files get WAL, a busy timeout and foreign keys, and their folder is made."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    return engine


def upgrade_database(engine: Engine) -> None:
    """Bring the database schema to the newest migration (safe to run on every start)."""
    config = AlembicConfig()
    config.set_main_option("script_location", str(migrations_dir()))
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # Replicas starting together upgrade one at a time (released at commit).
                connection.execute(text("SELECT pg_advisory_xact_lock(7294113)"))
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except SQLAlchemyError as error:
        raise StoreError(f"cannot upgrade the database schema: {_describe(error)}") from error


def _describe(error: SQLAlchemyError) -> str:
    original = getattr(error, "orig", None)
    return str(original or error).strip().splitlines()[0]


class Store(AlertingQueries):
    """The repository: every read and write the scheduler makes, each in its own short transaction."""

    def __init__(self, *, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @contextmanager
    def _session(self, what: str) -> Iterator[Session]:
        try:
            with self._sessions.begin() as session:
                yield session
        except IntegrityError:
            raise
        except SQLAlchemyError as error:
            raise StoreError(f"database error while {what}: {_describe(error)}") from error

    def ping(self) -> None:
        """Whether the database would take a write now: on SQLite a write lock taken and let go at once (a
        plain read passes while another process holds the lock), on PostgreSQL a round trip."""
        with self._session("checking that the database answers") as session:
            if self.engine.dialect.name == "sqlite":
                session.connection().exec_driver_sql("BEGIN IMMEDIATE")
                session.connection().exec_driver_sql("ROLLBACK")
            else:
                session.execute(text("SELECT 1"))

    def claim(
        self,
        *,
        job: str,
        slot: datetime,
        trigger: str,
        fired_at: datetime,
        submission_name: str,
        endpoint: str,
        runs_requested: int,
        owner: str | None = None,
        lease_until: datetime | None = None,
    ) -> Fire | None:
        """Claim a slot before anything is sent; None when it was already claimed (by us or a replica)."""
        claim = {
            "job": job,
            "slot": slot,
            "trigger": trigger,
            "fired_at": fired_at,
            "submission_name": submission_name,
            "endpoint": endpoint,
            "runs_requested": runs_requested,
            "owner": owner,
            "lease_until": lease_until,
        }
        return self.claim_many([claim])[0]

    def _insert_fire(self, row: FireRow, what: str) -> Fire | None:
        """Insert a fire; None when its (job, slot) is taken already: the unique constraint decides."""
        try:
            with self._session(what) as session:
                session.add(row)
                session.flush()
                return _fire(row)
        except IntegrityError:
            return None

    def claim_many(self, claims: Sequence[dict[str, Any]]) -> list[Fire | None]:
        """Claim many slots in one transaction; each None where the slot was already claimed.

        Each claim holds the arguments of ``claim``. One INSERT ... ON CONFLICT DO NOTHING for all of them.
        """
        if not claims:
            return []
        dialect = self.engine.dialect.name
        insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
        rows = [{**claim, "state": CLAIMED} for claim in claims]
        statement = (
            insert(FireRow)
            .on_conflict_do_nothing(index_elements=["job", "slot"])
            .returning(FireRow.id, FireRow.job, FireRow.slot)
        )
        names = [claim["submission_name"] for claim in claims]
        what = f"claiming {names[0]}" if len(names) == 1 else f"claiming {len(names)} slots ({names[0]}, ...)"
        with self._session(what) as session:
            ids = {(job, slot): fire_id for fire_id, job, slot in session.connection().execute(statement, rows)}
        # What the database now holds, built without reading it back.
        return [
            None if (fire_id := ids.get((row["job"], row["slot"]))) is None else _fire(FireRow(id=fire_id, **row))
            for row in rows
        ]

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

    def record_submitted_many(self, answers: Sequence[dict[str, Any]]) -> list[bool]:
        """``record_submitted`` for many fires in one transaction (each dict holds its arguments)."""
        with self._session(f"recording {len(answers)} submissions") as session:
            done = []
            for answer in answers:
                changed = session.execute(  # type: ignore[attr-defined]
                    update(FireRow)
                    .where(FireRow.id == answer["fire_id"], FireRow.state == CLAIMED)
                    .values(
                        state=SUBMITTED,
                        result_id=answer["result_id"],
                        result_status=answer["status"],
                        submitted_at=answer["at"],
                        poll_deadline=answer["poll_deadline"],
                    )
                    .execution_options(synchronize_session=False)
                ).rowcount
                done.append(bool(changed))
            recorded = {answer["fire_id"]: answer["runs"] for answer, ok in zip(answers, done, strict=True) if ok}
            if recorded:
                _replace_runs(session, recorded)
            return done

    def record_skipped(
        self,
        *,
        job: str,
        slot: datetime,
        trigger: str,
        fired_at: datetime,
        submission_name: str,
        endpoint: str,
        runs_requested: int,
        reason: str,
        detail: str | None = None,
    ) -> Fire | None:
        """Record a slot that will not be submitted, with the reason (and its detail, in ``error``); None when the
        slot was already taken."""
        row = FireRow(
            job=job,
            slot=slot,
            trigger=trigger,
            fired_at=fired_at,
            state=SKIPPED,
            submission_name=submission_name,
            endpoint=endpoint,
            runs_requested=runs_requested,
            skip_reason=reason,
            error=redact(detail) if detail is not None else None,
            finished_at=fired_at,
        )
        return self._insert_fire(row, f"recording {submission_name} as skipped")

    def record_submitted(
        self,
        fire_id: int,
        *,
        result_id: int,
        status: str,
        runs: Sequence[RunRecord],
        at: datetime,
        poll_deadline: datetime,
    ) -> bool:
        """Record Cekura's answer to a claimed fire: the result id and the runs it started.

        False when the fire is no longer waiting for an answer (another process settled it).
        """
        answer = {
            "fire_id": fire_id,
            "result_id": result_id,
            "status": status,
            "runs": runs,
            "at": at,
            "poll_deadline": poll_deadline,
        }
        return self.record_submitted_many([answer])[0]

    def finish(
        self,
        fire_id: int,
        *,
        outcome: str,
        at: datetime,
        result_status: str | None = None,
        success_rate: float | None = None,
        runs: Sequence[RunRecord] | None = None,
        error: str | None = None,
        error_status_code: int | None = None,
        failed_reasons: Any = None,
        route: Router | None = None,
    ) -> bool:
        """Record a fire's outcome. True when this call finished it; False when it was already finished.

        The update is conditional, so when two processes follow the same result only one of them finishes it
        (and only that one alerts).
        """
        with self._session(f"recording the outcome of fire {fire_id}") as session:
            changed = session.execute(  # type: ignore[attr-defined]
                update(FireRow)
                .where(FireRow.id == fire_id, FireRow.state.in_([CLAIMED, SUBMITTED]))
                .values(
                    state=FINISHED,
                    outcome=outcome,
                    finished_at=at,
                    result_status=result_status if result_status is not None else FireRow.result_status,
                    success_rate=success_rate,
                    error=redact(error) if error is not None else None,
                    error_status_code=error_status_code,
                    failed_reasons=None if failed_reasons in (None, "", [], {}) else json.dumps(failed_reasons),
                )
                .execution_options(synchronize_session=False)
            ).rowcount
            if changed and runs is not None:
                _replace_runs(session, {fire_id: runs})
            if changed and route is not None:
                # The incidents and their messages are written in the same transaction as the outcome.
                route_outcome(session, fire_id=fire_id, at=at, route=route)
            return bool(changed)

    def record_poll(self, fire_id: int, *, result_status: str) -> None:
        """Remember the last status seen while polling."""
        with self._session(f"recording the status of fire {fire_id}") as session:
            session.execute(
                update(FireRow)
                .where(FireRow.id == fire_id, FireRow.state == SUBMITTED)
                .values(result_status=result_status)
            )

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

    def in_flight(self) -> list[Fire]:
        """Submitted fires whose result has no outcome yet (to poll, also after a restart)."""
        with self._session("listing results in flight") as session:
            rows = session.scalars(select(FireRow).where(FireRow.state == SUBMITTED).order_by(FireRow.id))
            return [_fire(row) for row in rows]

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

    def skip_claimed(self, fire_id: int, *, reason: str, at: datetime, error: str | None = None) -> bool:
        """Turn a claim that will never be submitted into a skipped slot; False when it was settled elsewhere."""
        with self._session(f"recording fire {fire_id} as skipped") as session:
            changed = session.execute(  # type: ignore[attr-defined]
                update(FireRow)
                .where(FireRow.id == fire_id, FireRow.state == CLAIMED)
                .values(
                    state=SKIPPED,
                    skip_reason=reason,
                    error=redact(error) if error is not None else None,
                    finished_at=at,
                    owner=None,
                    lease_until=None,
                )
                .execution_options(synchronize_session=False)
            ).rowcount
            return bool(changed)

    def renew_leases(self, owner: str, fire_ids: Sequence[int], *, until: datetime) -> set[int]:
        """Extend this owner's leases; returns the ids whose lease it still holds."""
        if not fire_ids:
            return set()
        with self._session("renewing leases") as session:
            session.execute(
                update(FireRow)
                .where(FireRow.id.in_(list(fire_ids)), FireRow.owner == owner)
                .values(lease_until=until)
                .execution_options(synchronize_session=False)
            )
            held = session.scalars(select(FireRow.id).where(FireRow.id.in_(list(fire_ids)), FireRow.owner == owner))
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
                session.scalars(
                    select(FireRow.id)
                    .where(
                        FireRow.state.in_([CLAIMED, SUBMITTED]),
                        or_(FireRow.lease_until.is_(None), FireRow.lease_until < now),
                    )
                    .order_by(FireRow.id)
                    .limit(limit)
                )
            )
        taken: list[Fire] = []
        for fire_id in candidates:
            with self._session(f"taking over fire {fire_id}") as session:
                changed = session.execute(  # type: ignore[attr-defined]
                    update(FireRow)
                    .where(
                        FireRow.id == fire_id,
                        FireRow.state.in_([CLAIMED, SUBMITTED]),
                        or_(FireRow.lease_until.is_(None), FireRow.lease_until < now),
                    )
                    .values(owner=owner, lease_until=until)
                    .execution_options(synchronize_session=False)
                ).rowcount
                if changed:
                    taken.append(_fire(session.get_one(FireRow, fire_id)))
        return taken

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

    def add_hold(
        self, *, job: str, kind: str, at: datetime, until: datetime | None, created_by: str, reason: str
    ) -> Hold:
        """Pause a job or silence its alerts, from ``at`` until ``until`` (None: until ended)."""
        row = HoldRow(job=job, kind=kind, starts_at=at, until=until, created_by=created_by, reason=reason)
        with self._session(f"recording a {kind} of {job}") as session:
            session.add(row)
            session.flush()
            return Hold(id=row.id, job=job, kind=kind, starts_at=at, until=until, created_by=created_by, reason=reason)

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
            return [
                Hold(
                    id=row.id,
                    job=row.job,
                    kind=row.kind,
                    starts_at=row.starts_at,
                    until=row.until,
                    created_by=row.created_by,
                    reason=row.reason,
                )
                for row in session.scalars(query.order_by(HoldRow.id))
            ]

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
