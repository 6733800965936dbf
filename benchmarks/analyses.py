"""The paper's analyses for the shared models: approximation error, attention maps, BLOSUM62.

    OMP_NUM_THREADS=1 python benchmarks/analyses.py [--shared runs/shared] [--out runs/analysis] [--wait]

Models (trained by `protein-performer train --preset tiny --seq-len 256 --batch-size 32 --seed 0`):
``exact-tiny`` (exact softmax, 1000 steps), ``favor-better`` (FAVOR+, 3000 steps) and ``favor-tiny``
(FAVOR+, 1000 steps: the demo). A model counts as finished when its folder holds a ``DONE`` file;
with ``--wait`` the script polls for it, with ``--partial`` it analyzes a model still training at its
latest checkpoint. ``--use NAME=DIR`` takes a model from elsewhere (a run or a checkpoint folder). The
weights analyzed are first copied to OUT/NAME/step-N/model (with the metrics up to step N), so every
analysis of a model sees the same step; results already in OUT/NAME/step-N are reused.
Writes OUT/approximation_random.json, OUT/NAME/step-N/{similarity,attention_maps}_*, evaluation.json,
approximation.json (+ real q/k) and report.html for favor-better, OUT/summary.json,
and copies the figures to docs/figures/analysis_*.png. ``--update-docs`` rewrites the sections between
the ``analysis-*`` markers of docs/results.md from the summary (kept as docs/figures/analysis_summary.json).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from protein_performer.analysis.pipeline import (
    checkpoint_approximation,
    random_approximation,
    run_attention_maps,
    run_similarity,
    write_approximation,
)
from protein_performer.analysis.report import write_report
from protein_performer.training.evaluation import evaluate

MODELS = ("exact-tiny", "favor-better", "favor-tiny")
BETTER = "favor-better"


def cached(path: Path, log: str, compute, *args, **kwargs) -> dict:
    """``compute(*args, **kwargs)`` saved as JSON at ``path``, or what ``path`` already holds."""
    if path.exists():
        print(f"{log}: reusing {path}", flush=True)
        return json.loads(path.read_text())
    started = time.perf_counter()
    result = compute(*args, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{log}: {time.perf_counter() - started:.0f} s -> {path}", flush=True)
    return result


def wait_for(model: Path, wait: bool) -> bool:
    while not (model / "DONE").exists():
        if not wait:
            return False
        time.sleep(30)
    return True


def snapshot(model: Path, out: Path) -> tuple[Path, int]:
    """Copy the latest complete checkpoint of run ``model`` (or checkpoint folder ``model``) to
    ``out/step-N/model`` with its frequencies and the metrics up to step N; return the copy and N."""
    pointer = model / "checkpoints" / "latest"
    checkpoint = model / "checkpoints" / pointer.read_text().strip() if pointer.exists() else model
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    step = int(state["step"])
    target = out / f"step-{step}" / "model"
    if not target.exists():
        tmp = target.with_name("model.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name in ("config.json", "model.safetensors", "train_config.json"):
            shutil.copyfile(checkpoint / name, tmp / name)
        (tmp / "frequencies.json").write_text(json.dumps({"frequencies": state["frequencies"]}) + "\n")
        metrics = model / "metrics.jsonl"
        if metrics.exists():
            rows = [line for line in metrics.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
            (tmp / "metrics.jsonl").write_text("".join(row + "\n" for row in rows))
        tmp.rename(target)
    return target, step


def table_rows(table: dict, statistic: str = "median") -> dict:
    """``{kernel: {projection: {M: value}}}``: one statistic of an approximation error table."""
    return {kernel: {proj: {m: v[statistic] for m, v in rows.items()} for proj, rows in by.items()} for kernel, by in table.items()}


KERNEL_NAMES = {"softmax": "positive (FAVOR+)", "softmax_trig": "trigonometric", "softmax_hyperbolic": "hyperbolic"}
ROOT = Path(__file__).resolve().parents[1]
DOCS, SUMMARY = ROOT / "docs" / "results.md", ROOT / "docs" / "figures" / "analysis_summary.json"
SECTIONS = ("analysis-approximation", "analysis-attention", "analysis-similarity")


def markers(key: str) -> tuple[str, str]:
    return f"<!-- {key}:begin (written by benchmarks/analyses.py) -->", f"<!-- {key}:end -->"


def error_table(rows: dict, fmt: str) -> list[str]:
    counts = list(next(iter(rows.values()))["orthogonal"])
    lines = ["| features | projection | " + " | ".join(f"M = {m}" for m in counts) + " |",
             "|---|---|" + "---:|" * len(counts)]
    for kernel, by in rows.items():
        for projection in ("orthogonal", "iid"):
            lines.append(f"| {KERNEL_NAMES.get(kernel, kernel)} | {projection} | "
                         + " | ".join(format(by[projection][m], fmt) for m in counts) + " |")
    return lines


def orthogonal_wins(rows: dict) -> str:
    cells = [(by["orthogonal"][m], by["iid"][m]) for by in rows.values() for m in by["orthogonal"]]
    return f"{sum(o < i for o, i in cells)} of {len(cells)}"


def approximation_section(summary: dict) -> str:
    r = summary["random"]
    lines = [f"Random inputs: L = {r['length']}, d = {r['dim']}, {r['samples']} samples ({r['seconds']:.0f} s). Median over the",
             "samples of the relative error per row, ‖Â_i − A_i‖ / ‖A_i‖ averaged over rows (comparable across L):", "",
             *error_table(r["median_relative"], ".3f"), "",
             "The paper's measure, the mean squared error over the L² entries (it shrinks as 1/L² with rows that sum",
             "to one, so it compares only at equal L):", "", *error_table(r["median_mse"], ".2e"), "",
             f"Orthogonal below iid in {orthogonal_wins(r['median_relative'])} cells (relative error).", ""]
    real = summary["models"].get(BETTER, {}).get("approximation")
    if real:
        lines += [f"Real q/k of `{BETTER}` (after rotary, every layer and head on the first {real['sequences']} test-split proteins,",
                  f"cropped to 1024: {real['samples']} (sequence, layer, head) samples, d = {real['dim']}, "
                  f"{real['residues']:,} residues); relative error per row:", "",
                  *error_table(real["median_relative"], ".3f"), "", "Mean squared error:", "",
                  *error_table(real["median_mse"], ".2e"), "",
                  f"Orthogonal below iid in {orthogonal_wins(real['median_relative'])} cells (relative error)."]
    return "\n".join(lines).rstrip()


def attention_section(summary: dict) -> str:
    lines = ["| model | layer | head | mass within \\|i − j\\| ≤ 2 | top residue's mean attention | mean \\|i − j\\| |",
             "|---|---:|---:|---:|---:|---:|"]
    for name in (BETTER, "exact-tiny"):
        for layer, heads in enumerate(summary["models"].get(name, {}).get("attention_maps", []), 1):
            for head, h in enumerate(heads, 1):
                lines.append(f"| {name} | {layer} | {head} | {h['local']:.3f} | {h['top_column']:.3f} | {h['mean_distance']:.1f} |")
    return "\n".join(lines)


def similarity_section(summary: dict) -> str:
    lines = ["| model | steps | Spearman ρ vs BLOSUM62 | p-value | pairs | sequences / residues | masked-LM test accuracy / perplexity |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, entry in summary["models"].items():
        c, sim, e = entry["similarity"]["comparison"], entry["similarity"], entry["evaluation"]
        lines.append(f"| {name} | {entry['step']} | {c['spearman']:+.3f} | {c['p_value']:.2g} | {c['pairs']} | "
                     f"{sim['sequences']} / {sim['residues']:,} | {100 * e['accuracy']:.2f}% / {e['perplexity']:.2f} |")
    return "\n".join(lines)


def update_docs(summary: dict, docs: Path = DOCS, summary_path: Path = SUMMARY) -> None:
    from docs_section import publish

    for key, build in zip(SECTIONS, (approximation_section, attention_section, similarity_section), strict=True):
        publish(docs, markers(key), build(summary), summary, summary_path, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default="runs/shared")
    parser.add_argument("--out", default="runs/analysis")
    parser.add_argument("--figures", default="docs/figures")
    parser.add_argument("--wait", action="store_true", help="poll for models that are still training")
    parser.add_argument("--partial", action="store_true", help="analyze models still training at their latest checkpoint")
    parser.add_argument("--use", nargs="+", default=[], metavar="NAME=DIR", help="take model NAME from DIR instead of --shared")
    parser.add_argument("--samples", type=int, default=15)
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--sequences", type=int, default=800)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--update-docs", action="store_true", help=f"rewrite the analysis sections of {DOCS.name}")
    args = parser.parse_args()
    shared, out, figures = Path(args.shared), Path(args.out), Path(args.figures)

    summary: dict = {"random": cached(out / "approximation_random.json", "random q/k approximation", random_approximation,
                                      samples=args.samples, length=args.length, dim=16, seed=0)}
    summary["models"] = {}
    overrides = dict(item.split("=", 1) for item in args.use)
    for name in MODELS:
        source = Path(overrides.get(name, shared / name))
        if not source.is_dir():
            print(f"{name}: no {source}, skipped", flush=True)
            continue
        finished = name in overrides or wait_for(source, args.wait and not args.partial)
        if not finished and not args.partial:
            print(f"{name}: not finished (no {source / 'DONE'}), skipped", flush=True)
            continue
        model, step = snapshot(source, out / name)
        folder = model.parent
        print(f"{name}: step {step} of {source}{'' if finished else ' (still training)'}", flush=True)
        entry = summary["models"][name] = {"source": str(source), "step": step, "finished": finished}
        sim = cached(folder / f"similarity_{name}.json", f"{name} similarity", run_similarity,
                     folder, model, sequences=args.sequences, max_length=args.max_length, label=name)
        entry["similarity"] = {k: sim[k] for k in ("comparison", "sequences", "residues", "heads", "max_length", "seconds")}
        maps = cached(folder / "attention_maps_BPT1_BOVIN.json", f"{name} attention maps", run_attention_maps,
                      folder, model, label=f"{name}, step {step}")
        entry["attention_maps"] = maps["heads"]
        entry["evaluation"] = cached(folder / "evaluation.json", f"{name} evaluation", evaluate, model)
        if name == BETTER:
            real = cached(folder / "approximation_checkpoint.json", f"{name} real q/k approximation", checkpoint_approximation,
                          model, sequences=args.samples, max_length=args.max_length, label=f"{name}, step {step}")
            write_approximation(folder, {"random": summary["random"], "checkpoint": real})
            entry["approximation"] = {k: real[k] for k in ("sequences", "residues", "samples", "dim", "seconds")}
            entry["approximation"]["median_relative"] = table_rows(real["relative"])
            entry["approximation"]["median_mse"] = table_rows(real["mse"])
            report = write_report(model, folder / "report.html", analysis=folder, figures=figures, evaluation=entry["evaluation"],
                                  name=f"{name}, step {step}")
            print(f"{name}: report {report}", flush=True)
            for produced, copy in (("approximation.png", "analysis_approximation.png"),
                                   ("approximation_checkpoint.png", "analysis_approximation_checkpoint.png"),
                                   ("attention_maps_BPT1_BOVIN.png", "analysis_attention_maps.png")):
                shutil.copyfile(folder / produced, figures / copy)
        shutil.copyfile(folder / f"similarity_{name}.png", figures / f"analysis_similarity_{name}.png")

    random = summary.pop("random")
    summary["random"] = {k: random[k] for k in ("samples", "length", "dim", "inputs", "seconds")}
    summary["random"]["median_relative"] = table_rows(random["relative"])
    summary["random"]["median_mse"] = table_rows(random["mse"])
    summary["random"]["mean_mse"] = table_rows(random["mse"], "mean")
    summary["random"]["relative_rmse_by_value"] = {k: random["by_value"][k]["relative_rmse"] for k in random["mse"]}
    summary["random"]["by_value_edges"] = random["by_value"]["edges"]
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    for name, entry in summary["models"].items():
        c = entry["similarity"]["comparison"]
        print(f"{name}: Spearman vs BLOSUM62 {c['spearman']:.4f} (p = {c['p_value']:.3g}, {c['pairs']} pairs, "
              f"{entry['similarity']['residues']:,} residues)")
    print(f"wrote {out / 'summary.json'}")
    if args.update_docs:
        update_docs(summary)


if __name__ == "__main__":
    main()
