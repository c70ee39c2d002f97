"""The process's native memory: glibc's malloc told to keep fewer arenas and to give back the pages it keeps free.

The daemon's Python objects do not grow (the soak benchmark traces them), but the C heap underneath does when
many threads allocate and free blocks of every size: glibc gives threads arenas of their own (up to eight per
core), and what one arena frees cannot serve another, nor go back to the system while a live block sits above
it. Both calls are no-ops where the C library has no such functions (musl's ``mallopt`` ignores the setting,
macOS has neither).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from typing import Any

MALLOC_ARENAS = 2  # arenas for the daemon's threads, which mostly wait on SQLite and the network
_M_ARENA_MAX = -8  # mallopt's parameter for that, from glibc's <malloc.h>


def _libc() -> Any:
    """The C library's functions, as the process already has them loaded; None when ctypes cannot reach them."""
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


def limit_malloc_arenas() -> None:
    """Let malloc keep at most ``MALLOC_ARENAS`` arenas, unless ``MALLOC_ARENA_MAX`` already says; call it
    before any thread starts (a thread gets its arena at its first allocation)."""
    if "MALLOC_ARENA_MAX" in os.environ:  # glibc read it at start-up
        return
    with contextlib.suppress(AttributeError):
        if (libc := _libc()) is not None:
            libc.mallopt(_M_ARENA_MAX, MALLOC_ARENAS)


def release_free_memory() -> None:
    """Give the system back the whole pages that lie free inside malloc's heaps (glibc's ``malloc_trim``).

    A few milliseconds at most for the daemon's heaps; a page given back and needed again costs a page fault.
    """
    with contextlib.suppress(AttributeError):
        if (libc := _libc()) is not None:
            libc.malloc_trim(0)
