"""Attention benchmark: FAVOR attention (ours) against exact attention and other linear-attention code,
time and peak memory over sequence lengths. What is measured and how: ``attention_bench/__init__.py``.

    python benchmarks/attention.py [--quick] [--lengths 512,1024] [--methods ours,sdpa] ...  (--help)

Writes ``runs/bench/attention/results.json`` and ``attention.png``. Every configuration runs in a fresh
process forked from a forkserver; it imports ``attention_bench`` through the ``sys.path`` set here, so
the script works from any directory.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from attention_bench.options import build_parser, check_args, resolve_defaults  # noqa: E402 (after the path)


def main(argv: list[str] | None = None) -> int:
    args = resolve_defaults(build_parser().parse_args(argv))
    if args.single is not None:  # one configuration in this process (JSON spec), JSON result on stdout
        from attention_bench.single import run_single

        print(json.dumps(run_single(json.loads(args.single))))
        return 0
    error = check_args(args)
    if error:
        print(error, file=sys.stderr)
        return 2
    if args.profile is not None:
        from attention_bench.profiling import profile_ours

        return profile_ours(args)
    from attention_bench.orchestrate import AttentionBenchmark

    return AttentionBenchmark(args).run()


if __name__ == "__main__":
    sys.exit(main())
