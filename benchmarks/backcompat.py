"""Backwards compatibility (arXiv 2009.14794, the seed paper's figure): a Transformer trained with exact
softmax attention, run as a Performer with its weights unchanged, then fine-tuned.

    python benchmarks/backcompat.py [--source runs/lm_table/mlm-softmax/seed-0] [--out runs/backcompat] \
        [--features 16 64 256 1024] [--seeds 3] [--finetune-features 64] [--finetune-seeds 3] [--steps 300] \
        [--eval-every 25] [--update-docs]

The source is an exact-attention run of this project (``protein-performer train --attention softmax``).
1. Zero-shot, on the test split (fixed masks, fp32): the source, its exact conversion (must agree to
   the bit), and FAVOR conversions at each M (``--seeds`` projection draws each): accuracy, perplexity,
   top-1 agreement with the source and KL(source ‖ converted) at the masked positions.
2. Fine-tuning: the FAVOR conversion at ``--finetune-features`` trained ``--steps`` steps with the
   source's training settings, against a Performer of the same config trained from scratch with the
   same settings and seed (the same batches and masks); validation accuracy every ``--eval-every``,
   then both on the test split. Repeated for ``--finetune-seeds`` seeds (seed s: projection draw s
   and training seed s, for both), reported as mean ± standard deviation.
Writes ``OUT/results.json`` and the figure; ``--update-docs`` rewrites the section between the
``backcompat`` markers of docs/results.md and keeps the results beside the figure
(docs/figures/backcompat_cpu.json), which a test holds the section to.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import statistics
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from protein_performer.convert import convert_model
from protein_performer.data import DEFAULT_CORPUS_PATH, IGNORE_INDEX, EncodedCorpus
from protein_performer.model import PerformerLM
from protein_performer.rundir import load_model
from protein_performer.training import TrainConfig, Trainer
from protein_performer.training.evaluation import evaluate
from protein_performer.training.objective import make_collator, make_dataset

ROOT = Path(__file__).resolve().parents[1]
DOCS, FIGURE = ROOT / "docs" / "results.md", ROOT / "docs" / "figures" / "backcompat_cpu.png"
BEGIN, END = "<!-- backcompat:begin (written by benchmarks/backcompat.py) -->", "<!-- backcompat:end -->"


@torch.no_grad()
def compare(source: PerformerLM, models: dict[str, PerformerLM], tc: TrainConfig, *, batch_size: int = 32) -> dict[str, dict]:
    """Accuracy, perplexity, agreement with ``source`` (top-1 over the vocabulary) and mean
    KL(source ‖ model) in nats, over the masked positions of the test split (masks fixed by the seed,
    as ``protein-performer evaluate`` draws them), in fp32. ``"source"`` is one of the rows."""
    corpus = EncodedCorpus.from_fasta(DEFAULT_CORPUS_PATH, split="test")
    dataset, collator = make_dataset(corpus, tc, train=False), make_collator(source.config, evaluation=True)
    names = ["source", *models]
    sums = {n: {"nll": 0.0, "correct": 0, "agree": 0, "kl": 0.0} for n in names}
    total = 0
    for start in range(0, len(dataset), batch_size):
        idx = range(start, min(len(dataset), start + batch_size))
        batch = collator([dataset[g] for g in idx], [dataset.generator_for(g) for g in idx])
        keep = batch["labels"] != IGNORE_INDEX
        target = batch["labels"][keep]
        reference = F.log_softmax(source(batch["tokens"], batch["padding_mask"])["logits"][keep], dim=-1)
        total += len(target)
        for name in names:
            model = source if name == "source" else models[name]
            logits = None if name == "source" else model(batch["tokens"], batch["padding_mask"])["logits"][keep]
            log_p = reference if logits is None else F.log_softmax(logits, dim=-1)
            s = sums[name]
            s["nll"] += float(F.nll_loss(log_p, target, reduction="sum"))
            s["correct"] += int((log_p.argmax(-1) == target).sum())
            s["agree"] += int((log_p.argmax(-1) == reference.argmax(-1)).sum())
            s["kl"] += float((reference.exp() * (reference - log_p)).sum())
    return {n: {"accuracy": s["correct"] / total, "perplexity": math.exp(s["nll"] / total), "agreement": s["agree"] / total,
                "kl": s["kl"] / total, "tokens": total} for n, s in sums.items()}


def finetune(run: Path, config, tc: TrainConfig, init: Path | None, corpus: EncodedCorpus) -> list[dict]:
    """Train ``run`` (from ``init``'s weights, or from scratch) and return the validation curve,
    step 0 included."""
    trainer = Trainer(run, config, tc, corpus=corpus, init_weights=init)
    start = trainer.validate()
    started = time.perf_counter()
    trainer.fit(progress=False)
    seconds = time.perf_counter() - started
    curve = [{"step": 0, "accuracy": start["accuracy"], "perplexity": start["perplexity"]}]
    curve += [{"step": r["step"], "accuracy": r["valid/accuracy"], "perplexity": r["valid/perplexity"]}
              for r in trainer.history if "valid/accuracy" in r]
    print(f"  {run.name}: step 0 {100 * curve[0]['accuracy']:.2f}% -> step {curve[-1]['step']} "
          f"{100 * curve[-1]['accuracy']:.2f}% ({seconds:.0f} s)", flush=True)
    return curve


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    rows = result["zero_shot"]["favor"]
    ms = [r["num_features"] for r in rows]
    for key, label in (("accuracy", "accuracy"), ("agreement", "top-1 agreement with the source")):
        means = [100 * r[key]["mean"] for r in rows]
        spread = [100 * r[key]["std"] for r in rows]
        left.errorbar(ms, means, yerr=spread, fmt="o-", capsize=3, label=f"FAVOR, {label}")
    left.axhline(100 * result["zero_shot"]["source"]["accuracy"], color="gray", ls="--", lw=1, label="exact source, accuracy")
    left.set_xscale("log", base=2)
    left.set_xlabel("random features M (weights unchanged, no training)")
    left.set_ylabel("% of masked test positions")
    left.set_title("zero-shot: exact Transformer run as a Performer")
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    seeds = len(result["finetune_seeds"])
    for key, label in (("converted", f"converted (M = {result['finetune_features']}), fine-tuned"),
                       ("scratch", f"Performer from scratch (M = {result['finetune_features']})")):
        curve = result["finetune"][key]
        mean, std = [100 * a for a in curve["accuracy"]["mean"]], [100 * a for a in curve["accuracy"]["std"]]
        line, = right.plot(curve["steps"], mean, "o-", ms=3, label=f"{label}, mean of {seeds} seeds")
        right.fill_between(curve["steps"], [m - d for m, d in zip(mean, std)], [m + d for m, d in zip(mean, std)],
                           color=line.get_color(), alpha=0.2, lw=0)
    right.axhline(100 * result["source_validation_accuracy"], color="gray", ls="--", lw=1,
                  label=f"exact source after {result['source_steps']} steps")
    right.set_xlabel("optimizer steps")
    right.set_ylabel("validation accuracy (%)")
    right.set_title("fine-tuning")
    right.grid(alpha=0.3)
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values), "values": values}


def curve_summary(curves: list[list[dict]]) -> dict:
    """Per-seed validation curves (the same steps) → steps, and mean / std / values of accuracy and
    perplexity at each step."""
    steps = [r["step"] for r in curves[0]]
    by_step = {key: [summary([c[i][key] for c in curves]) for i in range(len(steps))] for key in ("accuracy", "perplexity")}
    return {"steps": steps, **{key: {"mean": [s["mean"] for s in rows], "std": [s["std"] for s in rows]}
                               for key, rows in by_step.items()}, "runs": curves}


def _pm(stat: dict, scale: float = 100, digits: int = 2) -> str:
    return f"{scale * stat['mean']:.{digits}f} ± {scale * stat['std']:.{digits}f}"


def section(result: dict) -> str:
    """The docs section: the zero-shot table, the fine-tuning table and the facts they show, every
    number from ``result``."""
    zero, favor = result["zero_shot"], result["zero_shot"]["favor"]
    src, m, steps = zero["source"], result["finetune_features"], result["source_steps"]
    lines = ["| model | accuracy % | perplexity | top-1 agreement with the source | KL (nats) |", "|---|---|---|---|---|",
             f"| source: exact Transformer ({steps:,} steps) | {100 * src['accuracy']:.2f} | {src['perplexity']:.2f} | 100.0% | 0 |",
             f"| exact conversion (`--attention softmax`) | {100 * zero['exact']['accuracy']:.2f} | {zero['exact']['perplexity']:.2f} | "
             f"{100 * zero['exact']['agreement']:.1f}% | {zero['exact']['kl']:.2g} |"]
    for row in favor:
        lines.append(f"| FAVOR+ M = {row['num_features']}, zero-shot | {_pm(row['accuracy'])} | {_pm(row['perplexity'], 1)} | "
                     f"{_pm(row['agreement'], 100, 1)}% | {_pm(row['kl'], 1, 4)} |")
    cli = zero["evaluate_source"]
    accuracies = [100 * r["accuracy"]["mean"] for r in favor]
    lines += ["", f"- The exact conversion gives the source's numbers: {100 * cli['accuracy']:.2f}% / {cli['perplexity']:.3f} from "
              "`protein-performer evaluate` for both (the script stops if they differ).",
              f"- Zero-shot FAVOR: accuracy {min(accuracies):.2f}–{max(accuracies):.2f}% over M = "
              f"{favor[0]['num_features']}–{favor[-1]['num_features']} against the source's {100 * src['accuracy']:.2f}%; "
              f"top-1 agreement {100 * favor[0]['agreement']['mean']:.1f}% → {100 * favor[-1]['agreement']['mean']:.1f}%, "
              f"KL {favor[0]['kl']['mean']:.4f} → {favor[-1]['kl']['mean']:.4f} nats.", "",
              f"![backwards compatibility: zero-shot against M, fine-tuning against steps](figures/{FIGURE.name})", "",
              f"| after | converted (M = {m}) | from scratch (M = {m}) |", "|---|---|---|"]
    curves = result["finetune"]
    for i, step in enumerate(curves["converted"]["steps"]):
        cells = [f"{100 * curves[k]['accuracy']['mean'][i]:.2f} ± {100 * curves[k]['accuracy']['std'][i]:.2f}%"
                 for k in ("converted", "scratch")]
        lines.append(f"| {step} steps, validation | {cells[0]} | {cells[1]} |")
    final = result["finetune_test"]
    cells = [f"{_pm(final[k]['accuracy'])}% ({', '.join(f'{100 * v:.2f}' for v in final[k]['accuracy']['values'])}) / "
             f"{final[k]['perplexity']['mean']:.2f}" for k in ("converted", "scratch")]
    last = curves["converted"]["steps"][-1]
    lines.append(f"| {last} steps, test split (`protein-performer evaluate`) | {cells[0]} | {cells[1]} |")
    gap = 100 * (final["converted"]["accuracy"]["mean"] - final["scratch"]["accuracy"]["mean"])
    spread = 100 * max(final["converted"]["accuracy"]["std"], final["scratch"]["accuracy"]["std"])
    separated = min(final["converted"]["accuracy"]["values"]) > max(final["scratch"]["accuracy"]["values"])
    lines += ["", f"- Step 0: the conversion starts at {100 * curves['converted']['accuracy']['mean'][0]:.2f}% on validation "
              f"(the source reached {100 * result['source_validation_accuracy']:.2f}% there after {steps:,} steps), "
              f"from scratch at {100 * curves['scratch']['accuracy']['mean'][0]:.2f}%.",
              f"- After {last} steps, test split: converted − from scratch = {gap:+.2f} points (largest standard deviation "
              f"{spread:.2f}); {'every seed of the conversion is ahead' if separated else 'the seeds overlap'}. "
              f"Against the source ({100 * src['accuracy']:.2f}%), the fine-tuned conversion is "
              f"{100 * final['converted']['accuracy']['mean'] - 100 * src['accuracy']:+.2f} points "
              f"(its {last} steps come on top of the source's {steps:,})."]
    return "\n".join(lines)


def update_docs(result: dict, docs: Path = DOCS, figure_path: Path = FIGURE) -> None:
    from docs_section import publish

    publish(docs, (BEGIN, END), section(result), result, figure_path, plot)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=str(ROOT / "runs" / "lm_table" / "mlm-softmax" / "seed-0"),
                        help="an exact-attention run directory (default: the Table 2 exact row, seed 0)")
    parser.add_argument("--out", default=str(ROOT / "runs" / "backcompat"))
    parser.add_argument("--features", type=int, nargs="+", default=[16, 64, 256, 1024])
    parser.add_argument("--seeds", type=int, default=3, help="projection draws per M for the zero-shot rows")
    parser.add_argument("--finetune-features", type=int, default=64)
    parser.add_argument("--finetune-seeds", type=int, default=3, help="fine-tuning repeats (projection draw and training seed)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--update-docs", action="store_true", help=f"rewrite the section in {DOCS.relative_to(ROOT)}")
    args = parser.parse_args()
    source_dir, out = Path(args.source), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    source = load_model(source_dir)
    config = source.config
    if config.attention != "softmax":
        raise SystemExit(f"{source_dir} is not an exact-attention run (attention {config.attention!r})")
    tc = TrainConfig(**json.loads((source_dir / "train_config.json").read_text()))
    source_history = [json.loads(line) for line in (source_dir / "metrics.jsonl").read_text().splitlines()]
    last_valid = [r for r in source_history if "valid/accuracy" in r][-1]

    # 1. zero-shot
    convert_model(source_dir, out / "exact", attention="softmax", overwrite=True)
    models = {"exact": load_model(out / "exact")}
    for m in args.features:
        for seed in range(args.seeds):
            convert_model(source_dir, out / f"favor-m{m}-s{seed}", num_features=m, seed=seed, overwrite=True)
            models[f"favor-m{m}-s{seed}"] = load_model(out / f"favor-m{m}-s{seed}")
    started = time.perf_counter()
    rows = compare(source, models, tc)
    print(f"zero-shot comparison: {time.perf_counter() - started:.0f} s", flush=True)
    cli_source, cli_exact = evaluate(source_dir), evaluate(out / "exact")  # `protein-performer evaluate` (bf16 as trained)
    if (cli_source["accuracy"], cli_source["perplexity"]) != (cli_exact["accuracy"], cli_exact["perplexity"]):
        raise SystemExit(f"exact conversion differs from its source: {cli_source} vs {cli_exact}")
    favor = []
    for m in args.features:
        per_seed = [rows[f"favor-m{m}-s{s}"] for s in range(args.seeds)]
        keys = ("accuracy", "perplexity", "agreement", "kl")
        favor.append({"num_features": m, **{k: summary([r[k] for r in per_seed]) for k in keys}})
        f = favor[-1]
        print(f"FAVOR M={m}: accuracy {100 * f['accuracy']['mean']:.2f}±{100 * f['accuracy']['std']:.2f}%, "
              f"perplexity {f['perplexity']['mean']:.2f}, agreement {100 * f['agreement']['mean']:.1f}%, "
              f"KL {f['kl']['mean']:.4f}", flush=True)
    for name in ("source", "exact"):
        print(f"{name}: accuracy {100 * rows[name]['accuracy']:.2f}%, perplexity {rows[name]['perplexity']:.3f}, "
              f"agreement {100 * rows[name]['agreement']:.1f}%, KL {rows[name]['kl']:.2e}", flush=True)

    # 2. fine-tuning against training from scratch, the same seeds for both
    corpus = EncodedCorpus.from_fasta(tc.data)
    runs: dict[str, list] = {"converted": [], "scratch": []}
    tests: dict[str, list] = {"converted": [], "scratch": []}
    for seed in range(args.finetune_seeds):
        ft = dataclasses.replace(tc, max_steps=args.steps, eval_every=args.eval_every, save_every=args.steps, seed=seed)
        init = out / f"favor-m{args.finetune_features}-s{seed}"
        if not init.exists():
            convert_model(source_dir, init, num_features=args.finetune_features, seed=seed)
        favor_config = load_model(init).config
        for name, start in (("converted", init), ("scratch", None)):
            run = out / f"finetune-{name}-s{seed}"
            shutil.rmtree(run, ignore_errors=True)  # always a fresh run: the curve starts at step 0
            runs[name].append(finetune(run, favor_config, ft, start, corpus))
            tests[name].append(evaluate(run))  # test split, as `protein-performer evaluate`
    curves = {name: curve_summary(c) for name, c in runs.items()}
    final = {name: {key: summary([r[key] for r in rows]) for key in ("accuracy", "perplexity")} for name, rows in tests.items()}
    for name, r in final.items():
        print(f"{name} after {args.steps} steps, test split ({args.finetune_seeds} seeds): accuracy "
              f"{100 * r['accuracy']['mean']:.2f}±{100 * r['accuracy']['std']:.2f}%, perplexity {r['perplexity']['mean']:.3f}")
    result = {
        "source": str(source_dir), "source_steps": last_valid["step"], "source_validation_accuracy": last_valid["valid/accuracy"],
        "train_config": dataclasses.asdict(ft), "model_config": favor_config.to_dict(), "seeds": args.seeds,
        "finetune_seeds": list(range(args.finetune_seeds)),
        "zero_shot": {"source": rows["source"], "exact": rows["exact"], "favor": favor,
                      "evaluate_source": cli_source, "evaluate_exact": cli_exact},
        "finetune_features": args.finetune_features, "finetune": curves, "finetune_test": final,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, out / FIGURE.name)
    if args.update_docs:
        update_docs(result)
    print(f"wrote {out / 'results.json'} and {out / FIGURE.name}" + (f"; updated {DOCS}" if args.update_docs else ""))


if __name__ == "__main__":
    main()
