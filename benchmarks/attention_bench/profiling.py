"""``--profile L``: torch.profiler over one forward+backward of ours at one length, per direction, and the
throughput of its matrix products (from the profiler's FLOP counts) against plain ``torch.matmul``.

Writes the profiler tables as text and the numbers as ``OUT/profile.json``; ``--update-docs`` rewrites
the ``attention-profile`` section of docs/benchmarks.md from them (its JSON kept as
docs/figures/attention_profile_cpu.json, which a test holds the section to)."""

from __future__ import annotations

import argparse
import json
import math
import resource
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from protein_performer.attention import draw_projection, favor_attention

from .device import synchronize, torch_dtype
from .flops import favor_flops, matmul_throughput
from .procfs import wait_for_quiet
from .provenance import machine_meta

DOCS = Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md"
RESULT = DOCS.parent / "figures" / "attention_profile_cpu.json"
MARKERS = ("<!-- attention-profile:begin (written by benchmarks/attention.py --profile) -->", "<!-- attention-profile:end -->")
TOP_OPS = 6
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


def _profile_direction(args: argparse.Namespace, device, tensors: tuple, direction: str, peak: float) -> tuple[str, dict]:
    """The profiler table and the matmul throughput line of ours fwd+bwd in one direction, and its numbers."""
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
    others = sorted((e for e in prof.key_averages() if e.key not in MATMUL_OPS and not e.key.startswith("autograd::")),
                    key=lambda e: e.self_cpu_time_total, reverse=True)
    numbers = {"wall_s": wall, "matmul_s": mm["time_s"], "total_self_s": mm["total_self_s"],
               "matmul_share": mm["time_s"] / max(mm["total_self_s"], 1e-9), "matmul_gflop": mm["flops"] / 1e9,
               "counted_gflop": counted / 1e9, "matmul_gflops": mm_gflops, "matmul_fraction_of_peak": mm_gflops / peak,
               "minor_faults": r1.ru_minflt - r0.ru_minflt,
               "top_other_ops": [{"op": e.key, "self_s": e.self_cpu_time_total / 1e6, "calls": e.count} for e in others[:TOP_OPS]]}
    return "\n".join([header, prof.key_averages().table(sort_by=sort, row_limit=25), throughput]), numbers


def section(result: dict) -> str:
    """The docs section of a profile (``profile.json``)."""
    s = result["settings"]
    lines = [f"`torch.profiler` over one forward+backward of ours at L = {s['length']:,} ({s['dtype']}, B = {s['batch']}, "
             f"H = {s['heads']}, d = {s['head_dim']}, M = {s['features']}, C = {s['chunk_size']}), "
             f"{result['started'][:10]} on {result['machine']}, malloc {result['malloc']}; plain float32 matmul "
             f"{result['peak_gflops']:.0f} GFLOP/s here. Self CPU time: each op's own, without its children (the wall time "
             "under the profiler, in the JSON, includes the profiler's own start).", "",
             "| direction | self CPU s | matrix products s (share) | other ops s | products GFLOP/s (of plain matmul) | "
             "minor page faults |", "|---|---|---|---|---|---|"]
    for direction, n in result["directions"].items():
        lines.append(f"| {direction} | {n['total_self_s']:.3f} | {n['matmul_s']:.3f} "
                     f"({100 * n['matmul_share']:.0f}%) | {n['total_self_s'] - n['matmul_s']:.3f} | {n['matmul_gflops']:.0f} "
                     f"({100 * n['matmul_fraction_of_peak']:.0f}%) | {n['minor_faults'] / 1e3:,.0f}k |")
    lines += ["", "The largest other ops (self CPU ms, calls):", ""]
    for direction, n in result["directions"].items():
        ops = ", ".join(f"`{o['op'].removeprefix('aten::')}` {1e3 * o['self_s']:.0f} ({o['calls']})" for o in n["top_other_ops"])
        lines.append(f"- {direction}: {ops}")
    return "\n".join(lines)


def profile_ours(args: argparse.Namespace) -> int:
    """torch.profiler of ours forward+backward at length ``args.profile`` (first dtype, every direction);
    writes ``OUT/profile_<direction>_<dtype>_L<n>.txt`` and ``OUT/profile.json`` (and the docs section
    with ``args.update_docs``)."""
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
    mm = matmul_throughput(args.device, args.threads, quick=args.quick, dtypes=("float32",))
    peak = mm["float32_square"]["gflops"]
    print(f"plain matmul float32: {peak:.0f} GFLOP/s; FAVOR-shaped {mm['float32_favor_projection']['gflops']:.0f} GFLOP/s")
    meta = machine_meta(args, args.device)
    result = {"machine": meta["device_name"], "started": meta["started"], "malloc": meta["malloc"], "peak_gflops": peak,
              "settings": {"length": n, "dtype": dtype_name, "batch": args.batch, "heads": args.heads, "head_dim": args.head_dim,
                           "features": args.features, "chunk_size": args.chunk_size},
              "directions": {}}
    for direction in args.directions:
        text, result["directions"][direction] = _profile_direction(args, device, (q, k, v, g, proj), direction, peak)
        print(text)
        (args.out / f"profile_{direction}_{dtype_name}_L{n}.txt").write_text(text + "\n")
    (args.out / "profile.json").write_text(json.dumps(result, indent=1) + "\n")
    if args.update_docs:
        from docs_section import publish

        publish(DOCS, MARKERS, section(result), result, RESULT, None)
    return 0
