"""Logging setup: the only place that configures logging (the command line calls it once per command).

Log lines go to stderr as text or JSON lines, with the structured extras ``job``, ``slot``, ``result_id`` and
``outcome``; every record has its secrets replaced by ``***`` (``redaction.install``); chatty libraries are quiet
below WARNING.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from scheduler import redaction

_EXTRAS = ("job", "slot", "result_id", "outcome")


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    """The record's structured extras; an instant (a slot) as ISO 8601 in UTC ending in ``Z``, as the API says it."""
    extras = {}
    for key in _EXTRAS:
        value = getattr(record, key, None)
        if isinstance(value, datetime):
            value = value.astimezone(UTC).isoformat().replace("+00:00", "Z")
        if value is not None:
            extras[key] = value
    return extras


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = [f"{key}={value}" for key, value in _extras(record).items()]
        return f"{text} [{' '.join(extras)}]" if extras else text


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_extras(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str, fmt: str) -> None:
    """Send log lines to stderr as text or JSON; quiet the chatty libraries."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    redaction.install()  # secrets become *** in every record, whichever library logs it
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "apprise", "aiohttp.access", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


__all__ = ["configure_logging"]
