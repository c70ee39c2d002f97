"""``cekura-scheduler check``: ask the running daemon's /healthz, for Docker's HEALTHCHECK and other probes.

Imported by the ``check`` command alone, so a probe every 30 s loads only the settings and the standard library,
not the daemon (a tenth of the CPU).
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request

from scheduler.errors import SettingsError
from scheduler.settings import Settings, load_settings


def healthz_url(settings: Settings | None = None) -> str:
    """Where the daemon of these settings answers /healthz (listening everywhere means: ask this machine)."""
    host, port = (settings or load_settings(check_database=False)).http_host_port
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}/healthz" if ":" in host else f"http://{host}:{port}/healthz"


def _request(settings: Settings) -> urllib.request.Request:
    """The GET of /healthz, with the token when one is set: the daemon then tells its loops' errors too."""
    token = settings.http_token
    headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token is not None else {}
    return urllib.request.Request(healthz_url(settings), headers=headers)


def verdict(body: str) -> str:
    """What a 503 of /healthz says, in one line: the loops that are down or stale, and why."""
    try:
        answer = json.loads(body)
        loops = {loop["name"]: loop for loop in answer.get("loops", [])}
        stale = [str(name) for name in answer.get("stale", [])]
    except (ValueError, AttributeError, KeyError, TypeError):
        return body.strip()[:200]
    if not stale:
        return str(answer.get("status", body.strip()[:200]))
    named = []
    for name in stale:
        loop = loops.get(name, {})
        if loop.get("last_error"):
            failures = loop.get("failures", 0)
            named.append(f"{name} (failed {failures} time{'s' if failures != 1 else ''}: {loop['last_error']})")
        elif loop.get("last_tick"):
            named.append(f"{name} (last turned at {loop['last_tick']})")
        else:
            named.append(f"{name} (has not turned)")
    return f"background task{'s' if len(stale) != 1 else ''} down or stale: {', '.join(named)}"[:1000]


def check(timeout: float = 5.0) -> int:
    """GET /healthz; print the verdict; 0 when the daemon is alive, else 1."""
    try:
        settings = load_settings(check_database=False)
        request = _request(settings)
    except SettingsError as error:
        print(f"unhealthy: {error}", file=sys.stderr)
        return 1
    url = request.full_url
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            status = answer.status
    except urllib.error.HTTPError as error:
        body = error.read().decode(errors="replace")
        print(f"unhealthy: {url} answered {error.code}: {verdict(body)}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        print(f"unhealthy: {url}: {reason}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"unhealthy: {url} answered {status}", file=sys.stderr)
        return 1
    print(f"ok: {url}")
    return 0
