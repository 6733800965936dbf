"""Data-parallel scaling: training throughput on 1 process against N processes under torchrun, the
same global batch and the same cores (each of the N processes gets cores/N threads; on a GPU machine,
one GPU per process).

    python benchmarks/distributed.py [--procs 2] [--steps 40] [--out runs/distributed]

Each configuration trains from scratch in a fresh run directory; throughput is the median of the
logged tokens/s windows after the first (start-up excluded). Writes ``OUT/results.json`` and
``OUT/scaling_<device>.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

CONFIGS = [  # (name, train arguments)
    ("tiny, L=256, batch 32", ["--preset", "tiny", "--seq-len", "256", "--batch-size", "32", "--micro-batch-size", "16"]),
    ("small, L=1024, batch 8", ["--preset", "small", "--seq-len", "1024", "--batch-size", "8", "--micro-batch-size", "4"]),
]


def run(out: Path, args: list[str], procs: int, threads: int, steps: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    launcher = [sys.executable] if procs == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                    "--nproc_per_node", str(procs)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [*launcher, "-m", "protein_performer", "train", "--out", str(out), *args, "--max-steps", str(steps),
           "--eval-every", str(10 * steps), "--save-every", str(10 * steps), "--quiet"]
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    windows = [r["train/tokens_per_s"] for r in rows[1:] if r["step"] % 10 == 0]
    return {"procs": procs, "threads_per_proc": threads, "tokens_per_s": statistics.median(windows), "windows": windows}


def plot(results: list[dict], path: Path, device: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["config"] for r in results))
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):  # one panel per configuration: their scales differ 10x
        rows = sorted((r for r in results if r["config"] == name), key=lambda r: r["procs"])
        labels = [f"{r['procs']} proc × {r['threads_per_proc']} thr" for r in rows]
        bars = ax.bar(labels, [r["tokens_per_s"] for r in rows], color=["tab:blue", "tab:orange"][: len(rows)])
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
        ax.set_title(name, fontsize=10)
    axes[0][0].set_ylabel("training tokens / s")
    fig.suptitle(f"Data-parallel training, same cores ({device})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, default=2, help="processes of the parallel run")
    parser.add_argument("--cores", type=int, default=os.cpu_count(), help="CPU threads shared by the processes")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--out", default="runs/distributed")
    args = parser.parse_args()
    out = Path(args.out)
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"  # what `train` picks
    results = []
    for name, train_args in CONFIGS:
        for procs in (1, args.procs):
            threads = max(1, args.cores // procs)
            row = run(out / f"{len(results)}", train_args, procs, threads, args.steps)
            results.append({"config": name, "device": device, **row})
            print(f"{name:24} {procs} x {threads} threads: {row['tokens_per_s']:8.0f} tokens/s", flush=True)
    for name in dict.fromkeys(r["config"] for r in results):
        one, many = (next(r for r in results if r["config"] == name and r["procs"] == p) for p in (1, args.procs))
        print(f"{name:24} speed-up {many['tokens_per_s'] / one['tokens_per_s']:.2f}x")
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, out / f"scaling_{device}.png", device)


if __name__ == "__main__":
    main()
