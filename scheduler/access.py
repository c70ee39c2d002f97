"""Who may ask the HTTP server: the token, the status page's session cookie, the sign-in limit, forwarded headers.

``/healthz`` is open; when a token is set (``SCHEDULER_HTTP_TOKEN``), everything else needs it, as
``Authorization: Bearer <token>`` or as the session cookie the sign-in form sets (a value derived from the token,
not the token itself). Without a token the server only listens on loopback, and it then also refuses requests
whose ``Host`` is not a loopback name (a web page cannot reach it through DNS rebinding). POST actions from a
browser must come from the server's own origin. Cekura's webhook (``POST /webhooks/cekura``, when
``CEKURA_WEBHOOK_SECRET`` is set) is the exception: it carries no token and no origin, and proves itself with its
``X-CEKURA-SECRET`` header instead. Failed sign-ins (a wrong token in the form, a ``Bearer`` header
or the cookie) are limited per client address: after five in a minute, that address gets 429 for the rest of the
minute, whatever it sends. Wrong webhook secrets are limited the same way, counted apart.

``X-Forwarded-For``, ``-Host`` and ``-Proto`` are read only when told a proxy is in front
(``SCHEDULER_HTTP_TRUST_FORWARDED``); then the last value of each, the one the nearest proxy set, names the client
(its address for the limit and the record of who acted), the origin POSTs must come from, and whether the cookie
is ``Secure``. Otherwise anyone could send them.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import NamedTuple
from urllib.parse import urlsplit

from aiohttp import web
from pydantic import SecretStr

from scheduler.errors import SchedulerError

logger = logging.getLogger(__name__)

SIGN_IN_FAILURES = 5  # wrong tokens from one address ...
SIGN_IN_WINDOW = timedelta(minutes=1)  # ... within this long, and the address must wait
COOKIE = "cekura_scheduler_session"
_REMEMBERED_ADDRESSES = 10_000  # a bound on the limiter's memory, whatever the number of addresses that try
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
_OPEN_PATHS = frozenset({"/healthz", "/login"})
WEBHOOK_PATH = "/webhooks/cekura"  # authenticated by its own secret (X-CEKURA-SECRET), not by the token


class SignInLimit:
    """Failed sign-ins (``what``, each a wrong ``guess``) per client address, in a sliding window."""

    def __init__(self, clock: Callable[[], datetime], *, what: str = "sign-in", guess: str = "tokens") -> None:
        self._clock = clock
        self._what = what
        self._guess = guess
        self._failures: dict[str, deque[datetime]] = {}

    def wait(self, address: str) -> int:
        """Seconds ``address`` must wait before it may try again (0: it may try now)."""
        failures = self._failures.get(address)
        if failures is None or len(failures) < SIGN_IN_FAILURES:
            return 0
        left = (failures[0] + SIGN_IN_WINDOW - self._clock()).total_seconds()
        return max(0, math.ceil(left))

    def failed(self, address: str) -> None:
        now = self._clock()
        if address not in self._failures and len(self._failures) >= _REMEMBERED_ADDRESSES:
            self._forget(now)
        self._failures.setdefault(address, deque(maxlen=SIGN_IN_FAILURES)).append(now)
        if wait := self.wait(address):  # logged once per lock, not for each request it refuses
            logger.warning(
                "%s from %s refused for %ds: %d wrong %s within a minute",
                self._what,
                address,
                wait,
                SIGN_IN_FAILURES,
                self._guess,
            )

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)

    def _forget(self, now: datetime) -> None:
        """Drop the addresses whose last failure is out of the window; if that is not enough, the oldest ones."""
        for address in [key for key, times in self._failures.items() if now - times[-1] > SIGN_IN_WINDOW]:
            del self._failures[address]
        while len(self._failures) >= _REMEMBERED_ADDRESSES:
            del self._failures[next(iter(self._failures))]


class Refusal(NamedTuple):
    """Why a request is not let through: the status, the reason, and whether to answer with the sign-in page."""

    status: int
    message: str
    sign_in_page: bool = False
    retry_after: int | None = None


def from_page(request: web.Request) -> bool:
    """Whether the request is a form of the status page (rather than a call of the JSON API)."""
    return request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data")


def _last(value: str | None) -> str:
    """The last entry of a forwarded header: the one the nearest proxy set (a client can only add before it)."""
    return (value or "").split(",")[-1].strip()


class Access:
    """Decides who may ask; ``clock`` times the sign-in limit."""

    def __init__(
        self,
        *,
        token: SecretStr | None,
        host: str,
        trust_forwarded: bool,
        clock: Callable[[], datetime],
        webhook_secret: SecretStr | None = None,
    ) -> None:
        secret = token.get_secret_value() if token is not None else ""
        if not secret and host not in _LOOPBACK:
            raise SchedulerError(f"the HTTP server listens on {host}, beyond this machine: it needs a token")
        if not secret and trust_forwarded:
            raise SchedulerError(
                "SCHEDULER_HTTP_TRUST_FORWARDED says a proxy is in front, so clients beyond this machine reach the "
                "HTTP server: it needs a token (SCHEDULER_HTTP_TOKEN)"
            )
        self.trust_forwarded = trust_forwarded
        self.webhook_secret = webhook_secret.get_secret_value().encode() if webhook_secret is not None else None
        self.limit = SignInLimit(clock)
        self.webhook_limit = SignInLimit(clock, what="webhook", guess="secrets")
        self.token = secret.encode() or None
        # The status page's cookie holds a value derived from the token, not the token itself.
        self.session = hmac.new(secret.encode(), b"cekura-scheduler status page", hashlib.sha256).hexdigest()

    def refusal(self, request: web.Request) -> Refusal | None:
        """Why this request may not reach its handler (see the module's docstring); None when it may."""
        if request.path == "/healthz":
            return None
        if request.path == WEBHOOK_PATH and self.webhook_secret is not None:
            # Cekura's servers know neither the token nor the page's origin; the handler checks the secret.
            return None
        if self.token is None and (urlsplit(f"//{request.host}").hostname or "") not in _LOOPBACK:
            return Refusal(403, "this server answers to localhost only (set SCHEDULER_HTTP_TOKEN to expose it)")
        shown, right = self._credentials(request)
        signing_in = shown or (request.path == "/login" and request.method == "POST")
        # While an address is over the limit, no token it sends is checked: guessing must stop.
        if signing_in and (wait := self.limit.wait(self.client(request))):
            page = request.path == "/" or (request.path == "/login" and from_page(request))
            message = f"too many failed sign-ins from this address: try again in {wait}s"
            return Refusal(429, message, sign_in_page=page, retry_after=wait)
        if request.path not in _OPEN_PATHS and not right:
            if shown:
                self.limit.failed(self.client(request))
            if request.path == "/" and request.method in ("GET", "HEAD"):
                return Refusal(401, "", sign_in_page=True)
            return Refusal(401, "a valid token is required: Authorization: Bearer <SCHEDULER_HTTP_TOKEN>")
        if request.method == "POST" and not self._same_origin(request):
            return Refusal(403, "cross-origin request refused")
        return None

    def sign_in(self, request: web.Request, given: str) -> bool:
        """Whether the token given in the sign-in form is the right one; a wrong one counts against the limit."""
        if self.token is None:  # nothing to check: the server has no token
            return True
        client = self.client(request)
        if not hmac.compare_digest(given.encode(), self.token):
            logger.warning("status page login refused from %s", client)
            self.limit.failed(client)
            return False
        self.limit.succeeded(client)
        return True

    def webhook_refusal(self, request: web.Request) -> Refusal | None:
        """Why a webhook is turned down: no or a wrong ``X-CEKURA-SECRET`` (401, logged; compared in constant
        time), or an address that sent five wrong ones within a minute (429, the secret not even compared, logged
        once); None when it carries the right secret."""
        client = self.client(request)
        if wait := self.webhook_limit.wait(client):
            message = f"too many wrong webhook secrets from this address: try again in {wait}s"
            return Refusal(429, message, retry_after=wait)
        given = request.headers.get("X-CEKURA-SECRET", "").encode()
        if self.webhook_secret is not None and hmac.compare_digest(given, self.webhook_secret):
            self.webhook_limit.succeeded(client)
            return None
        how = "a wrong" if "X-CEKURA-SECRET" in request.headers else "no"
        logger.warning("webhook from %s refused: %s X-CEKURA-SECRET header", client, how)
        self.webhook_limit.failed(client)
        return Refusal(401, "a valid X-CEKURA-SECRET header is required")

    def authorized(self, request: web.Request) -> bool:
        """Whether the request shows the right token or session cookie (always, without a token)."""
        return self._credentials(request)[1]

    def _credentials(self, request: web.Request) -> tuple[bool, bool]:
        """(whether the request shows a token or a session cookie, whether one of them is right)."""
        if self.token is None:
            return False, True
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        bearer = scheme.lower() == "bearer"
        if bearer and hmac.compare_digest(given.strip().encode(), self.token):
            return True, True
        cookie = request.cookies.get(COOKIE, "")
        if cookie and hmac.compare_digest(cookie.encode(), self.session.encode()):
            return True, True
        return bearer or bool(cookie), False

    def client(self, request: web.Request) -> str:
        """The client's address: the peer, or, behind a trusted proxy, the address that proxy saw."""
        forwarded = _last(request.headers.get("X-Forwarded-For")) if self.trust_forwarded else ""
        return forwarded or request.remote or ""

    def secure(self, request: web.Request) -> bool:
        """Whether the browser reached us over HTTPS (at the proxy, when one is trusted)."""
        if self.trust_forwarded and (proto := _last(request.headers.get("X-Forwarded-Proto"))):
            return proto.lower() == "https"
        return request.secure

    def _same_origin(self, request: web.Request) -> bool:
        """A browser's POST must come from a page of this server (a script or curl sends no Origin)."""
        origin = request.headers.get("Origin")
        if origin is None:
            return True
        hosts = {request.host}
        if self.trust_forwarded:
            hosts.add(_last(request.headers.get("X-Forwarded-Host")))
        return urlsplit(origin).netloc in hosts - {""}


__all__ = ["COOKIE", "SIGN_IN_FAILURES", "SIGN_IN_WINDOW", "Access", "Refusal", "SignInLimit", "from_page"]
