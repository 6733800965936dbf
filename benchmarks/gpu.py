"""GPU benchmark in one call (under 8 minutes on one H100/H200): the numbers for the docs, the day a GPU is lent.

    python benchmarks/gpu.py                  # everything, on cuda; writes runs/bench/gpu/
    python benchmarks/gpu.py --smoke          # the same code paths at tiny sizes on the CPU (< 1 minute)
    python benchmarks/gpu.py --report         # rewrite table.md and gpu.png from OUT/results.json

What it measures, in this order (``--parts``), each item alone:

1. ``attention``: forward+backward time (median of ``--reps`` runs after warmup, synchronized) and peak
   memory above the inputs (``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``; the
   gradients of q, k, v included) at L = 4096 … 65536, B=1, H=8, d=64, M=256, bf16 inputs,
   bidirectional and causal, for ``sdpa`` (``scaled_dot_product_attention``, ``is_causal`` when causal;
   flash where it applies), ``ours`` (``favor_attention(..., backend="torch")``, eager; bf16 inputs are
   computed in float32) and ``ours-bf16`` (``precision="bf16"``, ``backend="torch"``: feature products in bf16).
2. ``error``: at L=4096, each method's relative Frobenius error against float64: ours against
   ``favor_attention`` in float64 (same projection, same rounded inputs), sdpa against exact softmax
   attention in float64; and every method against exact softmax (ours: approximation included).
3. ``train``: masked-LM training tokens/s of ``PerformerLM`` presets ``small`` and ``paper`` at L=1024
   and 8192, FAVOR and exact softmax attention, AdamW under bf16 autocast, B·L ≈ 16k tokens (halved on OOM).
   ``rivals``: the same for every attention kind (FAVOR, exact, local, linear, Reformer, Linformer; the
   last two need the extra ``baselines``, noted when absent) with the ``small`` preset at L = 1024 … 16384:
   the GPU twin of ``benchmarks/rivals.py``'s CPU sweep.
4. ``compile``: ``ours-compiled`` = ``torch.compile(favor_attention, fullgraph=True)``, static shapes, a
   fresh compile per direction and ``--compile-lengths`` (4096, 16384, 65536), timed as in 1 with the
   compile time (first run less a timed run) beside it, and its error at L=4096 as in 2. Late, because
   each compile takes 10-40 s.
5. ``fla``: ``ours-fla`` = ``favor_attention(..., causal=True, backend="fla")`` (flash-linear-attention's
   Triton kernels; needs fla-core and a GPU), timed as in 1, and its error as in 2. Last, because a
   Triton kernel that fails can leave a CUDA error that every later item would report.

Robust by construction: every item runs in its own try/except and is recorded with values or a note
(``oom``, ``fla not installed``, ``skipped: budget``, ``failed: …``); ``results.json`` is rewritten after
every item, ``table.md`` and ``gpu.png`` after every part, so a run killed at any time keeps its numbers;
after ``--budget-s`` seconds (420) the remaining items are skipped. Outputs in ``--out``
(``runs/bench/gpu/``): ``results.json`` (device, versions, config, every item), ``table.md`` (markdown
tables for the docs), ``gpu.png`` (time and memory against L, log-log, a column per direction).
Modules: ``gpu_bench/__init__.py``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))
if importlib.util.find_spec("protein_performer") is None:  # a bare checkout (e.g. a lent GPU machine): use src/
    sys.path.insert(0, str(_HERE.parent / "src"))

from gpu_bench.options import build_parser, check, resolve  # noqa: E402 (after the path)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(__doc__)
    parser.add_argument("--report", action="store_true", help="only rewrite table.md and gpu.png from OUT/results.json")
    args = resolve(parser.parse_args(argv))
    if args.report:
        from gpu_bench.run import report_only

        return report_only(args)
    error = check(args)
    if error:
        print(error, file=sys.stderr)
        return 2
    from gpu_bench.run import run

    return run(args)


if __name__ == "__main__":
    sys.exit(main())
