"""Delivering alerts: Apprise for every channel, and the outbox that retries each message with backoff.

Messages wait in the database's outbox until a channel takes them, so an alert survives a restart, and each
channel is delivered to in order, one message at a time. Channels are logged by name, never by URL.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import apprise

from scheduler.alerts import (
    BUDGET,
    DAEMON_PROBLEM,
    DAEMON_RESOLVED,
    OPENED,
    REMINDER,
    RESOLVED,
    SKIPPED,
    Alert,
    AlertSender,
    Delivery,
    render,
)
from scheduler.clock import SystemClock
from scheduler.config import AlertChannel
from scheduler.store import OutboxItem, Store

logger = logging.getLogger(__name__)


_NOTIFY_TYPES = {
    OPENED: apprise.NotifyType.FAILURE,
    REMINDER: apprise.NotifyType.FAILURE,
    RESOLVED: apprise.NotifyType.SUCCESS,
    DAEMON_PROBLEM: apprise.NotifyType.WARNING,
    DAEMON_RESOLVED: apprise.NotifyType.SUCCESS,
    SKIPPED: apprise.NotifyType.WARNING,
    BUDGET: apprise.NotifyType.WARNING,
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
    """Sends one alert through Apprise and reports what the channel answered."""

    def __init__(self) -> None:
        _register_console_target()

    async def send(self, channel: AlertChannel, alert: Alert) -> Delivery:
        target = apprise.Apprise()
        if not target.add(channel.url.get_secret_value()):
            return Delivery(False, "Apprise does not understand this channel's URL")
        with apprise.LogCapture(level=logging.WARNING) as captured:  # type: ignore[no-untyped-call]
            ok = await target.async_notify(
                body=alert.body,
                title=alert.title,
                body_format=alert.body_format,
                notify_type=_NOTIFY_TYPES.get(alert.kind, apprise.NotifyType.INFO),
            )
            said = captured.getvalue().strip()
        return Delivery(bool(ok), said.replace(channel.url.get_secret_value(), "***")[-500:])


async def send_now(sender: AlertSender, channels: Iterable[AlertChannel], alert: Alert) -> list[Delivery]:
    """Deliver at once, without the outbox (when the database itself is the problem, or for a test message)."""
    return list(await asyncio.gather(*(sender.send(channel, alert) for channel in channels)))


class Outbox:
    """Delivers the outbox: due messages, each under a lease, with retries and backoff; channels independently."""

    def __init__(
        self,
        *,
        store: Store,
        sender: AlertSender,
        channels: Callable[[], Mapping[str, AlertChannel]],
        owner: str,
        clock: Callable[[], datetime],
        wait: Callable[..., Awaitable[bool]] | None = None,
        max_attempts: int = 8,
        backoff: timedelta = timedelta(seconds=5),
        on_delivery: Callable[[str, bool], None] | None = None,
    ) -> None:
        self.store = store
        self.sender = sender
        self.channels = channels
        self.owner = owner
        self.clock = clock
        self._wait = wait or SystemClock().wait
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.on_delivery = on_delivery
        self.wake = asyncio.Event()
        self._busy: set[str] = set()  # channels with a delivery under way: one message at a time per channel

    async def run(self, stop: asyncio.Event, tick: Callable[[], None] = lambda: None) -> None:
        """Deliver until ``stop`` is set; a database failure is logged and retried. ``tick`` each turn."""
        tasks: set[asyncio.Task[None]] = set()
        while not stop.is_set():
            tick()
            try:
                await self.deliver_due(tasks)
            except Exception as error:
                logger.warning("alert delivery: %s", error)
            self.wake.clear()
            await self._wait(self.wake, stop, within=1.0)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def deliver_due(self, tasks: set[asyncio.Task[None]] | None = None) -> None:
        """Take the due messages and start delivering them (per channel, one at a time, in order)."""
        now = self.clock()
        items = await asyncio.to_thread(self.store.claim_outbox, self.owner, now=now, until=now + timedelta(minutes=2))
        by_channel: dict[str, list[OutboxItem]] = {}
        for item in items:
            by_channel.setdefault(item.channel, []).append(item)
        for channel, queue in by_channel.items():
            task = asyncio.ensure_future(self._deliver_queue(channel, queue))
            if tasks is not None:
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            else:
                await task

    async def _deliver_queue(self, channel_name: str, queue: list[OutboxItem]) -> None:
        for item in queue:
            await self._deliver(channel_name, item)

    async def _deliver(self, channel_name: str, item: OutboxItem) -> None:
        channel = self.channels().get(channel_name)
        if channel is None:
            await asyncio.to_thread(
                self.store.outbox_failed, item.id, retry_at=None, error="the channel is no longer in the config"
            )
            logger.error("alert %d not delivered: channel %s is no longer configured", item.id, channel_name)
            return
        alert = render(item.payload, channel)
        delivery = await self.sender.send(channel, alert)
        if self.on_delivery is not None:
            self.on_delivery(channel_name, delivery.ok)
        if delivery.ok:
            await asyncio.to_thread(self.store.outbox_delivered, item.id, at=self.clock())
            logger.info("alert %r delivered to %s", alert.title, channel_name, extra={"job": alert.job})
            return
        attempt = item.attempts + 1
        if attempt >= self.max_attempts:
            await asyncio.to_thread(self.store.outbox_failed, item.id, retry_at=None, error=delivery.detail or "failed")
            logger.error(
                "alert %r could not be delivered to %s after %d attempts: %s",
                alert.title,
                channel_name,
                attempt,
                delivery.detail,
                extra={"job": alert.job},
            )
            return
        delay = self.backoff * 2 ** (attempt - 1) * (0.5 + random.random())
        await asyncio.to_thread(
            self.store.outbox_failed, item.id, retry_at=self.clock() + delay, error=delivery.detail or "failed"
        )
        logger.warning(
            "alert %r to %s failed (attempt %d), next try in %.0fs: %s",
            alert.title,
            channel_name,
            attempt,
            delay.total_seconds(),
            delivery.detail,
            extra={"job": alert.job},
        )
