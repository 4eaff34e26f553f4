"""Process-level settings, applied by the command-line entry point (never on import).

glibc serves every allocation above ``M_MMAP_THRESHOLD`` (dynamic, at most 32 MiB) with a fresh
``mmap`` and returns it to the kernel on free, so each training step page-faults its activation
buffers back in. On the 2-core reference machine that costs up to ~30% of training throughput at
larger batch x image sizes (``bench/malloc.py`` measures it). Raising the mmap and trim thresholds
keeps freed memory in the heap for reuse, which is what tcmalloc does, without needing a system
library or ``LD_PRELOAD``. Set ``FAIRQUANT_MALLOC=default`` to leave the allocator untouched.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3


def tune_malloc() -> bool:
    """Keep large freed blocks in glibc's heap; return whether the setting was applied."""
    if os.environ.get("FAIRQUANT_MALLOC", "").lower() == "default" or not sys.platform.startswith(
        "linux"
    ):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc without mallopt
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, 1 << 30) == 1
    ok &= mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1
    ok &= mallopt(_M_TOP_PAD, 64 << 20) == 1
    return bool(ok)


def exit_on_signals() -> None:
    """Turn SIGTERM and SIGINT into ``SystemExit(128 + signal)``: the stack unwinds, so every
    ``with`` block ends (a run's staging folder and temporary folders are removed) before the
    process exits with the shell's code for the signal. A second signal during that cleanup is
    ignored; SIGKILL cannot be caught (the next run into the folder removes what it left)."""

    def handler(signum: int, frame: object) -> None:
        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, signal.SIG_IGN)
        raise SystemExit(128 + signum)

    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, handler)
