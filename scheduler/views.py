"""How a fire, a hold, an incident and an instant are shown: one definition for the command line and the web.

Instants are ISO 8601 in UTC with a ``Z`` (``2026-12-01T08:00:00Z``), as the alerts and ``/healthz`` write them;
``validate``'s local times keep their zone's offset. A view never shows a secret the caller asks it to ``redact``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for annotations alone: validate shows instants without loading SQLAlchemy
    from scheduler.store import Fire, Hold, Incident


def iso(instant: datetime | None) -> str | None:
    """An instant as ISO 8601 in UTC, ending in ``Z``; None stays None."""
    if instant is None:
        return None
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def outcome_word(fire: Fire) -> str:
    """A fire's outcome in a word or two: passed, failed, skipped (reason), in flight, claimed."""
    if fire.state == "skipped":
        return f"skipped ({fire.skip_reason})"
    if fire.outcome is None:
        return "in flight" if fire.state == "submitted" else "claimed"
    return fire.outcome


def _same(text: str) -> str:
    return text


def fire_as_dict(fire: Fire, *, runs: bool = False, redact: Callable[[str], str] = _same) -> dict[str, Any]:
    """A fire as the JSON API (and ``history --format json``) shows it; ``redact`` hides secrets in its errors."""
    data: dict[str, Any] = {
        "id": fire.id,
        "job": fire.job,
        "slot": iso(fire.slot),
        "trigger": fire.trigger,
        "state": fire.state,
        "outcome": fire.outcome,
        "summary": outcome_word(fire),
        "skip_reason": fire.skip_reason,
        "submission_name": fire.submission_name,
        "endpoint": fire.endpoint,
        "runs_requested": fire.runs_requested,
        "runs_created": fire.runs_created,
        "result_id": fire.result_id,
        "result_status": fire.result_status,
        "success_rate": fire.success_rate,
        "error": redact(fire.error) if fire.error is not None else None,
        "error_status_code": fire.error_status_code,
        "fired_at": iso(fire.fired_at),
        "submitted_at": iso(fire.submitted_at),
        "finished_at": iso(fire.finished_at),
    }
    if runs:
        data["failed_reasons"] = fire.failed_reasons
        data["runs"] = [
            {**dataclasses.asdict(run), "error_message": redact(run.error_message) if run.error_message else None}
            for run in fire.runs
        ]
    return data


def hold_as_dict(hold: Hold | None) -> dict[str, Any] | None:
    """A pause or silence as JSON: who, why, since and until (None: until resumed or ended)."""
    if hold is None:
        return None
    return {"by": hold.created_by, "reason": hold.reason, "since": iso(hold.starts_at), "until": iso(hold.until)}


def longest_holds(holds: Iterable[Hold]) -> dict[tuple[str, str], Hold]:
    """Each job's pause and silence in force, by (job, kind); of several, the one that lasts longest."""
    found: dict[tuple[str, str], Hold] = {}
    for hold in holds:
        key = (hold.job, hold.kind)
        held = found.get(key)
        if held is None or (held.until is not None and (hold.until is None or hold.until > held.until)):
            found[key] = hold
    return found


def incident_job(incident: Incident) -> str:
    """The job an open incident belongs to; "" for the daemon's own (and budget) incidents."""
    return incident.subject if incident.scope == "job" else ""


def incident_as_dict(incident: Incident, *, redact: Callable[[str], str] = _same) -> dict[str, Any]:
    """An open incident as JSON, its instants in ISO 8601 and its texts through ``redact``."""
    return {
        key: iso(value) if isinstance(value, datetime) else redact(value) if isinstance(value, str) else value
        for key, value in dataclasses.asdict(incident).items()
    }


__all__ = ["fire_as_dict", "hold_as_dict", "incident_as_dict", "incident_job", "iso", "longest_holds", "outcome_word"]
