"""The attention benchmark's command line: the choices it measures, its options, and the defaults that
``--quick`` changes (resolved once here, so the rest of the benchmark reads plain values from ``args``)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

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


def _add_shape_options(p: argparse.ArgumentParser) -> None:
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


def _add_protocol_options(p: argparse.ArgumentParser) -> None:
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


def _add_output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path(DEFAULT_OUT), help=f"output directory (default {DEFAULT_OUT})")
    p.add_argument("--quick", action="store_true", help="small sizes (L=256..2048), 1 repeat, float32 only: well under a minute")
    p.add_argument("--no-plot", action="store_true", help="do not write the PNG")
    p.add_argument("--update", action="store_true",
                   help="merge into an existing OUT/results.json: the configurations measured now replace the same ones there, "
                   "the others are kept (e.g. to re-measure one method after a change)")
    p.add_argument("--profile", type=int, default=None, metavar="L",
                   help="instead of the benchmark, profile ours forward+backward at length L (both directions, first dtype) with "
                   "torch.profiler and report matmul throughput")
    p.add_argument("--update-docs", action="store_true",
                   help="with --profile: rewrite the attention-profile section of docs/benchmarks.md from the profile")
    p.add_argument("--single", default=None, help=argparse.SUPPRESS)  # run one configuration in-process (JSON spec), print JSON


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python benchmarks/attention.py",
        description="Time and peak memory of FAVOR attention (ours) against torch SDPA, performer-pytorch and "
        "fast-transformers, forward and forward+backward, over sequence lengths.",
    )
    _add_shape_options(p)
    _add_protocol_options(p)
    _add_output_options(p)
    return p


_QUICK_DEFAULTS = {"lengths": list(QUICK_LENGTHS), "dtypes": ["float32"], "repeats": 1, "time_limit_s": 1.0, "quiet_wait_s": 0.0, "retries": 0}
_FULL_DEFAULTS = {"lengths": list(DEFAULT_LENGTHS), "dtypes": list(DTYPES), "repeats": 3, "time_limit_s": 120.0, "quiet_wait_s": 60.0,
                  "retries": 1}


def resolve_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the options left unset with their defaults, the ``--quick`` ones when it is given."""
    defaults = _QUICK_DEFAULTS if args.quick else _FULL_DEFAULTS
    for key in ("lengths", "dtypes", "repeats"):  # --repeats 0 means the default, as it always has
        setattr(args, key, getattr(args, key) or defaults[key])
    for key in ("time_limit_s", "quiet_wait_s", "retries"):  # here 0 is a value
        if getattr(args, key) is None:
            setattr(args, key, defaults[key])
    return args


def check_args(args: argparse.Namespace) -> str | None:
    """Why the resolved options cannot run here, or None."""
    if args.repeats < 1:
        return "--repeats must be >= 1"
    if args.out.exists() and not args.out.is_dir():
        return f"--out {args.out} is a file: give the folder for results.json and attention.png"
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        return "--device cuda given but CUDA is not available"
    if not (args.device == "cpu" or args.device.startswith("cuda")):
        return f"--device must be cpu or cuda, got {args.device!r}"
    return None


def device_type(args: argparse.Namespace) -> str:
    return "cuda" if args.device.startswith("cuda") else "cpu"
