"""benchmarks/analyses.py's docs sections, written from a summary of real (small) measurements."""

import sys
from pathlib import Path

from analysis_threads import one_thread  # noqa: F401  (autouse: one intra-op thread)

from protein_performer.analysis.approximation import error_tables, random_inputs

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import analyses  # noqa: E402


def summary() -> dict:
    tables = error_tables(random_inputs(3, 64, 16, seed=0), feature_counts=(16, 64), seed=0)
    rows = {e: analyses.table_rows(tables[e]) for e in ("relative", "mse")}
    heads = [[{"local": 0.1, "top_column": 0.02, "mean_distance": 18.25}] * 2] * 2
    model = {"step": 3000, "attention_maps": heads, "evaluation": {"accuracy": 0.1125, "perplexity": 17.174},
             "similarity": {"comparison": {"spearman": 0.0123, "p_value": 0.87, "pairs": 190}, "sequences": 800, "residues": 289691},
             "approximation": {"sequences": 15, "residues": 5445, "samples": 120, "dim": 32,
                               "median_relative": rows["relative"], "median_mse": rows["mse"]}}
    return {"random": {"samples": 3, "length": 64, "dim": 16, "seconds": 1.0, "median_relative": rows["relative"],
                       "median_mse": rows["mse"]}, "models": {"favor-better": model}}


def test_sections_are_written_from_the_summary(tmp_path):
    s = summary()
    docs = tmp_path / "results.md"
    docs.write_text("".join(f"{key}\n{b}\n{e}\n" for key in analyses.SECTIONS for b, e in [analyses.markers(key)]))
    analyses.update_docs(s, docs, tmp_path / "summary.json")
    text = docs.read_text()
    relative = s["random"]["median_relative"]["softmax"]
    assert f"| positive (FAVOR+) | orthogonal | {relative['orthogonal']['16']:.3f} | {relative['orthogonal']['64']:.3f} |" in text
    wins = sum(by["orthogonal"][m] < by["iid"][m] for by in s["random"]["median_relative"].values() for m in ("16", "64"))
    assert f"Orthogonal below iid in {wins} of 6 cells (relative error)." in text
    assert "| favor-better | 2 | 2 | 0.100 | 0.020 | 18.2 |" in text
    assert "| favor-better | 3000 | +0.012 | 0.87 | 190 | 800 / 289,691 | 11.25% / 17.17 |" in text
    assert (tmp_path / "summary.json").is_file()
