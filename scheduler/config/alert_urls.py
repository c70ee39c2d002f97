"""Alert URLs: what Apprise accepts, and what in them is a credential."""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Iterator
from urllib.parse import unquote

from scheduler.config.bounds import MIN_SECRET_LENGTH

CUSTOM_SCHEMES = frozenset({"console"})
"""Alert URL schemes this program teaches Apprise itself (scheduler.alerts, at send time)."""
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]{0,31}", re.ASCII)


class _QuietApprise(logging.Filter):
    """Drops Apprise's log records in a thread that is checking a URL: Apprise quotes the tokens it rejects."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.local, "checking", False)


_QUIET = _QuietApprise()


@contextlib.contextmanager
def _apprise_quiet() -> Iterator[None]:
    apprise_logger = logging.getLogger("apprise")
    if _QUIET not in apprise_logger.filters:
        apprise_logger.addFilter(_QUIET)
    _QUIET.local.checking = True
    try:
        yield
    finally:
        _QUIET.local.checking = False


def apprise_problem(url: str) -> str | None:
    """Why Apprise cannot use this URL, in words that do not repeat it (it holds tokens); None when it can."""
    scheme, separator, _ = url.partition("://")
    scheme = scheme.lower()
    if not separator or not _SCHEME.fullmatch(scheme):
        return "not an Apprise URL (scheme://...)"
    if scheme in CUSTOM_SCHEMES:
        return None
    with _apprise_quiet():
        import apprise  # here: loading Apprise's plugins costs 0.3 s, paid only by a file with alert channels

        try:
            usable = apprise.Apprise.instantiate(url) is not None
        except Exception:  # a plugin's parser failing on odd input: Apprise could not send to it either
            usable = False
        try:
            from apprise.manager_plugins import NotificationManager

            known = scheme in NotificationManager() or scheme in ("http", "https")  # type: ignore[no-untyped-call]
        except ImportError:  # pragma: no cover - Apprise before 1.7
            known = True
    if usable:
        return None
    if not known:
        return f"Apprise has no {scheme}:// service (a typo in the scheme?)"
    return f"Apprise cannot use this {scheme}:// URL (check its tokens and options)"


_PLAIN_WORD = re.compile(r"[a-z]{1,20}|[A-Z]{1,7}", re.ASCII)  # "services", "alerts", "POST": not tokens
_CREDENTIAL_KEY = re.compile(r"token|key|secret|pass|auth|sig|code|session|access", re.IGNORECASE)
_HOST_NAME = re.compile(r"[a-z0-9-]+(?:\.[a-z0-9-]+)+|\[[0-9A-Fa-f:.]+\]|[a-z]{1,20}", re.ASCII)


def alert_url_secrets(url: str) -> set[str]:
    """The parts of an alert URL that may be credentials, each as written and percent-decoded.

    Everything after the scheme counts except a plain host name (``hooks.slack.com``, ``127.0.0.1``,
    ``localhost``), a port, query keys, and plain words (``services``, ``POST``) but in the value of a key such as
    ``token``, ``key`` or ``password``: ``slack://TokenA/TokenB/TokenC`` gives the three tokens,
    ``pagerduty://integration_key@api_key`` both keys, ``json://user:pass@host/p?token=t`` the user, the password
    and t. Only strings of 4 characters or more are kept.
    """
    _, separator, rest = url.partition("://")
    if not separator:
        return {url} if len(url) >= MIN_SECRET_LENGTH else set()
    rest, _, fragment = rest.partition("#")
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, host = netloc.rpartition("@")
    parts = userinfo.split(":", 1) if at else []
    if not host.startswith("["):
        host = host.split(":", 1)[0]  # host:port
    if not _HOST_NAME.fullmatch(host):
        parts.append(host)  # slack://TokenA/..., pagerduty://...@api_key: the "host" is a token
    words = [*path.split("/"), fragment]
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        (parts if _CREDENTIAL_KEY.search(key) else words).append(value)  # ?token=abcdefgh: whatever it looks like
    parts.extend(word for word in words if not _PLAIN_WORD.fullmatch(word))
    return {form for part in parts for form in (part, unquote(part)) if len(form) >= MIN_SECRET_LENGTH}
