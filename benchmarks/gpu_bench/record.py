"""The results document and the one way an item is measured: inside the time budget, every failure caught
and turned into a note, the document rewritten after every item so that a run killed at any point still
leaves all numbers taken so far. Also the timing and peak-memory helpers the parts share."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from attention_bench.device import synchronize
from attention_bench.results import save

MIB = 2**20
MAX_TIMED_S = 5.0  # an item stops repeating once its timed runs add up to this (one run at least)


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)) or "out of memory" in str(exc).lower()


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


class Recorder:
    """Items grouped by section (``attention``, ``error``, ``train``) in ``doc``, saved to ``path``.

    An item is a dict of its key (method, direction, length, …), its values, and ``note``: None when
    measured, else why not (``oom``, ``fla not installed``, ``skipped: budget``, ``failed: …``)."""

    def __init__(self, doc: dict[str, Any], path: Path, device: torch.device, budget_s: float):
        self.doc, self.path, self.device, self.budget_s = doc, path, device, budget_s
        self.start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def over_budget(self) -> bool:
        return self.elapsed() > self.budget_s

    def measure(self, section: str, key: dict[str, Any], fn: Callable[[], dict[str, Any]], describe: Callable[[dict], str]) -> dict:
        """``fn()``'s values under ``key``, or the note why there are none; saved and printed at once."""
        item = dict(key)
        if self.over_budget():
            return self.note(section, key, "skipped: budget")
        t0 = time.monotonic()
        try:
            item.update(fn())
            item["note"] = None
        except Exception as exc:
            item["note"] = "oom" if is_oom(exc) else f"failed: {type(exc).__name__}: {str(exc).strip()[:400]}"
        finally:
            free_memory(self.device)
        item["wall_s"] = round(time.monotonic() - t0, 3)
        return self._add(section, item, describe(item) if item["note"] is None else item["note"])

    def note(self, section: str, key: dict[str, Any], note: str) -> dict:
        """An item that is not measured, with the reason."""
        return self._add(section, {**key, "note": note}, note)

    def _add(self, section: str, item: dict[str, Any], text: str) -> dict:
        self.doc[section].append(item)
        self.doc["elapsed_s"] = round(self.elapsed(), 1)
        save(self.doc, self.path)
        label = " ".join(f"{k}={v}" if k == "length" else str(v) for k, v in item.items() if k in ("preset", "attention", "method", "direction", "length"))
        print(f"[{self.elapsed():6.1f}s] {section:9s} {label}: {text}", flush=True)
        return item


def time_runs(run: Callable[[], None], device: torch.device, warmup: int, reps: int) -> dict[str, Any]:
    """Median wall time of ``run`` (synchronized before and after) over ``reps`` runs after ``warmup``
    (the first warmup run, which holds any compilation, is reported as ``first_s``)."""

    def once() -> float:
        synchronize(device)
        t0 = time.perf_counter()
        run()
        synchronize(device)
        return time.perf_counter() - t0

    first = once()
    for _ in range(warmup - 1):
        once()
    times: list[float] = []
    while len(times) < reps and (not times or sum(times) < MAX_TIMED_S):
        times.append(once())
    median = statistics.median(times)
    return {"ms": median * 1e3, "times_ms": [round(t * 1e3, 4) for t in times], "first_s": round(first, 4)}


def peak_mib(run: Callable[[], None], device: torch.device) -> float | None:
    """Peak memory of one run of ``run`` above what was allocated before it (the inputs), in MiB; None on the CPU."""
    if device.type != "cuda":
        return None
    synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    run()
    synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / MIB
