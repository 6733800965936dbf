"""The GPU benchmark's command line and the sizes it measures: the GPU defaults, and the ``--smoke`` ones
(the same code paths at tiny sizes on the CPU), resolved once here so the rest reads plain values."""

from __future__ import annotations

import argparse
from pathlib import Path

from attention_bench.options import _int_list

METHODS = ("sdpa", "ours", "ours-compiled", "ours-fla", "ours-bf16")
CAUSAL_ONLY = ("ours-fla",)
DIRECTIONS = ("bidirectional", "causal")
# In the order they run: the safe, important numbers first; fla last, as a failing Triton kernel can leave a CUDA error
# that every later item of the process would then report.
PARTS = ("attention", "error", "train", "rivals", "compile", "fla")
DEFAULT_OUT = "runs/bench/gpu"

# Per setting: (GPU default, --smoke default). Training presets are PerformerConfig PRESETS names.
SIZES = {
    "lengths": ([4096, 8192, 16384, 32768, 65536], [256, 512]),
    "compile_lengths": ([4096, 16384, 65536], [256]),
    "batch": (1, 1),
    "heads": (8, 2),
    "head_dim": (64, 16),
    "features": (256, 32),
    "warmup": (2, 1),
    "reps": (5, 2),
    "error_length": (4096, 256),
    "train_presets": (["small", "paper"], ["small", "paper"]),
    "train_lengths": ([1024, 8192], [64, 128]),
    "train_tokens": (16384, 256),
    "train_warmup": (2, 1),
    "train_steps": (5, 2),
    "rival_preset": ("small", "small"),
    "rival_lengths": ([1024, 2048, 4096, 8192, 16384], [64, 128]),
}
# --smoke shrinks the presets to this (their positions and other choices stay), so that 2 steps take a second.
SMOKE_MODEL = dict(d_model=32, num_layers=1, num_heads=2, d_ff=64, num_features=16, max_len=512)
# --smoke compiles this one case only: a torch.compile takes 10 to 30 s on 2 slow cores.
SMOKE_COMPILE = ("bidirectional", 256)


def _names(text: str) -> list[str]:
    names = [x for x in text.replace(" ", "").split(",") if x]
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated names")
    return names


def _parts(text: str) -> list[str]:
    parts = _names(text)
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown part(s) {', '.join(unknown)}; choose from {','.join(PARTS)}")
    return [p for p in PARTS if p in parts]


def build_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python benchmarks/gpu.py", description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="every path at tiny sizes on the CPU (under a minute): checks the script, measures nothing")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available, else cpu; cpu with --smoke)")
    p.add_argument("--lengths", type=_int_list, default=None, help="attention lengths L (default 4096,8192,16384,32768,65536)")
    p.add_argument("--compile-lengths", type=_int_list, default=None,
                   help="the lengths ours-compiled is measured at, each a fresh compile of 10-40 s (default 4096,16384,65536)")
    p.add_argument("--parts", type=_parts, default=list(PARTS), help=f"what to run, from {','.join(PARTS)} (default all, in that order)")
    p.add_argument("--budget-s", type=float, default=420.0,
                   help="seconds after which the remaining items are skipped with the note 'skipped: budget' (default 420)")
    p.add_argument("--train-presets", type=_names, default=None, help="PerformerConfig presets to train (default small,paper)")
    p.add_argument("--train-lengths", type=_int_list, default=None, help="training sequence lengths (default 1024,8192)")
    p.add_argument("--reps", type=int, default=None, help="timed repeats per attention item, median reported (default 5)")
    p.add_argument("--out", type=Path, default=Path(DEFAULT_OUT), help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--seed", type=int, default=0)
    return p


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill in the sizes left unset (GPU or ``--smoke`` defaults), the device and the input dtype."""
    import torch

    if args.device is None:
        args.device = "cpu" if args.smoke or not torch.cuda.is_available() else "cuda"
    for key, (full, smoke) in SIZES.items():
        if getattr(args, key, None) is None:
            setattr(args, key, smoke if args.smoke else full)
    args.chunk_size = 128
    # bf16 inputs on a GPU; on the CPU bf16 products are emulated (slow), and ours computes in float32 anyway
    args.dtype = "bf16" if args.device.startswith("cuda") else "float32"
    if args.smoke:
        args.compile_cases = [SMOKE_COMPILE] if SMOKE_COMPILE[1] in args.lengths else [(DIRECTIONS[0], args.lengths[0])]
    else:
        args.compile_cases = [(d, n) for n in args.compile_lengths for d in DIRECTIONS]
    return args


def check(args: argparse.Namespace) -> str | None:
    """Why the resolved options cannot run, or None."""
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        return "--device cuda given but CUDA is not available"
    if not (args.device == "cpu" or args.device.startswith("cuda")):
        return f"--device must be cpu or cuda, got {args.device!r}"
    if args.reps < 1:
        return "--reps must be >= 1"
    if args.out.exists() and not args.out.is_dir():
        return f"--out {args.out} is a file: give a folder"
    return None
