"""``--profile L``: torch.profiler over one forward+backward of ours at one length, per direction, and the
throughput of its matrix products (from the profiler's FLOP counts) against plain ``torch.matmul``."""

from __future__ import annotations

import argparse
import math
import resource
import time

import torch
from torch.profiler import ProfilerActivity, profile

from protein_performer.attention import draw_projection, favor_attention

from .device import synchronize, torch_dtype
from .flops import favor_flops, matmul_throughput
from .procfs import wait_for_quiet

MATMUL_OPS = ("aten::mm", "aten::bmm", "aten::addmm", "aten::addmm_", "aten::baddbmm", "aten::baddbmm_", "aten::addbmm", "aten::addbmm_")


def matmul_flops(name: str, shapes: list) -> int:
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


def _matmul_stats(prof) -> dict:
    """Self CPU seconds and FLOPs of the matrix products, and the self CPU seconds of everything."""
    mm_ops = [e for e in prof.key_averages(group_by_input_shape=True) if e.key in MATMUL_OPS]
    return {
        "names": "/".join(sorted({e.key.removeprefix("aten::") for e in mm_ops})),
        "time_s": sum(e.self_cpu_time_total for e in mm_ops) / 1e6,  # µs → s
        "flops": sum(e.flops or matmul_flops(e.key, e.input_shapes) * e.count for e in mm_ops),
        "total_self_s": sum(e.self_cpu_time_total for e in prof.key_averages()) / 1e6,
    }


def _profiled(step, device, quiet_wait_s: float):
    """Run ``step`` once to warm up, then once under the profiler: (profiler, wall seconds, rusage before, after)."""
    step()
    synchronize(device)
    if device.type == "cpu":
        wait_for_quiet(quiet_wait_s)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    with profile(activities=acts, with_flops=True, record_shapes=True) as prof:
        step()
        synchronize(device)
    wall = time.perf_counter() - t0
    return prof, wall, r0, resource.getrusage(resource.RUSAGE_SELF)


def _profile_direction(args: argparse.Namespace, device, tensors: tuple, direction: str, peak: float) -> str:
    """The profiler table and the matmul throughput line of ours fwd+bwd in one direction."""
    q, k, v, g, proj = tensors
    causal = direction == "causal"
    n, b, h, d, m = args.profile, args.batch, args.heads, args.head_dim, args.features

    def step():
        q.grad = k.grad = v.grad = None
        out = favor_attention(q, k, v, proj, causal=causal, chunk_size=args.chunk_size)
        out.backward(g)

    prof, wall, r0, r1 = _profiled(step, device, args.quiet_wait_s)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    mm = _matmul_stats(prof)
    _, counted = favor_flops(n, b, h, d, m, causal, args.chunk_size)
    mm_gflops = mm["flops"] / max(mm["time_s"], 1e-9) / 1e9
    header = (
        f"== ours {direction} fwd+bwd, L={n}, {args.dtypes[0]}, B={b} H={h} d={d} M={m}: wall {wall:.3f} s with the profiler "
        f"(its start/stop included; self CPU total below is the op's own time), "
        f"user {r1.ru_utime - r0.ru_utime:.2f} s, system {r1.ru_stime - r0.ru_stime:.2f} s, "
        f"{(r1.ru_minflt - r0.ru_minflt) / 1e3:.0f}k minor faults =="
    )
    throughput = (
        f"matrix products ({mm['names']}): {mm['time_s']:.3f} s self CPU of {mm['total_self_s']:.3f} s total self CPU "
        f"({100 * mm['time_s'] / max(mm['total_self_s'], 1e-9):.0f}%), {mm['flops'] / 1e9:.1f} GFLOP (profiler count; convention count "
        f"{counted / 1e9:.1f}) → {mm_gflops:.0f} GFLOP/s = "
        f"{100 * mm_gflops / peak:.0f}% of plain matmul; whole op {counted / max(mm['total_self_s'], 1e-9) / 1e9:.0f} "
        f"GFLOP/s by the convention count over the self CPU total"
    )
    return "\n".join([header, prof.key_averages().table(sort_by=sort, row_limit=25), throughput])


def profile_ours(args: argparse.Namespace) -> int:
    """torch.profiler of ours forward+backward at length ``args.profile`` (first dtype, every direction);
    writes ``OUT/profile_<direction>_<dtype>_L<n>.txt``."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype_name, n = args.dtypes[0], args.profile
    gen = torch.Generator(device="cpu").manual_seed(args.seed)
    proj = draw_projection(args.features, args.head_dim, generator=gen).to(device)
    q, k, v, g = (torch.randn(args.batch, args.heads, n, args.head_dim, generator=gen).to(device=device, dtype=torch_dtype(dtype_name))
                  for _ in range(4))
    for t in (q, k, v):
        t.requires_grad_(True)
    args.out.mkdir(parents=True, exist_ok=True)
    if device.type == "cpu":
        wait_for_quiet(args.quiet_wait_s)
    mm = matmul_throughput(args.device, args.threads, quick=False)
    peak = mm["float32_square"]["gflops"]
    print(f"plain matmul float32: {peak:.0f} GFLOP/s; FAVOR-shaped {mm['float32_favor_projection']['gflops']:.0f} GFLOP/s")
    for direction in args.directions:
        text = _profile_direction(args, device, (q, k, v, g, proj), direction, peak)
        print(text)
        (args.out / f"profile_{direction}_{dtype_name}_L{n}.txt").write_text(text + "\n")
    return 0
