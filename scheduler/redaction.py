"""Secrets never shown: every value known to be secret is replaced by ``***`` wherever text leaves the process.

The secrets are the API key, the HTTP token, every value that came into jobs.toml from ``${VAR}`` and the credential
parts of every alert URL (``Config.secrets``). They are registered here once known (``register``); from then on
``redact`` hides them in any text. Installed on logging's record factory (``install``), it covers every log line of
every library (Apprise's and httpx's included), message and traceback alike; the store passes what it writes as
errors through it, alerts pass their rendered text, and the web its pages. The limit: a secret is hidden only as
the exact text it was given, not transformed (e.g. URL-encoded or cut in half).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from typing import Any

MASK = "***"
_SHORTEST = 4  # shorter values are too common to hide without hiding ordinary words

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None
_installed = False


def register(secrets: Iterable[str | None]) -> None:
    """Hide these values from now on (the ones shorter than 4 characters are ignored)."""
    global _pattern
    new = {secret for secret in secrets if secret and len(secret) >= _SHORTEST}
    with _lock:
        if new <= _secrets:
            return
        _secrets.update(new)
        ordered = sorted(_secrets, key=len, reverse=True)  # the longest first: a secret inside another one
        _pattern = re.compile("|".join(re.escape(secret) for secret in ordered))


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    pattern = _pattern
    if pattern is None or not text:
        return text
    return pattern.sub(MASK, text)


def redact_any(value: Any) -> Any:
    """The same for a JSON-like value (strings inside dicts and lists)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redact_any(item) for key, item in value.items()}
    if isinstance(value, list):
        return [redact_any(item) for item in value]
    return value


def install() -> None:
    """Redact every log record of the process as it is made (idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    previous = logging.getLogRecordFactory()
    formatter = logging.Formatter()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if _pattern is None:
            return record
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: logging reports it itself, later
            return record
        record.msg, record.args = redact(message), None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(formatter.formatException(record.exc_info))
        return record

    logging.setLogRecordFactory(factory)


__all__ = ["MASK", "install", "redact", "redact_any", "register"]
