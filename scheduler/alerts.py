"""Alerts: incidents with thresholds, and what an alert says (its delivery is ``scheduler.delivery``).

A job's failures open an incident per channel once ``failure_threshold`` outcomes in a row have failed; it
resolves after ``success_threshold`` passes. Each alert is first a structured payload (stored in the outbox,
so the same message survives a restart), rendered for its channel when it is delivered: Markdown for chat and
email, a JSON document for ``json://`` webhooks. Channels are logged by name, never by URL (URLs hold tokens).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import apprise

from scheduler.config import AlertChannel, Job, incident_policy
from scheduler.redaction import redact_any
from scheduler.store import FAILED, PASSED, Fire, IncidentAction, JobHistory, Notice, Router
from scheduler.verdicts import TIMED_OUT, RunState, failure_analysis, judge, run_problem

logger = logging.getLogger(__name__)

PREFIX = "[cekura-scheduler]"
DASHBOARD = "https://dashboard.cekura.ai"
_MAX_LISTED_RUNS = 10

# Payload events (the ``event`` field of the JSON document a json:// webhook receives).
OPENED, REMINDER, RESOLVED = "opened", "reminder", "resolved"
DAEMON_PROBLEM, DAEMON_RESOLVED = "daemon_problem", "daemon_resolved"
SKIPPED, BUDGET, TEST = "skipped", "budget", "test"


@dataclass(frozen=True)
class Alert:
    """One rendered message: a title and a body in a format Apprise understands."""

    kind: str
    title: str
    body: str
    body_format: str = apprise.NotifyFormat.MARKDOWN
    job: str | None = None


@dataclass(frozen=True)
class Delivery:
    """What a channel answered: accepted or not, and in words (Apprise's own account of a failure)."""

    ok: bool
    detail: str = ""


class AlertSender(Protocol):
    """Delivers a rendered alert to one channel, once."""

    async def send(self, channel: AlertChannel, alert: Alert) -> Delivery: ...


# -- payloads: the structured content of an alert ---------------------------------------------------------


def _iso(instant: datetime | None) -> str | None:
    return instant.isoformat().replace("+00:00", "Z") if instant is not None else None


def _local(instant: datetime, zone: tzinfo | None) -> str:
    zone = zone or ZoneInfo("UTC")
    return f"{instant.astimezone(zone):%Y-%m-%d %H:%M %Z}"


def outcome_payload(
    event: str, fire: Fire, *, job: Job | None, failing_since: datetime | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """Everything an on-call person needs about a job's outcome, as data."""
    zone = job.timezone if job is not None else None
    failed_runs = [run for run in fire.runs if run_problem(RunState(run.run_id, run.status, run.success))]
    project = job.project_id if job is not None else None
    return {
        "event": event,
        "job": fire.job,
        "slot": _iso(fire.slot),
        "slot_local": _local(fire.slot, zone),
        "timezone": str(zone or "UTC"),
        "outcome": fire.outcome,
        "result_id": fire.result_id,
        "result_status": fire.result_status,
        "success_rate": fire.success_rate,
        "error": fire.error,
        "headline": headline_of(fire),
        "runs_total": len(fire.runs),
        "failed_runs": [
            {
                "run_id": run.run_id,
                "scenario": run.scenario,
                "scenario_name": run.scenario_name,
                "status": run.status,
                "problem": run_problem(RunState(run.run_id, run.status, run.success)),
                "error_message": run.error_message,
                "failed_metrics": run.failed_metrics,
            }
            for run in failed_runs
        ],
        "failure_analysis": failure_analysis(fire.failed_reasons),
        "failing_since": _iso(failing_since),
        "failing_for": str(now - failing_since).split(".")[0] if now and failing_since else None,
        "dashboard_url": f"{DASHBOARD}/{project}/results/{fire.result_id}" if project and fire.result_id else None,
    }


def headline_of(fire: Fire) -> str | None:
    """What went wrong with a failed fire, in a few words, by the same rule that failed it."""
    if fire.outcome != FAILED:
        return None
    if fire.result_id is None:
        return "submission failed"
    if (fire.error or "").startswith(TIMED_OUT):
        return "result timeout"
    verdict = judge(fire.result_status, [RunState(run.run_id, run.status, run.success) for run in fire.runs])
    if verdict is not None and verdict.headline is not None:
        return verdict.headline
    return f"result {fire.result_status or 'failed'}"


def daemon_payload(event: str, problem: str, detail: str) -> dict[str, Any]:
    """A problem of the scheduler itself (API key refused, database unreachable, config invalid...)."""
    return {"event": event, "problem": problem, "detail": detail}


def notice_payload(
    event: str, *, job: str, slot: datetime, zone: tzinfo | None, reason: str, detail: str
) -> dict[str, Any]:
    """A slot that will not run (lost, over budget), said once."""
    return {
        "event": event,
        "job": job,
        "slot": _iso(slot),
        "slot_local": _local(slot, zone),
        "reason": reason,
        "detail": detail,
    }


# -- rendering ------------------------------------------------------------------------------------------------


def title_of(payload: Mapping[str, Any]) -> str:
    """The one-line title of an alert."""
    event, job = payload.get("event"), payload.get("job")
    if event in (OPENED, REMINDER):
        what = payload.get("headline") or (
            "submission failed" if payload.get("result_id") is None else f"result {payload.get('result_status')}"
        )
        if event == REMINDER:
            return f"{PREFIX} REMINDER {job} still failing (for {payload.get('failing_for') or '?'}): {what}"
        return f"{PREFIX} FAILED {job}: {what}"
    if event == RESOLVED:
        return f"{PREFIX} RECOVERED {job}"
    if event == DAEMON_PROBLEM:
        return f"{PREFIX} {payload['problem']}"
    if event == DAEMON_RESOLVED:
        return f"{PREFIX} RESOLVED: {payload['problem']}"
    if event in (SKIPPED, BUDGET):
        return f"{PREFIX} SKIPPED {job}: {payload.get('reason')}"
    return f"{PREFIX} test message"


def _markdown(payload: Mapping[str, Any]) -> str:
    event = payload.get("event")
    if event in (DAEMON_PROBLEM, DAEMON_RESOLVED):
        return str(payload.get("detail") or "")
    if event == TEST:
        return "This is a test message from cekura-scheduler: this channel works."
    lines = [f"**Job:** {payload.get('job')}", f"**Slot:** {payload.get('slot_local')} ({payload.get('slot')})"]
    if event in (SKIPPED, BUDGET):
        return "\n".join([*lines, f"**Reason:** {payload.get('reason')}: {payload.get('detail')}"])
    if payload.get("result_id") is not None:
        lines.append(f"**Cekura result:** {payload['result_id']} (status {payload.get('result_status') or '?'})")
    if payload.get("success_rate") is not None:
        lines.append(f"**Success rate:** {payload['success_rate']:g}")
    if payload.get("failing_since") and event != RESOLVED:
        lines.append(f"**Failing since:** {payload['failing_since']} ({payload.get('failing_for')})")
    if payload.get("error"):
        lines.append(f"**Reason:** {payload['error']}")
    failed = payload.get("failed_runs") or []
    if failed and event != RESOLVED:
        lines.append(f"**Failed runs ({len(failed)} of {payload.get('runs_total')}):**")
        for run in failed[:_MAX_LISTED_RUNS]:
            label = run.get("scenario_name") or f"scenario {run.get('scenario')}"
            detail = f"- {label}: {run.get('problem') or 'run ' + str(run.get('run_id'))}"
            if run.get("error_message"):
                detail += f": {run['error_message']}"
            lines.append(detail)
            for metric in run.get("failed_metrics") or []:
                lines.append(f"    - {metric.get('name', 'metric')}: {metric.get('explanation') or 'no explanation'}")
        if len(failed) > _MAX_LISTED_RUNS:
            lines.append(f"- ... and {len(failed) - _MAX_LISTED_RUNS} more")
    analysis = [item for item in payload.get("failure_analysis") or [] if item]
    if analysis and event != RESOLVED:
        lines.append("**Cekura's failure analysis:**")
        lines.extend(f"- {item}" for item in analysis[:5])
    if payload.get("dashboard_url"):
        lines.append(f"[Open the result in Cekura]({payload['dashboard_url']})")
    return "\n".join(lines)


def render(payload: Mapping[str, Any], channel: AlertChannel) -> Alert:
    """The alert as one channel gets it: a JSON document for json:// webhooks, Markdown elsewhere."""
    payload = redact_any(dict(payload))
    title = title_of(payload)
    scheme = channel.url.get_secret_value().split("://", 1)[0].lower()
    kind = str(payload.get("event"))
    if scheme in ("json", "jsons"):
        document = json.dumps({"title": title, **payload}, default=str)
        return Alert(
            kind=kind, title=title, body=document, body_format=apprise.NotifyFormat.TEXT, job=payload.get("job")
        )
    return Alert(kind=kind, title=title, body=_markdown(payload), job=payload.get("job"))


# -- incidents: when a channel hears about a job ------------------------------------------------------------


def job_router(*, job: Job, channels: Mapping[str, AlertChannel], now: datetime, held_until: datetime | None) -> Router:
    """How one finished fire moves the job's incidents, channel by channel (applied inside the store's transaction).

    ``held_until`` is the end of a mute (maintenance window or silence): messages wait in the outbox until then,
    and are cancelled if the incident resolves first.
    """

    def route(history: JobHistory) -> list[IncidentAction]:
        if not history.outcomes:
            return []
        fire = history.fire
        latest = history.outcomes[0][0]
        streak = 0
        for outcome, _ in history.outcomes:
            if outcome != latest:
                break
            streak += 1
        failing_since = history.outcomes[streak - 1][1] if latest == FAILED else None
        deliver_at = held_until or now
        actions: list[IncidentAction] = []
        for name in job.alerts:
            if name not in channels:
                continue
            policy = incident_policy(job, channels[name])
            is_open = name in history.open
            if latest == FAILED and not is_open and streak >= policy.failure_threshold:
                payload = outcome_payload(OPENED, fire, job=job, failing_since=failing_since, now=now)
                actions.append(IncidentAction("open", name, Notice(OPENED, payload, deliver_at), failing_since))
            elif latest == PASSED and is_open and streak >= policy.success_threshold:
                since = history.open[name].failing_since
                payload = outcome_payload(RESOLVED, fire, job=job, failing_since=since, now=now)
                notice = Notice(RESOLVED, payload, deliver_at) if policy.send_resolved else None
                actions.append(IncidentAction("resolve", name, notice))
        return actions

    return route
