"""Does long context pay? The paper's concat result at equal cost on this CPU: the same wall-clock
budget for each arm, a Performer and an exact Transformer of the same size on packed windows of 8192
tokens, and a Performer on windows of 1024 (eight per step, so every step sees 8192 tokens), all
evaluated on the same held-out windows of 8192 and of 1024.

    python benchmarks/context_at_equal_cost.py [--minutes 30] [--preset small] [--update-docs]

1. *Plan*: each arm's seconds per optimizer step, timed over a few steps after a warmup, turn the
   budget into its number of steps (saved in OUT/plan.json; a rerun keeps it). The budget is spent
   on training steps; validation and checkpoints are not counted.
2. *Train*: cosine decay to 10% after 5% warmup, validating every eighth of the run on the same 16
   windows of 8192 tokens of the valid split (every arm, whatever it trains on), with the metric of
   ``protein-performer evaluate`` (every selected position shown as ``<mask>``). Interrupted runs
   resume from their last checkpoint when the script is run again.
3. *Evaluate*: every test-split window of 8192 tokens, and of every halving of it down to 1024.

Writes OUT/results.json; ``--update-docs`` rewrites the ``context-cost`` section of docs/results.md
and docs/figures/context_at_equal_cost_cpu.png with its JSON beside it.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import equal_time

ROOT = Path(__file__).resolve().parents[1]
DOCS, FIGURE = ROOT / "docs" / "results.md", ROOT / "docs" / "figures" / "context_at_equal_cost_cpu.png"
BEGIN, END = "<!-- context-cost:begin (written by benchmarks/context_at_equal_cost.py) -->", "<!-- context-cost:end -->"
VALID_WINDOWS = 16


def arms(long: int, short: int) -> dict[str, tuple[str, int, int, str]]:
    """``{key: (attention, window length, windows per step, name)}``; every step sees ``long`` tokens."""
    if long % short:
        raise SystemExit(f"--long {long} must be a multiple of --short {short}")
    return {"favor-long": ("favor", long, 1, f"Performer (FAVOR+), windows of {long}"),
            "exact-long": ("softmax", long, 1, f"Transformer (exact), windows of {long}"),
            "favor-short": ("favor", short, long // short, f"Performer (FAVOR+), windows of {short}")}


def eval_lengths(long: int, short: int) -> list[int]:
    """The test windows every arm is evaluated on: ``long``, halved down to ``short``."""
    lengths = [long]
    while lengths[-1] // 2 >= short:
        lengths.append(lengths[-1] // 2)
    return lengths


def configs(arm: tuple, args):
    """The arm's model and training configurations (packed windows, cosine decay)."""
    from protein_performer.model import preset
    from protein_performer.training import TrainConfig

    attention, length, batch, _ = arm
    return (preset(args.preset, attention=attention, objective="mlm"),
            TrainConfig(seq_len=length, concat=True, batch_size=batch, micro_batch_size=batch, lr_schedule="cosine",
                        eval_sequences=VALID_WINDOWS, seed=args.seed))


def run_arm(out: Path, key: str, steps: int, args) -> dict:
    from protein_performer.data import PackedDataset
    from protein_performer.training.evaluation import evaluate

    arm, run = args.arms[key], out / key
    model_config, train_config = configs(arm, args)
    validation = PackedDataset(args.corpus.select("valid"), args.long, train=False)
    equal_time.train(run, model_config, equal_time.with_steps(train_config, steps), args.corpus, validation=validation)
    cached = run / "evaluation.json"
    evaluation = json.loads(cached.read_text()) if cached.exists() else {}
    missing = [length for length in eval_lengths(args.long, args.short) if str(length) not in evaluation]
    for length in missing:
        evaluation[str(length)] = evaluate(run, seq_len=length, batch_size=max(1, args.long // length), max_sequences=args.eval_windows)
    if missing:
        cached.write_text(json.dumps(evaluation, indent=1) + "\n")
    points = equal_time.curve(run)
    _, length, batch, name = arm
    return {"arm": key, "name": name, "steps": steps, "tokens_per_step": length * batch,
            "train_seconds": points[-1]["seconds"] if points else None, "tokens": points[-1]["tokens"] if points else None,
            "curve": points, "evaluation": evaluation}


def standard_error(evaluation: dict) -> float:
    """Binomial standard error of a masked accuracy over its ``tokens`` positions."""
    p = evaluation["accuracy"]
    return math.sqrt(p * (1 - p) / evaluation["tokens"])


def verdict(rows: list[dict], length: str) -> str:
    """Which arm is best on windows of ``length``, and whether its lead over the next arm and over the
    empirical baseline exceeds twice their combined standard error."""
    ranked = sorted(rows, key=lambda r: -r["evaluation"][length]["accuracy"])
    best, runner = ranked[0]["evaluation"][length], ranked[1]["evaluation"][length]

    def lead(other: float, other_se: float, what: str) -> str:
        gap, se = best["accuracy"] - other, math.hypot(standard_error(best), other_se)
        word = "exceeds" if gap > 2 * se else "is within"
        return f"{100 * gap:+.2f} points over {what} ({word} 2 SE = {200 * se:.2f})"

    return (f"Windows of {length}: best {ranked[0]['name']}, "
            f"{lead(runner['accuracy'], standard_error(runner), ranked[1]['name'])}; "
            f"{lead(best['baseline_accuracy'], 0.0, 'the empirical baseline')}.")


def section(result: dict) -> str:
    lengths = [str(result["long"]), str(result["short"])]
    lines = [f"`{result['preset']}` preset, {result['minutes']} minutes of training steps for each arm, seed {result['seed']}; "
             "accuracy ± its binomial standard error (SE) over the masked positions.", "",
             "| arm | seconds per step (plan) | steps | tokens seen | training time | "
             + " | ".join(f"accuracy % / perplexity, windows of {n}" for n in lengths) + " |",
             "|---|---|---|---|---|" + "---|" * len(lengths)]
    baseline = result["rows"][0]["evaluation"]
    for r in result["rows"]:
        cells = [f"{100 * r['evaluation'][n]['accuracy']:.2f} ± {100 * standard_error(r['evaluation'][n]):.2f} / "
                 f"{r['evaluation'][n]['perplexity']:.2f}" for n in lengths]
        lines.append(f"| {r['name']} | {result['plan'][r['arm']]['seconds_per_step']:.2f} | {r['steps']:,} | {r['tokens'] / 1e6:.2f}M | {r['train_seconds'] / 60:.1f} min | " + " | ".join(cells) + " |")
    lines.append("| empirical baseline | | | | | " + " | ".join(
        f"{100 * baseline[n]['baseline_accuracy']:.2f} / {baseline[n]['baseline_perplexity']:.2f}" for n in lengths) + " |")
    masked = " and ".join(f"{baseline[n]['tokens']:,} masked positions in windows of {n}" for n in lengths)
    lines += ["", f"Test split: {masked}.", ""]
    lines += [f"- {verdict(result['rows'], n)}" for n in lengths]
    every = [str(n) for n in eval_lengths(result["long"], result["short"])]
    if len(every) > 2:  # more lengths than the table above shows
        lines += ["", "Masked accuracy % by the length of the test windows (every arm on the same windows):", "",
                  "| arm | " + " | ".join(every) + " |", "|---|" + "---|" * len(every)]
        lines += [f"| {r['name']} | " + " | ".join(f"{100 * r['evaluation'][n]['accuracy']:.2f}" for n in every) + " |"
                  for r in result["rows"]]
        lines.append("| empirical baseline | " + " | ".join(f"{100 * baseline[n]['baseline_accuracy']:.2f}" for n in every) + " |")
    lines += ["", f"![validation accuracy and perplexity against time and tokens](figures/{FIGURE.name})"]
    return "\n".join(lines)


def figure(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharex="col", sharey="row")
    for r in result["rows"]:
        points = r["curve"]
        for column, x in enumerate(([p["seconds"] / 60 for p in points], [p["tokens"] / 1e6 for p in points])):
            axes[0, column].plot(x, [100 * p["accuracy"] for p in points], "o-", label=r["name"])
            axes[1, column].plot(x, [p["perplexity"] for p in points], "o-", label=r["name"])
    axes[1, 0].set_xlabel("training time (min)")
    axes[1, 1].set_xlabel("training tokens (millions)")
    axes[0, 0].set_ylabel("masked accuracy %")
    axes[1, 0].set_ylabel("masked perplexity")
    for column in range(2):
        axes[0, column].set_title(f"validation: {VALID_WINDOWS} windows of {result['long']}", fontsize=9)
    axes[0, 1].legend(fontsize=8)
    fig.suptitle(f"Equal wall-clock budget ({result['minutes']} min each), {result['preset']} preset")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def update_docs(result: dict, docs: Path = DOCS, figure_path: Path = FIGURE) -> None:
    from docs_section import publish

    publish(docs, (BEGIN, END), section(result), result, figure_path, figure)


def main() -> None:
    from protein_performer.data import EncodedCorpus

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/context_at_equal_cost")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--minutes", type=float, default=30.0, help="training budget of each arm")
    parser.add_argument("--long", type=int, default=8192, help="the long windows (tokens)")
    parser.add_argument("--short", type=int, default=1024, help="the short windows (tokens)")
    parser.add_argument("--eval-windows", type=int, default=None, help="cap on test windows per length (default: all)")
    parser.add_argument("--data", help="FASTA or a corpus directory from `protein-performer prepare` (default: the embedded corpus)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    args.corpus = EncodedCorpus.from_file(args.data) if args.data else EncodedCorpus.from_fasta()
    args.arms = arms(args.long, args.short)
    identity = {"preset": args.preset, "long": args.long, "short": args.short, "seed": args.seed, "data": args.data}
    steps = equal_time.plan(out / "plan.json", {k: configs(arm, args) for k, arm in args.arms.items()}, args.corpus,
                            args.minutes, identity)
    rows = [run_arm(out, key, steps[key]["steps"], args) for key in args.arms]
    result = {"preset": args.preset, "minutes": args.minutes, "long": args.long, "short": args.short, "seed": args.seed,
              "plan": steps, "rows": rows}
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    print(section(result))
    if args.update_docs:
        update_docs(result)


if __name__ == "__main__":
    main()
