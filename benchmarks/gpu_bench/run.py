"""The whole run: the results document's header, the parts in order under one time budget, and the
table and figure rewritten after each part (and by ``--report`` from a saved ``results.json``)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import torch
from attention_bench.provenance import attention_source, machine_meta

from .attention import run_compiled, run_errors, run_fla, run_timing
from .record import Recorder
from .report import plot, write_table
from .training import run_rivals, run_training

RUNNERS = {"attention": run_timing, "error": run_errors, "train": run_training, "rivals": run_rivals, "compile": run_compiled,
           "fla": run_fla}
CONFIG_KEYS = ("smoke", "device", "dtype", "lengths", "compile_lengths", "batch", "heads", "head_dim", "features", "chunk_size",
               "warmup", "reps", "error_length", "train_presets", "train_lengths", "train_tokens", "train_warmup", "train_steps",
               "rival_preset", "rival_lengths", "budget_s", "parts", "seed")


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def header(args: argparse.Namespace) -> dict[str, Any]:
    meta = machine_meta(argparse.Namespace(threads=None), args.device)
    meta.update({
        "cuda": torch.version.cuda,
        "fla": _version("fla-core") or ("installed" if importlib.util.find_spec("fla") else None),
        "triton": _version("triton"),
        "tf32": torch.backends.cuda.matmul.allow_tf32,
        "attention_source": attention_source(),
    })
    config = {k: (str(v) if k == "device" else v) for k, v in vars(args).items() if k in CONFIG_KEYS}
    return {"meta": meta, "config": config, "attention": [], "error": [], "train": [], "rivals": [], "elapsed_s": 0.0}


def write_outputs(doc: dict[str, Any], args: argparse.Namespace) -> None:
    """table.md and gpu.png from ``doc``; a failure here is printed, never fatal (results.json has it all)."""
    for name, write in (("table.md", write_table), ("gpu.png", plot)):
        try:
            write(doc, args.out / name)
        except Exception as exc:
            print(f"could not write {name}: {type(exc).__name__}: {exc}", flush=True)


def report_only(args: argparse.Namespace) -> int:
    doc = json.loads((args.out / "results.json").read_text())
    write_outputs(doc, args)
    print(f"wrote {args.out / 'table.md'} and {args.out / 'gpu.png'}")
    return 0


def run(args: argparse.Namespace) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    doc = header(args)
    rec = Recorder(doc, args.out / "results.json", device, args.budget_s)
    print(f"{doc['meta']['device_name']}, torch {torch.__version__}, fla {doc['meta']['fla']}; budget {args.budget_s:.0f} s; "
          f"writing {args.out}", flush=True)
    for part in args.parts:
        started = time.monotonic()
        RUNNERS[part](rec, args, device)
        print(f"[{rec.elapsed():6.1f}s] -- {part} done in {time.monotonic() - started:.1f} s", flush=True)
        write_outputs(doc, args)
    measured = sum(i["note"] is None for s in ("attention", "error", "train", "rivals") for i in doc[s])
    print(f"done in {rec.elapsed():.1f} s: {measured} items measured; {args.out / 'table.md'}", flush=True)
    return 0
