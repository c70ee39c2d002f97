"""Run the scheduler's command line under ``tracemalloc``: the traced heap sampled, and snapshots on request.

``python -m bench.heapwatch --out DIR --every 5 -- run`` starts ``tracemalloc``, then a thread that appends
``<epoch seconds> <traced bytes>`` to ``DIR/heap.tsv`` every ``--every`` seconds and, whenever a file
``DIR/<name>.want`` appears, writes ``DIR/<name>.pickle`` (a snapshot, after a ``gc.collect()``) and
``DIR/<name>.types.json`` (how many objects of each type the collector tracks) and removes the request; then it
runs ``scheduler.cli.main`` with the arguments after ``--``. The soak benchmark asks for the snapshots and
compares them. A bench tool, not a feature of the daemon: nothing in ``scheduler/`` knows of it.
"""

from __future__ import annotations

import gc
import json
import sys
import time
import tracemalloc
from collections import Counter
from pathlib import Path

from bench.memwatch import run_watched

FRAMES = 8  # frames kept per allocation: enough to see which of our lines asked for it, cheap enough to soak
LOOK_EVERY = 0.5  # seconds between two looks for a snapshot request


def watch(out: Path, every: float) -> None:
    """Sample the traced heap every ``every`` s; take a snapshot for each ``<name>.want`` in ``out``."""
    sampled = 0.0
    with (out / "heap.tsv").open("a") as samples:
        while True:
            time.sleep(LOOK_EVERY)
            for request in sorted(out.glob("*.want")):
                gc.collect()
                types = Counter(f"{type(item).__module__}.{type(item).__qualname__}" for item in gc.get_objects())
                request.with_suffix(".types.json").write_text(json.dumps(types))
                snapshot = tracemalloc.take_snapshot()
                partial = request.with_suffix(".partial")
                snapshot.dump(str(partial))
                partial.rename(request.with_suffix(".pickle"))  # whole or absent: the bench waits for this name
                request.unlink()
            if (now := time.time()) - sampled >= every:
                sampled = now
                samples.write(f"{now:.2f} {tracemalloc.get_traced_memory()[0]}\n")
                samples.flush()


def main(argv: list[str] | None = None) -> None:
    run_watched(
        argv,
        watch,
        name="heapwatch",
        description=__doc__.splitlines()[0],
        out_help="a folder for heap.tsv and the snapshots",
        every=5.0,
        start=lambda: tracemalloc.start(FRAMES),
    )


if __name__ == "__main__":
    main(sys.argv[1:])
