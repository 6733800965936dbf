"""FLOP counts of ours and of SDPA (the convention is in the package docstring: matrix products only,
multiply-add = 2 FLOPs), and the reference they are compared with: plain ``torch.matmul`` throughput."""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from .device import synchronize, torch_dtype
from .options import DTYPES


def favor_flops(length: int, batch: int, heads: int, head_dim: int, features: int, causal: bool, chunk: int) -> tuple[int, int]:
    """(forward, forward+backward) matrix-product FLOPs of ours; convention in the package docstring."""
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
    """(forward, forward+backward) FLOPs of exact attention: ``4·L²·d`` (half when causal), backward 2.5×."""
    fwd = 4 * length * length * head_dim * (0.5 if causal else 1.0) * batch * heads
    return fwd, 3.5 * fwd


def _time_matmul(a, b, out, device, reps: int) -> float:
    """Median seconds of ``torch.matmul(a, b, out=out)`` after one warmup call."""
    torch.matmul(a, b, out=out)
    synchronize(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.matmul(a, b, out=out)
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_throughput(device_name: str, threads: int | None, quick: bool, dtypes: tuple[str, ...] = DTYPES) -> dict[str, Any]:
    """Plain ``torch.matmul`` GFLOP/s into a reused ``out=`` buffer: square, and FAVOR-projection shaped,
    for the ``dtypes`` measured (bf16 is emulated on CPUs without bf16 units: minutes per product)."""
    if threads:
        torch.set_num_threads(threads)
    device = torch.device(device_name)
    gen = torch.Generator(device="cpu").manual_seed(0)
    n = 2048 if quick else 4096
    reps = 10 if device.type == "cuda" else (2 if quick else 3)
    shapes = {"square": (n, n, n), "favor_projection": (8 * 8192, 64, 256)}  # [H·L, d] @ [d, M]
    out: dict[str, Any] = {"repeats": reps}
    for dname in dtypes:
        dtype = torch_dtype(dname)
        for sname, (rows, inner, cols) in shapes.items():
            a = torch.randn(rows, inner, generator=gen).to(device=device, dtype=dtype)
            bm = torch.randn(inner, cols, generator=gen).to(device=device, dtype=dtype)
            c = torch.empty(rows, cols, device=device, dtype=dtype)
            median = _time_matmul(a, bm, c, device, reps)
            out[f"{dname}_{sname}"] = {"shape": [rows, inner, cols], "median_s": median, "gflops": 2 * rows * inner * cols / median / 1e9}
            del a, bm, c
    return out
