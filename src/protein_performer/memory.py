"""Process-level memory tuning for the command line (never applied by importing the library).

On CPU, FAVOR's large intermediates ([B, H, L, M] features and their gradients) are freed and
allocated again every step. glibc serves blocks over 32 MiB with fresh ``mmap`` pages and returns
them on free, so every step pays minor page faults for memory it just had: measured at L = 16384
(causal, fwd+bwd) 1.60 s with glibc's defaults against 0.98 s with freed memory kept for reuse
(docs/benchmarks.md). ``retain_freed_memory`` tells glibc to keep it: allocations come from the heap
and freed memory stays in the process (its resident size does not shrink back until exit).
FAVOR asks :func:`freed_memory_retained` to choose how it runs: where fresh memory is faulted in, it
recomputes its features in cache-sized blocks instead of allocating them whole.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
OPT_OUT = "PROTEIN_PERFORMER_KEEP_MALLOC"
# glibc reads its malloc settings from the environment once, at start-up: so do we, at import.
_TUNABLES = os.environ.get("GLIBC_TUNABLES", "").replace(":", " ").split()
_retained = os.environ.get("MALLOC_MMAP_MAX_") == "0" or "glibc.malloc.mmap_max=0" in _TUNABLES


def retain_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse; True if applied. Linux/glibc only; a no-op
    elsewhere or when the environment variable ``PROTEIN_PERFORMER_KEEP_MALLOC`` is set."""
    if not sys.platform.startswith("linux") or os.environ.get(OPT_OUT):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    global _retained
    ok_mmap = mallopt(_M_MMAP_MAX, 0)  # never serve allocations with mmap
    ok_trim = mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)  # never give the heap top back
    applied = bool(ok_mmap and ok_trim)
    _retained = _retained or applied
    return applied


def freed_memory_retained() -> bool:
    """Whether large allocations in this process reuse freed memory: :func:`retain_freed_memory` applied,
    or glibc told so at start-up (``MALLOC_MMAP_MAX_=0``, or ``glibc.malloc.mmap_max=0`` in
    ``GLIBC_TUNABLES``)."""
    return _retained
