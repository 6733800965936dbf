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
from length_sweep import plot_scaling, run_point
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
CONTROL = ("none", "mlm-none", "no-context control")  # drawn beside the curves: what training reaches without context


def overrides(attention: str, length: int) -> dict:
    settings = dict(METHODS[attention][0])
    if attention == "linformer":
        settings["max_len"] = length
    return settings


def measure(args) -> list[dict]:
    """Every method at growing L, ``--repeats`` fresh processes per point, interleaved (each repeat runs
    every method once before the next), so that drift in the machine's speed falls on all methods alike;
    a row keeps the median and the range over repeats. A method stops at the first L predicted to
    exceed the limits (exact attention quadratically, the others linearly) or that fails."""
    passed = ["--preset", args.preset, "--steps", str(args.steps)]
    rows: list[dict] = []
    previous: dict[str, dict] = {}
    stopped: set[str] = set()

    def stop(method: str, length: int, reason: str) -> None:
        rows.append({"attention": method, "length": length, "skipped": reason})
        stopped.add(method)

    for length in (int(x) for x in args.lengths.split(",")):
        for method in [m for m in METHODS if m not in stopped]:
            reason = predict_skip(previous.get(method), length, method, args)
            if reason:
                stop(method, length, reason)
        points: dict[str, list[dict]] = {m: [] for m in METHODS if m not in stopped}
        for _ in range(args.repeats):
            for method in [m for m in points if m not in stopped]:
                point = run_point(__file__, passed, method, length)
                if "skipped" in point:
                    stop(method, length, point["skipped"])
                else:
                    points[method].append(point)
        for method, runs in points.items():
            if method in stopped:
                continue
            rates, peaks = [r["tokens_per_s"] for r in runs], [r["peak_mib"] for r in runs]
            row = {"attention": method, "length": length, "tokens_per_s": statistics.median(rates), "tokens_per_s_range": [min(rates), max(rates)],
                   "peak_mib": statistics.median(peaks), "step_s": statistics.median(r["step_s"] for r in runs),
                   "parameters": runs[0]["parameters"], "repeats": len(runs)}
            rows.append(row)
            previous[method] = row
            print(f"{method} L={length}: {row['tokens_per_s']:.0f} tokens/s ({min(rates):.0f}–{max(rates):.0f}), "
                  f"peak {row['peak_mib']:.0f} MiB", flush=True)
    return rows


def predict_skip(previous: dict | None, length: int, attention: str, args) -> str | None:
    if previous is None:
        return None
    growth = (length / previous["length"]) ** (2 if attention in QUADRATIC else 1)
    if previous["step_s"] * growth > args.time_limit_s:
        return f"predicted step time over {args.time_limit_s} s"
    if previous["peak_mib"] * growth > args.memory_limit_gb * 1024:
        return f"predicted memory over {args.memory_limit_gb} GB"
    return None


def mean_curve(runs: list[dict]) -> tuple[list[int], list[float]]:
    """Steps and the training loss averaged over the runs' seeds (the steps all of them logged)."""
    steps = sorted(set.intersection(*({s for s, _ in r["curve"]} for r in runs)))
    losses = [statistics.fmean(dict(map(tuple, r["curve"]))[s] for r in runs) for s in steps]
    return steps, losses


def curves_by_method(ledger: dict) -> dict[str, dict]:
    """For each method with runs that kept a curve: steps, mean loss, seconds per step (median over seeds)."""
    out = {}
    for attention, arm in {**ARMS, CONTROL[0]: CONTROL[1]}.items():
        runs = [r for r in ledger.get("runs", []) if r["arm"] == arm and r.get("curve")]
        if not runs:
            continue
        steps, losses = mean_curve(runs)
        per_step = statistics.median(r["train_seconds"] / ledger["steps"] for r in runs if r["train_seconds"])
        out[attention] = {"steps": steps, "loss": losses, "seconds_per_step": per_step, "seeds": len(runs)}
    return out


def equal_time(ledger: dict) -> dict[str, dict]:
    """Validation accuracy (percent, per seed) at FAVOR+'s training time: FAVOR+'s last validation, and
    for each other method the last one each seed reached within the median time FAVOR+ took (a method that
    finished sooner gives its last one), at the seed's own median throughput; seeds that reached no
    validation in that time are left out."""
    runs = {a: [r for r in ledger.get("runs", []) if r["arm"] == arm and r.get("valid") and r.get("train_seconds")]
            for a, arm in ARMS.items()}
    if not runs["favor"]:
        return {}
    budget = statistics.median(r["train_seconds"] for r in runs["favor"])
    out = {}
    for attention, seeds in runs.items():
        reached = []
        for r in seeds:
            per_step = r["train_seconds"] / ledger["steps"]
            within = r["valid"] if attention == "favor" else [v for v in r["valid"] if v[0] * per_step <= budget * 1.001]
            if within:
                reached.append(within[-1])
        if reached:
            accuracy = [100 * v[2] for v in reached]
            out[attention] = {"budget_s": budget, "steps": [v[0] for v in reached], "accuracy": accuracy,
                              "stat": {"mean": statistics.fmean(accuracy), "min": min(accuracy), "max": max(accuracy)}}
    return out


def draw_curves(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for attention, c in result["curves"].items():
        label = f"{METHODS[attention][1] if attention in METHODS else CONTROL[2]} ({c['seeds']} seeds)"
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


def against_favor(stat: dict, favor: dict, seeds: int) -> str:
    """How a method's spread over seeds (mean, min, max) stands against FAVOR+'s."""
    if seeds < 2:
        return "too few seeds yet to say"
    if lm_table.separated(stat, favor):
        return "every seed " + ("above" if stat["mean"] > favor["mean"] else "below") + " every FAVOR+ seed"
    return "within the spread"


def section(result: dict) -> str:
    """The speed table (tokens/s and peak MiB per method and L, and the ratio to FAVOR), where each
    method stops, and the accuracy facts of the Table 2 rows."""
    rows = [r for r in result["sweep"] if "skipped" not in r]
    lengths = sorted({r["length"] for r in result["sweep"]})
    cell = {(r["attention"], r["length"]): r for r in rows}
    lines = [f"Training speed and memory against L ({result['preset']} preset, one packed window of L tokens per step; "
             f"each point the median over {result['repeats']} fresh processes, run interleaved, of each one's median "
             f"over {result['steps']} steps after a warmup; peak resident memory above the start):", "",
             "| attention | " + " | ".join(f"L = {n}" for n in lengths) + " |", "|---|" + "---|" * len(lengths)]
    for attention, (_, label) in METHODS.items():
        cells = []
        for n in lengths:
            r = cell.get((attention, n))
            cells.append(f"{r['tokens_per_s']:,.0f} tok/s, {r['peak_mib']:,.0f} MiB" if r else "–")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    first = {r["attention"]: r for r in sorted(rows, key=lambda r: -r["length"])}  # each method at its shortest L
    lines += ["", f"Parameters ({result['preset']} preset; Linformer's grow with its length, here at L = "
                  f"{first['linformer']['length'] if 'linformer' in first else '–'}): "
              + ", ".join(f"{METHODS[a][1]} {r['parameters']:,}" for a, r in first.items()) + "."]
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
        # Clearly fastest only if its slowest repeat beats every other method's fastest one.
        clear = all(best["tokens_per_s_range"][0] > r["tokens_per_s_range"][1] for r in here if r is not best)
        exact = cell.get(("softmax", n))
        versus = f"; FAVOR {favor['tokens_per_s'] / exact['tokens_per_s']:.1f}× exact attention" if favor and exact else ""
        lines.append(f"- L = {n}: {METHODS[best['attention']][1]} fastest ({best['tokens_per_s']:,.0f} tokens/s"
                     f"{'' if clear else ', within the range of another method'}){ratio}{versus}")
    table = {r["arm"]: r for r in result["table"].get("rows", [])}
    favor = table.get(ARMS["favor"])
    present = [(a, table[arm]) for a, arm in ARMS.items() if arm in table and a != "favor"]
    if favor and present:
        lines += ["", f"Accuracy at equal steps (Table 2 above; test accuracy, mean over seeds, against FAVOR+'s "
                      f"{favor['test_accuracy']['mean']:.2f}%):", ""]
        for attention, row in present:
            verdict = against_favor(row["test_accuracy"], favor["test_accuracy"], min(len(row["seeds"]), len(favor["seeds"])))
            lines.append(f"- {METHODS[attention][1]}: {row['test_accuracy']['mean']:.2f}% "
                         f"({row['test_accuracy']['mean'] - favor['test_accuracy']['mean']:+.2f} points, {verdict})")
    timed = result.get("equal_time", {})
    if "favor" in timed and len(timed) > 1:
        base = timed["favor"]
        lines += ["", f"Accuracy at equal training time (validation accuracy, mean over seeds, at the last validation each "
                      f"seed reached within FAVOR+'s {base['budget_s']:.0f} s; FAVOR+ {base['stat']['mean']:.2f}% at step "
                      f"{max(base['steps'])}):", ""]
        for attention, t in timed.items():
            if attention == "favor":
                continue
            verdict = against_favor(t["stat"], base["stat"], min(len(t["accuracy"]), len(base["accuracy"])))
            steps = sorted(set(t["steps"]))
            at = f"step {steps[0]}" if len(steps) == 1 else f"steps {steps[0]}–{steps[-1]}"
            lines.append(f"- {METHODS[attention][1]}: {t['stat']['mean']:.2f}% at {at} "
                         f"({t['stat']['mean'] - base['stat']['mean']:+.2f} points, {verdict})")
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
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per (method, L), interleaved")
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
    settings = {"preset": args.preset, "steps": args.steps, "repeats": args.repeats, "lengths": args.lengths}
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
    return {**settings, "sweep": sweep_rows, "table": table, "curves": curves_by_method(ledger), "equal_time": equal_time(ledger)}


def update_docs(result: dict, docs: Path = DOCS, speed: Path = SPEED, curves: Path = CURVES) -> None:
    draw_curves(result, curves)
    publish(docs, (BEGIN, END), section(result), result, speed, draw_speed)


def refresh() -> None:
    """After Table 2 changed (``lm_table.py --update-docs`` calls this): the section again from the
    published sweep and the current ledger; nothing to do before a sweep is published."""
    path = SPEED.with_suffix(".json")
    if path.exists():
        published = json.loads(path.read_text())
        update_docs(build({k: published[k] for k in ("preset", "steps", "repeats", "lengths")}, published["sweep"]))


if __name__ == "__main__":
    main()
