"""Alerts: what a failed, recovered or stuck check tells a person, and its delivery through Apprise.

Messages are built from what the store recorded (the fire and its runs), so the same text comes out after a
restart. Delivery retries with backoff; a channel that fails is logged by its name, never by its URL (Apprise
URLs hold tokens).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any, Protocol

import apprise

from scheduler.config import AlertChannel
from scheduler.store import Fire

logger = logging.getLogger(__name__)

FAILED, RECOVERED, DAEMON = "failed", "recovered", "daemon"
_MAX_LISTED_RUNS = 10


@dataclass(frozen=True)
class Alert:
    """One message for people: a kind (failed, recovered, daemon), a title and a plain-text body."""

    kind: str
    title: str
    body: str
    job: str | None = None


class AlertSender(Protocol):
    """Delivers an alert to one channel; returns whether the channel accepted it."""

    async def send(self, channel: AlertChannel, alert: Alert) -> bool: ...


def _slot_text(fire: Fire, zone: tzinfo | None) -> str:
    utc = fire.slot.strftime("%Y-%m-%d %H:%M:%S UTC")
    if zone is None or str(zone) == "UTC":
        return utc
    return f"{fire.slot.astimezone(zone):%Y-%m-%d %H:%M:%S %Z} ({utc})"


def failure_alert(fire: Fire, *, zone: tzinfo | None = None) -> Alert:
    """The alert for a failed outcome: which job and slot, what failed and why, and the result id."""
    lines = [f"Job: {fire.job}", f"Slot: {_slot_text(fire, zone)}"]
    if fire.result_id is not None:
        lines.append(f"Cekura result: {fire.result_id} (status {fire.result_status or 'unknown'})")
    if fire.success_rate is not None:
        lines.append(f"Success rate: {fire.success_rate:g}")
    if fire.error:
        lines.append(f"Error: {fire.error}")
    failed_runs = [run for run in fire.runs if run.success is False or run.status in ("failed", "timeout")]
    if failed_runs:
        lines.append(f"Failed runs ({len(failed_runs)} of {len(fire.runs)}):")
        for run in failed_runs[:_MAX_LISTED_RUNS]:
            label = run.scenario_name or f"scenario {run.scenario}"
            detail = f"  - {label} (run {run.run_id}, {run.status})"
            if run.error_message:
                detail += f": {run.error_message}"
            lines.append(detail)
            for metric in run.failed_metrics:
                explanation = metric.get("explanation") or "no explanation"
                lines.append(f"      {metric.get('name', 'metric')}: {explanation}")
        if len(failed_runs) > _MAX_LISTED_RUNS:
            lines.append(f"  ... and {len(failed_runs) - _MAX_LISTED_RUNS} more")
    issues = (fire.failed_reasons or {}).get("issues") or []
    if issues:
        lines.append("Cekura's failure analysis:")
        for issue in issues[:5]:
            if isinstance(issue, dict):
                lines.append(f"  - {issue.get('description', '?')} ({issue.get('affected_count', '?')} runs)")
    if fire.result_id is None:
        what = "submission failed"
    elif fire.result_status == "completed" and failed_runs:
        what = f"{len(failed_runs)} of {len(fire.runs)} runs failed"
    else:
        what = f"result {fire.result_status or 'failed'}"
    return Alert(
        kind=FAILED, title=f"[cekura-scheduler] FAILED {fire.job}: {what}", body="\n".join(lines), job=fire.job
    )


def recovery_alert(fire: Fire, *, zone: tzinfo | None = None) -> Alert:
    """The alert for a job that passes again after failing."""
    lines = [f"Job: {fire.job}", f"Slot: {_slot_text(fire, zone)}", f"Cekura result: {fire.result_id} passed"]
    if fire.success_rate is not None:
        lines.append(f"Success rate: {fire.success_rate:g}")
    return Alert(kind=RECOVERED, title=f"[cekura-scheduler] RECOVERED {fire.job}", body="\n".join(lines), job=fire.job)


def skipped_alert(fire: Fire, *, reason: str, detail: str, zone: tzinfo | None = None) -> Alert:
    """The alert for a slot that will never run (e.g. its submission was lost before it reached Cekura)."""
    body = "\n".join([f"Job: {fire.job}", f"Slot: {_slot_text(fire, zone)}", f"Reason: {reason}: {detail}"])
    return Alert(kind=FAILED, title=f"[cekura-scheduler] SKIPPED {fire.job}: {reason}", body=body, job=fire.job)


def daemon_alert(problem: str, detail: str) -> Alert:
    """An alert about the scheduler itself (API key refused, database unreachable, ...)."""
    return Alert(kind=DAEMON, title=f"[cekura-scheduler] {problem}", body=detail)


_NOTIFY_TYPES = {
    FAILED: apprise.NotifyType.FAILURE,
    RECOVERED: apprise.NotifyType.SUCCESS,
    DAEMON: apprise.NotifyType.WARNING,
}
_console_registered = False


def _register_console_target() -> None:
    """Teach Apprise a ``console://`` target that writes alerts to the log (used by the demo)."""
    global _console_registered
    if _console_registered:
        return
    from apprise.decorators import notify

    @notify(on="console", name="Console (log)")  # type: ignore[untyped-decorator,no-untyped-call]
    def _console(body: str, title: str, notify_type: str, *args: Any, **kwargs: Any) -> bool:
        logger.warning("ALERT %s\n%s", title, body, extra={"alert": notify_type})
        return True

    _console_registered = True


class AppriseSender:
    """Sends alerts through Apprise, with retries and backoff."""

    def __init__(self, *, attempts: int = 3, backoff: float = 2.0) -> None:
        _register_console_target()
        self._attempts = attempts
        self._backoff = backoff

    async def send(self, channel: AlertChannel, alert: Alert) -> bool:
        target = apprise.Apprise()
        if not target.add(channel.url.get_secret_value()):
            logger.error(
                "alert channel %r has an URL Apprise does not understand; alert %r not sent", channel.name, alert.title
            )
            return False
        notify_type = _NOTIFY_TYPES.get(alert.kind, apprise.NotifyType.INFO)
        for attempt in range(1, self._attempts + 1):
            if await target.async_notify(body=alert.body, title=alert.title, notify_type=notify_type):
                logger.info("alert %r sent to %s", alert.title, channel.name, extra={"job": alert.job})
                return True
            if attempt < self._attempts:
                await asyncio.sleep(self._backoff * 2 ** (attempt - 1) * (0.5 + random.random()))
        logger.error(
            "alert %r could not be delivered to %s after %d attempts",
            alert.title,
            channel.name,
            self._attempts,
            extra={"job": alert.job},
        )
        return False


async def send_to_all(sender: AlertSender, channels: Iterable[AlertChannel], alert: Alert) -> list[bool]:
    """Deliver to every channel at once, so a slow or failing channel does not hold up the others."""
    return list(await asyncio.gather(*(sender.send(channel, alert) for channel in channels)))
