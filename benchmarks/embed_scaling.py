"""Embedding at any length: throughput (residues/s) and peak memory of `ProteinLanguageModel.embed`
for one sequence of L residues, a Performer (FAVOR+) against the same weights with exact attention.

    python benchmarks/embed_scaling.py [--preset small] [--lengths 1000,2000,5000,10000,20000,35000]
                                       [--checkpoint DIR] [--out runs/embed_scaling]

The model is --checkpoint's, or a --preset model with random weights (seed 0); the exact-attention twin
is ``config.replace(attention="softmax")`` with the same weights (FAVOR's projection buffers dropped).
Each (attention, length) runs in its own process: one warmup embed of a short sequence, then
--repeats embeds of a random L-residue sequence (whole, fp32, no cropping), timed; the median is
reported. Peak memory is the process's resident high-water mark (``ru_maxrss``; what a user's machine
must have, titin's 34,350 residues included) and that minus the resident size after loading the model.
An attention is not tried at longer lengths once the predicted time exceeds --time-limit-s or the
predicted peak exceeds --memory-limit-gb. Writes OUT/results.json and OUT/embed_scaling.png.
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


def build(preset_name: str, checkpoint: str | None, attention: str):
    import torch

    from protein_performer.inference import ProteinLanguageModel
    from protein_performer.model import PerformerLM, preset
    from protein_performer.rundir import load_model

    if checkpoint:
        favor = load_model(checkpoint)
        config = favor.config
    else:
        config = preset(preset_name, objective="mlm", dropout=0.0)
        torch.manual_seed(0)
        favor = PerformerLM(config)
    if attention == config.attention:
        return ProteinLanguageModel(favor)
    twin = PerformerLM(config.replace(attention=attention))
    weights = {k: v for k, v in favor.state_dict().items() if not k.endswith(".projection")}
    missing, unexpected = twin.load_state_dict(weights, strict=False)
    missing = [k for k in missing if not k.endswith(".projection")]
    if missing or unexpected:
        raise RuntimeError(f"weights do not carry over: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return ProteinLanguageModel(twin)


def single(preset_name: str, checkpoint: str | None, attention: str, length: int, repeats: int) -> dict:
    import numpy as np

    plm = build(preset_name, checkpoint, attention)
    sequence = "".join(np.random.default_rng(length).choice(list("ACDEFGHIKLMNPQRSTVWY"), length))
    plm.embed(sequence[:100])  # warmup
    base = rss_mib()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = plm.embed(sequence, layers=-1)
        times.append(time.perf_counter() - start)
        assert out.shape == (length, plm.embed_dim)
        del out
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    seconds = sorted(times)[len(times) // 2]
    return {"attention": attention, "length": length, "seconds": seconds, "residues_per_s": length / seconds,
            "peak_rss_mib": peak, "peak_above_model_mib": peak - base, "parameters": plm.model.num_parameters()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--checkpoint", help="a trained model directory instead of --preset's random weights")
    parser.add_argument("--lengths", default="1000,2000,5000,10000,20000,35000")
    parser.add_argument("--attentions", default="favor,softmax")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--time-limit-s", type=float, default=300)
    parser.add_argument("--memory-limit-gb", type=float, default=24)
    parser.add_argument("--out", default="runs/embed_scaling")
    parser.add_argument("--single", nargs=2, metavar=("ATTENTION", "LENGTH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:
        print(json.dumps(single(args.preset, args.checkpoint, args.single[0], int(args.single[1]), args.repeats)))
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = ["--preset", args.preset, "--repeats", str(args.repeats)]
    if args.checkpoint:
        common += ["--checkpoint", args.checkpoint]

    def predict_skip(previous: dict, length: int, attention: str) -> str | None:
        growth = length / previous["length"]
        exponent = 2 if attention == "softmax" else 1  # exact attention's time is quadratic in L
        above = previous["peak_above_model_mib"]
        if previous["seconds"] * growth**exponent > args.time_limit_s:
            return f"predicted time over {args.time_limit_s} s"
        if previous["peak_rss_mib"] - above + above * growth**exponent > args.memory_limit_gb * 1024:
            return f"predicted memory over {args.memory_limit_gb} GB"
        return None

    results = sweep(__file__, common, args.attentions.split(","), list(map(int, args.lengths.split(","))),
                    predict_skip=predict_skip,
                    describe=lambda row: f"{row['residues_per_s']:.0f} residues/s ({row['seconds']:.2f} s), peak RSS "
                                         f"{row['peak_rss_mib']:.0f} MiB ({row['peak_above_model_mib']:.0f} above the loaded model)")
    meta = {"preset": None if args.checkpoint else args.preset, "checkpoint": args.checkpoint, "repeats": args.repeats}
    (out / "results.json").write_text(json.dumps({**meta, "rows": results}, indent=2) + "\n")
    plot(results, out / "embed_scaling.png")
    print(f"wrote {out / 'results.json'} and {out / 'embed_scaling.png'}")


def plot(results: list[dict], path: Path) -> None:
    plot_scaling(results, path, panels=[("residues_per_s", "embedding residues / s"), ("peak_rss_mib", "peak resident memory (MiB)")],
                 labels={"favor": "Performer (FAVOR+)", "softmax": "exact attention, same weights"},
                 xlabel="sequence length L (residues)", marks=[("h", 4096, "4 GiB"), ("v", 34350, "titin (34,350)")])


if __name__ == "__main__":
    main()
