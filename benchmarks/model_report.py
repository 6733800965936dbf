"""Everything a user would ask of a trained masked-LM, for one or more models side by side, beside the
baselines that need no model: masked accuracy and perplexity (test split and the PDB OOD set),
linear probes (secondary structure, contacts), amino-acid similarity from attention against
BLOSUM62, and zero-shot variant effects against the DMS experiments.

    python benchmarks/model_report.py --model demo=runs/demo [--model best=runs/best ...] [--update-docs]

Each model's measurements are kept in OUT/NAME/report.json with the checkpoint's step and a hash of
its weights; a rerun measures only what changed. Data: the test split of the embedded corpus, and
from the workspace's shared data (read there, never copied): the PDB chains
(``pdb_ss_dev.jsonl.gz``, none homologous to the corpus) and the DMS sets (``dms_dev/``); without them
the corresponding rows are left out. ``--update-docs`` rewrites the ``model-report`` section of
docs/results.md (its JSON kept as docs/figures/model_report.json; no figure).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DOCS, RESULT = ROOT / "docs" / "results.md", ROOT / "docs" / "figures" / "model_report.json"
BEGIN, END = "<!-- model-report:begin (written by benchmarks/model_report.py) -->", "<!-- model-report:end -->"


def fingerprint(checkpoint: Path) -> str:
    return hashlib.sha256((checkpoint / "model.safetensors").read_bytes()).hexdigest()[:16]


def measure(checkpoint: Path, args) -> dict:
    """The model's rows (and the baselines measured on the same data)."""
    import variant_effects

    from protein_performer.analysis.pipeline import read_sequences
    from protein_performer.analysis.similarity import attention_similarity
    from protein_performer.inference import load
    from protein_performer.inference.probe import read_chains, run_probes
    from protein_performer.training.evaluation import evaluate

    result = {"test": evaluate(checkpoint, max_sequences=args.eval_sequences)}
    if args.ood.is_file():
        result["ood"] = evaluate(checkpoint, args.ood, max_sequences=args.eval_sequences)
    plm = load(checkpoint, "cpu")
    if args.pdb.is_file():
        result["probes"] = run_probes(plm, read_chains(args.pdb))
    test = [sequence for _, sequence in read_sequences(None, count=args.similarity_sequences)]  # the test split
    similarity = attention_similarity(plm, test, max_length=1024)
    result["blosum62"] = {k: similarity["comparison"][k] for k in ("spearman", "p_value", "pairs")}
    if args.dms.is_dir():
        measured = variant_effects.measure([checkpoint], args.dms, ["masked-marginal"])
        result["variants"] = {r["dataset"]: r["spearman"] for r in measured["rows"] if r["model"] == checkpoint.name}
        result["variant_baselines"] = {scorer: {r["dataset"]: r["spearman"] for r in measured["rows"] if r["model"] == scorer}
                                       for scorer in ("BLOSUM62", "frequency only")}
    return result


def report(name: str, checkpoint: Path, args) -> dict:
    from protein_performer.rundir import RunDir

    run = RunDir(checkpoint)
    latest = run.latest_checkpoint()
    key = {"path": str(checkpoint), "step": latest.path.name if latest else None, "weights": fingerprint(checkpoint),
           "settings": {"ood": args.ood.name, "pdb": args.pdb.name, "dms": args.dms.name,
                        "similarity_sequences": args.similarity_sequences, "eval_sequences": args.eval_sequences}}
    cached = args.out / name / "report.json"
    if cached.exists():
        saved = json.loads(cached.read_text())
        if saved["key"] == key:
            return saved
    saved = {"name": name, "key": key, **measure(checkpoint, args)}
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(saved, indent=1) + "\n")
    return saved


def _mean(values: dict) -> float:
    return sum(values.values()) / len(values)


def section(result: dict) -> str:
    models = result["models"]
    first = models[0]
    lines = ["| measure | " + " | ".join(m["name"] for m in models) + " | without a model |",
             "|---|" + "---|" * (len(models) + 1)]

    def row(label: str, cell, baseline: str) -> None:
        lines.append(f"| {label} | " + " | ".join(cell(m) for m in models) + f" | {baseline} |")

    row("step", lambda m: m["key"]["step"].removeprefix("step-").lstrip("0") if m["key"]["step"] else "–", "")
    for split, label in (("test", "test split"), ("ood", "PDB chains (OOD)")):
        if all(split in m for m in models):
            b = first[split]
            row(f"masked accuracy % / perplexity, {label}", lambda m, s=split: f"{100 * m[s]['accuracy']:.2f} / {m[s]['perplexity']:.2f}",
                f"{100 * b['baseline_accuracy']:.2f} / {b['baseline_perplexity']:.2f} (amino-acid frequencies)")
    if all("probes" in m for m in models):
        p = first["probes"]
        for q in ("q3", "q8"):
            row(f"secondary structure {q.upper()} %", lambda m, q=q: f"{100 * m['probes'][q]:.1f}",
                f"{100 * p[q + '_identity']:.1f} (residue identity), {100 * p[q + '_window']:.1f} (±7 window)")
        row("contacts, precision of top-L/5, \\|i−j\\| ≥ 24 (%)", lambda m: f"{100 * m['probes']['contact_precision']:.2f}",
            f"{100 * p['contact_separation']:.2f} (sequence separation)")
    row("attention similarity vs BLOSUM62, Spearman ρ", lambda m: f"{m['blosum62']['spearman']:+.3f}", "")
    if all("variants" in m for m in models):
        v = first["variant_baselines"]
        row("variant effects, mean Spearman ρ over the DMS sets", lambda m: f"{_mean(m['variants']):+.3f}",
            f"{_mean(v['BLOSUM62']):+.3f} (BLOSUM62), {_mean(v['frequency only']):+.3f} (frequencies)")
    return "\n".join(lines)


def update_docs(result: dict, docs: Path = DOCS, result_path: Path = RESULT) -> None:
    from docs_section import publish

    publish(docs, (BEGIN, END), section(result), result, result_path, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, metavar="NAME=DIR", help="a model to report (repeat)")
    parser.add_argument("--out", type=Path, default=Path("runs/model_report"))
    parser.add_argument("--ood", type=Path, default=SHARED / "pdb_ss_dev.jsonl.gz")
    parser.add_argument("--pdb", type=Path, default=SHARED / "pdb_ss_dev.jsonl.gz")
    parser.add_argument("--dms", type=Path, default=SHARED / "dms_dev")
    parser.add_argument("--similarity-sequences", type=int, default=800)
    parser.add_argument("--eval-sequences", type=int, default=None, help="cap on evaluated proteins per set (default: all)")
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args()
    models = [report(name, Path(path), args) for name, path in (item.split("=", 1) for item in args.model)]
    result = {"models": models}
    (args.out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    print(section(result))
    if args.update_docs:
        update_docs(result)


if __name__ == "__main__":
    main()
