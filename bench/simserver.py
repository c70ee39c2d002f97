"""The Cekura simulator in a process of its own, with a log of when each request arrived.

The scheduler's simulator stamps ``Submission.received_at`` after its simulated latency; a benchmark wants the
moment the POST reached the server, so a middleware notes it before any handler runs. Run as
``python -m bench.simserver --latency 0.1``: it prints ``READY <base url>`` and serves until SIGTERM. The
``/_bench/`` endpoints need no key:

- ``GET /_bench/counts``: how many submissions (POST) and result reads (GET) arrived;
- ``GET /_bench/posts``: every submission as ``[arrived, received_at, name]`` (epoch seconds; received_at is
  null until the simulator has answered it);
- ``GET /_bench/gets``: every result read as ``[arrived, result id]``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from scheduler.simulator import Simulator, SimulatorConfig

API_KEY = "bench-key"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Recorder:
    """What arrived at the simulator, and when (``time.time()``, comparable across processes)."""

    def __init__(self, simulator: Simulator) -> None:
        self.simulator = simulator
        self.arrived: list[tuple[float, str | None]] = []
        self.posts = 0
        self.gets: list[tuple[float, int]] = []  # (arrived, result id)
        self.searches = 0

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        arrived = time.time()
        path = request.path
        if path.startswith("/test_framework/v1/scenarios/") and request.method == "POST":
            self.posts += 1
            body = await request.read()  # aiohttp keeps it: the handler reads it again for free
            self.arrived.append((arrived, _name_of(body)))
        elif path.startswith(_RESULTS) and request.method == "GET":
            result = path.rstrip("/").rpartition("/")[2]
            if result.isdigit():
                self.gets.append((arrived, int(result)))
            else:
                self.searches += 1
        return await handler(request)

    async def counts(self, request: web.Request) -> web.Response:
        return web.json_response({"posts": self.posts, "gets": len(self.gets), "searches": self.searches})

    async def posts_log(self, request: web.Request) -> web.Response:
        received: dict[str | None, float] = {}
        for entry in self.simulator.submissions:
            received.setdefault(entry.name, entry.received_at.timestamp())
        return web.json_response([[arrived, received.get(name), name] for arrived, name in self.arrived])

    async def gets_log(self, request: web.Request) -> web.Response:
        return web.json_response(self.gets)


_RESULTS = ("/test_framework/v1/results/", "/test_framework/v2/results/")


def _name_of(body: bytes) -> str | None:
    # The name is all we need: a cheap search rather than a second JSON parse of every body.
    marker = body.find(b'"name"')
    if marker < 0:
        return None
    start = body.find(b'"', body.find(b":", marker) + 1) + 1
    end = body.find(b'"', start)
    return body[start:end].decode() if 0 < start <= end else None


async def serve(latency: float, run_duration: float) -> None:
    simulator = Simulator(SimulatorConfig(api_key=API_KEY, latency=latency, run_duration=run_duration, seed=1))
    recorder = Recorder(simulator)
    simulator.app.middlewares.append(recorder.middleware)
    simulator.app.router.add_get("/_bench/counts", recorder.counts)
    simulator.app.router.add_get("/_bench/posts", recorder.posts_log)
    simulator.app.router.add_get("/_bench/gets", recorder.gets_log)
    url = await simulator.start("127.0.0.1", 0)
    print(f"READY {url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await simulator.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.simserver", description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.1, help="seconds before every answer")
    parser.add_argument("--run-duration", type=float, default=3600.0, help="seconds until a result ends")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.latency, args.run_duration))


if __name__ == "__main__":
    main(sys.argv[1:])
