"""Run the scheduler's command line with its native memory sampled: who holds the RSS, without tracing.

``python -m bench.memwatch --out FILE --every 2 -- run`` starts a thread that appends one JSON line every
``--every`` seconds to ``FILE``: the process's RSS, what glibc's malloc holds (``mallinfo2``: bytes in use, bytes
free inside its heaps, bytes mapped for big blocks; how many arenas), what SQLite's allocator holds
(``sqlite3_memory_used``, the same library the ``sqlite3`` module is linked to) and how many blocks CPython's
allocator has handed out. Then it runs ``scheduler.cli.main`` with the arguments after ``--``. Cheap enough to
leave on (a few foreign calls per sample): the soak benchmark runs its daemon under it, so a slope in RSS can be
told apart as Python objects, SQLite's caches or memory malloc keeps but nobody uses. A bench tool, not a
feature of the daemon: nothing in ``scheduler/`` knows of it.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",  # bytes malloc took from the system for its heaps (not the mmapped big blocks)
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",  # bytes in big blocks, each mmapped on its own
            "usmblks",
            "fsmblks",
            "uordblks",  # bytes in use in the heaps
            "fordblks",  # bytes free in the heaps: fragmentation, or memory not yet given back
            "keepcost",
        )
    ]


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        libc.fopen.restype = ctypes.c_void_p
        libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
        libc.fclose.argtypes = [ctypes.c_void_p]
    except (OSError, AttributeError):  # not glibc, or a glibc older than 2.33
        return None
    return libc


def _sqlite() -> ctypes.CDLL | None:
    import sqlite3  # noqa: F401  (loads the library the module uses, so the handle below is that one)

    try:
        library = ctypes.CDLL("libsqlite3.so.0")
        library.sqlite3_memory_used.restype = ctypes.c_int64
    except (OSError, AttributeError):  # statically linked into _sqlite3: its counters are out of reach
        return None
    return library


def _arenas(libc: ctypes.CDLL) -> int:
    """How many malloc arenas the process has (``malloc_info``'s ``<heap nr=...>`` entries)."""
    with tempfile.NamedTemporaryFile(mode="r", suffix=".xml") as out:
        stream = libc.fopen(out.name.encode(), b"w")
        if not stream:
            return -1
        libc.malloc_info(0, stream)
        libc.fclose(stream)
        return len(re.findall(r"<heap nr=", out.read()))


_STATUS = {"VmRSS": "rss", "RssAnon": "rss_anon", "RssFile": "rss_file"}


def _rss_mb() -> dict[str, float]:
    """The resident memory, and its anonymous (heaps, arenas, stacks) and file-backed (code, libraries) parts."""
    found = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in _STATUS:
            found[_STATUS[key]] = int(rest.split()[0]) / 1024
    return found


def sample(libc: ctypes.CDLL | None, sqlite: ctypes.CDLL | None, *, arenas: bool) -> dict[str, float]:
    """One reading, in MB (blocks and arenas as counts)."""
    reading: dict[str, float] = {"at": round(time.time(), 2), **_rss_mb(), "blocks": sys.getallocatedblocks()}
    if libc is not None:
        info = libc.mallinfo2()
        reading |= {
            "malloc_used": info.uordblks / 1e6,
            "malloc_free": info.fordblks / 1e6,
            "malloc_mapped": info.hblkhd / 1e6,
        }
        if arenas:
            reading["arenas"] = _arenas(libc)
    if sqlite is not None:
        reading["sqlite"] = sqlite.sqlite3_memory_used() / 1e6
    return reading


def watch(out: Path, every: float) -> None:
    libc, sqlite = _libc(), _sqlite()
    count = 0
    with out.open("a") as samples:
        while True:
            samples.write(json.dumps(sample(libc, sqlite, arenas=count % 30 == 0)) + "\n")
            samples.flush()
            count += 1
            time.sleep(every)


def run_watched(
    argv: list[str] | None,
    watcher: Callable[[Path, float], None],
    *,
    name: str,
    description: str,
    out_help: str,
    every: float,
    start: Callable[[], None] = lambda: None,
) -> None:
    """Parse ``--out``, ``--every`` and ``-- <the scheduler's arguments>``; call ``start``, run ``watcher(out,
    every)`` in a thread of its own, then the scheduler's command line (imported after ``start``)."""
    parser = argparse.ArgumentParser(prog=f"python -m bench.{name}", description=description)
    parser.add_argument("--out", type=Path, required=True, help=out_help)
    parser.add_argument("--every", type=float, default=every, help="seconds between two samples")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- and the scheduler's arguments, e.g. -- run")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    start()
    threading.Thread(target=watcher, args=(args.out, args.every), name=name, daemon=True).start()
    from scheduler.cli import main as scheduler_main  # imported after start(): under tracing, its import is traced

    scheduler_main(command, prog_name="cekura-scheduler")


def main(argv: list[str] | None = None) -> None:
    description = __doc__.splitlines()[0]
    run_watched(argv, watch, name="memwatch", description=description, out_help="a file for the samples", every=2.0)


if __name__ == "__main__":
    main(sys.argv[1:])
