"""What changed between two valid versions of jobs.toml, and the one log line that says so."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from scheduler.config.models import Config

# Job keys whose change moves the job's next slot; other changes apply from the next fire on.
SCHEDULE_KEYS = frozenset({"cron", "every", "timezone", "jitter", "enabled"})


@dataclass(frozen=True)
class ConfigDiff:
    """What changed between two valid versions of jobs.toml."""

    added: list[str]
    removed: list[str]
    changed: dict[str, list[str]]  # job -> the keys that changed
    daemon: list[str]  # keys of [daemon] that changed
    channels: list[str]  # alert channels added, removed or changed

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed or self.daemon or self.channels)

    def summary(self) -> str:
        """One line for the log, e.g. ``added: a; removed: b; changed: c (cron, scenarios)``."""
        parts = []
        if self.added:
            parts.append(f"added: {', '.join(self.added)}")
        if self.removed:
            parts.append(f"removed: {', '.join(self.removed)}")
        if self.changed:
            parts.append("changed: " + ", ".join(f"{name} ({', '.join(keys)})" for name, keys in self.changed.items()))
        if self.daemon:
            parts.append(f"[daemon]: {', '.join(self.daemon)}")
        if self.channels:
            parts.append(f"alert channels: {', '.join(self.channels)}")
        return "; ".join(parts) or "no change"


def _fields(model: BaseModel) -> dict[str, Any]:
    return {name: getattr(model, name) for name in type(model).model_fields}


def diff_configs(old: Config, new: Config) -> ConfigDiff:
    """Compare two configs job by job and key by key."""
    changed: dict[str, list[str]] = {}
    for name in old.jobs.keys() & new.jobs.keys():
        if old.jobs[name] is new.jobs[name] or old.jobs[name] == new.jobs[name]:
            continue  # most jobs of a reload are unchanged: one comparison rather than one per key
        before, after = _fields(old.jobs[name]), _fields(new.jobs[name])
        keys = [key for key in after if before[key] != after[key]]
        if keys:
            changed[name] = keys
    before_daemon, after_daemon = _fields(old.daemon), _fields(new.daemon)
    channel_names = old.channels.keys() | new.channels.keys()
    return ConfigDiff(
        added=sorted(new.jobs.keys() - old.jobs.keys()),
        removed=sorted(old.jobs.keys() - new.jobs.keys()),
        changed=dict(sorted(changed.items())),
        daemon=[key for key in after_daemon if before_daemon[key] != after_daemon[key]],
        channels=sorted(
            name
            for name in channel_names
            if (old.channels.get(name) is None) != (new.channels.get(name) is None)
            or (
                name in old.channels
                and old.channels[name].url.get_secret_value() != new.channels[name].url.get_secret_value()
            )
        ),
    )
