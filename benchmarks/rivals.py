"""FAVOR against the paper's rivals in one harness: learning curves (from the Table 2 runs of
``lm_table.py``) and training speed and memory against L for every attention kind on this CPU.

    python benchmarks/rivals.py [--preset tiny] [--lengths 1024,2048,4096,8192,16384] [--update-docs]

The accuracy rows (same data, steps, seeds and metric as Table 2) are trained by ``lm_table.py``, whose
ledger keeps each run's curve; this script draws them against steps and against training time (steps
at the run's median throughput). The sweep runs every (attention, length) in a fresh process (so peak
memory is its own, as in ``long_context.py``): a few optimizer steps on one packed window of L tokens,
batch 1, the ``--preset`` model with that attention. Measured results are kept in
docs/figures/rivals_speed_cpu.json and reused (``--remeasure`` runs the sweep again). ``--update-docs``
rewrites the section between the ``rivals`` markers of docs/results.md and the two figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import lm_table
from docs_section import publish
from length_sweep import plot_scaling, sweep
from long_context import single

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "results.md"
SPEED = ROOT / "docs" / "figures" / "rivals_speed_cpu.png"
CURVES = ROOT / "docs" / "figures" / "rivals_curves_cpu.png"
BEGIN, END = "<!-- rivals:begin (written by benchmarks/rivals.py) -->", "<!-- rivals:end -->"
# attention kind → (model settings beyond the preset's, label); Linformer's fixed length is the window's.
METHODS = {
    "favor": ({}, "Performer (FAVOR+)"),
    "softmax": ({}, "Transformer (exact)"),
    "local": ({}, "local (window ±64)"),
    "linear": ({}, "linear (elu + 1)"),
    "reformer": ({}, "Reformer (LSH)"),
    "linformer": ({"positions": "learned"}, "Linformer (k = 64)"),
}
ARMS = {"favor": "mlm-favor-softmax", "softmax": "mlm-softmax", "local": "mlm-local", "linear": "mlm-linear",
        "reformer": "mlm-reformer", "linformer": "mlm-linformer"}
QUADRATIC = ("softmax",)


def overrides(attention: str, length: int) -> dict:
    settings = dict(METHODS[attention][0])
    if attention == "linformer":
        settings["max_len"] = length
    return settings


def measure(args) -> list[dict]:
    def predict_skip(previous: dict, length: int, attention: str) -> str | None:
        growth = length / previous["length"]
        if previous["step_s"] * growth ** (2 if attention in QUADRATIC else 1) > args.time_limit_s:
            return f"predicted step time over {args.time_limit_s} s"
        if previous["peak_mib"] * growth ** (2 if attention in QUADRATIC else 1) > args.memory_limit_gb * 1024:
            return f"predicted memory over {args.memory_limit_gb} GB"
        return None

    passed = ["--preset", args.preset, "--steps", str(args.steps)]
    return sweep(__file__, passed, list(METHODS), [int(x) for x in args.lengths.split(",")], predict_skip=predict_skip,
                 describe=lambda r: f"{r['tokens_per_s']:.0f} tokens/s, step {r['step_s']:.2f} s, peak {r['peak_mib']:.0f} MiB")


def mean_curve(runs: list[dict]) -> tuple[list[int], list[float]]:
    """Steps and the training loss averaged over the runs' seeds (the steps all of them logged)."""
    steps = sorted(set.intersection(*({s for s, _ in r["curve"]} for r in runs)))
    losses = [statistics.fmean(dict(map(tuple, r["curve"]))[s] for r in runs) for s in steps]
    return steps, losses


def curves_by_method(ledger: dict) -> dict[str, dict]:
    """For each method with runs that kept a curve: steps, mean loss, seconds per step (median over seeds)."""
    out = {}
    for attention, arm in ARMS.items():
        runs = [r for r in ledger.get("runs", []) if r["arm"] == arm and r.get("curve")]
        if not runs:
            continue
        steps, losses = mean_curve(runs)
        per_step = statistics.median(r["train_seconds"] / ledger["steps"] for r in runs if r["train_seconds"])
        out[attention] = {"steps": steps, "loss": losses, "seconds_per_step": per_step, "seeds": len(runs)}
    return out


def draw_curves(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for attention, c in result["curves"].items():
        label = f"{METHODS[attention][1]} ({c['seeds']} seeds)"
        axes[0].plot(c["steps"], c["loss"], label=label)
        axes[1].plot([s * c["seconds_per_step"] / 60 for s in c["steps"]], c["loss"], label=label)
    axes[0].set_xlabel("optimizer step")
    axes[1].set_xlabel("training time on this CPU (min, at the run's median throughput)")
    axes[0].set_ylabel("training loss (masked LM, mean over seeds)")
    for ax in axes:
        ax.grid(alpha=0.3)
        if result["curves"]:
            ax.legend(fontsize=7)
    fig.suptitle(f"bidirectional Table 2 runs: {result['table']['preset']} preset, batch {result['table']['batch_size']} × "
                 f"{result['table']['seq_len']} tokens")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw_speed(result: dict, path: Path) -> None:
    plot_scaling(result["sweep"], path, panels=[("tokens_per_s", "training tokens / s"), ("peak_mib", "peak memory above start (MiB)")],
                 labels={k: label for k, (_, label) in METHODS.items()}, xlabel="window length L (batch 1)")


def section(result: dict) -> str:
    """The speed table (tokens/s and peak MiB per method and L, and the ratio to FAVOR), where each
    method stops, and the accuracy facts of the Table 2 rows."""
    rows = [r for r in result["sweep"] if "skipped" not in r]
    lengths = sorted({r["length"] for r in result["sweep"]})
    cell = {(r["attention"], r["length"]): r for r in rows}
    lines = [f"Training speed and memory against L ({result['preset']} preset, one packed window of L tokens per step, "
             f"median of {result['steps']} steps after a warmup; peak resident memory above the start):", "",
             "| attention | " + " | ".join(f"L = {n}" for n in lengths) + " |", "|---|" + "---|" * len(lengths)]
    for attention, (_, label) in METHODS.items():
        cells = []
        for n in lengths:
            r = cell.get((attention, n))
            cells.append(f"{r['tokens_per_s']:,.0f} tok/s, {r['peak_mib']:,.0f} MiB" if r else "–")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    skipped = [r for r in result["sweep"] if "skipped" in r]
    if skipped:
        lines += ["", "Not run: " + "; ".join(f"{METHODS[r['attention']][1]} at L = {r['length']} ({r['skipped']})" for r in skipped) + "."]
    lines += ["", "Where each is fastest (training tokens/s) and how FAVOR compares:", ""]
    for n in lengths:
        here = [r for r in rows if r["length"] == n]
        if not here:
            continue
        best = max(here, key=lambda r: r["tokens_per_s"])
        favor = cell.get(("favor", n))
        ratio = f"; FAVOR at {favor['tokens_per_s'] / best['tokens_per_s']:.2f}× of it" if favor and best is not favor else ""
        lines.append(f"- L = {n}: {METHODS[best['attention']][1]} fastest ({best['tokens_per_s']:,.0f} tokens/s){ratio}")
    table = {r["arm"]: r for r in result["table"].get("rows", [])}
    favor = table.get(ARMS["favor"])
    present = [(a, table[arm]) for a, arm in ARMS.items() if arm in table and a != "favor"]
    if favor and present:
        lines += ["", f"Accuracy at equal steps (Table 2 above; test accuracy, mean over seeds, against FAVOR+'s "
                      f"{favor['test_accuracy']['mean']:.2f}%):", ""]
        for attention, row in present:
            if min(len(row["seeds"]), len(favor["seeds"])) < 2:
                verdict = "too few seeds yet to say"
            elif lm_table.separated(row["test_accuracy"], favor["test_accuracy"]):
                verdict = "every seed " + ("above" if row["test_accuracy"]["mean"] > favor["test_accuracy"]["mean"] else "below") + " every FAVOR+ seed"
            else:
                verdict = "within the spread"
            lines.append(f"- {METHODS[attention][1]}: {row['test_accuracy']['mean']:.2f}% "
                         f"({row['test_accuracy']['mean'] - favor['test_accuracy']['mean']:+.2f} points, {verdict})")
    missing = [METHODS[a][1] for a, arm in ARMS.items() if arm not in table]
    if missing:
        lines += ["", "Not yet in Table 2: " + ", ".join(missing) + " (`python benchmarks/lm_table.py --update-docs` trains them)."]
    lines += ["", f"![learning curves against steps and time](figures/{CURVES.name})",
              f"![training speed and memory against L](figures/{SPEED.name})"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--lengths", default="1024,2048,4096,8192,16384")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--time-limit-s", type=float, default=60)
    parser.add_argument("--memory-limit-gb", type=float, default=16)
    parser.add_argument("--remeasure", action="store_true", help="run the speed sweep even if its results are published")
    parser.add_argument("--out", default="runs/rivals")
    parser.add_argument("--update-docs", action="store_true", help=f"rewrite the section in {DOCS.relative_to(ROOT)}")
    parser.add_argument("--single", nargs=2, metavar=("ATTENTION", "LENGTH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:
        attention, length = args.single[0], int(args.single[1])
        print(json.dumps(single(args.preset, attention, length, args.steps, overrides=overrides(attention, length))))
        return
    settings = {"preset": args.preset, "steps": args.steps, "lengths": args.lengths}
    published = json.loads(SPEED.with_suffix(".json").read_text()) if SPEED.with_suffix(".json").exists() else {}
    if not args.remeasure and all(published.get(k) == v for k, v in settings.items()):
        sweep_rows = published["sweep"]
        print(f"speed sweep: the published results ({SPEED.with_suffix('.json').name}); --remeasure runs it again")
    else:
        sweep_rows = measure(args)
    result = build(settings, sweep_rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    draw_speed(result, out / SPEED.name)
    draw_curves(result, out / CURVES.name)
    print(section(result))
    if args.update_docs:
        update_docs(result)


def build(settings: dict, sweep_rows: list[dict], ledger_path: Path = lm_table.LEDGER) -> dict:
    """The section's facts: the sweep, and Table 2's rows and curves as the ledger has them now."""
    ledger = json.loads(ledger_path.read_text())
    table = {k: ledger[k] for k in ("preset", "steps", "batch_size", "seq_len")} | {"rows": ledger.get("rows", [])}
    return {**settings, "sweep": sweep_rows, "table": table, "curves": curves_by_method(ledger)}


def update_docs(result: dict, docs: Path = DOCS, speed: Path = SPEED, curves: Path = CURVES) -> None:
    draw_curves(result, curves)
    publish(docs, (BEGIN, END), section(result), result, speed, draw_speed)


def refresh() -> None:
    """After Table 2 changed (``lm_table.py --update-docs`` calls this): the section again from the
    published sweep and the current ledger; nothing to do before a sweep is published."""
    path = SPEED.with_suffix(".json")
    if path.exists():
        published = json.loads(path.read_text())
        update_docs(build({k: published[k] for k in ("preset", "steps", "lengths")}, published["sweep"]))


if __name__ == "__main__":
    main()
