"""The attention items: forward+backward time and peak memory of each method at each length and
direction, and each method's output error against float64.

Inputs (all ``[B, H, L, d]``, one seeded generator per length): q and k are ``randn · d^(-1/4)`` (so that
the FAVOR-scaled x̃ = x·d^(-1/4) has E‖x̃‖² = 1, as in ``analysis.approximation``: softmax logits of
standard deviation 1/√d, not a degenerate one-hot softmax), v and the output gradient g are ``randn``;
all in the input dtype (bf16 on a GPU). The projection is ``[H, M, d]``, head i drawn from seed i.
"""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from protein_performer.attention import draw_projection, favor_attention, softmax_attention
from protein_performer.attention.ops.fla import fla_available

from .options import CAUSAL_ONLY, DIRECTIONS, METHODS
from .record import Recorder, peak_mib, time_runs

DTYPES = {"float32": torch.float32, "bf16": torch.bfloat16}


def fla_note() -> str | None:
    """Why ``ours-fla`` cannot run here, or None."""
    if importlib.util.find_spec("fla") is None or importlib.util.find_spec("triton") is None:
        return "fla not installed"
    if not fla_available():
        return "fla not available: needs a CUDA device (or TRITON_INTERPRET=1)"
    return None


def projection(args: argparse.Namespace, device: torch.device) -> torch.Tensor:
    """``[H, M, d]`` float32: an independent draw per head."""
    draws = [draw_projection(args.features, args.head_dim, generator=torch.Generator().manual_seed(i)) for i in range(args.heads)]
    return torch.stack(draws).to(device)


def inputs(args: argparse.Namespace, length: int, device: torch.device, dtype: torch.dtype, seed: int) -> tuple:
    """q, k, v (requiring grad) and the output gradient g, ``[B, H, L, d]``."""
    gen = torch.Generator(device=device).manual_seed(seed)
    shape = (args.batch, args.heads, length, args.head_dim)
    q, k, v, g = (torch.randn(shape, generator=gen, device=device, dtype=torch.float32) for _ in range(4))
    q, k = q * args.head_dim**-0.25, k * args.head_dim**-0.25
    q, k, v, g = (t.to(dtype) for t in (q, k, v, g))
    for t in (q, k, v):
        t.requires_grad_(True)
    return q, k, v, g


def make_method(method: str, causal: bool, proj: torch.Tensor, chunk: int) -> Callable:
    """``fn(q, k, v) -> out`` ``[B, H, L, d]``. ``ours-compiled`` is a fresh compile (static shapes: with
    dynamic ones the causal scan's recompile took minutes on the CPU)."""
    if method == "sdpa":
        return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    options: dict[str, Any] = dict(causal=causal, chunk_size=chunk, backend="torch")
    if method == "ours-fla":
        options["backend"] = "fla"
    if method == "ours-bf16":
        options["precision"] = "bf16"
    fn = favor_attention
    if method == "ours-compiled":
        torch._dynamo.reset()  # one compile per (direction, L), none of the earlier graphs kept
        fn = torch.compile(favor_attention, fullgraph=True, dynamic=False)
    return lambda q, k, v: fn(q, k, v, proj, **options)


def _fwd_bwd(fn: Callable, q, k, v, g) -> Callable[[], None]:
    def run() -> None:
        q.grad = k.grad = v.grad = None
        fn(q, k, v).backward(g)

    return run


def time_item(args: argparse.Namespace, method: str, direction: str, length: int, device: torch.device,
              keep: dict[str, Callable] | None = None) -> dict[str, Any]:
    """Forward+backward median ms and peak MiB above the inputs; for ours-compiled also the compile time
    (its first run, compiling forward and backward, less a timed run). The method's function is left in
    ``keep["fn"]`` when given."""
    proj = projection(args, device)
    fn = make_method(method, direction == "causal", proj, args.chunk_size)
    if keep is not None:
        keep["fn"] = fn
    q, k, v, g = inputs(args, length, device, DTYPES[args.dtype], args.seed + length)
    run = _fwd_bwd(fn, q, k, v, g)
    values = time_runs(run, device, args.warmup, args.reps)
    q.grad = k.grad = v.grad = None
    values["mib"] = peak_mib(run, device)
    if method == "ours-compiled":
        values["compile_s"] = round(values["first_s"] - values["ms"] / 1e3, 3)
    return values


def error_values(out: torch.Tensor, refs: dict[str, torch.Tensor], method: str) -> dict[str, float]:
    """Relative Frobenius errors of ``out``: against the method's own float64 computation (FAVOR in
    float64 for ours, exact softmax for sdpa) and against exact softmax attention in float64."""

    def rel(ref: torch.Tensor) -> float:
        return float((out.double() - ref).norm() / ref.norm())

    own = refs["exact"] if method == "sdpa" else refs["favor"]
    return {"rel_err_fp64": rel(own), "rel_err_exact": rel(refs["exact"])}


def references(args: argparse.Namespace, q, k, v, proj: torch.Tensor, causal: bool) -> dict[str, torch.Tensor]:
    """FAVOR and exact softmax attention in float64 on the same (rounded) inputs and projection."""
    q64, k64, v64 = (t.detach().double() for t in (q, k, v))
    with torch.no_grad():
        favor = favor_attention(q64, k64, v64, proj.double(), causal=causal, chunk_size=args.chunk_size, backend="torch")
        exact = softmax_attention(q64, k64, v64, causal=causal)
    return {"favor": favor, "exact": exact}


def error_item(args: argparse.Namespace, method: str, direction: str, device: torch.device,
               fn: Callable | None = None) -> dict[str, Any]:
    """The output errors of one method at ``args.error_length`` (the forward of ``fn`` when given: the
    compiled one, called exactly as when timed so that it does not compile again)."""
    causal = direction == "causal"
    proj = projection(args, device)
    q, k, v, _ = inputs(args, args.error_length, device, DTYPES[args.dtype], args.seed + 1)
    if fn is None:
        fn = make_method(method, causal, proj, args.chunk_size)
        with torch.no_grad():
            out = fn(q, k, v)
    else:
        out = fn(q, k, v).detach()
    return error_values(out, references(args, q, k, v, proj, causal), method)


def _describe_time(item: dict) -> str:
    mib = "n/a" if item.get("mib") is None else f"{item['mib']:.0f} MiB"
    extra = f", compile {item['compile_s']:.1f} s" if "compile_s" in item else ""
    return f"{item['ms']:.3f} ms, {mib}{extra}"


def _describe_error(item: dict) -> str:
    return f"rel. error {item['rel_err_fp64']:.2e} vs float64, {item['rel_err_exact']:.2e} vs exact"


def eager_methods(direction: str) -> list[str]:
    """The methods of the ``attention`` and ``error`` parts (fla and the compiled one have parts of their own)."""
    return [m for m in METHODS if m not in ("ours-compiled", "ours-fla") and (direction == "causal" or m not in CAUSAL_ONLY)]


def _time_all(rec: Recorder, args: argparse.Namespace, device: torch.device, cases: list[tuple[str, str, int]]) -> None:
    """Time (method, direction, L) in order; a method that ran out of memory is not tried at larger L."""
    oom_at: dict[tuple[str, str], int] = {}
    for method, direction, length in cases:
        key = {"method": method, "direction": direction, "length": length}
        if (method, direction) in oom_at:
            rec.note("attention", key, f"skipped: oom at L={oom_at[method, direction]}")
            continue
        item = rec.measure("attention", key, lambda m=method, d=direction, n=length: time_item(args, m, d, n, device), _describe_time)
        if item["note"] == "oom":
            oom_at[method, direction] = length


def run_timing(rec: Recorder, args: argparse.Namespace, device: torch.device) -> None:
    """sdpa, ours and ours-bf16 at every length, shortest first (so a budget cut loses the longest)."""
    _time_all(rec, args, device, [(m, d, n) for n in args.lengths for d in DIRECTIONS for m in eager_methods(d)])


def run_errors(rec: Recorder, args: argparse.Namespace, device: torch.device) -> None:
    """The errors of sdpa, ours and ours-bf16 at ``args.error_length``."""
    for direction in DIRECTIONS:
        for method in eager_methods(direction):
            key = {"method": method, "direction": direction, "length": args.error_length}
            rec.measure("error", key, lambda m=method, d=direction: error_item(args, m, d, device), _describe_error)


def run_fla(rec: Recorder, args: argparse.Namespace, device: torch.device) -> None:
    """ours-fla (causal) at every length, then its error: a part of its own, run last, so that a failing
    Triton kernel (a CUDA error sticks to the process) cannot cost the other numbers."""
    note = fla_note()
    if note:
        for length in args.lengths:
            rec.note("attention", {"method": "ours-fla", "direction": "causal", "length": length}, note)
        rec.note("error", {"method": "ours-fla", "direction": "causal", "length": args.error_length}, note)
        return
    _time_all(rec, args, device, [("ours-fla", "causal", n) for n in args.lengths])
    key = {"method": "ours-fla", "direction": "causal", "length": args.error_length}
    rec.measure("error", key, lambda: error_item(args, "ours-fla", "causal", device), _describe_error)


def run_compiled(rec: Recorder, args: argparse.Namespace, device: torch.device) -> None:
    """ours-compiled at its lengths (a fresh static compile each), and its error at ``args.error_length``
    from the same compiled function."""
    cases = set(args.compile_cases)
    why = "--smoke compiles one case only" if args.smoke else "not in --compile-lengths"
    error_done = set()
    for length in args.lengths:
        for direction in DIRECTIONS:
            key = {"method": "ours-compiled", "direction": direction, "length": length}
            if (direction, length) not in cases:
                rec.note("attention", key, f"skipped: {why}")
                continue
            keep: dict[str, Callable] = {}
            item = rec.measure("attention", key, lambda d=direction, n=length, keep=keep: time_item(args, "ours-compiled", d, n, device, keep),
                               _describe_time)
            if length == args.error_length and item["note"] is None:
                rec.measure("error", key, lambda d=direction, fn=keep["fn"]: error_item(args, "ours-compiled", d, device, fn), _describe_error)
                error_done.add(direction)
    for direction in DIRECTIONS:
        if direction not in error_done:
            key = {"method": "ours-compiled", "direction": direction, "length": args.error_length}
            timing = next((i for i in rec.doc["attention"] if i.items() >= key.items()), None)
            reason = timing["note"] if timing and timing["note"] else f"skipped: {why}"
            rec.note("error", key, reason if reason.startswith("skipped") else f"skipped: timing {reason}")
