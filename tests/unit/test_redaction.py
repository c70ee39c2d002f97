"""Secrets are replaced by *** in every log line of every library, tracebacks included, and in stored text."""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime

import pytest

from scheduler import redaction
from scheduler.store import Store
from tests.conftest import claim_slot


def a_secret() -> str:
    return f"tok-{secrets.token_hex(8)}"


def test_redact_hides_every_registered_value_and_leaves_short_ones() -> None:
    key, inner = a_secret(), a_secret()
    redaction.register([key, f"{inner}-and-more", "abc", None])
    assert redaction.redact(f"url slack://{key}/x?t={inner}-and-more") == "url slack://***/x?t=***"
    assert redaction.redact("abc stays: too short to hide safely") == "abc stays: too short to hide safely"
    assert redaction.redact_any({"a": [key, 3, {"b": key}]}) == {"a": ["***", 3, {"b": "***"}]}


def test_every_log_record_of_any_library_is_redacted_message_and_traceback(caplog: pytest.LogCaptureFixture) -> None:
    key = a_secret()
    redaction.install()
    redaction.register([key])
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="apprise")  # whatever level an earlier test or command left it at
    logging.getLogger("apprise").debug("posting to https://events.pagerduty.com/%s", key)
    try:
        raise ValueError(f"refused {key}")
    except ValueError:
        logging.getLogger("httpx").exception("request failed for %s", key)
    assert key not in caplog.text
    assert "posting to https://events.pagerduty.com/***" in caplog.text
    assert "ValueError: refused ***" in caplog.text


def test_errors_written_to_the_database_are_redacted(store: Store) -> None:
    key = a_secret()
    redaction.register([key])
    now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    fire = claim_slot(store, "nightly", now)
    assert fire is not None
    store.finish(fire.id, outcome="failed", at=now, error=f"Cekura said: bad key {key}")
    store.record_config_change(at=now, path="jobs.toml", digest="d", valid=False, summary=f"invalid {key}")
    recorded = store.get_fire(fire.id)
    assert recorded is not None and recorded.error == "Cekura said: bad key ***"
    change = store.latest_config_change()
    assert change is not None and change.summary == "invalid ***"
