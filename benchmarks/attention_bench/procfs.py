"""Process-level measurement helpers (Linux ``/proc`` and glibc; each degrades gracefully elsewhere):
resident-set size and its high-water mark, returning freed heap pages to the kernel, and how busy the
rest of the machine is, so that a run disturbed by other processes can be told apart and re-run."""

from __future__ import annotations

import contextlib
import ctypes
import os
import time


def proc_status(key: str) -> int | None:
    """A ``/proc/self/status`` field in bytes (``VmRSS``, ``VmHWM``, ``VmSize``), or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_hwm() -> bool:
    """Reset ``VmHWM`` to the current resident set (``/proc/self/clear_refs``); False where that is impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


_LIBC = None


def malloc_trim() -> None:
    """Return the free heap pages to the kernel (glibc), so that a following run's high-water mark sees them all."""
    global _LIBC
    try:
        if _LIBC is None:
            _LIBC = ctypes.CDLL("libc.so.6")
        _LIBC.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def die_with_parent() -> None:
    """Have the kernel send this process SIGTERM when its parent exits (``PR_SET_PDEATHSIG``)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6").prctl(1, 15)


def cpu_ticks() -> dict[str, float] | None:
    """System-wide CPU seconds from ``/proc/stat``: busy (user+nice+system+irq+softirq) and steal."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    steal = fields[7] if len(fields) > 7 else 0
    return {"busy": (user + nice + system + irq + softirq) / hz, "steal": steal / hz}


def _other_cpu(window_s: float) -> float | None:
    """Cores used by other processes (system-wide busy minus this process) over a short window."""
    c0, s0 = cpu_ticks(), time.process_time()
    time.sleep(window_s)
    c1, s1 = cpu_ticks(), time.process_time()
    if not c0 or not c1:
        return None
    return max(0.0, (c1["busy"] - c0["busy"]) - (s1 - s0)) / window_s


def wait_for_quiet(max_wait_s: float, threshold_cores: float = 0.25) -> dict[str, float]:
    """Wait (up to ``max_wait_s``) until other processes use under ``threshold_cores`` over 0.5 s."""
    if max_wait_s <= 0:
        return {}
    t0 = time.perf_counter()
    while True:
        other = _other_cpu(0.5)
        waited = time.perf_counter() - t0
        if other is None or other < threshold_cores or waited >= max_wait_s:
            return {"waited_s": round(waited, 1), "other_cores_before": None if other is None else round(other, 2)}
