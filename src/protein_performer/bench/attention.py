"""Attention benchmark: our FAVOR attention against exact attention and other linear-attention code.

Measured for every sequence length L, dtype and direction (bidirectional / causal), side by side:

- ``ours``: :func:`protein_performer.attention.favor_attention` (softmax kernel, ``[M, d]`` projection
  from :func:`~protein_performer.attention.draw_projection`);
- ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` (exact; flash kernel on CPU);
- ``performer``: performer-pytorch's ``FastAttention`` (optional; ``pip install performer-pytorch``);
- ``fast-tr``: a causal FAVOR+ built on pytorch-fast-transformers' ``causal_dot_product`` kernel
  (optional, causal only): the same stabilized positive features as ours computed in eager PyTorch,
  the normalizer as a ones column appended to V, the causal product in the library's C++/CUDA kernel.

Per configuration: forward time (under ``torch.no_grad``, i.e. inference) and forward+backward time
(inputs require grad, backward from a fixed random output gradient), each the median over repeats
after a warmup; peak memory above the baseline with inputs allocated (from a separate run, see below);
minor page faults and user/system CPU time per run. A configuration whose run takes longer than
``--slow-run-s`` is warmed up at a small length and timed once (that run also gives the peak).

Every configuration runs in a fresh process (forked from a ``multiprocessing`` forkserver that has
only imported the libraries, so no allocator or thread-pool state is shared between configurations).
On CPU the peak is the resident-set high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs``
after ``malloc_trim``) minus the resident set just before the run; on CUDA it is
``torch.cuda.max_memory_allocated`` minus the memory allocated before the run. The trim returns freed
heap pages to the kernel, so that run re-faults them: timing runs are therefore separate runs without
the trim (steady state, as in a training loop); the memory run's own time is kept as ``memory_run``.

A method whose predicted peak (extrapolated log-log from the lengths already measured, plus inputs and
gradients) would exceed ``--memory-limit-gb``, or whose predicted single forward+backward run would
exceed ``--time-limit-s``, is skipped at that length and every larger one, with a ``skipped: ...``
note in the JSON; so is one that failed (out of memory, timeout).

FLOP convention (``ours`` and ``sdpa``; multiply-add = 2 FLOPs, only the matrix products counted,
elementwise work such as exp not counted), per batch element and head:

- ours forward: feature projections ``2·L·M·d`` for q and for k; bidirectional ``K′ᵀ[V 1]`` and
  ``Q′(K′ᵀ[V 1])`` ``2·L·M·(d+1)`` each; causal (chunk C): intra-chunk ``Q′K′ᵀ`` ``2·L·C·M`` and
  scores·[V 1] ``2·L·C·(d+1)`` (the full C×C block, as executed), inter-chunk states and the product
  with the carried state ``2·L·M·(d+1)`` each.
- ours backward: the input gradients of the two projections (the projection needs no gradient:
  ``2·L·M·d`` each) plus twice the attention products (the usual two products per forward product).
  This is implementation-independent, so versions compare on the same count. It equals what the
  bidirectional backward executes; the chunked causal backward executes three chunked causal products
  (grad q, grad k, grad v), one more than counted, so causal GFLOP/s understate executed throughput
  (at L=16384 the profiler counts 95.0 GFLOP for fwd+bwd against 75.7 by this convention).
- sdpa: forward ``4·L²·d`` (causal half of it), backward 2.5× forward (flash backward).

Run ``python -m protein_performer.bench.attention --help`` or ``protein-performer bench attention``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import io
import json
import math
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

METHODS = ("ours", "sdpa", "performer", "fast-tr")
METHOD_TITLES = {
    "ours": "ours (favor_attention)",
    "sdpa": "torch SDPA (exact)",
    "performer": "performer-pytorch 1.1.4 FastAttention",
    "fast-tr": "fast-transformers causal_dot_product",
}
DIRECTIONS = ("bidirectional", "causal")
DTYPES = ("float32", "bf16")
DEFAULT_LENGTHS = (512, 1024, 2048, 4096, 8192, 16384, 32768)
QUICK_LENGTHS = (256, 512, 1024, 2048)
DEFAULT_OUT = "runs/bench/attention"
MIB = 2**20
GIB = 2**30


# --------------------------------------------------------------------------------------------------
# command line


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return sorted(set(values))


def _choice_list(allowed: tuple[str, ...], aliases: dict[str, str] | None = None) -> Callable[[str], list[str]]:
    aliases = aliases or {}

    def parse(text: str) -> list[str]:
        out = []
        for item in text.replace(" ", "").split(","):
            if not item:
                continue
            item = aliases.get(item, item)
            if item not in allowed:
                raise argparse.ArgumentTypeError(f"{item!r} is not one of {', '.join(allowed)}")
            if item not in out:
                out.append(item)
        if not out:
            raise argparse.ArgumentTypeError("empty list")
        return out

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="protein-performer bench attention",
        description="Time and peak memory of FAVOR attention (ours) against torch SDPA, performer-pytorch and "
        "fast-transformers, forward and forward+backward, over sequence lengths.",
    )
    p.add_argument("--lengths", type=_int_list, default=None, help=f"comma-separated L (default {','.join(map(str, DEFAULT_LENGTHS))})")
    p.add_argument("--batch", type=int, default=1, help="batch size B (default 1)")
    p.add_argument("--heads", type=int, default=8, help="heads H (default 8)")
    p.add_argument("--head-dim", type=int, default=64, help="head dimension d (default 64)")
    p.add_argument("--features", type=int, default=256, help="random features M (default 256)")
    p.add_argument("--chunk-size", type=int, default=128, help="causal chunk size of ours (default 128)")
    p.add_argument("--dtypes", type=_choice_list(DTYPES, {"fp32": "float32", "bfloat16": "bf16"}), default=None,
                   help="comma-separated from float32,bf16 (default both)")
    p.add_argument("--directions", type=_choice_list(DIRECTIONS, {"bidir": "bidirectional", "uni": "causal"}),
                   default=list(DIRECTIONS), help="comma-separated from bidirectional,causal (default both)")
    p.add_argument("--methods", type=_choice_list(METHODS, {"performer-pytorch": "performer", "fast-transformers": "fast-tr", "fast_transformers": "fast-tr"}),
                   default=list(METHODS), help=f"comma-separated from {','.join(METHODS)} (default all; missing optional ones are skipped)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per configuration, median reported (default 3; 1 with --quick)")
    p.add_argument("--slow-run-s", type=float, default=10.0,
                   help="a configuration whose run takes longer than this gets 1 timed run and a warmup at a small length (default 10)")
    p.add_argument("--memory-limit-gb", type=float, default=12.0, help="skip a method at lengths where its predicted peak exceeds this (default 12)")
    p.add_argument("--time-limit-s", type=float, default=None,
                   help="skip a method at lengths where its predicted forward+backward run exceeds this (default 120; 1 with --quick)")
    p.add_argument("--quiet-wait-s", type=float, default=None,
                   help="before each configuration wait up to this long for other processes to leave the CPU idle (default 60; 0 = do not wait, the default with --quick)")
    p.add_argument("--retries", type=int, default=None,
                   help="re-run a configuration during which other processes used over 10%% of the CPU this many times, "
                   "keeping the least disturbed measurement (default 1; 0 with --quick)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path(DEFAULT_OUT), help=f"output directory (default {DEFAULT_OUT})")
    p.add_argument("--quick", action="store_true", help="small sizes (L=256..2048), 1 repeat, float32 only: well under a minute")
    p.add_argument("--no-plot", action="store_true", help="do not write the PNG")
    p.add_argument("--update", action="store_true",
                   help="merge into an existing OUT/results.json: the configurations measured now replace the same ones there, "
                   "the others are kept (e.g. to re-measure one method after a change)")
    p.add_argument("--profile", type=int, default=None, metavar="L",
                   help="instead of the benchmark, profile ours forward+backward at length L (both directions, first dtype) with "
                   "torch.profiler and report matmul throughput")
    p.add_argument("--single", default=None, help=argparse.SUPPRESS)  # run one configuration in-process (JSON spec), print JSON
    return p


# --------------------------------------------------------------------------------------------------
# process-level measurement helpers (Linux; degrade gracefully elsewhere)


def _proc_status(key: str) -> int | None:
    """A ``/proc/self/status`` field in bytes (``VmRSS``, ``VmHWM``), or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


_LIBC = None


def _malloc_trim() -> None:
    global _LIBC
    try:
        if _LIBC is None:
            _LIBC = ctypes.CDLL("libc.so.6")
        _LIBC.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _cpu_ticks() -> dict[str, float] | None:
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


def attention_source() -> dict[str, Any]:
    """Identity of the attention code being measured: sha256 over ``protein_performer/attention/*.py``,
    and the git commit of the checkout with whether that directory has uncommitted changes."""
    import hashlib
    import subprocess

    import protein_performer.attention as pkg

    root = Path(pkg.__file__).resolve().parent
    digest = hashlib.sha256()
    for f in sorted(root.glob("*.py")):
        digest.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    info: dict[str, Any] = {"sha256": digest.hexdigest()[:16]}
    with contextlib.suppress(Exception):
        run = lambda *a: subprocess.run(["git", *a], cwd=root, capture_output=True, text=True, timeout=10)  # noqa: E731
        head = run("rev-parse", "--short", "HEAD")
        if head.returncode == 0:
            info["git_commit"] = head.stdout.strip()
            info["git_dirty"] = bool(run("status", "--porcelain", "--", ".").stdout.strip())
    return info


def _dtype(name: str):
    import torch

    return {"float32": torch.float32, "bf16": torch.bfloat16}[name]


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------------------------------
# the methods


def _favor_features(x, projection, is_query: bool):
    """Stabilized positive softmax features (same math as ours), for the fast-transformers variant."""
    import torch

    xs = x * x.shape[-1] ** -0.25
    proj = torch.matmul(xs, projection.t())
    if is_query:
        return (proj - proj.detach().amax(dim=-1, keepdim=True)).exp()
    proj = proj - 0.5 * (xs * xs).sum(-1, keepdim=True)
    return (proj - proj.detach().amax(dim=(-2, -1), keepdim=True)).exp()


def _make_method(spec: dict[str, Any], device) -> Callable:
    """``fn(q, k, v) -> out`` for one method; q, k, v ``[B, H, L, d]``."""
    import torch
    import torch.nn.functional as F

    method, causal = spec["method"], spec["direction"] == "causal"
    d, m = spec["head_dim"], spec["features"]
    gen = torch.Generator(device="cpu").manual_seed(spec["seed"] + 1)
    if method == "ours":
        from protein_performer.attention import draw_projection, favor_attention

        projection = draw_projection(m, d, generator=gen).to(device)
        chunk = spec["chunk_size"]
        return lambda q, k, v: favor_attention(q, k, v, projection, kernel="softmax", causal=causal, chunk_size=chunk)
    if method == "sdpa":
        return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    if method == "performer":
        from performer_pytorch import FastAttention

        torch.manual_seed(spec["seed"] + 1)
        with contextlib.redirect_stdout(io.StringIO()):  # it prints a notice when its CUDA kernel is missing
            module = FastAttention(dim_heads=d, nb_features=m, causal=causal).to(device)
        return module
    if method == "fast-tr":
        from fast_transformers.causal_product import causal_dot_product

        from protein_performer.attention import draw_projection

        if not causal:
            raise ValueError("fast-tr is causal only")
        projection = draw_projection(m, d, generator=gen).to(device)

        def fast_tr(q, k, v):
            out_dtype = q.dtype
            q, k, v = q.float(), k.float(), v.float()  # the kernel is float32 only
            qf = _favor_features(q, projection, True).contiguous()
            kf = _favor_features(k, projection, False).contiguous()
            ve = torch.cat([v, v.new_ones(v.shape[:-1] + (1,))], dim=-1).contiguous()
            u = causal_dot_product(qf, kf, ve)
            return (u[..., :-1] / u[..., -1:]).to(out_dtype)

        return fast_tr
    raise ValueError(f"unknown method {method!r}")


# --------------------------------------------------------------------------------------------------
# one configuration (runs in a fresh process)


def _measure(run: Callable[[], None], prepare: Callable[[], None], device, *, memory: bool) -> dict[str, Any]:
    """One run: wall time, page faults, CPU time; with ``memory=True`` also the peak above the current
    footprint. On CPU that run starts from a trimmed heap (``malloc_trim``) so that the high-water mark
    sees every byte the run needs, which also makes it a cold-allocator run: timing runs skip it."""
    import torch

    prepare()
    gc.collect()
    cuda = device.type == "cuda"
    base, hwm_ok = 0, False
    if memory:
        if cuda:
            _sync(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        else:
            _malloc_trim()
            hwm_ok = _reset_hwm()
            base = _proc_status("VmRSS") or 0
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    run()
    _sync(device)
    t1 = time.perf_counter()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    peak = None
    if memory:
        if cuda:
            peak = torch.cuda.max_memory_allocated(device) - base
        else:
            hwm = _proc_status("VmHWM") if hwm_ok else None
            peak = (hwm - base) if hwm is not None else float("nan")
    return {
        "time_s": t1 - t0,
        "peak_bytes": peak,
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


def run_single(spec: dict[str, Any]) -> dict[str, Any]:
    """Measure one (method, direction, dtype, L) configuration in this process."""
    import torch

    wall0 = time.perf_counter()
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    if device.type == "cpu" and spec.get("address_space_limit"):
        # A safety net: an allocation beyond the budget raises instead of swapping or OOM-killing.
        vm = _proc_status("VmSize") or 0
        limit = vm + int(spec["address_space_limit"])
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    dtype = _dtype(spec["dtype"])
    b, h, d, length = spec["batch"], spec["heads"], spec["head_dim"], spec["length"]
    fn = _make_method(spec, device)
    source = attention_source()["sha256"] if spec["method"] == "ours" else None
    gen = torch.Generator(device="cpu").manual_seed(spec["seed"])

    def inputs(n: int):
        q, k, v, g = (torch.randn(b, h, n, d, generator=gen).to(device=device, dtype=dtype) for _ in range(4))
        for t in (q, k, v):
            t.requires_grad_(True)
        return q, k, v, g

    def runners(q, k, v, g):
        def clear():
            q.grad = k.grad = v.grad = None

        def fwd():
            with torch.no_grad():
                out = fn(q, k, v)
            del out

        def fwd_bwd():
            out = fn(q, k, v)
            out.backward(g)
            del out

        return clear, fwd, fwd_bwd

    slow = bool(spec.get("slow"))
    warmup_note = None
    if slow:  # a run takes long: warm the code paths up at a small length only
        small = min(length, 1024)
        clear_s, fwd_s, fb_s = runners(*inputs(small))
        clear_s(), fb_s(), clear_s(), fwd_s(), clear_s()
        del clear_s, fwd_s, fb_s
        warmup_note = f"warmup at L={small}"
    q, k, v, g = inputs(length)
    clear, fwd, fwd_bwd = runners(q, k, v, g)
    repeats = 1 if slow else spec["repeats"]
    warm = None
    if not slow:
        warm = _measure(fwd_bwd, clear, device, memory=False)
        if warm["time_s"] > spec["slow_run_s"]:
            slow, repeats = True, 1
        _measure(fwd, clear, device, memory=False)
    # Peak memory from its own run (trimmed heap); time from runs that leave the allocator as a training
    # loop would. A slow configuration gets one run for both (the trim costs little next to > slow_run_s).
    fb_mem = _measure(fwd_bwd, clear, device, memory=True)
    fb_runs = [fb_mem] if slow else [_measure(fwd_bwd, clear, device, memory=False) for _ in range(repeats)]
    fwd_mem = _measure(fwd, clear, device, memory=True)
    fwd_runs = [fwd_mem] if slow else [_measure(fwd, clear, device, memory=False) for _ in range(repeats)]
    clear()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "status": "ok",
        "fwd": _summary(fwd_runs, fwd_mem),
        "fwd_bwd": _summary(fb_runs, fb_mem),
        "warmup_fwd_bwd_s": None if warm is None else warm["time_s"],
        "warmup": warmup_note or "one full-size run of each",
        "input_bytes": 3 * q.numel() * q.element_size(),
        "process_cpu_s": usage.ru_utime + usage.ru_stime,
        "process_wall_s": time.perf_counter() - wall0,
        "threads": torch.get_num_threads(),
        "attention_source": source,
        "timing_protocol": 2,
    }


def _noop() -> None:
    pass


def _worker(spec: dict[str, Any], conn) -> None:
    with contextlib.suppress(Exception):  # die with the forkserver (which exits with the benchmark process)
        ctypes.CDLL("libc.so.6").prctl(1, 15)  # PR_SET_PDEATHSIG, SIGTERM
    try:
        result = run_single(spec)
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
        msg = f"{type(exc).__name__}: {exc}".strip()
        oom = isinstance(exc, MemoryError) or "alloc" in msg.lower() or "out of memory" in msg.lower()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        result = {"status": "failed", "note": ("out of memory: " if oom else "") + msg[:500],
                  "process_cpu_s": usage.ru_utime + usage.ru_stime}
    conn.send(result)
    conn.close()


# --------------------------------------------------------------------------------------------------
# FLOP counts and reference matmul throughput


def favor_flops(length: int, batch: int, heads: int, head_dim: int, features: int, causal: bool, chunk: int) -> tuple[int, int]:
    """(forward, forward+backward) matrix-product FLOPs of ours; convention in the module docstring."""
    n, m, d = length, features, head_dim
    proj = 2 * n * m * d  # one of the two feature projections
    if causal:
        c = min(chunk, n)
        attn = 2 * n * c * m + 2 * n * c * (d + 1) + 2 * (2 * n * m * (d + 1))
    else:
        attn = 2 * (2 * n * m * (d + 1))
    fwd = 2 * proj + attn
    fb = fwd + 2 * proj + 2 * attn
    return batch * heads * fwd, batch * heads * fb


def sdpa_flops(length: int, batch: int, heads: int, head_dim: int, causal: bool) -> tuple[float, float]:
    fwd = 4 * length * length * head_dim * (0.5 if causal else 1.0) * batch * heads
    return fwd, 3.5 * fwd


def matmul_throughput(device_name: str, threads: int | None, quick: bool) -> dict[str, Any]:
    """Plain ``torch.matmul`` GFLOP/s into a reused ``out=`` buffer: square, and FAVOR-projection shaped."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    device = torch.device(device_name)
    gen = torch.Generator(device="cpu").manual_seed(0)
    n = 2048 if quick else 4096
    reps = 10 if device.type == "cuda" else (2 if quick else 3)
    shapes = {"square": (n, n, n), "favor_projection": (8 * 8192, 64, 256)}  # [H·L, d] @ [d, M]
    out: dict[str, Any] = {"repeats": reps}
    for dname in DTYPES:
        dtype = _dtype(dname)
        for sname, (rows, inner, cols) in shapes.items():
            a = torch.randn(rows, inner, generator=gen).to(device=device, dtype=dtype)
            bm = torch.randn(inner, cols, generator=gen).to(device=device, dtype=dtype)
            c = torch.empty(rows, cols, device=device, dtype=dtype)
            torch.matmul(a, bm, out=c)
            _sync(device)
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                torch.matmul(a, bm, out=c)
                _sync(device)
                times.append(time.perf_counter() - t0)
            flops = 2 * rows * inner * cols
            out[f"{dname}_{sname}"] = {"shape": [rows, inner, cols], "median_s": statistics.median(times),
                                       "gflops": flops / statistics.median(times) / 1e9}
            del a, bm, c
    return out


# --------------------------------------------------------------------------------------------------
# orchestration


def _available(method: str, device: str = "cpu") -> tuple[bool, str]:
    if method in ("ours", "sdpa"):
        return True, ""
    if method == "performer":
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                from importlib.metadata import version

                import performer_pytorch  # noqa: F401

                return True, f"performer-pytorch {version('performer-pytorch')}"
        except Exception as exc:  # noqa: BLE001
            return False, f"performer-pytorch not importable ({type(exc).__name__}: {exc}); pip install performer-pytorch==1.1.4"
    if method == "fast-tr":
        try:
            from importlib.metadata import version

            from fast_transformers.causal_product import causal_dot_product  # noqa: F401

            if device.startswith("cuda"):
                import fast_transformers.causal_product.causal_product_cuda  # noqa: F401

            return True, f"pytorch-fast-transformers {version('pytorch-fast-transformers')}"
        except Exception as exc:  # noqa: BLE001
            return False, (f"fast_transformers.causal_product not importable ({type(exc).__name__}: {exc}); build it with "
                           "`pip install --no-build-isolation pytorch-fast-transformers` (CPU: no nvcc on PATH, CUDA_HOME unset)")
    return False, "unknown method"


def _predict(points: list[tuple[int, float]], length: int, min_slope: float, max_slope: float = 2.2) -> float | None:
    """Extrapolate ``value(length)`` log-log from measured (L, value) points, slope clamped."""
    points = [(x, y) for x, y in points if y and y > 0 and math.isfinite(y)]
    if not points:
        return None
    x1, y1 = points[-1]
    slope = min_slope
    if len(points) >= 2:
        x0, y0 = points[-2]
        if x1 != x0:
            slope = math.log(y1 / y0) / math.log(x1 / x0)
    slope = min(max(slope, min_slope), max_slope)
    return y1 * (length / x1) ** slope


def _other_cpu(window_s: float) -> float | None:
    """Cores used by other processes (system-wide busy minus this process) over a short window."""
    c0, s0 = _cpu_ticks(), time.process_time()
    time.sleep(window_s)
    c1, s1 = _cpu_ticks(), time.process_time()
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


class _Runner:
    """Runs configurations in fresh processes forked from a preloaded forkserver."""

    def __init__(self, preload: list[str]):
        self.ctx = multiprocessing.get_context("forkserver")
        self.ctx.set_forkserver_preload(preload)
        proc = self.ctx.Process(target=_noop)  # start the forkserver (and its imports) before anything is timed
        proc.start()
        proc.join()

    def run(self, spec: dict[str, Any], timeout_s: float) -> tuple[dict[str, Any], dict[str, float]]:
        recv, send = self.ctx.Pipe(duplex=False)
        cpu0, self0, wall0 = _cpu_ticks(), time.process_time(), time.perf_counter()
        proc = self.ctx.Process(target=_worker, args=(spec, send), daemon=True)
        proc.start()
        send.close()
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
        wall = time.perf_counter() - wall0
        cpu1 = _cpu_ticks()
        load: dict[str, float] = {"wall_s": wall}
        if cpu0 and cpu1:
            busy = cpu1["busy"] - cpu0["busy"]
            mine = (result.get("process_cpu_s") or 0.0) + (time.process_time() - self0)
            load["other_cpu_s"] = max(0.0, busy - mine)
            load["steal_s"] = cpu1["steal"] - cpu0["steal"]
        return result, load


def _merge_base(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """An existing results document extended by this run's settings (``--update``)."""
    doc = dict(old)
    oc, nc = old["config"], new["config"]
    for key in ("batch", "heads", "head_dim", "features", "chunk_size", "device"):
        if oc.get(key) != nc.get(key):
            raise SystemExit(f"--update: {key} differs from the existing results ({oc.get(key)} there, {nc.get(key)} now)")
    config = dict(oc)
    config["lengths"] = sorted(set(oc["lengths"]) | set(nc["lengths"]))
    for key, order in (("dtypes", DTYPES), ("directions", DIRECTIONS), ("methods", METHODS)):
        config[key] = [x for x in order if x in set(oc[key]) | set(nc[key])]
    doc["config"] = config
    doc["matmul_runs"] = list(old.get("matmul_runs", [])) + list(new["matmul_runs"])
    doc["matmul"] = {k: max((r[k] for r in doc["matmul_runs"] if k in r), key=lambda v: v["gflops"])
                     for k, v in new["matmul"].items()}
    doc["meta"] = dict(old["meta"])
    doc["meta"].setdefault("updates", []).append({k: new["meta"][k] for k in ("started", "argv", "attention_source_start")})
    doc["results"] = list(old["results"])
    return doc


def _row_key(r: dict[str, Any]) -> tuple:
    return (r["dtype"], r["direction"], r["method"], r["length"])


def _crossover(rows: list[dict[str, Any]], dtype: str, direction: str, other: str = "sdpa") -> dict[str, Any]:
    """Length where ours (fwd+bwd) becomes faster than ``other``, interpolated log-log."""
    by = {(r["method"], r["length"]): r for r in rows if r["dtype"] == dtype and r["direction"] == direction and r["status"] == "ok"}
    lengths = sorted({n for (mth, n) in by if mth == "ours"} & {n for (mth, n) in by if mth == other})
    if not lengths:
        return {"length": None, "note": "no common measurements"}
    logr = [math.log(by[("ours", n)]["fwd_bwd"]["median_s"] / by[(other, n)]["fwd_bwd"]["median_s"]) for n in lengths]
    if all(x < 0 for x in logr):
        return {"length": None, "note": f"ours already faster at the smallest length measured ({lengths[0]})", "below": lengths[0]}
    if logr[-1] >= 0:
        return {"length": None, "note": f"ours not faster up to L={lengths[-1]}", "above": lengths[-1]}
    # last sign change from >= 0 to < 0 (after which ours stays faster)
    i = max(j for j in range(len(logr)) if logr[j] >= 0)
    x0, x1 = math.log(lengths[i]), math.log(lengths[i + 1])
    y0, y1 = logr[i], logr[i + 1]
    x = x0 + (0 - y0) * (x1 - x0) / (y1 - y0)
    return {"length": round(math.exp(x)), "between": [lengths[i], lengths[i + 1]],
            "note": f"interpolated log-log between L={lengths[i]} and {lengths[i + 1]}"}


def _fmt_ms(s: float | None) -> str:
    if s is None:
        return "-"
    ms = s * 1e3
    return f"{ms:.0f}" if ms >= 100 else (f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}")


def _fmt_mib(b: float | None) -> str:
    if b is None or not math.isfinite(b):
        return "-"
    return f"{b / MIB:.0f}" if b >= 10 * MIB else f"{b / MIB:.1f}"


def _table(headers: list[str], body: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in body]
    return "\n".join(lines)


def format_report(doc: dict[str, Any]) -> str:
    rows, cfg = doc["results"], doc["config"]
    methods = [m for m in cfg["methods"] if any(r["method"] == m for r in rows)]
    by = {_row_key(r): r for r in rows}
    out: list[str] = []
    short = {"ours": "ours", "sdpa": "sdpa", "performer": "perf", "fast-tr": "fasttr"}
    for dtype in cfg["dtypes"]:
        for direction in cfg["directions"]:
            ms = [m for m in methods if (direction == "causal" or m != "fast-tr")]
            headers = ["L"]
            for m in ms:
                headers += [f"{short[m]} f+b ms", f"{short[m]} fwd ms", f"{short[m]} MiB"]
            headers += ["ours/sdpa", "ours/perf"]
            body = []
            for n in cfg["lengths"]:
                cells = [str(n)]
                for m in ms:
                    r = by.get((dtype, direction, m, n))
                    if r is None:
                        cells += ["-", "-", "-"]
                    elif r["status"] != "ok":
                        cells += ["skip" if r["status"] == "skipped" else r["status"], "", ""]
                    else:
                        cells += [_fmt_ms(r["fwd_bwd"]["median_s"]), _fmt_ms(r["fwd"]["median_s"]), _fmt_mib(r["fwd_bwd"]["peak_bytes"])]
                for other in ("sdpa", "performer"):
                    a, b = by.get((dtype, direction, "ours", n)), by.get((dtype, direction, other, n))
                    if a and b and a["status"] == b["status"] == "ok":
                        cells.append(f"{a['fwd_bwd']['median_s'] / b['fwd_bwd']['median_s']:.3f}")
                    else:
                        cells.append("-")
                body.append(cells)
            out.append(f"\n== {dtype}, {direction} (B={cfg['batch']}, H={cfg['heads']}, d={cfg['head_dim']}, M={cfg['features']}, "
                       f"device {cfg['device']}): f+b = forward+backward, fwd = forward (no_grad); MiB = f+b peak above inputs; "
                       f"ratios are f+b times ==")
            out.append(_table(headers, body))
            notes = sorted({(r["method"], r.get("note", "")) for r in rows
                            if r["dtype"] == dtype and r["direction"] == direction and r["status"] != "ok" and r.get("note")})
            seen = set()
            for m, note in notes:
                if (m, note.split(" at L=")[0]) in seen:
                    continue
                seen.add((m, note.split(" at L=")[0]))
                out.append(f"  note {short[m]}: {note}")
    # throughput and page faults of ours
    mm = doc.get("matmul", {})
    peak32 = mm.get("float32_square", {}).get("gflops")
    peak16 = mm.get("bf16_square", {}).get("gflops")
    out.append("\n== plain torch.matmul into a reused out= buffer (same run; best of start and end) ==")
    for key, val in mm.items():
        if isinstance(val, dict):
            out.append(f"  {key:24s} {val['shape']}: {val['gflops']:.0f} GFLOP/s")
    out.append("\n== achieved GFLOP/s of ours (matrix-product FLOPs, see convention) and page faults per run ==")
    headers = ["dtype", "direction", "L", "fwd GF/s", "f+b GF/s", "f+b %mm32", "f+b kminflt", "f+b sys s", "f+b user s", "sdpa f+b GF/s", "sdpa kminflt"]
    body = []
    for dtype in cfg["dtypes"]:
        for direction in cfg["directions"]:
            for n in cfg["lengths"]:
                r = by.get((dtype, direction, "ours", n))
                if not r or r["status"] != "ok":
                    continue
                s = by.get((dtype, direction, "sdpa", n))
                s_ok = bool(s and s["status"] == "ok")
                body.append([dtype, direction, str(n), f"{r['gflops_fwd']:.0f}", f"{r['gflops_fwd_bwd']:.0f}",
                             f"{100 * r['gflops_fwd_bwd'] / peak32:.0f}%" if peak32 else "-",
                             f"{r['fwd_bwd']['minflt'] / 1e3:.0f}", f"{r['fwd_bwd']['stime_s']:.2f}", f"{r['fwd_bwd']['utime_s']:.2f}",
                             f"{s['gflops_fwd_bwd']:.0f}" if s_ok else "-",
                             f"{s['fwd_bwd']['minflt'] / 1e3:.0f}" if s_ok else "-"])
    out.append(_table(headers, body) if body else "  (no successful runs of ours)")
    if peak32:
        out.append(f"  plain matmul: {peak32:.0f} GFLOP/s float32" + (f", {peak16:.0f} GFLOP/s bf16" if peak16 else "")
                   + " (ours computes bf16 inputs in float32, so compare with the float32 number)")
    out.append("\n== crossover: ours forward+backward faster than SDPA from ==")
    for dtype, per in doc.get("crossover", {}).items():
        for direction, c in per.items():
            val = f"L ≈ {c['length']}" if c.get("length") else "-"
            out.append(f"  {dtype:8s} {direction:14s} {val:12s} ({c['note']})")
    sources = sorted({r.get("attention_source") for r in rows if r["method"] == "ours" and r["status"] == "ok"} - {None})
    if len(sources) > 1:
        out.append(f"\n  WARNING: rows of ours were measured with {len(sources)} different versions of protein_performer/attention "
                   f"({', '.join(sources)}; 'attention_source' in results.json): the attention code changed during the run")
    contended = [r for r in rows if r.get("load", {}).get("contended")]
    if contended:
        out.append(f"\n  warning: {len(contended)} configuration(s) ran while other processes used CPU (see 'load' in results.json): "
                   + ", ".join(f"{r['method']}/{r['direction']}/{r['dtype']}/L={r['length']}" for r in contended[:8]))
    return "\n".join(out)


def plot(doc: dict[str, Any], path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in doc["results"] if r["status"] == "ok"]
    dtype = "float32" if any(r["dtype"] == "float32" for r in rows) else (rows[0]["dtype"] if rows else None)
    if dtype is None:
        return None
    colors = {"ours": "tab:red", "sdpa": "tab:blue", "performer": "tab:green", "fast-tr": "tab:purple"}
    styles = {"bidirectional": "-", "causal": "--"}
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(13, 5.2))
    for method in doc["config"]["methods"]:
        for direction in DIRECTIONS:
            pts = sorted((r["length"], r["fwd_bwd"]["median_s"], r["fwd_bwd"]["peak_bytes"]) for r in rows
                         if r["method"] == method and r["direction"] == direction and r["dtype"] == dtype)
            if not pts:
                continue
            xs = [p[0] for p in pts]
            label = f"{method} {direction}"
            ax_t.plot(xs, [p[1] for p in pts], styles[direction], color=colors[method], marker="o", ms=3, label=label)
            ax_m.plot(xs, [max(p[2], 1) / MIB for p in pts], styles[direction], color=colors[method], marker="o", ms=3, label=label)
    cfg = doc["config"]
    for ax, title, ylabel in ((ax_t, "forward+backward time", "seconds (median)"), (ax_m, "peak memory (forward+backward)", "MiB above inputs")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length L")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    ax_t.legend(fontsize=8)
    fig.suptitle(f"attention, {dtype}, B={cfg['batch']} H={cfg['heads']} d={cfg['head_dim']} M={cfg['features']}, {doc['meta']['device_name']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _meta(args, device_name: str) -> dict[str, Any]:
    import torch

    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    meta = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": args.threads or torch.get_num_threads(),
        "device_name": torch.cuda.get_device_name() if device_name.startswith("cuda") else f"CPU ({cpu}, {os.cpu_count()} cores)",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": sys.argv,
        "loadavg_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "malloc": os.environ.get("LD_PRELOAD", "") or "default (glibc)",
    }
    return meta


_MATMUL_OPS = ("aten::mm", "aten::bmm", "aten::addmm", "aten::addmm_", "aten::baddbmm", "aten::baddbmm_", "aten::addbmm", "aten::addbmm_")


def _matmul_flops(name: str, shapes: list) -> int:
    """FLOPs of one call from its input shapes, for the products the profiler does not count (in-place ones)."""
    try:
        if name in ("aten::mm", "aten::bmm"):
            a, b = shapes[0], shapes[1]
        else:  # addmm/baddbmm/addbmm (and in-place): self, then the two factors
            a, b = shapes[1], shapes[2]
        batch = math.prod(a[:-2])
        return 2 * batch * a[-2] * a[-1] * b[-1]
    except (IndexError, TypeError):
        return 0


def _profile(args, lengths_dtype: str) -> int:
    """torch.profiler of ours forward+backward at one length; matmul-only throughput from its FLOP counts."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from protein_performer.attention import draw_projection, favor_attention

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = _dtype(lengths_dtype)
    n = args.profile
    b, h, d, m = args.batch, args.heads, args.head_dim, args.features
    gen = torch.Generator(device="cpu").manual_seed(args.seed)
    proj = draw_projection(m, d, generator=gen).to(device)
    q, k, v, g = (torch.randn(b, h, n, d, generator=gen).to(device=device, dtype=dtype) for _ in range(4))
    for t in (q, k, v):
        t.requires_grad_(True)
    args.out.mkdir(parents=True, exist_ok=True)
    if device.type == "cpu":
        wait_for_quiet(args.quiet_wait_s if args.quiet_wait_s is not None else 60.0)
    mm = matmul_throughput(args.device, args.threads, quick=False)
    peak = mm["float32_square"]["gflops"]
    print(f"plain matmul float32: {peak:.0f} GFLOP/s; FAVOR-shaped {mm['float32_favor_projection']['gflops']:.0f} GFLOP/s")
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    for direction in args.directions:
        causal = direction == "causal"

        def step():
            q.grad = k.grad = v.grad = None
            out = favor_attention(q, k, v, proj, causal=causal, chunk_size=args.chunk_size)
            out.backward(g)

        step()
        _sync(device)
        if device.type == "cpu":
            wait_for_quiet(args.quiet_wait_s if args.quiet_wait_s is not None else 60.0)
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        with profile(activities=acts, with_flops=True, record_shapes=True) as prof:
            step()
            _sync(device)
        wall = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        table = prof.key_averages().table(sort_by=sort, row_limit=25)
        mm_ops = [e for e in prof.key_averages(group_by_input_shape=True) if e.key in _MATMUL_OPS]
        mm_time = sum(e.self_cpu_time_total for e in mm_ops) / 1e6  # µs → s
        mm_flops = sum(e.flops or _matmul_flops(e.key, e.input_shapes) * e.count for e in mm_ops)
        total_self = sum(e.self_cpu_time_total for e in prof.key_averages()) / 1e6
        _, counted = favor_flops(n, b, h, d, m, causal, args.chunk_size)
        lines = [
            f"== ours {direction} fwd+bwd, L={n}, {lengths_dtype}, B={b} H={h} d={d} M={m}: wall {wall:.3f} s with the profiler "
            f"(its start/stop included; self CPU total below is the op's own time), "
            f"user {r1.ru_utime - r0.ru_utime:.2f} s, system {r1.ru_stime - r0.ru_stime:.2f} s, "
            f"{(r1.ru_minflt - r0.ru_minflt) / 1e3:.0f}k minor faults ==",
            table,
            f"matrix products ({'/'.join(sorted({e.key.removeprefix('aten::') for e in mm_ops}))}): {mm_time:.3f} s self CPU of {total_self:.3f} s total self CPU "
            f"({100 * mm_time / max(total_self, 1e-9):.0f}%), {mm_flops / 1e9:.1f} GFLOP (profiler count; convention count "
            f"{counted / 1e9:.1f}) → {mm_flops / max(mm_time, 1e-9) / 1e9:.0f} GFLOP/s = "
            f"{100 * mm_flops / max(mm_time, 1e-9) / 1e9 / peak:.0f}% of plain matmul; whole op {counted / max(total_self, 1e-9) / 1e9:.0f} "
            f"GFLOP/s by the convention count over the self CPU total",
        ]
        text = "\n".join(lines)
        print(text)
        (args.out / f"profile_{direction}_{lengths_dtype}_L{n}.txt").write_text(text + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.single is not None:
        print(json.dumps(run_single(json.loads(args.single))))
        return 0
    if args.quick:
        lengths = args.lengths or list(QUICK_LENGTHS)
        dtypes = args.dtypes or ["float32"]
        repeats = args.repeats or 1
        if args.time_limit_s is None:
            args.time_limit_s = 1.0
        if args.quiet_wait_s is None:
            args.quiet_wait_s = 0.0
        if args.retries is None:
            args.retries = 0
    else:
        lengths = args.lengths or list(DEFAULT_LENGTHS)
        dtypes = args.dtypes or list(DTYPES)
        repeats = args.repeats or 3
    if args.time_limit_s is None:
        args.time_limit_s = 120.0
    if args.quiet_wait_s is None:
        args.quiet_wait_s = 60.0
    if args.retries is None:
        args.retries = 1
    if repeats < 1:
        print("--repeats must be >= 1", file=sys.stderr)
        return 2

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("--device cuda given but CUDA is not available", file=sys.stderr)
        return 2
    if not (args.device == "cpu" or args.device.startswith("cuda")):
        print(f"--device must be cpu or cuda, got {args.device!r}", file=sys.stderr)
        return 2
    if args.profile is not None:
        return _profile(args, dtypes[0])

    methods = []
    skipped_methods = {}
    for m in args.methods:
        ok, info = _available(m, args.device)
        if ok:
            methods.append(m)
        else:
            skipped_methods[m] = info
            print(f"note: skipping {m}: {info}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    device_type = "cuda" if args.device.startswith("cuda") else "cpu"
    meta = _meta(args, args.device)
    meta["optional"] = {m: _available(m, args.device)[1] for m in ("performer", "fast-tr")}
    meta["skipped_methods"] = skipped_methods
    meta["attention_source_start"] = attention_source()
    config = {
        "lengths": lengths, "dtypes": dtypes, "directions": args.directions, "methods": methods,
        "batch": args.batch, "heads": args.heads, "head_dim": args.head_dim, "features": args.features,
        "chunk_size": args.chunk_size, "repeats": repeats, "slow_run_s": args.slow_run_s,
        "memory_limit_gb": args.memory_limit_gb, "time_limit_s": args.time_limit_s, "device": args.device,
        "threads": args.threads, "seed": args.seed, "quick": args.quick, "quiet_wait_s": args.quiet_wait_s, "retries": args.retries,
        "fwd": "forward under torch.no_grad (inference)",
        "fwd_bwd": "forward with inputs requiring grad, then backward from a fixed random output gradient",
        "timing_protocol": 2,  # 1 (before): every timed run preceded by malloc_trim; 2: timing runs without it
        "peak_memory": ("VmHWM - VmRSS before a dedicated run (malloc_trim + clear_refs reset), inputs excluded"
                        if device_type == "cpu" else "torch.cuda.max_memory_allocated - memory_allocated before the run"),
        "flop_convention": "see module docstring of protein_performer.bench.attention",
    }
    def measure_matmul(when: str) -> dict[str, Any]:
        quiet = wait_for_quiet(args.quiet_wait_s) if device_type == "cpu" else {}
        print(f"measuring plain matmul throughput on {args.device} ({when}) ...", flush=True)
        mm = matmul_throughput(args.device, args.threads, args.quick)
        mm.update(quiet)
        print("  " + ", ".join(f"{k} {v['gflops']:.0f} GFLOP/s" for k, v in mm.items() if isinstance(v, dict)), flush=True)
        return mm

    def best_matmul(runs: list[dict[str, Any]]) -> dict[str, Any]:
        """Per shape, the fastest of the measurements (start and end of the run): the least disturbed."""
        keys = [k for k, v in runs[0].items() if isinstance(v, dict)]
        return {k: max((r[k] for r in runs), key=lambda v: v["gflops"]) for k in keys}

    matmul_runs = [measure_matmul("start")]
    doc: dict[str, Any] = {"meta": meta, "config": config, "matmul": best_matmul(matmul_runs), "matmul_runs": matmul_runs,
                           "results": [], "crossover": {}}
    if args.update and results_path.exists():
        doc = _merge_base(json.loads(results_path.read_text()), doc)
        matmul_runs = doc["matmul_runs"]
        config = doc["config"]

    def save() -> None:
        tmp = results_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        tmp.replace(results_path)

    preload = ["torch", "protein_performer.attention"] + (["performer_pytorch"] if "performer" in methods else []) + (
        ["fast_transformers.causal_product"] if "fast-tr" in methods else [])
    runner = _Runner(preload)
    element = {"float32": 4, "bf16": 2}
    start = time.perf_counter()
    for dtype in dtypes:
        for direction in args.directions:
            for method in methods:
                stop_note: str | None = None
                t_points: list[tuple[int, float]] = []
                m_points: list[tuple[int, float]] = []
                for n in lengths:
                    row: dict[str, Any] = {"method": method, "direction": direction, "dtype": dtype, "length": n}
                    if method == "fast-tr" and direction != "causal":
                        continue  # causal-only kernel
                    doc["results"] = [r for r in doc["results"] if _row_key(r) != _row_key(row)]
                    input_bytes = 2 * 3 * args.batch * args.heads * n * args.head_dim * element[dtype]  # q,k,v and their grads
                    pred_t = _predict(t_points, n, min_slope=2.0 if method == "sdpa" else 1.0)
                    pred_m = _predict(m_points, n, min_slope=1.0)
                    row["predicted"] = {"fwd_bwd_s": pred_t, "peak_bytes": pred_m}
                    if stop_note is None and pred_m is not None and pred_m + input_bytes > args.memory_limit_gb * GIB:
                        stop_note = (f"skipped: predicted peak {(pred_m + input_bytes) / GIB:.1f} GiB (incl. inputs) > memory limit "
                                     f"{args.memory_limit_gb:g} GiB at L={n}")
                    if stop_note is None and pred_t is not None and pred_t > args.time_limit_s:
                        stop_note = f"skipped: predicted fwd+bwd run {pred_t:.0f} s > time limit {args.time_limit_s:g} s at L={n}"
                    if stop_note is not None:
                        row.update(status="skipped", note=stop_note)
                        doc["results"].append(row)
                        print(f"[{dtype} {direction} {method} L={n}] {stop_note}", flush=True)
                        save()
                        continue
                    slow = pred_t is not None and pred_t > args.slow_run_s
                    plan_repeats = 1 if slow else repeats
                    spec = {
                        "method": method, "direction": direction, "dtype": dtype, "length": n, "batch": args.batch,
                        "heads": args.heads, "head_dim": args.head_dim, "features": args.features,
                        "chunk_size": args.chunk_size, "device": args.device, "repeats": repeats, "slow": slow,
                        "slow_run_s": args.slow_run_s, "seed": args.seed, "threads": args.threads,
                        "address_space_limit": int(1.5 * args.memory_limit_gb * GIB + 4 * GIB) if device_type == "cpu" else None,
                    }
                    timeout = 120 + 2 * (plan_repeats + 1) * 2 * min(pred_t or args.time_limit_s, args.time_limit_s) * 1.5
                    attempts = []
                    for attempt in range(1 + max(0, args.retries)):
                        quiet = wait_for_quiet(args.quiet_wait_s) if device_type == "cpu" else {}
                        result, load = runner.run(spec, timeout)
                        load.update(quiet)
                        share = load.get("other_cpu_s", 0.0) / max(load["wall_s"] * (os.cpu_count() or 1), 1e-9)
                        load["other_share"] = round(share, 3)
                        load["contended"] = bool(share > 0.1 and load.get("other_cpu_s", 0.0) > 0.2)
                        attempts.append((result, load))
                        if not load["contended"] or result.get("status") != "ok":
                            break
                        print(f"[{dtype} {direction} {method} L={n}] other processes used {load['other_cpu_s']:.1f} CPU-s "
                              f"({100 * share:.0f}% of the machine) during the run" + ("; re-running" if attempt < args.retries else ""), flush=True)
                    result, load = min(attempts, key=lambda a: (a[0].get("status") != "ok", a[1].get("other_share", 0.0)))
                    load["attempts"] = len(attempts)
                    row.update(result)
                    row["load"] = load
                    doc["results"].append(row)
                    if row["status"] == "ok":
                        fb, fw = row["fwd_bwd"], row["fwd"]
                        t_points.append((n, fb["median_s"]))
                        m_points.append((n, fb["peak_bytes"]))
                        flop = None
                        if method == "ours":
                            flop = favor_flops(n, args.batch, args.heads, args.head_dim, args.features, direction == "causal", args.chunk_size)
                        elif method == "sdpa":
                            flop = sdpa_flops(n, args.batch, args.heads, args.head_dim, direction == "causal")
                        if flop:
                            row["flops_fwd"], row["flops_fwd_bwd"] = flop
                            row["gflops_fwd"] = flop[0] / fw["median_s"] / 1e9
                            row["gflops_fwd_bwd"] = flop[1] / fb["median_s"] / 1e9
                        msg = (f"f+b {_fmt_ms(fb['median_s'])} ms ({fb['runs']}x), fwd {_fmt_ms(fw['median_s'])} ms, "
                               f"peak {_fmt_mib(fb['peak_bytes'])} MiB, {fb['minflt'] / 1e3:.0f}k faults")
                        if load.get("contended"):
                            msg += f"  [other processes used {load['other_cpu_s']:.1f} CPU-s]"
                    else:
                        stop_note = f"skipped: {row.get('note', 'failed')} at L={n}"
                        msg = f"{row['status']}: {row.get('note')}"
                    print(f"[{dtype} {direction} {method} L={n}] {msg}  ({time.perf_counter() - start:.0f} s)", flush=True)
                    save()
    matmul_runs.append(measure_matmul("end"))
    doc["matmul"] = best_matmul(matmul_runs)
    doc["crossover"] = {dt: {dr: _crossover(doc["results"], dt, dr) for dr in doc["config"]["directions"]} for dt in doc["config"]["dtypes"]}
    doc["meta"]["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    doc["meta"]["total_s"] = time.perf_counter() - start
    doc["meta"]["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    doc["meta"]["attention_source_end"] = attention_source()
    report = format_report(doc)
    doc["report"] = report
    save()
    print(report)
    if not args.no_plot:
        png = plot(doc, args.out / "attention.png")
        if png:
            print(f"\nplot: {png}")
    print(f"results: {results_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
