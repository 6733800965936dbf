"""A small-scale Table 2 (arXiv 2009.14794) over seeds, with a no-context control and a redraw
comparison: Transformer vs Performer-softmax vs Performer-ReLU, bidirectional (masked LM) and
unidirectional (next token), and the paper's rivals (local, linear, Reformer, Linformer; bidirectional),
same size, data order and steps, evaluated on the test split and on an out-of-distribution set (PDB
chains with no homolog in the corpus). Each run keeps its learning curve (``benchmarks/rivals.py`` draws them).

    python benchmarks/lm_table.py [--steps 1000] [--seeds 0 1 2] [--only mlm-none ...] [--update-docs]

Each (arm, seed) trains into ``OUT/ARM/seed-S`` (a finished run is not retrained; an interrupted one
resumes from its last checkpoint, so the script can be stopped and run again) and is evaluated once
(``evaluation.json`` beside it). The metric is ``protein-performer evaluate``'s: for masked LM every
selected position (15%, fixed masks) is shown as ``<mask>``. The runs already published in
docs/figures/lm_table_cpu.json with the same settings are the ledger: reused, not retrained, and kept
in the results whatever ``--only`` asks for, so a table can be finished over several sessions.
Writes ``OUT/results.json``; ``--update-docs`` rewrites, after every newly finished run, the section
between the ``lm-table`` markers of docs/results.md and the figure docs/figures/lm_table_cpu.png with
its JSON beside it.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS, FIGURE = ROOT / "docs" / "results.md", ROOT / "docs" / "figures" / "lm_table_cpu.png"
LEDGER = FIGURE.with_suffix(".json")  # the published runs
BEGIN, END = "<!-- lm-table:begin (written by benchmarks/lm_table.py) -->", "<!-- lm-table:end -->"
SHARED_OOD = ROOT.parent / "shared" / "data" / "pdb_ss_dev.jsonl.gz"
METRIC = "every selected position shown as <mask>"  # recorded with each evaluation; another metric re-evaluates

# key: (objective, attention, kernel, model settings changed from the preset's, name in the table)
ARMS = {
    "mlm-none": ("mlm", "none", "softmax", {}, "no-context control (no attention)"),
    "mlm-softmax": ("mlm", "softmax", "softmax", {}, "Transformer (exact)"),
    "mlm-favor-softmax": ("mlm", "favor", "softmax", {}, "Performer (softmax, FAVOR+)"),
    "mlm-favor-relu": ("mlm", "favor", "relu", {}, "Performer (ReLU)"),
    "causal-none": ("causal", "none", "softmax", {}, "no-context control (no attention)"),
    "causal-softmax": ("causal", "softmax", "softmax", {}, "Transformer (exact)"),
    "causal-favor-softmax": ("causal", "favor", "softmax", {}, "Performer (softmax, FAVOR+)"),
    "causal-favor-relu": ("causal", "favor", "relu", {}, "Performer (ReLU)"),
    "mlm-favor-softmax-redraw100": ("mlm", "favor", "softmax", {"redraw_interval": 100}, "Performer (softmax), redrawn every 100 steps"),
    "mlm-favor-softmax-redraw10": ("mlm", "favor", "softmax", {"redraw_interval": 10}, "Performer (softmax), redrawn every 10 steps"),
    # The paper's rivals (bidirectional only: Reformer and Linformer have no causal mode here), each at
    # the config's default settings; Linformer cannot take rotary positions and learns its own.
    "mlm-local": ("mlm", "local", "softmax", {}, "local attention (window ±64)"),
    "mlm-linear": ("mlm", "linear", "softmax", {}, "linear attention (elu + 1)"),
    "mlm-reformer": ("mlm", "reformer", "softmax", {}, "Reformer (LSH, 4 hashes, buckets of 32)"),
    "mlm-linformer": ("mlm", "linformer", "softmax", {"positions": "learned"}, "Linformer (k = 64, learned positions)"),
}
CORE = ("none", "softmax", "favor")  # the attentions Table 2 compares pairwise; the rivals meet exact and FAVOR+
ORDER = ["mlm-none", "mlm-softmax", "mlm-favor-softmax", "mlm-favor-relu",  # the bidirectional half first
         "mlm-favor-softmax-redraw100", "mlm-favor-softmax-redraw10",
         "causal-none", "causal-softmax", "causal-favor-softmax", "causal-favor-relu",
         "mlm-local", "mlm-linear", "mlm-reformer", "mlm-linformer"]
CURVE_EVERY = 50  # steps between the training-loss points kept with each run
SETS = ("test", "ood")


def train_seconds(history: list[dict], tokens: int) -> float | None:
    """Training time at the run's median throughput (``tokens`` over the median of the logged
    tokens/s): pauses, resumes and a passing load on the machine do not count."""
    rates = [row["train/tokens_per_s"] for row in history if "train/tokens_per_s" in row]
    return tokens / statistics.median(rates) if rates else None


def train_and_evaluate(out: Path, key: str, seed: int, args) -> dict:
    """One arm at one seed: trained (or resumed) unless finished, evaluated unless already evaluated
    with this metric."""
    from protein_performer.model import preset
    from protein_performer.rundir import RunDir
    from protein_performer.training import TrainConfig, Trainer
    from protein_performer.training.evaluation import evaluate

    objective, attention, kernel, overrides, _ = ARMS[key]
    run = out / key / f"seed-{seed}"
    steps = args.steps
    latest = RunDir(run).latest_checkpoint()
    if latest is None or latest.path.name != f"step-{steps:07d}":
        tc = TrainConfig(seq_len=args.seq_len, batch_size=args.batch_size, micro_batch_size=args.batch_size,
                         max_steps=steps, warmup_steps=max(1, steps // 20), save_every=max(1, steps // 5),
                         eval_every=max(1, steps // 5), seed=seed, precision=args.precision)
        config = preset(args.preset, objective=objective, attention=attention, kernel=kernel, **overrides)
        Trainer(run, config, tc, corpus=args.corpus, checkpoint=latest).fit()
    cached = run / "evaluation.json"
    evaluation = json.loads(cached.read_text()) if cached.exists() else {}
    if evaluation.get("metric") != METRIC or evaluation.get("ood_set") != args.ood:
        evaluation = {"metric": METRIC, "ood_set": args.ood, "test": evaluate(run), "ood": evaluate(run, args.ood)}
        cached.write_text(json.dumps(evaluation, indent=1) + "\n")
    history = RunDir(run).read_metrics()
    seconds = train_seconds(history, steps * args.batch_size * args.seq_len)
    return {"arm": key, "seed": seed, "train_seconds": seconds, "test": evaluation["test"], "ood": evaluation["ood"],
            **curves(history)}


def curves(history: list[dict]) -> dict:
    """What a learning curve needs, kept with the run: the training loss averaged over each block of
    ``CURVE_EVERY`` steps (at its last step; one batch's loss is mostly that batch's difficulty), and every
    validation (step, loss, accuracy). Time follows from ``train_seconds`` (steps at the median rate)."""
    blocks: dict[int, list[float]] = {}
    for row in history:
        if "train/loss" in row:
            blocks.setdefault(-(-row["step"] // CURVE_EVERY) * CURVE_EVERY, []).append(row["train/loss"])
    return {"curve": [[step, round(statistics.fmean(losses), 4)] for step, losses in sorted(blocks.items())],
            "valid": [[row["step"], round(row["valid/loss"], 4), round(row["valid/accuracy"], 5)] for row in history
                      if "valid/loss" in row]}


def summarize(runs: list[dict]) -> list[dict]:
    """Per arm: mean, sample standard deviation, min and max over seeds of accuracy and perplexity on
    both sets, and the median training time."""
    rows = []
    for key in ORDER:
        mine = [r for r in runs if r["arm"] == key]
        if not mine:
            continue
        objective, attention, kernel, overrides, name = ARMS[key]
        row = {"arm": key, "name": name, "objective": objective, "attention": attention, "kernel": kernel,
               "redraw_interval": overrides.get("redraw_interval"), "seeds": [r["seed"] for r in mine]}
        for split in SETS:
            for metric in ("accuracy", "perplexity"):
                values = [r[split][metric] * (100 if metric == "accuracy" else 1) for r in mine]
                row[f"{split}_{metric}"] = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                                            "min": min(values), "max": max(values), "values": values}
            row[f"{split}_baseline"] = {"accuracy": 100 * mine[0][split]["baseline_accuracy"],
                                        "perplexity": mine[0][split]["baseline_perplexity"], "tokens": mine[0][split]["tokens"]}
        times = [r["train_seconds"] for r in mine if r["train_seconds"] is not None]
        row["train_seconds_median"] = statistics.median(times) if times else None
        rows.append(row)
    return rows


def separated(a: dict, b: dict) -> bool:
    """A difference we state: every seed of one arm beats every seed of the other."""
    return a["min"] > b["max"] or b["min"] > a["max"]


def _cell(stat: dict) -> str:
    return f"{stat['mean']:.2f} ± {stat['std']:.2f}"


def _time(row: dict) -> str:
    return f"{row['train_seconds_median']:.0f} s" if row["train_seconds_median"] is not None else "–"


def section(result: dict) -> str:
    """The docs section: Table 2 over seeds with the control, the differences that hold for every
    seed, and the redraw comparison. Arms not yet measured are named, not left out silently."""
    rows = {r["arm"]: r for r in result["rows"]}
    seeds = max(len(r["seeds"]) for r in result["rows"])
    table2 = [k for k in ORDER if "redraw_interval" not in ARMS[k][3]]
    lines = [f"Mean ± standard deviation over {seeds} seeds (each seed changes the initialization, data order, masks",
             "and projections); *context* is the model's test accuracy minus the no-context control's.", "",
             "| model | test accuracy % | test perplexity | OOD accuracy % | OOD perplexity | context (points) | training time |",
             "|---|---|---|---|---|---|---|"]
    for objective, label in (("mlm", "bidirectional (masked)"), ("causal", "unidirectional (next token)")):
        present = [rows[k] for k in table2 if ARMS[k][0] == objective and k in rows]
        if not present:
            continue
        base = rows.get(f"{objective}-none")
        test_b, ood_b = present[0]["test_baseline"], present[0]["ood_baseline"]
        lines.append(f"| **{label}**: empirical baseline | {test_b['accuracy']:.2f} | {test_b['perplexity']:.2f} | "
                     f"{ood_b['accuracy']:.2f} | {ood_b['perplexity']:.2f} | | |")
        for r in present:
            gain = "" if base is None or r is base else f"{r['test_accuracy']['mean'] - base['test_accuracy']['mean']:+.2f}"
            fewer = f" ({len(r['seeds'])} of {seeds} seeds so far)" if len(r["seeds"]) < seeds else ""
            lines.append(f"| {r['name']}{fewer} | {_cell(r['test_accuracy'])} | {_cell(r['test_perplexity'])} | "
                         f"{_cell(r['ood_accuracy'])} | {_cell(r['ood_perplexity'])} | {gain} | {_time(r)} |")
    missing = [f"{'bidirectional' if ARMS[k][0] == 'mlm' else 'unidirectional'} {ARMS[k][4]}" for k in ORDER if k not in rows]
    if missing:
        lines += ["", "Not yet measured: " + "; ".join(missing) + "."]
    lines += ["", "Differences that hold for every seed (each seed of one arm above every seed of the other, test accuracy):", ""]
    for objective in ("mlm", "causal"):
        keys = [k for k in table2 if ARMS[k][0] == objective and k in rows]
        core = [k for k in keys if ARMS[k][1] in CORE]
        pairs = [(a, b) for i, a in enumerate(core) for b in core[i + 1:]]
        pairs += [(a, b) for a in keys if a not in core for b in (f"{objective}-softmax", f"{objective}-favor-softmax") if b in rows]
        for a, b in pairs:
            ra, rb = rows[a], rows[b]
            if min(len(ra["seeds"]), len(rb["seeds"])) < 2:
                verdict = "too few seeds yet to say"
            else:
                verdict = "separated" if separated(ra["test_accuracy"], rb["test_accuracy"]) else "within the spread"
            delta = ra["test_accuracy"]["mean"] - rb["test_accuracy"]["mean"]
            lines.append(f"- {objective}: {ra['name']} − {rb['name']}: {delta:+.2f} points, {verdict}")
    redraws = [(k, label) for k, label in (("mlm-favor-softmax", "fixed"), ("mlm-favor-softmax-redraw100", "redrawn every 100 steps"),
                                           ("mlm-favor-softmax-redraw10", "redrawn every 10 steps")) if k in rows]
    if len(redraws) > 1 and redraws[0][0] == "mlm-favor-softmax":
        lines += ["", "Redrawing the random features (bidirectional Performer, softmax kernel; *fixed*: the Table 2 row,",
                  f"whose interval of 1000 steps is never reached in {result['steps']}):", "",
                  "| projections | test accuracy % | test perplexity | OOD accuracy % | OOD perplexity | training time |",
                  "|---|---|---|---|---|---|"]
        for key, label in redraws:
            r = rows[key]
            lines.append(f"| {label} | {_cell(r['test_accuracy'])} | {_cell(r['test_perplexity'])} | "
                         f"{_cell(r['ood_accuracy'])} | {_cell(r['ood_perplexity'])} | {_time(r)} |")
        fixed = rows["mlm-favor-softmax"]["test_accuracy"]
        best = max((k for k, _ in redraws), key=lambda k: rows[k]["test_accuracy"]["mean"])
        if best == "mlm-favor-softmax":
            verdict = "fixed features have the best mean"
        elif separated(rows[best]["test_accuracy"], fixed):
            verdict = f"{rows[best]['name']} is ahead of fixed features for every seed"
        else:
            verdict = f"{rows[best]['name']} has the best mean, within the spread of fixed features"
        lines += ["", f"Verdict (test accuracy): {verdict}."]
        for key, label in redraws[1:]:
            facts = []
            for split, metric, unit in (("test", "accuracy", " points"), ("ood", "perplexity", "")):
                a, b = rows[key][f"{split}_{metric}"], rows["mlm-favor-softmax"][f"{split}_{metric}"]
                spread = "separated" if separated(a, b) else "within the spread"
                facts.append(f"{'test accuracy' if split == 'test' else 'OOD perplexity'} {a['mean'] - b['mean']:+.2f}{unit} ({spread})")
            lines.append(f"- {label} against fixed: " + ", ".join(facts))
    lines += ["", f"![Table 2 over seeds](figures/{FIGURE.name})"]
    return "\n".join(lines)


def figure(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=False)
    for ax, split, title in ((axes[0], "test", "test split"), (axes[1], "ood", "PDB chains (OOD)")):
        for i, r in enumerate(rows):
            values = r[f"{split}_accuracy"]["values"]
            color = "tab:blue" if r["objective"] == "mlm" else "tab:orange"
            ax.bar(i, r[f"{split}_accuracy"]["mean"], color=color, alpha=0.35)
            ax.plot([i] * len(values), values, "o", color=color, markersize=4)
        for objective, color in (("mlm", "tab:blue"), ("causal", "tab:orange")):
            first = [i for i, r in enumerate(rows) if r["objective"] == objective]
            if not first:
                continue
            base = rows[first[0]][f"{split}_baseline"]["accuracy"]
            ax.hlines(base, first[0] - 0.4, first[-1] + 0.4, colors=color, linestyles="dashed", linewidth=1)
        ax.set_xticks(range(len(rows)), [f"{r['objective']}: {r['name']}" for r in rows], rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("accuracy % (points: seeds; dashed: empirical baseline)")
        ax.set_title(title)
        ax.set_ylim(bottom=min(r[f"{split}_baseline"]["accuracy"] for r in rows) - 2)
    fig.suptitle(f"{result['preset']} preset, {result['steps']} steps × {result['batch_size']} × {result['seq_len']} tokens")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def update_docs(result: dict, docs: Path = DOCS, figure_path: Path = FIGURE) -> None:
    """This section and figure, and (with the real docs) the rivals' section, which reads the same runs."""
    from docs_section import publish

    publish(docs, (BEGIN, END), section(result), result, figure_path, figure)
    if docs == DOCS:
        import rivals

        rivals.refresh()


SETTINGS = ("preset", "steps", "batch_size", "seq_len", "precision", "ood_set", "metric")


def published(settings: dict, path: Path = LEDGER) -> dict[tuple[str, int], dict]:
    """The runs of the committed results measured with the same settings, by (arm, seed)."""
    if not path.exists():
        return {}
    result = json.loads(path.read_text())
    if any(result.get(k) != settings[k] for k in SETTINGS):
        return {}
    return {(r["arm"], r["seed"]): r for r in result.get("runs", [])}


def main() -> None:
    from protein_performer.data import DATA_DIR, EncodedCorpus
    from protein_performer.rundir import RunDir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/lm_table")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="fixed, not the machine's default, so that the table's seeds agree across machines")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="+", choices=ORDER, help="these arms only (default: all, in table order)")
    parser.add_argument("--ood", default=str(SHARED_OOD if SHARED_OOD.exists() else DATA_DIR / "pdb_ss_dev_slice.jsonl.gz"))
    parser.add_argument("--data", help="FASTA or a corpus directory from `protein-performer prepare` (default: the embedded corpus)")
    parser.add_argument("--update-docs", action="store_true", help=f"rewrite the section in {DOCS.relative_to(ROOT)}")
    args = parser.parse_args()
    out = Path(args.out)
    args.corpus = EncodedCorpus.from_file(args.data) if args.data else EncodedCorpus.from_fasta()
    if args.update_docs and len(args.seeds) < 2:
        raise SystemExit("--update-docs needs at least two seeds")
    settings = {"preset": args.preset, "steps": args.steps, "batch_size": args.batch_size, "seq_len": args.seq_len,
                "precision": args.precision, "ood_set": Path(args.ood).name, "metric": METRIC}
    ledger = published(settings) if args.data is None else {}
    wanted = [(key, seed) for key in args.only or ORDER for seed in args.seeds]
    known = dict(ledger)  # published runs of other arms stay in the results: --only never drops them
    out.mkdir(parents=True, exist_ok=True)
    for (key, seed), run in known.items():  # curves of published runs from their directories, where they are here
        directory = RunDir(out / key / f"seed-{seed}")
        if directory.metrics.exists():
            run.update(curves(directory.read_metrics()))
    for key, seed in wanted:
        fresh = (key, seed) not in known
        if fresh:
            known[(key, seed)] = train_and_evaluate(out, key, seed, args)
        run = known[(key, seed)]
        print(f"{key} seed {seed}: {'trained' if fresh else 'published'}; test {100 * run['test']['accuracy']:.2f}% / "
              f"{run['test']['perplexity']:.2f}, OOD {100 * run['ood']['accuracy']:.2f}% / {run['ood']['perplexity']:.2f}", flush=True)
        runs = [known[k] for k in sorted(known, key=lambda k: (ORDER.index(k[0]), k[1]))]
        result = {**settings, "runs": runs, "rows": summarize(runs)}
        (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
        if args.update_docs and fresh:
            update_docs(result)
    print(f"wrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
