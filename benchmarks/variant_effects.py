"""Zero-shot variant effects against real experiments: Spearman ρ per protein and method for given
models, beside two model-free baselines, with variants scored per second on this machine.

    python benchmarks/variant_effects.py --checkpoint runs/demo [--checkpoint DIR ...] \
        [--trajectory runs/best/checkpoints/step-0002000 ... --run runs/best] \
        [--data ../shared/data/dms_dev] [--methods masked-marginal wt-marginal] [--update-docs]

``--data``: a folder of ProteinGym-style pairs ``NAME.fasta`` (the wild type) and ``NAME.csv``
(``mutant`` and ``score``, higher = fitter); the default is the workspace's three development sets
(GPL-3.0 data: read there, never copied into the repository). Baselines: BLOSUM62(wild type →
mutant) (Biopython's matrix), and the frequency-only score log p_freq(mutant) − log p_freq(wild type)
with the embedded corpus's training-split amino-acid frequencies (what a model that learned nothing
but composition would say). Multi-mutants add their sites for all of them. Writes ``OUT/results.json``;
``--update-docs`` rewrites the section between the ``variant-effects`` markers in docs/results.md and
the figure docs/figures/variant_effects_cpu.png (with its JSON beside it).

``--trajectory``: models saved along one training run, each in a folder named ``step-N``, scored with
the first method only: how ρ moves with training steps, beside the run's validation perplexity at
those steps (from ``--run``, the run's directory) and the steps at which a straight line
fitted to the last three points (mean ρ against log steps) would reach BLOSUM62: an extrapolation,
not a measurement.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS, FIGURE = ROOT / "docs" / "results.md", ROOT / "docs" / "figures" / "variant_effects_cpu.png"
BEGIN, END = "<!-- variant-effects:begin (written by benchmarks/variant_effects.py) -->", "<!-- variant-effects:end -->"


def datasets(folder: Path) -> dict[str, tuple[str, Path]]:
    """``{name: (wild-type sequence, csv path)}`` for every ``NAME.csv`` with a ``NAME.fasta`` beside it."""
    from protein_performer.data import read_fasta

    found = {}
    for csv_path in sorted(folder.glob("*.csv")):
        fasta = csv_path.with_suffix(".fasta")
        if fasta.is_file():
            found[csv_path.stem] = (next(iter(read_fasta(fasta))).sequence, csv_path)
    if not found:
        raise SystemExit(f"{folder} has no NAME.csv + NAME.fasta pairs")
    return found


def baseline_scores(sequence: str, csv_path: Path) -> dict[str, list[float]]:
    from Bio.Align import substitution_matrices

    from protein_performer.data import DEFAULT_ALPHABET, DEFAULT_CORPUS_PATH, EncodedCorpus
    from protein_performer.inference.mutations import read_mutations_csv
    from protein_performer.training.objective import amino_acid_frequencies

    blosum = substitution_matrices.load("BLOSUM62")
    frequencies = amino_acid_frequencies(EncodedCorpus.from_file(DEFAULT_CORPUS_PATH).select("train"), with_eos=False)
    log_p = {a: math.log(frequencies[DEFAULT_ALPHABET.token_to_idx(a)]) for a in "ACDEFGHIKLMNPQRSTVWY"}
    _, mutants = read_mutations_csv(csv_path, sequence=sequence)
    return {"BLOSUM62": [float(sum(blosum[s.wild_type][s.mutant] for s in m.substitutions)) for m in mutants],
            "frequency only": [sum(log_p[s.mutant] - log_p[s.wild_type] for s in m.substitutions) for m in mutants]}


def step_of(folder: Path) -> int:
    """N of a trajectory folder named ``step-N``."""
    match = re.fullmatch(r"step-0*(\d+)", folder.name)
    if match is None:
        raise SystemExit(f"{folder}: a --trajectory folder is named step-N (N the training step)")
    return int(match.group(1))


def validation_perplexity(run: Path | None, steps: list[int]) -> dict[int, float]:
    """``{step: valid/perplexity}`` from the metrics of run directory ``run``, for those of ``steps`` it
    validated at."""
    from protein_performer.rundir import RunDir

    if run is None:
        return {}
    return {row["step"]: row["valid/perplexity"] for row in RunDir(run).read_metrics()
            if row["step"] in steps and "valid/perplexity" in row}


FIT_POINTS = 3


def steps_to_reach(trajectory: list[dict], target: float) -> tuple[float, float | None]:
    """``(slope, steps)``: the least-squares line through the last ``FIT_POINTS`` points (mean ρ against
    natural-log steps), and the steps at which it reaches ``target`` (None if it does not rise)."""
    x = [math.log(row["step"]) for row in trajectory[-FIT_POINTS:]]
    y = [row["mean_spearman"] for row in trajectory[-FIT_POINTS:]]
    mx, my = sum(x) / len(x), sum(y) / len(y)
    slope = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True)) / sum((a - mx) ** 2 for a in x)
    return slope, (math.exp(mx + (target - my) / slope) if slope > 0 else None)


def measure(checkpoints: list[Path], folder: Path, methods: list[str], trajectory: list[Path] = (),
            run: Path | None = None) -> dict:
    from scipy.stats import spearmanr

    from protein_performer.inference import load, score_variants
    from protein_performer.inference.mutations import read_mutations_csv

    result = {"datasets": {}, "rows": []}
    trajectory = sorted(trajectory, key=step_of)
    per_step = {step_of(folder): {} for folder in trajectory}
    for name, (sequence, csv_path) in datasets(folder).items():
        rows, _ = read_mutations_csv(csv_path, sequence=sequence)
        labels = [float(r["score"]) for r in rows]
        result["datasets"][name] = {"length": len(sequence), "variants": len(rows)}
        for scorer, scores in baseline_scores(sequence, csv_path).items():
            result["rows"].append({"dataset": name, "model": scorer, "method": "", "spearman": spearmanr(scores, labels).statistic,
                                   "variants_per_second": None})
        for checkpoint in checkpoints:
            plm = load(checkpoint, "cpu")
            for method in methods:
                start = time.perf_counter()
                scored = score_variants(plm, sequence, mutations_csv=csv_path, method=method, tokens_per_batch=16384)
                seconds = time.perf_counter() - start
                rho = scored.spearman("score", csv_path)["spearman"]
                result["rows"].append({"dataset": name, "model": checkpoint.name, "method": method, "spearman": rho,
                                       "variants_per_second": len(rows) / seconds})
                print(f"{name} {checkpoint.name} {method}: rho {rho:.3f} ({len(rows) / seconds:,.0f} variants/s)", flush=True)
        for checkpoint in trajectory:
            scored = score_variants(load(checkpoint, "cpu"), sequence, mutations_csv=csv_path, method=methods[0],
                                    tokens_per_batch=16384)
            per_step[step_of(checkpoint)][name] = scored.spearman("score", csv_path)["spearman"]
            print(f"{name} {checkpoint} {methods[0]}: rho {per_step[step_of(checkpoint)][name]:.3f}", flush=True)
    if trajectory:
        perplexity = validation_perplexity(run, list(per_step))
        result["trajectory"] = [{"step": step, "spearman": rhos, "mean_spearman": sum(rhos.values()) / len(rhos),
                                 "valid_perplexity": perplexity.get(step)} for step, rhos in per_step.items()]
        result["trajectory_method"] = methods[0]
    return result


def section(result: dict) -> str:
    names = list(result["datasets"])
    lines = ["| scorer | method | " + " | ".join(f"{n} ({result['datasets'][n]['variants']:,} variants)" for n in names)
             + " | mean ρ | variants/s (mean) |", "|---|---|" + "---|" * (len(names) + 2)]
    scorers = list(dict.fromkeys((r["model"], r["method"]) for r in result["rows"]))
    for model, method in scorers:
        cells = {r["dataset"]: r for r in result["rows"] if (r["model"], r["method"]) == (model, method)}
        rhos = [cells[n]["spearman"] for n in names]
        speeds = [cells[n]["variants_per_second"] for n in names if cells[n]["variants_per_second"]]
        speed = f"{sum(speeds) / len(speeds):,.0f}" if speeds else "–"
        lines.append(f"| {model} | {method or '–'} | " + " | ".join(f"{rho:+.3f}" for rho in rhos)
                     + f" | {sum(rhos) / len(rhos):+.3f} | {speed} |")
    if "trajectory" in result:
        lines += trajectory_section(result, names)
    lines.append("")
    lines.append("![Spearman rho per protein and scorer](figures/variant_effects_cpu.png)")
    return "\n".join(lines)


def trajectory_section(result: dict, names: list[str]) -> list[str]:
    trajectory = result["trajectory"]
    blosum = _mean_rho(result, "BLOSUM62")
    lines = ["", f"Along one training run ({result['trajectory_method']}; the models saved at these steps):", "",
             "| step | validation perplexity | " + " | ".join(names) + " | mean ρ |", "|---|---|" + "---|" * (len(names) + 1)]
    for row in trajectory:
        perplexity = f"{row['valid_perplexity']:.3f}" if row["valid_perplexity"] is not None else "–"
        lines.append(f"| {row['step']:,} | {perplexity} | " + " | ".join(f"{row['spearman'][n]:+.3f}" for n in names)
                     + f" | {row['mean_spearman']:+.3f} |")
    if len(trajectory) >= 2:
        slope, reach = steps_to_reach(trajectory, blosum)
        fitted, last = trajectory[-FIT_POINTS:], trajectory[-1]["step"]
        line = (f"Over the last {len(fitted)} points (steps {fitted[0]['step']:,}–{last:,}) the mean ρ moves by "
                f"{slope * math.log(2):+.3f} per doubling of steps; ")
        line += (f"along that line it would reach BLOSUM62's {blosum:+.3f} at about {_magnitude(reach)} steps "
                 f"({_magnitude(reach / last)}× this run): an extrapolation, not a measurement."
                 if reach is not None else "along that line more steps alone do not approach BLOSUM62.")
        lines += ["", line]
    return lines


def _magnitude(x: float) -> str:
    """``123,456`` below a million, ``4 × 10^17`` above."""
    if x < 1e6:
        return f"{x:,.0f}"
    exponent = math.floor(math.log10(x))
    return f"{x / 10 ** exponent:.0f} × 10^{exponent}"


def _mean_rho(result: dict, model: str) -> float:
    rhos = [r["spearman"] for r in result["rows"] if r["model"] == model]
    return sum(rhos) / len(rhos)


def figure(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["datasets"])
    scorers = list(dict.fromkeys((r["model"], r["method"]) for r in result["rows"]))
    trajectory = result.get("trajectory")
    fig, axes = plt.subplots(1, 2 if trajectory else 1, figsize=(13 if trajectory else 8, 3.8), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 2] if trajectory else [1]})
    ax = axes[0][0]
    width = 0.8 / len(scorers)
    for k, (model, method) in enumerate(scorers):
        rho = {r["dataset"]: r["spearman"] for r in result["rows"] if (r["model"], r["method"]) == (model, method)}
        ax.bar([i + k * width for i in range(len(names))], [rho[n] for n in names], width,
               label=f"{model} {method}".strip())
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names)
    ax.set(ylabel="Spearman ρ against measured fitness", title="zero-shot variant effects")
    ax.legend(fontsize=8)
    if trajectory:
        ax = axes[0][1]
        steps = [row["step"] for row in trajectory]
        for name in names:
            ax.plot(steps, [row["spearman"][name] for row in trajectory], marker=".", alpha=0.6, label=name)
        ax.plot(steps, [row["mean_spearman"] for row in trajectory], marker="o", color="black", label="mean")
        ax.axhline(_mean_rho(result, "BLOSUM62"), color="tab:red", linestyle="--", label="BLOSUM62 (mean)")
        ax.axhline(_mean_rho(result, "frequency only"), color="grey", linestyle=":", label="frequency only (mean)")
        ax.set(xscale="log", xlabel="training step", ylabel="Spearman ρ",
               title=f"along one run ({result['trajectory_method']})")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def update_docs(result: dict, docs: Path = DOCS, figure_path: Path = FIGURE) -> None:
    """The section between the markers in ``docs``, the figure, and the results beside it."""
    from docs_section import publish

    publish(docs, (BEGIN, END), section(result), result, figure_path, figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, action="append", default=[], help="a model to score with (repeatable)")
    parser.add_argument("--trajectory", type=Path, nargs="+", default=[],
                        help="models saved along one run, in folders named step-N (scored with the first method)")
    parser.add_argument("--run", type=Path, help="the run directory they come from (its validation perplexity at those steps)")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "dms_dev")
    parser.add_argument("--methods", nargs="+", default=["masked-marginal", "wt-marginal"])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "variant_effects")
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args()
    result = measure(args.checkpoint, args.data, args.methods, args.trajectory, args.run)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    print(section(result))
    if args.update_docs:
        update_docs(result)


if __name__ == "__main__":
    main()
