"""Which model should two hours of this CPU train? A short sweep at equal wall-clock time over preset,
crop length and batch (every candidate sees the same tokens per step), validated on the same proteins,
then the command for the long run.

    python benchmarks/model_sweep.py [--minutes 10] [--hours 2] [--update-docs]

Each candidate trains for ``--minutes`` of optimizer steps (its step count from timed steps:
:mod:`equal_time`), masked LM, cosine decay to 10% after 5% warmup, validated every quarter of its
run on the same 128 valid-split proteins cropped to 1024 residues (the metric of ``protein-performer
evaluate``). The winner is the lowest final validation perplexity; a candidate ahead at ten minutes
can fall behind a bigger one at two hours (bigger models learn more per token and are slower per
token), so the curves against time are shown, not only their ends. Writes OUT/results.json;
``--update-docs`` rewrites the ``model-sweep`` section of docs/results.md and
docs/figures/model_sweep_cpu.png with its JSON beside it.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import equal_time

ROOT = Path(__file__).resolve().parents[1]
DOCS, FIGURE = ROOT / "docs" / "results.md", ROOT / "docs" / "figures" / "model_sweep_cpu.png"
BEGIN, END = "<!-- model-sweep:begin (written by benchmarks/model_sweep.py) -->", "<!-- model-sweep:end -->"
CANDIDATES = [  # (preset, crop length, proteins per step): 8192 tokens per step at most
    ("tiny", 256, 32), ("tiny", 512, 16), ("small", 256, 32), ("small", 512, 16), ("small", 1024, 8),
]
VALID_PROTEINS, VALID_LENGTH = 128, 1024


def key(candidate: tuple) -> str:
    return "{}-L{}-B{}".format(*candidate)


def configs(candidate: tuple, seed: int):
    from protein_performer.model import preset
    from protein_performer.training import TrainConfig

    name, length, batch = candidate
    return (preset(name, objective="mlm"),
            TrainConfig(seq_len=length, batch_size=batch, micro_batch_size=batch, lr_schedule="cosine",
                        eval_sequences=VALID_PROTEINS, seed=seed))


def run_candidate(out: Path, candidate: tuple, steps: int, args) -> dict:
    from protein_performer.data import SingleSequenceDataset
    from protein_performer.model import PerformerLM

    model_config, train_config = configs(candidate, args.seed)
    validation = SingleSequenceDataset(args.corpus.select("valid"), VALID_LENGTH, train=False)
    run = out / key(candidate)
    equal_time.train(run, model_config, equal_time.with_steps(train_config, steps, evaluations=4), args.corpus,
                     validation=validation)
    points = equal_time.curve(run)
    return {"key": key(candidate), "preset": candidate[0], "seq_len": candidate[1], "batch_size": candidate[2],
            "parameters": sum(p.numel() for p in PerformerLM(model_config).parameters()), "steps": steps,
            "tokens": points[-1]["tokens"], "train_seconds": points[-1]["seconds"],
            "tokens_per_second": points[-1]["tokens"] / points[-1]["seconds"], "curve": points,
            "final": {"accuracy": points[-1]["accuracy"], "perplexity": points[-1]["perplexity"]}}


def keep_every(steps: int) -> int:
    """A round interval that keeps 10 to 100 models along a run of ``steps`` (for
    ``variant_effects.py --trajectory``)."""
    return 10 ** max(0, math.floor(math.log10(steps / 10)))


def recommendation(result: dict) -> dict:
    best = min(result["rows"], key=lambda r: r["final"]["perplexity"])
    steps = int(result["hours"] * 3600 / result["plan"][best["key"]]["seconds_per_step"])
    command = (f"protein-performer train --preset {best['preset']} --seq-len {best['seq_len']} --batch-size {best['batch_size']} --micro-batch-size {best['batch_size']} "
               f"--max-steps {steps} --warmup-steps {max(1, steps // 20)} --lr-schedule cosine --keep-every {keep_every(steps)} "
               f"--out runs/best --resume")
    return {"key": best["key"], "steps": steps, "command": command}


def section(result: dict) -> str:
    lines = [f"Each candidate trained for {result['minutes']:g} minutes of optimizer steps (seed {result['seed']}), validated on",
             f"the same {VALID_PROTEINS} valid-split proteins (up to {VALID_LENGTH} residues each).", "",
             "| candidate | parameters | tokens/s | steps | tokens seen | validation accuracy % | validation perplexity |",
             "|---|---|---|---|---|---|---|"]
    best = result["recommendation"]["key"]
    for r in result["rows"]:
        mark = "**" if r["key"] == best else ""
        lines.append(f"| {mark}{r['preset']}, crops of {r['seq_len']}, batch {r['batch_size']}{mark} | {r['parameters'] / 1e6:.2f}M | "
                     f"{r['tokens_per_second']:,.0f} | {r['steps']:,} | {r['tokens'] / 1e6:.2f}M | "
                     f"{100 * r['final']['accuracy']:.2f} | {r['final']['perplexity']:.3f} |")
    lines += ["", f"Lowest validation perplexity: {best}. For {result['hours']:g} hours of steps:", "",
              "```", result["recommendation"]["command"], "```", "",
              f"![validation perplexity against time and tokens](figures/{FIGURE.name})"]
    return "\n".join(lines)


def figure(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for r in result["rows"]:
        points = r["curve"]
        label = f"{r['preset']}, L {r['seq_len']}, B {r['batch_size']}"
        axes[0].plot([p["seconds"] / 60 for p in points], [p["perplexity"] for p in points], "o-", label=label)
        axes[1].plot([p["tokens"] / 1e6 for p in points], [p["perplexity"] for p in points], "o-", label=label)
    axes[0].set_xlabel("training time (min)")
    axes[1].set_xlabel("training tokens (millions)")
    axes[0].set_ylabel("validation perplexity (masked)")
    axes[1].legend(fontsize=8)
    fig.suptitle(f"Equal wall-clock sweep, {result['minutes']:g} min each")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def update_docs(result: dict, docs: Path = DOCS, figure_path: Path = FIGURE) -> None:
    from docs_section import publish

    publish(docs, (BEGIN, END), section(result), result, figure_path, figure)


def main() -> None:
    from protein_performer.data import EncodedCorpus

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/model_sweep")
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget of each candidate")
    parser.add_argument("--hours", type=float, default=2.0, help="budget of the long run the sweep recommends")
    parser.add_argument("--candidates", nargs="+", metavar="PRESET:LEN:BATCH", help="instead of the default candidates")
    parser.add_argument("--data", help="FASTA or a corpus directory from `protein-performer prepare` (default: the embedded corpus)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    candidates = CANDIDATES if not args.candidates else [(p, int(n), int(b)) for p, n, b in (c.split(":") for c in args.candidates)]
    args.corpus = EncodedCorpus.from_file(args.data) if args.data else EncodedCorpus.from_fasta()
    plan = equal_time.plan(out / "plan.json", {key(c): configs(c, args.seed) for c in candidates}, args.corpus, args.minutes,
                           {"seed": args.seed, "data": args.data})
    rows = [run_candidate(out, c, plan[key(c)]["steps"], args) for c in candidates]
    result = {"minutes": args.minutes, "hours": args.hours, "seed": args.seed, "plan": plan, "rows": rows}
    result["recommendation"] = recommendation(result)
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    print(section(result))
    if args.update_docs:
        update_docs(result)


if __name__ == "__main__":
    main()
