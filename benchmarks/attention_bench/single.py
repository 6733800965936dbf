"""One configuration (method, direction, dtype, L), measured in a fresh process: forward and
forward+backward times (medians over repeats after a warmup), peak memory from a separate run, page
faults and CPU time. ``worker`` is what the benchmark runs in each forked process; ``run_single`` is
the same measurement in this process."""

from __future__ import annotations

import contextlib
import gc
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from .device import synchronize, torch_dtype
from .methods import make_method
from .procfs import die_with_parent, malloc_trim, proc_status, reset_hwm
from .provenance import attention_source


def _memory_baseline(device) -> tuple[int, bool]:
    """The footprint before a memory run, with the peak counter reset; and whether that peak can be read."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device), False
    malloc_trim()
    hwm_ok = reset_hwm()
    return proc_status("VmRSS") or 0, hwm_ok


def _memory_peak(device, base: int, hwm_ok: bool) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) - base
    hwm = proc_status("VmHWM") if hwm_ok else None
    return (hwm - base) if hwm is not None else float("nan")


def measure(run: Callable[[], None], prepare: Callable[[], None], device, *, memory: bool) -> dict[str, Any]:
    """One run: wall time, page faults, CPU time; with ``memory=True`` also the peak above the current
    footprint. On CPU that run starts from a trimmed heap (``malloc_trim``) so that the high-water mark
    sees every byte the run needs, which also makes it a cold-allocator run: timing runs skip it."""
    prepare()
    gc.collect()
    base, hwm_ok = _memory_baseline(device) if memory else (0, False)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    run()
    synchronize(device)
    t1 = time.perf_counter()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "time_s": t1 - t0,
        "peak_bytes": _memory_peak(device, base, hwm_ok) if memory else None,
        "minflt": r1.ru_minflt - r0.ru_minflt,
        "majflt": r1.ru_majflt - r0.ru_majflt,
        "utime_s": r1.ru_utime - r0.ru_utime,
        "stime_s": r1.ru_stime - r0.ru_stime,
    }


def _summary(runs: list[dict[str, Any]], mem: dict[str, Any]) -> dict[str, Any]:
    return {
        "median_s": statistics.median(r["time_s"] for r in runs),
        "min_s": min(r["time_s"] for r in runs),
        "times_s": [r["time_s"] for r in runs],
        "peak_bytes": mem["peak_bytes"],
        "memory_run": {k: mem[k] for k in ("time_s", "minflt", "stime_s")},
        "minflt": int(statistics.median(r["minflt"] for r in runs)),
        "majflt": int(statistics.median(r["majflt"] for r in runs)),
        "utime_s": statistics.median(r["utime_s"] for r in runs),
        "stime_s": statistics.median(r["stime_s"] for r in runs),
        "runs": len(runs),
    }


class _Passes:
    """The two passes over fixed inputs (q, k, v ``[B, H, L, d]`` requiring grad, g the output gradient)."""

    def __init__(self, fn: Callable, q, k, v, g):
        self.fn, self.q, self.k, self.v, self.g = fn, q, k, v, g

    def clear(self) -> None:
        self.q.grad = self.k.grad = self.v.grad = None

    def fwd(self) -> None:
        with torch.no_grad():
            out = self.fn(self.q, self.k, self.v)
        del out

    def fwd_bwd(self) -> None:
        out = self.fn(self.q, self.k, self.v)
        out.backward(self.g)
        del out


def _input_maker(spec: dict[str, Any], device) -> Callable[[int], tuple]:
    """``inputs(n) -> (q, k, v, g)`` of length n, all drawn from one generator seeded by the spec."""
    dtype = torch_dtype(spec["dtype"])
    b, h, d = spec["batch"], spec["heads"], spec["head_dim"]
    gen = torch.Generator(device="cpu").manual_seed(spec["seed"])

    def inputs(n: int):
        q, k, v, g = (torch.randn(b, h, n, d, generator=gen).to(device=device, dtype=dtype) for _ in range(4))
        for t in (q, k, v):
            t.requires_grad_(True)
        return q, k, v, g

    return inputs


def _limit_address_space(extra_bytes: int) -> None:
    """A safety net: an allocation beyond the budget raises instead of swapping or OOM-killing."""
    limit = (proc_status("VmSize") or 0) + extra_bytes
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))


def _warm_up_small(fn: Callable, inputs: Callable[[int], tuple], length: int) -> str:
    """For a configuration whose run takes long: warm the code paths up at a small length only."""
    small = min(length, 1024)
    passes = _Passes(fn, *inputs(small))
    passes.clear(), passes.fwd_bwd(), passes.clear(), passes.fwd(), passes.clear()
    return f"warmup at L={small}"


def _timed(run: Callable[[], None], clear: Callable[[], None], device, slow: bool, repeats: int) -> dict[str, Any]:
    """Peak memory from its own run (trimmed heap); time from runs that leave the allocator as a training
    loop would. A slow configuration gets one run for both (the trim costs little next to > slow_run_s)."""
    mem = measure(run, clear, device, memory=True)
    runs = [mem] if slow else [measure(run, clear, device, memory=False) for _ in range(repeats)]
    return _summary(runs, mem)


def _time_passes(passes: _Passes, device, spec: dict[str, Any], slow: bool) -> dict[str, Any]:
    repeats = 1 if slow else spec["repeats"]
    warm = None
    if not slow:  # one full-size run of each first; one that turns out slow is timed once
        warm = measure(passes.fwd_bwd, passes.clear, device, memory=False)
        if warm["time_s"] > spec["slow_run_s"]:
            slow, repeats = True, 1
        measure(passes.fwd, passes.clear, device, memory=False)
    fwd_bwd = _timed(passes.fwd_bwd, passes.clear, device, slow, repeats)
    fwd = _timed(passes.fwd, passes.clear, device, slow, repeats)
    passes.clear()
    return {"fwd": fwd, "fwd_bwd": fwd_bwd, "warmup_fwd_bwd_s": None if warm is None else warm["time_s"]}


def run_single(spec: dict[str, Any]) -> dict[str, Any]:
    """Measure one (method, direction, dtype, L) configuration in this process."""
    wall0 = time.perf_counter()
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    if device.type == "cpu" and spec.get("address_space_limit"):
        _limit_address_space(int(spec["address_space_limit"]))
    fn = make_method(spec, device)
    source = attention_source()["sha256"] if spec["method"] == "ours" else None
    inputs = _input_maker(spec, device)
    slow = bool(spec.get("slow"))
    warmup_note = _warm_up_small(fn, inputs, spec["length"]) if slow else None
    passes = _Passes(fn, *inputs(spec["length"]))
    timings = _time_passes(passes, device, spec, slow)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "status": "ok",
        **timings,
        "warmup": warmup_note or "one full-size run of each",
        "input_bytes": 3 * passes.q.numel() * passes.q.element_size(),
        "process_cpu_s": usage.ru_utime + usage.ru_stime,
        "process_wall_s": time.perf_counter() - wall0,
        "threads": torch.get_num_threads(),
        "attention_source": source,
        "timing_protocol": 2,
    }


def noop() -> None:
    """Target of the process that starts the forkserver."""


def worker(spec: dict[str, Any], conn) -> None:
    """``run_single`` in a forked process, its result (or the failure) sent back through ``conn``."""
    die_with_parent()  # with the forkserver, which exits with the benchmark process
    try:
        result = run_single(spec)
    except BaseException as exc:
        msg = f"{type(exc).__name__}: {exc}".strip()
        oom = isinstance(exc, MemoryError) or "alloc" in msg.lower() or "out of memory" in msg.lower()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        result = {"status": "failed", "note": ("out of memory: " if oom else "") + msg[:500],
                  "process_cpu_s": usage.ru_utime + usage.ru_stime}
    conn.send(result)
    conn.close()
