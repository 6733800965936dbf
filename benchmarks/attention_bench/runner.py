"""Fresh processes for configurations: each is forked from a ``multiprocessing`` forkserver that has
only imported the libraries, so no allocator or thread-pool state is shared between configurations.
The forkserver inherits ``sys.path``, so it finds this package wherever the benchmark was started."""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

from .procfs import cpu_ticks
from .single import noop, worker


class ProcessRunner:
    """Runs configurations in fresh processes forked from a preloaded forkserver."""

    def __init__(self, preload: list[str]):
        self.ctx = multiprocessing.get_context("forkserver")
        self.ctx.set_forkserver_preload(preload)
        proc = self.ctx.Process(target=noop)  # start the forkserver (and its imports) before anything is timed
        proc.start()
        proc.join()

    def _collect(self, proc, recv, timeout_s: float) -> dict[str, Any]:
        """The worker's result, or why there is none (timeout, crash); the worker is gone afterwards."""
        result: dict[str, Any] | None = None
        if recv.poll(timeout_s):
            try:
                result = recv.recv()
            except EOFError:
                result = None
        else:
            proc.kill()
            result = {"status": "failed", "note": f"timeout after {timeout_s:.0f} s"}
        proc.join(30)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
        if result is None:
            code = proc.exitcode
            why = "killed (out of memory?)" if code is not None and code < 0 else "no result"
            result = {"status": "failed", "note": f"worker exited with code {code}: {why}"}
        recv.close()
        return result

    def run(self, spec: dict[str, Any], timeout_s: float) -> tuple[dict[str, Any], dict[str, float]]:
        """(result, load): the measurement of ``spec`` and the wall time and CPU seconds other processes
        used meanwhile (``other_cpu_s``, ``steal_s``)."""
        recv, send = self.ctx.Pipe(duplex=False)
        cpu0, self0, wall0 = cpu_ticks(), time.process_time(), time.perf_counter()
        proc = self.ctx.Process(target=worker, args=(spec, send), daemon=True)
        proc.start()
        send.close()
        result = self._collect(proc, recv, timeout_s)
        wall = time.perf_counter() - wall0
        cpu1 = cpu_ticks()
        load: dict[str, float] = {"wall_s": wall}
        if cpu0 and cpu1:
            busy = cpu1["busy"] - cpu0["busy"]
            mine = (result.get("process_cpu_s") or 0.0) + (time.process_time() - self0)
            load["other_cpu_s"] = max(0.0, busy - mine)
            load["steal_s"] = cpu1["steal"] - cpu0["steal"]
        return result, load
