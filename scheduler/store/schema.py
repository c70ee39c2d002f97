"""The database tables (SQLAlchemy 2 models) and the plain records the store hands out."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    bindparam,
    delete,
    insert,
)
from sqlalchemy.engine import Row
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

# Fire states. A fire moves claimed -> submitted -> finished, or claimed -> finished (submission failed),
# or is written as skipped. Only finished fires carry an outcome.
CLAIMED, SUBMITTED, FINISHED, SKIPPED = "claimed", "submitted", "finished", "skipped"


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on every backend (SQLite keeps no offset, so it stores naive UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; pass an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class FireRow(Base):
    __tablename__ = "fires"
    __table_args__ = (
        UniqueConstraint("job", "slot", name="uq_fires_job_slot"),
        Index("ix_fires_job_id", "job", "id"),
        Index("ix_fires_state_lease", "state", "lease_until"),  # also the fires in a state (in flight)
        Index("ix_fires_result_id", "result_id"),  # a webhook names its result
        # The day's runs of a job and of all jobs (max_runs_per_day), and pruning by age: ranges of fired_at.
        Index("ix_fires_job_fired_at", "job", "fired_at"),
        Index("ix_fires_fired_at", "fired_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job: Mapped[str] = mapped_column(String(100))
    slot: Mapped[datetime] = mapped_column(UTCDateTime())
    trigger: Mapped[str] = mapped_column(String(16))
    fired_at: Mapped[datetime] = mapped_column(UTCDateTime())
    state: Mapped[str] = mapped_column(String(16))
    submission_name: Mapped[str] = mapped_column(String(160))
    endpoint: Mapped[str] = mapped_column(String(64))
    runs_requested: Mapped[int] = mapped_column(Integer)  # 0 when only Cekura knows (tags, folder, spec)
    runs_created: Mapped[int | None] = mapped_column(Integer, nullable=True)  # as Cekura's answer listed them
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    poll_deadline: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    result_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    result_status: Mapped[str | None] = mapped_column(String(32), nullable=True)
    success_rate: Mapped[float | None] = mapped_column(Float, nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(16), nullable=True)
    skip_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    failed_reasons: Mapped[str | None] = mapped_column(Text, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The process that works on an unfinished fire (submits it or follows its result), until lease_until.
    owner: Mapped[str | None] = mapped_column(String(100), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    runs: Mapped[list[RunRow]] = relationship(
        back_populates="fire", cascade="all, delete-orphan", order_by="RunRow.run_id"
    )


class RunRow(Base):
    __tablename__ = "runs"
    __table_args__ = (UniqueConstraint("fire_id", "run_id", name="uq_runs_fire_run"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    fire_id: Mapped[int] = mapped_column(ForeignKey("fires.id", ondelete="CASCADE"), index=True)
    run_id: Mapped[int] = mapped_column(BigInteger)
    scenario: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    scenario_name: Mapped[str | None] = mapped_column(String(300), nullable=True)
    status: Mapped[str | None] = mapped_column(String(32), nullable=True)
    success: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    duration: Mapped[str | None] = mapped_column(String(16), nullable=True)
    failed_metrics: Mapped[str | None] = mapped_column(Text, nullable=True)

    fire: Mapped[FireRow] = relationship(back_populates="runs")


class ConfigChangeRow(Base):
    __tablename__ = "config_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    path: Mapped[str] = mapped_column(String(500))
    digest: Mapped[str] = mapped_column(String(64))
    valid: Mapped[bool] = mapped_column(Boolean)
    summary: Mapped[str] = mapped_column(Text)


class HoldRow(Base):
    __tablename__ = "holds"
    __table_args__ = (Index("ix_holds_job_kind", "job", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(16))  # pause: slots are skipped; silence: alerts are held
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime())
    until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_by: Mapped[str] = mapped_column(String(100))
    reason: Mapped[str] = mapped_column(Text)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


@dataclass(frozen=True)
class Hold:
    """A pause (no fires) or a silence (no alerts) of one job, from a person, with who and why."""

    id: int
    job: str
    kind: str
    starts_at: datetime
    until: datetime | None
    created_by: str
    reason: str


@dataclass(frozen=True)
class ConfigChange:
    """One version of jobs.toml the daemon saw: applied (with what changed) or rejected (with its errors)."""

    id: int
    at: datetime
    path: str
    digest: str
    valid: bool
    summary: str


@dataclass(frozen=True)
class RunRecord:
    """One run of a result, as recorded."""

    run_id: int
    scenario: int | None = None
    scenario_name: str | None = None
    status: str | None = None
    success: bool | None = None
    error_message: str | None = None
    duration: str | None = None
    failed_metrics: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Fire:
    """One slot of one job and everything recorded about it."""

    id: int
    job: str
    slot: datetime
    trigger: str
    fired_at: datetime
    state: str
    submission_name: str
    endpoint: str
    runs_requested: int
    runs_created: int | None
    submitted_at: datetime | None
    poll_deadline: datetime | None
    result_id: int | None
    result_status: str | None
    success_rate: float | None
    outcome: str | None
    skip_reason: str | None
    error: str | None
    error_status_code: int | None
    failed_reasons: Any  # Cekura's own analysis of the failures, as it sent it (any JSON)
    finished_at: datetime | None
    owner: str | None = None
    lease_until: datetime | None = None
    runs: list[RunRecord] = field(default_factory=list)


def _run_record(row: RunRow | Row[Any]) -> RunRecord:
    return RunRecord(
        run_id=row.run_id,
        scenario=row.scenario,
        scenario_name=row.scenario_name,
        status=row.status,
        success=row.success,
        error_message=row.error_message,
        duration=row.duration,
        failed_metrics=json.loads(row.failed_metrics) if row.failed_metrics else [],
    )


def _fire(row: FireRow | Row[Any], *, with_runs: bool = False) -> Fire:
    return Fire(
        id=row.id,
        job=row.job,
        slot=row.slot,
        trigger=row.trigger,
        fired_at=row.fired_at,
        state=row.state,
        submission_name=row.submission_name,
        endpoint=row.endpoint,
        runs_requested=row.runs_requested,
        runs_created=row.runs_created,
        submitted_at=row.submitted_at,
        poll_deadline=row.poll_deadline,
        result_id=row.result_id,
        result_status=row.result_status,
        success_rate=row.success_rate,
        outcome=row.outcome,
        skip_reason=row.skip_reason,
        error=row.error,
        error_status_code=row.error_status_code,
        failed_reasons=json.loads(row.failed_reasons) if row.failed_reasons else None,
        finished_at=row.finished_at,
        owner=row.owner,
        lease_until=row.lease_until,
        runs=[_run_record(run) for run in row.runs] if with_runs else [],
    )


FIRES, RUNS = cast(Table, FireRow.__table__), cast(Table, RunRow.__table__)  # for Core statements
# Compiled once: every submission and verdict replaces the runs of its fire.
_DELETE_RUNS = delete(RUNS).where(RUNS.c.fire_id.in_(bindparam("b_ids", expanding=True)))
_INSERT_RUN = insert(RUNS)


def _replace_runs(session: Session, runs_by_fire: Mapping[int, Sequence[RunRecord]]) -> None:
    """Replace the runs recorded for each fire (one DELETE, one INSERT sent with every run)."""
    connection = session.connection()  # Core statements: no ORM bookkeeping on the hot path
    connection.execute(_DELETE_RUNS, {"b_ids": list(runs_by_fire)})
    values = [
        {
            "fire_id": fire_id,
            "run_id": run.run_id,
            "scenario": run.scenario,
            "scenario_name": run.scenario_name,
            "status": run.status,
            "success": run.success,
            "error_message": run.error_message,
            "duration": run.duration,
            "failed_metrics": json.dumps(run.failed_metrics) if run.failed_metrics else None,
        }
        for fire_id, records in runs_by_fire.items()
        for run in records
    ]
    if values:
        connection.execute(_INSERT_RUN, values)
