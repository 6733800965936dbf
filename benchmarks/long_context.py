"""Long context: training throughput (tokens/s) and peak memory of a Performer against the same model
with exact attention, at growing window lengths in the --concat regime; then how far each gets.

    python benchmarks/long_context.py [--preset small] [--lengths 1024,2048,...] [--out runs/long_context]

Each (model, length) runs in its own process: a few optimizer steps on packed windows of the
embedded corpus (batch 1 window), timed after a warmup step; peak memory is the process's resident
high-water mark minus its resident size before the first step. A model is not tried at longer
lengths once a step exceeds --time-limit-s or the predicted memory exceeds --memory-limit-gb.
Writes OUT/results.json and OUT/long_context.png.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

from length_sweep import plot_scaling, sweep


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def single(preset_name: str, attention: str, length: int, steps: int, data: str | None = None, overrides: dict | None = None) -> dict:
    """One (attention, length): the median optimizer-step time over ``steps`` after a warmup step, and
    the peak resident memory above the start; ``overrides`` change the preset's model settings."""
    import tempfile

    from protein_performer.data import EncodedCorpus
    from protein_performer.model import preset
    from protein_performer.training import TrainConfig, Trainer

    corpus = EncodedCorpus.from_file(data, split="train") if data else EncodedCorpus.from_fasta(split="train")
    config = preset(preset_name, **{"attention": attention, "objective": "mlm", "dropout": 0.0, **(overrides or {})})
    # One sequence of `length` packed residues per optimizer step; nothing is written (no fit, no save).
    tc = TrainConfig(seq_len=length, concat=True, batch_size=1, micro_batch_size=1, lr=1e-4, warmup_steps=0)
    with tempfile.TemporaryDirectory() as run:
        trainer = Trainer(run, config, tc, corpus=corpus)
        model = trainer.model.train()
        base = rss_mib()
        times = []
        for _ in range(steps + 1):
            start = time.perf_counter()
            trainer.train_step()
            times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    step_s = sorted(times[1:])[len(times[1:]) // 2]
    return {"attention": attention, "length": length, "step_s": step_s, "tokens_per_s": length / step_s,
            "peak_mib": peak - base, "parameters": model.num_parameters()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--lengths", default="1024,2048,4096,8192,16384,32768")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--time-limit-s", type=float, default=120)
    parser.add_argument("--memory-limit-gb", type=float, default=16)
    parser.add_argument("--out", default="runs/long_context")
    parser.add_argument("--data", help="FASTA or a corpus directory from `protein-performer prepare` (default: the embedded corpus)")
    parser.add_argument("--single", nargs=2, metavar=("ATTENTION", "LENGTH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:
        print(json.dumps(single(args.preset, args.single[0], int(args.single[1]), args.steps, args.data)))
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def predict_skip(previous: dict, length: int, attention: str) -> str | None:
        growth = length / previous["length"]
        exponent = 2 if attention == "softmax" else 1  # exact attention's time is quadratic in L
        if previous["step_s"] * growth**exponent > args.time_limit_s:
            return f"predicted step time over {args.time_limit_s} s"
        if previous["peak_mib"] * growth > args.memory_limit_gb * 1024:
            return f"predicted memory over {args.memory_limit_gb} GB"
        return None

    passed = ["--preset", args.preset, "--steps", str(args.steps), *(["--data", args.data] if args.data else [])]
    results = sweep(__file__, passed, ("favor", "softmax"),
                    list(map(int, args.lengths.split(","))), predict_skip=predict_skip,
                    describe=lambda row: f"{row['tokens_per_s']:.0f} tokens/s, step {row['step_s']:.2f} s, peak {row['peak_mib']:.0f} MiB")
    (out / "results.json").write_text(json.dumps({"preset": args.preset, "rows": results}, indent=2) + "\n")
    plot(results, out / "long_context.png")


def plot(results: list[dict], path: Path) -> None:
    plot_scaling(results, path, panels=[("tokens_per_s", "training tokens / s"), ("peak_mib", "peak memory above start (MiB)")],
                 labels={"favor": "Performer (FAVOR+)", "softmax": "Transformer (exact)"}, xlabel="window length L")


if __name__ == "__main__":
    main()
