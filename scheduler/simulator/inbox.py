"""A local alert target for the demo's peers, the tests and the benchmarks: what Apprise's ``json://`` posts.

The simulator stands in for Cekura; this stands in for Slack or a webhook. It keeps every message with the
instant it arrived, can answer 500 to the next few (a channel that is down), and says when a message arrives.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class AlertInbox:
    """A local HTTP endpoint that keeps what Apprise's json:// target posts to it; ``url`` is that target."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.arrived_at: list[float] = []  # time.time() of each message kept, in order
        self.fail_next = 0  # answer 500 to this many messages (they are not kept)
        self.arrival = threading.Event()  # set each time a message is kept
        self._lock = threading.Lock()
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with inbox._lock:
                    if inbox.fail_next > 0:
                        inbox.fail_next -= 1
                        self.send_response(500)
                        self.end_headers()
                        return
                    inbox.received.append(json.loads(body))
                    inbox.arrived_at.append(time.time())
                inbox.arrival.set()
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"json://127.0.0.1:{self.server.server_address[1]}/alerts"
        # Polled every 50 ms for shutdown (the default 0.5 s was half a second at the end of every test).
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def titles(self) -> list[str]:
        with self._lock:
            return [message.get("title", "") for message in self.received]

    def documents(self) -> list[dict[str, Any]]:
        """The alert documents: what a json:// webhook receives in Apprise's ``message`` field."""
        with self._lock:
            return [json.loads(message["message"]) for message in self.received]

    def first_by_job(self) -> dict[str, float]:
        """When the first alert about each job arrived (its document's ``job``)."""
        with self._lock:
            messages = list(zip(self.arrived_at, self.received, strict=True))
        first: dict[str, float] = {}
        for at, message in messages:
            job = json.loads(message["message"]).get("job")
            if isinstance(job, str):
                first.setdefault(job, at)
        return first

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
