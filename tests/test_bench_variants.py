"""benchmarks/variant_effects.py on a small made-up dataset (the real DMS sets are not in the
repository), and its docs section held to the results committed beside its figure."""

import json
import math
import sys
from pathlib import Path

import pytest
from Bio.Align import substitution_matrices
from scipy.stats import spearmanr
from test_inference import make_model_dir

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import variant_effects  # noqa: E402

SEQ = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ"
MUTANTS = ["K2A", "K2L", "T3S", "A4G", "Y5F", "I6V", "Q9P", "R10K", "Q11W", "E25D"]


def test_measure_reports_models_and_baselines(tmp_path):
    data = tmp_path / "dms"
    data.mkdir()
    (data / "TOY.fasta").write_text(f">toy\n{SEQ}\n")
    fitness = [0.3, -1.2, 0.1, -0.5, 0.2, 0.4, -2.0, 0.0, -0.8, 0.05]
    (data / "TOY.csv").write_text("mutant,score\n" + "".join(f"{m},{f}\n" for m, f in zip(MUTANTS, fitness, strict=True)))
    model = make_model_dir(tmp_path / "model", "mlm")
    result = variant_effects.measure([model], data, ["masked-marginal", "wt-marginal"])
    rows = {(r["model"], r["method"]): r for r in result["rows"]}
    assert set(rows) == {("BLOSUM62", ""), ("frequency only", ""), ("model", "masked-marginal"), ("model", "wt-marginal")}
    blosum = substitution_matrices.load("BLOSUM62")
    expected = spearmanr([blosum[m[0]][m[-1]] for m in MUTANTS], fitness).statistic
    assert rows["BLOSUM62", ""]["spearman"] == pytest.approx(expected)
    assert rows["model", "wt-marginal"]["variants_per_second"] > 0
    assert result["datasets"] == {"TOY": {"length": len(SEQ), "variants": 10}}
    docs = tmp_path / "results.md"
    docs.write_text(f"x\n{variant_effects.BEGIN}\n{variant_effects.END}\ny\n")
    variant_effects.update_docs(result, docs, tmp_path / "fig.png")
    text = docs.read_text()
    assert f"| BLOSUM62 | – | {expected:+.3f} | {expected:+.3f} | – |" in text and text.endswith("\ny\n")
    assert (tmp_path / "fig.png").stat().st_size > 5_000


def test_the_docs_section_is_the_one_written_from_the_committed_results():
    result = json.loads(variant_effects.FIGURE.with_suffix(".json").read_text())
    docs = variant_effects.DOCS.read_text()
    assert f"{variant_effects.BEGIN}\n{variant_effects.section(result)}\n{variant_effects.END}" in docs
    assert variant_effects.FIGURE.is_file()


def test_a_trajectory_is_scored_per_step_beside_its_validation_perplexity(tmp_path):
    data = tmp_path / "dms"
    data.mkdir()
    (data / "TOY.fasta").write_text(f">toy\n{SEQ}\n")
    (data / "TOY.csv").write_text("mutant,score\n" + "".join(f"{m},{i % 4}\n" for i, m in enumerate(MUTANTS)))
    steps = [make_model_dir(tmp_path / "run" / name, "mlm") for name in ("step-0000200", "step-100")]
    metrics = tmp_path / "run" / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(row) + "\n" for row in [{"step": 100, "train/loss": 3.0},
                                                                    {"step": 100, "valid/perplexity": 19.5},
                                                                    {"step": 200, "valid/perplexity": 18.25}]))
    result = variant_effects.measure([], data, ["wt-marginal", "masked-marginal"], steps, tmp_path / "run")
    assert [row["step"] for row in result["trajectory"]] == [100, 200]
    assert [row["valid_perplexity"] for row in result["trajectory"]] == [19.5, 18.25]
    assert result["trajectory_method"] == "wt-marginal"
    assert {r["model"] for r in result["rows"]} == {"BLOSUM62", "frequency only"}
    text = variant_effects.section(result)
    assert "| 200 | 18.250 |" in text and "per doubling of steps" in text
    variant_effects.figure(result, tmp_path / "fig.png")
    assert (tmp_path / "fig.png").stat().st_size > 5_000
    with pytest.raises(SystemExit, match="named step-N"):
        variant_effects.step_of(tmp_path / "final")


def test_steps_to_reach_follows_the_line_of_the_last_three_points():
    rows = [{"step": s, "mean_spearman": r} for s, r in [(10, 0.5), (100, 0.0), (1000, 0.1), (10_000, 0.2)]]
    slope, reach = variant_effects.steps_to_reach(rows, 0.3)
    assert slope == pytest.approx(0.1 / math.log(10))
    assert reach == pytest.approx(100_000)
    assert variant_effects.steps_to_reach(rows[:2], 0.3)[1] is None
    assert [variant_effects._magnitude(x) for x in (12_345.6, 3.7e17)] == ["12,346", "4 × 10^17"]
