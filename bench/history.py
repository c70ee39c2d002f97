"""A database with a long history: fires (and their runs and alerts) shaped as the daemon writes them, in bulk.

``fill`` brings a database to the newest schema and writes ``fires`` fires spread over ``jobs`` jobs, oldest
first, so that ids grow with time as they do in a running daemon: every job fires once per ``every``. Most fires
passed with two runs each; one in fifty was skipped; one in twenty failed, with its incident (resolved by the
job's next fire) and both alerts delivered. Each job's newest slot is the one just before ``end``. Nothing is left
in flight.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select

from scheduler.schedules import submission_name
from scheduler.store import IncidentRow, OutboxRow, create_db_engine, upgrade_database
from scheduler.store.schema import FIRES, RUNS

CHUNK = 20_000  # rows per INSERT batch: one transaction each, so a big fill does not hold one huge one
RUNS_PER_FIRE = 2


def fill(
    url: str,
    *,
    jobs: Sequence[str],
    fires: int,
    every: timedelta = timedelta(minutes=5),
    end: datetime | None = None,
) -> float:
    """Write ``fires`` fires of ``jobs`` (round robin, one slot per ``every`` each) ending before ``end``; returns
    the seconds it took. The database is upgraded to the newest schema first; rows already there are kept."""
    began = time.monotonic()
    end = end or datetime.now(UTC).replace(microsecond=0)
    per_job = -(-fires // len(jobs))  # slots per job, rounded up
    first = end - per_job * every
    engine = create_db_engine(url)
    try:
        upgrade_database(engine)
        with engine.connect() as connection:
            next_id = (connection.scalar(select(func.max(FIRES.c.id))) or 0) + 1
        for batch in _chunks(_fires(jobs, fires, first, every, next_id), CHUNK):
            runs = [run for fire in batch for run in _runs(fire)]
            failed = [fire for fire in batch if fire["outcome"] == "failed"]
            with engine.begin() as connection:
                connection.execute(insert(FIRES), batch)
                connection.execute(insert(RUNS), runs)
                if failed:
                    connection.execute(insert(IncidentRow), [_incident(fire, every) for fire in failed])
                    alerts = [_alert(fire, kind, every) for fire in failed for kind in ("opened", "resolved")]
                    connection.execute(insert(OutboxRow), alerts)
        if engine.dialect.name == "postgresql":
            with engine.connect() as connection:
                for table in ("fires", "incidents"):  # their ids were given: move the sequences past them
                    connection.exec_driver_sql(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"
                    )
                connection.exec_driver_sql("ANALYZE")  # what autovacuum would do soon after such a load
                connection.commit()
    finally:
        engine.dispose()
    return time.monotonic() - began


def _fires(
    jobs: Sequence[str], count: int, first: datetime, every: timedelta, next_id: int
) -> Iterator[dict[str, Any]]:
    for index in range(count):
        job = jobs[index % len(jobs)]
        slot = first + (index // len(jobs)) * every
        fired_at = slot + timedelta(milliseconds=40)
        kind = index % 100
        base = {
            "id": next_id + index,
            "job": job,
            "slot": slot,
            "trigger": "schedule",
            "fired_at": fired_at,
            "submission_name": submission_name(job, slot),
            "endpoint": "run_scenarios",
            "runs_requested": RUNS_PER_FIRE,
            "owner": None,
            "lease_until": None,
        }
        if kind in (7, 57):  # skipped: overlapping, or paused
            yield (
                base
                | _empty()
                | {
                    "state": "skipped",
                    "skip_reason": "overlap" if kind == 7 else "paused",
                    "finished_at": fired_at,
                }
            )
            continue
        failed = kind % 20 == 3
        yield (
            base
            | _empty()
            | {
                "state": "finished",
                "runs_created": RUNS_PER_FIRE,
                "submitted_at": fired_at + timedelta(milliseconds=300),
                "poll_deadline": slot + timedelta(hours=1),
                "result_id": 10_000_000 + next_id + index,
                "result_status": "completed",
                "success_rate": 50.0 if failed else 100.0,
                "outcome": "failed" if failed else "passed",
                "failed_reasons": '["the agent did not confirm the booking"]' if failed else None,
                "finished_at": slot + timedelta(seconds=95),
            }
        )


def _empty() -> dict[str, Any]:
    names = (
        "runs_created submitted_at poll_deadline result_id result_status success_rate outcome skip_reason "
        "error error_status_code failed_reasons finished_at"
    )
    return dict.fromkeys(names.split())


def _runs(fire: dict[str, Any]) -> list[dict[str, Any]]:
    if fire["state"] != "finished":
        return []
    failed = fire["outcome"] == "failed"
    return [
        {
            "fire_id": fire["id"],
            "run_id": fire["result_id"] * 10 + number,
            "scenario": 100 + number,
            "scenario_name": f"scenario {number}",
            "status": "completed",
            "success": not (failed and number == 0),
            "error_message": None,
            "duration": "00:01:12",
            "failed_metrics": '[{"name": "booking confirmed", "score": 0}]' if failed and number == 0 else None,
        }
        for number in range(RUNS_PER_FIRE)
    ]


def _incident(fire: dict[str, Any], every: timedelta) -> dict[str, Any]:
    """The incident a failure opened, resolved by the job's next fire (which passed)."""
    return {
        "id": fire["id"],
        "scope": "job",
        "subject": fire["job"],
        "channel": "ops",
        "open_key": None,
        "opened_at": fire["finished_at"],
        "failing_since": fire["slot"],
        "resolved_at": fire["finished_at"] + every,
        "notified_at": fire["finished_at"],
        "last_notified_at": fire["finished_at"],
        "detail": "",
    }


def _alert(fire: dict[str, Any], kind: str, every: timedelta) -> dict[str, Any]:
    """The message of an incident's opening or resolution, delivered."""
    at = fire["finished_at"] + (every if kind == "resolved" else timedelta(0))
    return {
        "created_at": at,
        "channel": "ops",
        "kind": kind,
        "incident_id": fire["id"],
        "payload": json.dumps({"job": fire["job"], "outcome": "failed" if kind == "opened" else "passed"}),
        "state": "sent",
        "attempts": 1,
        "next_attempt_at": at,
        "last_error": None,
        "sent_at": at,
        "owner": None,
        "lease_until": None,
    }


def _chunks(rows: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
