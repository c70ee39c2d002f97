"""Incidents and the alert outbox: what people have been told, and what is still to be delivered.

An incident is open per (scope, subject, channel): a job's failures as one channel sees them, or a problem of the
daemon. Messages are rows of the outbox, written in the same transaction as the change that caused them and
delivered later (with retries) by whichever process holds their lease; a message can wait in the outbox until a
maintenance window or a silence ends.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Index, Integer, String, Text, bindparam, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from scheduler.redaction import redact
from scheduler.store.database import Sessions
from scheduler.store.schema import FINISHED, FIRES, RUNS, Base, Fire, FireRow, UTCDateTime, _fire, _run_record

PENDING, SENT, FAILED_DELIVERY, CANCELLED = "pending", "sent", "failed", "cancelled"


class IncidentRow(Base):
    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(16))  # job | daemon | budget
    subject: Mapped[str] = mapped_column(String(150))  # the job, or the daemon's problem
    channel: Mapped[str] = mapped_column(String(100))
    # Set while open and unique, so one (scope, subject, channel) has at most one open incident.
    open_key: Mapped[str | None] = mapped_column(String(300), nullable=True, unique=True)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime())
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    detail: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (
        # The open incidents of a job, read with every verdict: only the open ones are in this index, so the
        # lookup does not grow with the incidents of the past.
        Index(
            "ix_incidents_open",
            "scope",
            "subject",
            sqlite_where=open_key.is_not(None),
            postgresql_where=open_key.is_not(None),
        ),
        Index("ix_incidents_resolved_at", "resolved_at"),  # pruning
    )


class OutboxRow(Base):
    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_state_due", "state", "next_attempt_at"),
        Index("ix_outbox_created_at", "created_at"),  # pruning
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    channel: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(16))
    incident_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    payload: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    owner: Mapped[str | None] = mapped_column(String(100), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


@dataclass(frozen=True)
class Incident:
    """An incident as recorded."""

    id: int
    scope: str
    subject: str
    channel: str
    opened_at: datetime
    failing_since: datetime | None
    resolved_at: datetime | None
    notified_at: datetime | None
    last_notified_at: datetime | None
    detail: str


@dataclass(frozen=True)
class OutboxItem:
    """A message to deliver to one channel; ``payload`` is the structured alert, rendered at delivery."""

    id: int
    channel: str
    kind: str
    payload: dict[str, Any]
    attempts: int
    state: str = PENDING
    last_error: str | None = None


@dataclass(frozen=True)
class Notice:
    """A message to enqueue: for one channel, of one kind, deliverable from ``deliver_at``."""

    kind: str
    payload: dict[str, Any]
    deliver_at: datetime


@dataclass(frozen=True)
class IncidentAction:
    """What an outcome does to one channel's incident for a job: open it or resolve it, maybe with a notice."""

    action: Literal["open", "resolve"]
    channel: str
    notice: Notice | None = None
    failing_since: datetime | None = None


@dataclass(frozen=True)
class JobHistory:
    """What routing needs to know when a job's fire finishes: its recent outcomes and its open incidents."""

    fire: Fire  # the fire that just finished, with its runs
    outcomes: list[tuple[str, datetime]]  # (outcome, slot), newest first
    open: dict[str, Incident]  # channel -> the open incident


Router = Callable[[JobHistory], list[IncidentAction]]


def _incident(row: IncidentRow) -> Incident:
    return Incident(
        id=row.id,
        scope=row.scope,
        subject=row.subject,
        channel=row.channel,
        opened_at=row.opened_at,
        failing_since=row.failing_since,
        resolved_at=row.resolved_at,
        notified_at=row.notified_at,
        last_notified_at=row.last_notified_at,
        detail=row.detail,
    )


def _outbox_item(row: OutboxRow) -> OutboxItem:
    return OutboxItem(
        id=row.id,
        channel=row.channel,
        kind=row.kind,
        payload=json.loads(row.payload),
        attempts=row.attempts,
        state=row.state,
        last_error=row.last_error,
    )


def _key(scope: str, subject: str, channel: str) -> str:
    return f"{scope}:{subject}:{channel}"


def _enqueue(session: Session, *, channel: str, notice: Notice, at: datetime, incident_id: int | None) -> None:
    session.add(
        OutboxRow(
            created_at=at,
            channel=channel,
            kind=notice.kind,
            incident_id=incident_id,
            payload=redact(json.dumps(notice.payload, default=str)),
            state=PENDING,
            attempts=0,
            next_attempt_at=notice.deliver_at,
        )
    )


def _cancel_held(session: Session, incident_id: int) -> int:
    """Cancel an incident's messages still waiting (e.g. held by a maintenance window).

    Returns how many of them were its opening message: when that one never went out, nobody was told.
    """
    waiting = OutboxRow.incident_id == incident_id, OutboxRow.state == PENDING, OutboxRow.attempts == 0
    opening = session.scalar(select(func.count()).select_from(OutboxRow).where(*waiting, OutboxRow.kind == "opened"))
    session.execute(
        update(OutboxRow).where(*waiting).values(state=CANCELLED).execution_options(synchronize_session=False)
    )
    return int(opening or 0)


_FIRE = select(FIRES).where(FIRES.c.id == bindparam("b_id"))
_RUNS = select(RUNS).where(RUNS.c.fire_id == bindparam("b_id")).order_by(RUNS.c.run_id)
_OUTCOMES = (
    select(FIRES.c.outcome, FIRES.c.slot)
    .where(FIRES.c.job == bindparam("b_job"), FIRES.c.state == FINISHED)
    .order_by(FIRES.c.slot.desc())
    .limit(100)
)
_OPEN = select(IncidentRow).where(
    IncidentRow.scope == "job", IncidentRow.subject == bindparam("b_job"), IncidentRow.open_key.is_not(None)
)


def route_outcome(session: Session, *, fire_id: int, at: datetime, route: Router) -> None:
    """Apply a finished fire's consequences to the job's incidents, in the caller's transaction."""
    session.flush()
    connection = session.connection()  # compiled statements, read as plain rows: this runs for every verdict
    fire_row = connection.execute(_FIRE, {"b_id": fire_id}).one()
    runs = [_run_record(run) for run in connection.execute(_RUNS, {"b_id": fire_id})]
    fire, job = dataclasses.replace(_fire(fire_row), runs=runs), fire_row.job
    outcomes = [
        (outcome, slot) for outcome, slot in connection.execute(_OUTCOMES, {"b_job": job}) if outcome is not None
    ]
    open_rows = {row.channel: row for row in session.scalars(_OPEN, {"b_job": job})}
    history = JobHistory(fire=fire, outcomes=outcomes, open={c: _incident(r) for c, r in open_rows.items()})
    for action in route(history):
        if action.action == "open" and action.channel not in open_rows:
            row = IncidentRow(
                scope="job",
                subject=job,
                channel=action.channel,
                open_key=_key("job", job, action.channel),
                opened_at=at,
                failing_since=action.failing_since,
                detail="",
            )
            session.add(row)
            session.flush()
            if action.notice is not None:
                row.notified_at = row.last_notified_at = at
                _enqueue(session, channel=action.channel, notice=action.notice, at=at, incident_id=row.id)
        elif action.action == "resolve" and (current := open_rows.get(action.channel)) is not None:
            current.open_key, current.resolved_at = None, at
            never_told = current.notified_at is None or _cancel_held(session, current.id) > 0
            if action.notice is not None and not never_told:
                _enqueue(session, channel=action.channel, notice=action.notice, at=at, incident_id=current.id)


class AlertingQueries(Sessions):
    """The store's incident and outbox queries (mixed into ``Store``)."""

    def open_incident(
        self,
        *,
        scope: str,
        subject: str,
        channels: list[str],
        at: datetime,
        detail: str,
        notice: Callable[[str], Notice] | None,
    ) -> list[str]:
        """Open an incident on each channel that has none open yet; returns the channels where it was opened."""
        opened: list[str] = []
        for channel in channels:
            try:
                with self._session(f"opening an incident for {subject}") as session:
                    row = IncidentRow(
                        scope=scope,
                        subject=subject,
                        channel=channel,
                        open_key=_key(scope, subject, channel),
                        opened_at=at,
                        detail=redact(detail),
                    )
                    session.add(row)
                    session.flush()
                    if notice is not None:
                        row.notified_at = row.last_notified_at = at
                        _enqueue(session, channel=channel, notice=notice(channel), at=at, incident_id=row.id)
                opened.append(channel)
            except IntegrityError:
                continue  # already open: people were told once
        return opened

    def resolve_incident(
        self, *, scope: str, subjects: list[str], at: datetime, notice: Callable[[str], Notice] | None
    ) -> list[str]:
        """Resolve the open incidents of these subjects on every channel; returns the channels resolved."""
        with self._session(f"resolving the incidents of {', '.join(subjects)}") as session:
            rows = list(
                session.scalars(
                    select(IncidentRow).where(
                        IncidentRow.scope == scope,
                        IncidentRow.subject.in_(subjects),
                        IncidentRow.open_key.is_not(None),
                    )
                )
            )
            told: set[str] = set()  # several subjects resolving at once make one message per channel
            for row in rows:
                row.open_key, row.resolved_at = None, at
                never_told = row.notified_at is None or _cancel_held(session, row.id) > 0
                if notice is not None and not never_told and row.channel not in told:
                    told.add(row.channel)
                    _enqueue(session, channel=row.channel, notice=notice(row.channel), at=at, incident_id=row.id)
            return [row.channel for row in rows]

    def open_incidents(self, *, scope: str | None = None) -> list[Incident]:
        """Every incident open now (budget notices excluded unless asked for)."""
        with self._session("listing open incidents") as session:
            query = select(IncidentRow).where(IncidentRow.open_key.is_not(None)).order_by(IncidentRow.id)
            scopes = [scope] if scope else ["job", "daemon"]  # listed, not "!= budget": ix_incidents_open serves it
            query = query.where(IncidentRow.scope.in_(scopes))
            return [_incident(row) for row in session.scalars(query)]

    def notify_incident(self, incident_id: int, *, notice: Notice, at: datetime, opening: bool) -> bool:
        """Enqueue a late opening notice or a reminder for an open incident; False when it is no longer open."""
        with self._session(f"notifying incident {incident_id}") as session:
            row = session.get(IncidentRow, incident_id)
            if row is None or row.open_key is None:
                return False
            if opening:
                row.notified_at = at
            row.last_notified_at = at
            _enqueue(session, channel=row.channel, notice=notice, at=at, incident_id=row.id)
            return True

    def enqueue(self, *, channel: str, notice: Notice, at: datetime) -> None:
        """A message outside any incident (a skipped slot, a test)."""
        with self._session(f"queueing an alert to {channel}") as session:
            _enqueue(session, channel=channel, notice=notice, at=at, incident_id=None)

    def claim_outbox(self, owner: str, *, now: datetime, until: datetime, limit: int = 100) -> list[OutboxItem]:
        """Take due messages to deliver, each under a lease so that one process sends it."""
        taken: list[OutboxItem] = []
        with self._session("reading the outbox") as session:
            ids = list(
                session.scalars(
                    select(OutboxRow.id)
                    .where(
                        OutboxRow.state == PENDING,
                        OutboxRow.next_attempt_at <= now,
                        or_(OutboxRow.lease_until.is_(None), OutboxRow.lease_until < now),
                    )
                    .order_by(OutboxRow.id)
                    .limit(limit)
                )
            )
        for item_id in ids:
            with self._session("taking an alert to deliver") as session:
                changed = session.execute(  # type: ignore[attr-defined]
                    update(OutboxRow)
                    .where(
                        OutboxRow.id == item_id,
                        OutboxRow.state == PENDING,
                        or_(OutboxRow.lease_until.is_(None), OutboxRow.lease_until < now),
                    )
                    .values(owner=owner, lease_until=until)
                    .execution_options(synchronize_session=False)
                ).rowcount
                if changed:
                    taken.append(_outbox_item(session.get_one(OutboxRow, item_id)))
        return taken

    def outbox_delivered(self, item_id: int, *, at: datetime) -> None:
        with self._session(f"marking alert {item_id} sent") as session:
            session.execute(
                update(OutboxRow)
                .where(OutboxRow.id == item_id)
                .values(state=SENT, sent_at=at, attempts=OutboxRow.attempts + 1, lease_until=None)
            )

    def outbox_failed(self, item_id: int, *, error: str, retry_at: datetime | None) -> None:
        """Record a failed attempt: try again at ``retry_at``, or give up (None)."""
        with self._session(f"recording a failed delivery of alert {item_id}") as session:
            session.execute(
                update(OutboxRow)
                .where(OutboxRow.id == item_id)
                .values(
                    state=PENDING if retry_at is not None else FAILED_DELIVERY,
                    last_error=redact(error)[:2000],
                    attempts=OutboxRow.attempts + 1,
                    lease_until=None,
                    **({"next_attempt_at": retry_at} if retry_at is not None else {}),
                )
            )

    def outbox(self, *, limit: int = 100) -> list[OutboxItem]:
        """The newest messages, whatever their state."""
        with self._session("listing the outbox") as session:
            rows = session.scalars(select(OutboxRow).order_by(OutboxRow.id.desc()).limit(limit))
            return [_outbox_item(row) for row in rows]

    def last_runs_created(self, job: str, *, within: int = 100) -> int | None:
        """The Cekura runs created by the newest answered fire among the job's last ``within`` (None: none).

        The budget's guess at a fire whose count only Cekura knows. Read by ``ix_fires_job_id``, and bounded: a
        job whose slots have been skipped all day does not walk its whole history back to its last answer.
        """
        with self._session("reading the runs a job's last fire created") as session:
            newest = select(FireRow.id).where(FireRow.job == job).order_by(FireRow.id.desc()).limit(within).subquery()
            query = (
                select(FireRow.runs_created)
                .where(FireRow.id.in_(select(newest.c.id)), FireRow.runs_created.is_not(None))
                .order_by(FireRow.id.desc())
                .limit(1)
            )
            return session.scalar(query)

    def runs_submitted_since(self, since: datetime, *, job: str | None = None) -> int:
        """Cekura runs requested by fires claimed since ``since`` (of one job, or all): what the budget counts."""
        with self._session("counting today's runs") as session:
            # What the answer listed where it is known; what the claim expected otherwise, and one run for a
            # fire whose count only Cekura knows (tags, a folder, a spec) before its answer is recorded.
            counted = func.coalesce(FireRow.runs_created, func.nullif(FireRow.runs_requested, 0), 1)
            query = select(func.coalesce(func.sum(counted), 0)).where(
                FireRow.fired_at >= since, FireRow.state != "skipped"
            )
            if job is not None:
                query = query.where(FireRow.job == job)
            return int(session.scalar(query) or 0)
