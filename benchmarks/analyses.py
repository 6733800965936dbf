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
and copies the figures to docs/figures/analysis_*.png.
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


if __name__ == "__main__":
    main()
