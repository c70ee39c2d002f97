"""A fire's life: claimed before anything is sent, then submitted, finished, or skipped; each change conditional.

Every write here is decided by the database: the unique (job, slot) constraint picks the one claim of a slot,
and each state change applies only to a fire still in the state it expects, so of two processes doing the same
thing one learns that it lost.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import String, Update, bindparam, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from scheduler.redaction import redact
from scheduler.store.alerting import Router, route_outcome
from scheduler.store.database import Sessions
from scheduler.store.schema import (
    CLAIMED,
    FINISHED,
    FIRES,
    SKIPPED,
    SUBMITTED,
    Fire,
    FireRow,
    RunRecord,
    _fire,
    _replace_runs,
)


def _transition(*states: str, **values: Any) -> Update:
    """``UPDATE fires SET values WHERE id = :b_id AND state IN states``, built once: every batch of fires is sent
    through the same compiled statement, each fire with its own parameters."""
    # A plain OR of equalities, not IN: an IN list is an expanding parameter, which executemany cannot send.
    in_state = or_(*(FIRES.c.state == state for state in states))
    return update(FIRES).where(FIRES.c.id == bindparam("b_id"), in_state).values(**values)


_RECORD_SUBMITTED = _transition(
    CLAIMED,
    state=SUBMITTED,
    result_id=bindparam("b_result_id"),
    result_status=bindparam("b_status"),
    submitted_at=bindparam("b_at"),
    poll_deadline=bindparam("b_deadline"),
    runs_created=bindparam("b_runs_created"),
)
_FINISH = _transition(
    CLAIMED,
    SUBMITTED,
    state=FINISHED,
    outcome=bindparam("b_outcome"),
    finished_at=bindparam("b_at"),
    result_status=func.coalesce(bindparam("b_status", type_=String), FIRES.c.result_status),
    success_rate=bindparam("b_rate"),
    error=bindparam("b_error"),
    error_status_code=bindparam("b_code"),
    failed_reasons=bindparam("b_reasons"),
)
_RECORD_POLL = _transition(SUBMITTED, result_status=bindparam("b_status"))


def _finish(
    session: Session,
    *,
    fire_id: int,
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
    params = {
        "b_id": fire_id,
        "b_outcome": outcome,
        "b_at": at,
        "b_status": result_status,
        "b_rate": success_rate,
        "b_error": _redacted(error),
        "b_code": error_status_code,
        "b_reasons": None if failed_reasons in (None, "", [], {}) else json.dumps(failed_reasons),
    }
    changed = session.connection().execute(_FINISH, params).rowcount
    if changed and runs is not None:
        _replace_runs(session, {fire_id: runs})
    if changed and route is not None:
        # The incidents and their messages are written in the same transaction as the outcome.
        route_outcome(session, fire_id=fire_id, at=at, route=route)
    return bool(changed)


def _redacted(text: str | None) -> str | None:
    return redact(text) if text is not None else None


class FireQueries(Sessions):
    """Claiming slots and recording what became of them (mixed into ``Store``)."""

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
        slot was already taken (the unique constraint decides)."""
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
            error=_redacted(detail),
            finished_at=fired_at,
        )
        try:
            with self._session(f"recording {submission_name} as skipped") as session:
                session.add(row)
                session.flush()
                return _fire(row)
        except IntegrityError:
            return None

    def record_submitted(
        self,
        fire_id: int,
        *,
        result_id: int,
        status: str,
        runs: Sequence[RunRecord],
        at: datetime,
        poll_deadline: datetime,
        runs_created: int | None = None,
    ) -> bool:
        """Record Cekura's answer to a claimed fire: the result id and the runs it started (``runs_created``: how
        many its answer listed; None when it was adopted from a search hit, which does not say).

        False when the fire is no longer waiting for an answer (another process settled it).
        """
        answer = {
            "fire_id": fire_id,
            "result_id": result_id,
            "status": status,
            "runs": runs,
            "at": at,
            "poll_deadline": poll_deadline,
            "runs_created": runs_created,
        }
        return self.record_submitted_many([answer])[0]

    def record_submitted_many(self, answers: Sequence[dict[str, Any]]) -> list[bool]:
        """``record_submitted`` for many fires in one transaction (each dict holds its arguments).

        One UPDATE sent with every answer's parameters (executemany); only when it changed fewer rows than there
        are answers (another process settled some meanwhile) does a read say which ones this call recorded.
        """
        if not answers:
            return []
        params = [
            {
                "b_id": answer["fire_id"],
                "b_result_id": answer["result_id"],
                "b_status": answer["status"],
                "b_at": answer["at"],
                "b_deadline": answer["poll_deadline"],
                "b_runs_created": answer.get("runs_created"),
            }
            for answer in answers
        ]
        with self._session(f"recording {len(answers)} submissions") as session:
            connection = session.connection()
            changed = connection.execute(_RECORD_SUBMITTED, params).rowcount
            if changed == len(answers):
                done = [True] * len(answers)
            else:
                mine = {
                    (fire_id, result_id, submitted_at)
                    for fire_id, result_id, submitted_at in connection.execute(
                        select(FIRES.c.id, FIRES.c.result_id, FIRES.c.submitted_at).where(
                            FIRES.c.id.in_([answer["fire_id"] for answer in answers]), FIRES.c.state == SUBMITTED
                        )
                    )
                }
                done = [(a["fire_id"], a["result_id"], a["at"]) in mine for a in answers]
            recorded = {answer["fire_id"]: answer["runs"] for answer, ok in zip(answers, done, strict=True) if ok}
            if recorded:
                _replace_runs(session, recorded)
            return done

    def record_poll(self, fire_id: int, *, result_status: str) -> None:
        """Remember the last status seen while polling."""
        self.record_polls([{"fire_id": fire_id, "result_status": result_status}])

    def record_polls(self, polls: Sequence[dict[str, Any]]) -> list[None]:
        """``record_poll`` for many fires in one transaction (each dict holds its arguments): one UPDATE."""
        if polls:
            params = [{"b_id": poll["fire_id"], "b_status": poll["result_status"]} for poll in polls]
            with self._session(f"recording the status of {len(polls)} results") as session:
                session.connection().execute(_RECORD_POLL, params)
        return [None] * len(polls)

    def finish(self, fire_id: int, **recorded: Any) -> bool:
        """Record a fire's outcome. True when this call finished it; False when it was already finished.

        ``recorded``: ``outcome`` and ``at``, and what is known of ``result_status``, ``success_rate``, ``runs``,
        ``error``, ``error_status_code``, ``failed_reasons``, and the ``route`` of its alerts. The update is
        conditional, so when two processes follow the same result only one of them finishes it (and only that
        one alerts).
        """
        return self.finish_many([{"fire_id": fire_id, **recorded}])[0]

    def finish_many(self, outcomes: Sequence[dict[str, Any]]) -> list[bool]:
        """``finish`` for many fires in one transaction (each dict holds its arguments, ``fire_id`` first).

        Each is applied in turn, so two outcomes of one job in the same batch route its incidents in order.
        """
        with self._session(f"recording {len(outcomes)} outcomes") as session:
            return [_finish(session, **outcome) for outcome in outcomes]

    def skip_claimed(self, fire_id: int, *, reason: str, at: datetime, error: str | None = None) -> bool:
        """Turn a claim that will never be submitted into a skipped slot; False when it was settled elsewhere."""
        with self._session(f"recording fire {fire_id} as skipped") as session:
            changed = session.execute(  # type: ignore[attr-defined]
                update(FireRow)
                .where(FireRow.id == fire_id, FireRow.state == CLAIMED)
                .values(
                    state=SKIPPED,
                    skip_reason=reason,
                    error=_redacted(error),
                    finished_at=at,
                    owner=None,
                    lease_until=None,
                )
                .execution_options(synchronize_session=False)
            ).rowcount
            return bool(changed)
