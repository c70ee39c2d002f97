"""``cekura-scheduler check``: ask the running daemon's /healthz, for Docker's HEALTHCHECK and other probes.

Kept apart from the command line module so a probe every 30 s loads only the settings and the standard
library, not the daemon (a tenth of the CPU).
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

from scheduler.errors import SettingsError
from scheduler.settings import load_settings


def healthz_url() -> str:
    """Where the daemon of these settings answers /healthz (listening everywhere means: ask this machine)."""
    host, port = load_settings().http_host_port
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}/healthz" if ":" in host else f"http://{host}:{port}/healthz"


def check(timeout: float = 5.0) -> int:
    """GET /healthz; print the verdict; 0 when the daemon is alive, else 1."""
    try:
        url = healthz_url()
    except SettingsError as error:
        print(f"unhealthy: {error}", file=sys.stderr)
        return 1
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            status = answer.status
    except urllib.error.HTTPError as error:
        body = error.read().decode(errors="replace").strip()[:200]
        print(f"unhealthy: {url} answered {error.code}: {body}", file=sys.stderr)
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


def main() -> None:
    """The console entry point: `check` is answered here; every other command goes to the full CLI."""
    args = sys.argv[1:]
    if args[:1] == ["check"] and not {"--help", "-h"} & set(args):
        timeout = 5.0
        if "--timeout" in args[1:-1]:
            timeout = float(args[args.index("--timeout") + 1])
        sys.exit(check(timeout))
    from scheduler.cli import main as cli

    cli()
