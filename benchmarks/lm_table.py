"""A small-scale Table 2 (arXiv 2009.14794): Transformer vs Performer-softmax vs Performer-ReLU,
bidirectional (masked LM) and unidirectional (next token), same size and steps, on the test split and
on an out-of-distribution set (PDB chains with no homolog in the corpus).

    python benchmarks/lm_table.py [--steps 600] [--preset tiny] [--ood PATH] [--out runs/lm_table]

Writes ``OUT/results.json`` and ``OUT/table.md`` and one run directory per model (checkpoints,
curves). Runs already finished in OUT are evaluated again but not retrained.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from protein_performer.data import DATA_DIR, EncodedCorpus
from protein_performer.model import preset
from protein_performer.rundir import RunDir
from protein_performer.training import TrainConfig, Trainer
from protein_performer.training.evaluation import evaluate

MODELS = [  # (name, objective, attention, kernel)
    ("bidirectional Transformer", "mlm", "softmax", "softmax"),
    ("bidirectional Performer (softmax)", "mlm", "favor", "softmax"),
    ("bidirectional Performer (ReLU)", "mlm", "favor", "relu"),
    ("unidirectional Transformer", "causal", "softmax", "softmax"),
    ("unidirectional Performer (softmax)", "causal", "favor", "softmax"),
    ("unidirectional Performer (ReLU)", "causal", "favor", "relu"),
]
SHARED_OOD = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pdb_ss_dev.jsonl.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/lm_table")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ood", default=str(SHARED_OOD if SHARED_OOD.exists() else DATA_DIR / "pdb_ss_dev_slice.jsonl.gz"))
    parser.add_argument("--eval-sequences", type=int, default=None, help="cap on evaluated sequences per set")
    args = parser.parse_args()
    out = Path(args.out)
    corpus = EncodedCorpus.from_fasta()
    rows = []
    for name, objective, attention, kernel in MODELS:
        run = out / f"{objective}-{attention}-{kernel}"
        tc = TrainConfig(seq_len=args.seq_len, batch_size=args.batch_size, micro_batch_size=args.batch_size,
                         max_steps=args.steps, warmup_steps=max(1, args.steps // 20), save_every=args.steps,
                         eval_every=max(1, args.steps // 5), seed=args.seed)
        config = preset(args.preset, objective=objective, attention=attention, kernel=kernel)
        started = time.perf_counter()
        latest = RunDir(run).latest_checkpoint()
        if latest is None or latest.path.name != f"step-{args.steps:07d}":
            trainer = Trainer(run, config, tc, corpus=corpus, checkpoint=latest)
            trainer.fit()
        seconds = time.perf_counter() - started
        test = evaluate(run, max_sequences=args.eval_sequences)
        ood = evaluate(run, args.ood, max_sequences=args.eval_sequences)
        rows.append({"model": name, "objective": objective, "attention": attention, "kernel": kernel,
                     "train_seconds": seconds, "test": test, "ood": ood})
        print(f"{name}: test {100 * test['accuracy']:.2f}% / {test['perplexity']:.2f}, "
              f"OOD {100 * ood['accuracy']:.2f}% / {ood['perplexity']:.2f}", flush=True)
    result = {"preset": args.preset, "steps": args.steps, "batch_size": args.batch_size, "seq_len": args.seq_len,
              "ood_set": args.ood, "rows": rows}
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["| model | test accuracy % / perplexity | OOD accuracy % / perplexity |", "|---|---|---|"]
    for objective in ("mlm", "causal"):
        first = next(r for r in rows if r["objective"] == objective)
        lines.append(f"| empirical baseline ({'masked' if objective == 'mlm' else 'next token'}) | "
                     f"{100 * first['test']['baseline_accuracy']:.2f} / {first['test']['baseline_perplexity']:.2f} | "
                     f"{100 * first['ood']['baseline_accuracy']:.2f} / {first['ood']['baseline_perplexity']:.2f} |")
        for r in rows:
            if r["objective"] == objective:
                lines.append(f"| {r['model']} | {100 * r['test']['accuracy']:.2f} / {r['test']['perplexity']:.2f} | "
                             f"{100 * r['ood']['accuracy']:.2f} / {r['ood']['perplexity']:.2f} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
