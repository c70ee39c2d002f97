"""Reloading jobs.toml while the daemon runs: on SIGHUP, or when the file changes.

A version is applied only when it is valid (and two reads of the file agree); an invalid one is logged, recorded
and alerted once, and the daemon keeps running the version it had. Applying a version replans the timetable from
that instant, so a slot already fired is not fired again and the one due next is not skipped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from scheduler import redaction
from scheduler.config import ConfigSource, diff_configs
from scheduler.daemon.runtime import Runtime
from scheduler.daemon.timetable import Timetable
from scheduler.errors import ConfigError, ConfigIssue, count_errors

logger = logging.getLogger(__name__)

WATCH_EVERY = 1.0  # seconds between two looks at the file


class Reloader:
    """Watches the config file and applies its valid versions."""

    def __init__(self, runtime: Runtime, *, source: ConfigSource, timetable: Timetable, wake: asyncio.Event) -> None:
        self._rt = runtime
        self.source = source
        self._timetable = timetable
        self._wake = wake  # the timer's: a replanned job may be due sooner
        self._requested = asyncio.Event()
        self._rejected_digest: str | None = None
        self.errors: list[ConfigIssue] = []  # the problems of the file on disk, while it is invalid

    def request(self) -> None:
        """Read the file again now (SIGHUP)."""
        self._requested.set()

    async def watch_forever(self, tick: Callable[[], None]) -> None:
        rt = self._rt
        while not rt.stop.is_set():
            tick()
            await rt.clock.wait(self._requested, rt.stop, within=WATCH_EVERY)
            asked = self._requested.is_set()
            self._requested.clear()
            if asked:
                logger.info(
                    "reloading %s (SIGHUP); environment settings (CEKURA_*, SCHEDULER_*) are read at start "
                    "only: restart to change them",
                    self.source.path,
                )
            if (asked or self.source.changed()) and not rt.stop.is_set():
                await self.reload()

    async def reload(self) -> bool:
        """Read the config file again; apply it when valid, else keep running the current one and say why.

        Returns whether a new version was applied.
        """
        rt = self._rt
        try:
            new = await asyncio.to_thread(self.source.load)  # waits until two reads of the file agree
        except ConfigError as error:
            await self._rejected(error.issues)
            return False
        self.errors = []
        self._rejected_digest = None
        rejected = [key for key in rt.incidents.open_problems() if key.startswith("config:")]
        if rejected:
            await rt.incidents.solved("config file invalid", subjects=rejected)
        old = rt.config
        diff = diff_configs(old, new)
        # The same text can hold new values: a ${VAR} read from a VAR_FILE whose secret was rotated.
        if new.digest == old.digest and not diff:
            rt.metrics.config_reloads.labels("unchanged").inc()
            return False
        redaction.register(new.secrets)
        # Taken when the version is applied, with no wait before it: a slot fired until now (during the settle
        # time, or while a solved alert was recorded) belonged to the previous version.
        now = rt.clock.now()
        empties = any(job.enabled for job in old.jobs.values()) and not any(job.enabled for job in new.jobs.values())
        rt.config = new
        for name in diff.removed:
            rt.retired[name] = old.jobs[name]
        for name in diff.added:
            rt.retired.pop(name, None)
        self._timetable.replan(old, new, diff, now)
        self._wake.set()
        if empties:  # told after it is applied: nothing of the old jobs may fire while people are told
            await rt.incidents.announce(
                "every job removed",
                f"{self.source.path} (version {new.digest}) has no enabled job left (was {len(old.jobs)}); nothing "
                "will fire until jobs are added again. It is applied: if this is not what you meant, restore the "
                "file.",
                config=old,
            )
        rt.metrics.config_reloads.labels("applied").inc()
        logger.info("config %s applied (was %s): %s", new.digest, old.digest, diff.summary())
        restart_only = [key for key in diff.daemon if key != "alerts"]
        if restart_only:
            logger.warning("[daemon] %s changed: takes effect after a restart", ", ".join(restart_only))
        await rt.db_quietly(
            rt.store.record_config_change,
            at=now,
            path=str(self.source.path),
            digest=new.digest,
            valid=True,
            summary=diff.summary(),
        )
        return True

    async def _rejected(self, issues: list[ConfigIssue]) -> None:
        """Keep the current version; log, record and alert a new invalid version once."""
        rt = self._rt
        fingerprint = self.source.last_digest or "unreadable"
        self.errors = issues
        if fingerprint != self._rejected_digest:
            self._rejected_digest = fingerprint
            for issue in issues:
                logger.error("config not applied: %s", issue)
            detail = "\n".join(str(issue) for issue in issues)
            await rt.db_quietly(
                rt.store.record_config_change,
                at=rt.clock.now(),
                path=str(self.source.path),
                digest=fingerprint,
                valid=False,
                summary=detail,
            )
            await rt.incidents.problem(
                "config file invalid",
                f"{self.source.path} (version {fingerprint}) has {count_errors(issues)}; the daemon keeps "
                f"running the previous version ({rt.config.digest}).\n{detail}",
                subject=f"config:{fingerprint}",
            )
        rt.metrics.config_reloads.labels("rejected").inc()
