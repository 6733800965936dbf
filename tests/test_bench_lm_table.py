"""benchmarks/lm_table.py: the summary over seeds, which differences it states, and its docs section
held to the results committed beside its figure."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import lm_table  # noqa: E402


def fake_runs(shift: dict[str, float]) -> list[dict]:
    """Three seeds per arm; accuracies 0.10 + shift + 0.001 * seed."""
    runs = []
    for key in lm_table.ORDER:
        for seed in range(3):
            accuracy = 0.10 + shift.get(key, 0.0) + 0.001 * seed
            evaluation = {"accuracy": accuracy, "perplexity": 20 - 10 * accuracy, "baseline_accuracy": 0.09,
                          "baseline_perplexity": 18.0, "tokens": 1000}
            runs.append({"arm": key, "seed": seed, "train_seconds": 100.0 + seed, "test": evaluation, "ood": evaluation})
    return runs


def test_summary_over_seeds_and_the_differences_it_states(tmp_path):
    runs = fake_runs({"mlm-softmax": 0.05, "mlm-favor-softmax": 0.0505, "mlm-favor-softmax-redraw10": 0.06})
    rows = {r["arm"]: r for r in lm_table.summarize(runs)}
    assert list(rows) == lm_table.ORDER
    exact = rows["mlm-softmax"]["test_accuracy"]
    assert exact["mean"] == pytest.approx(15.1) and exact["std"] == pytest.approx(0.1)
    assert exact["values"] == pytest.approx([15.0, 15.1, 15.2])
    assert rows["mlm-softmax"]["train_seconds_median"] == 101.0
    assert lm_table.separated(rows["mlm-softmax"]["test_accuracy"], rows["mlm-none"]["test_accuracy"])
    assert not lm_table.separated(rows["mlm-softmax"]["test_accuracy"], rows["mlm-favor-softmax"]["test_accuracy"])
    result = {"preset": "tiny", "steps": 10, "batch_size": 2, "seq_len": 8, "rows": list(rows.values())}
    text = lm_table.section(result)
    assert "| Transformer (exact) | 15.10 ± 0.10 |" in text
    assert "| Performer (softmax, FAVOR+) | 15.15 ± 0.10 |" in text and "| +5.05 |" in text
    assert "mlm: no-context control (no attention) − Transformer (exact): -5.00 points, separated" in text
    assert "mlm: Transformer (exact) − Performer (softmax, FAVOR+): -0.05 points, within the spread" in text
    assert "redrawn every 10 steps is ahead of fixed features for every seed" in text
    assert "- redrawn every 10 steps against fixed: test accuracy +0.95 points (separated), OOD perplexity -0.09 (separated)" in text
    docs = tmp_path / "results.md"
    docs.write_text(f"x\n{lm_table.BEGIN}\nold\n{lm_table.END}\ny\n")
    lm_table.update_docs(result, docs, tmp_path / "fig.png")
    assert docs.read_text() == f"x\n{lm_table.BEGIN}\n{text}\n{lm_table.END}\ny\n"
    assert (tmp_path / "fig.png").stat().st_size > 5_000
    assert json.loads((tmp_path / "fig.json").read_text())["rows"][0]["arm"] == "mlm-none"


def test_a_partial_table_names_what_is_not_yet_measured(tmp_path):
    runs = [r for r in fake_runs({"mlm-softmax": 0.05}) if r["arm"].startswith("mlm")]
    result = {"preset": "tiny", "steps": 10, "batch_size": 2, "seq_len": 8, "rows": lm_table.summarize(runs)}
    text = lm_table.section(result)
    assert "| **bidirectional (masked)**: empirical baseline |" in text and "unidirectional (next token)**" not in text
    assert "Not yet measured: unidirectional no-context control (no attention); unidirectional Transformer (exact);" in text
    assert "Verdict (test accuracy): fixed features have the best mean." in text
    lm_table.figure(result, tmp_path / "fig.png")
    assert (tmp_path / "fig.png").stat().st_size > 5_000


def test_training_time_is_tokens_over_the_median_throughput():
    history = [{"step": 1, "train/tokens_per_s": 100.0}, {"step": 2, "train/tokens_per_s": 1.0},  # a pause
               {"step": 3, "train/tokens_per_s": 120.0}, {"step": 3, "valid/loss": 2.0}]
    assert lm_table.train_seconds(history, 1000) == pytest.approx(10.0)
    assert lm_table.train_seconds([{"step": 1}], 1000) is None


def test_published_runs_are_reused_only_with_the_same_settings(tmp_path):
    settings = {"preset": "tiny", "steps": 10, "batch_size": 2, "seq_len": 8, "precision": "fp32",
                "ood_set": "ood.jsonl.gz", "metric": lm_table.METRIC}
    runs = fake_runs({})[:2]
    path = tmp_path / "results.json"
    path.write_text(json.dumps({**settings, "runs": runs}))
    assert lm_table.published(settings, path) == {("mlm-none", 0): runs[0], ("mlm-none", 1): runs[1]}
    for key, other in (("steps", 20), ("metric", "every selected position, corrupted 80/10/10"), ("precision", "bf16")):
        assert lm_table.published({**settings, key: other}, path) == {}
    assert lm_table.published(settings, tmp_path / "absent.json") == {}


def test_the_docs_section_is_the_one_written_from_the_committed_results():
    result = json.loads(lm_table.LEDGER.read_text())
    docs = lm_table.DOCS.read_text()
    assert f"{lm_table.BEGIN}\n{lm_table.section(result)}\n{lm_table.END}" in docs


def test_one_seed_separates_nothing():
    runs = [r for r in fake_runs({"mlm-softmax": 0.05}) if r["arm"] in ("mlm-none", "mlm-softmax") and (r["arm"] == "mlm-none" or r["seed"] == 0)]
    result = {"preset": "tiny", "steps": 10, "batch_size": 2, "seq_len": 8, "rows": lm_table.summarize(runs)}
    text = lm_table.section(result)
    assert "| Transformer (exact) (1 of 3 seeds so far) |" in text
    assert "no-context control (no attention) − Transformer (exact): -4.90 points, too few seeds yet to say" in text


def test_rivals_meet_exact_and_favor_not_each_other():
    result = {"preset": "tiny", "steps": 10, "batch_size": 2, "seq_len": 8, "rows": lm_table.summarize(fake_runs({"mlm-local": 0.01}))}
    text = lm_table.section(result)
    assert "| local attention (window ±64) | 11.10 ± 0.10 |" in text
    assert "- mlm: local attention (window ±64) − Transformer (exact): +1.00 points, separated" in text
    assert "- mlm: Linformer (k = 64, learned positions) − Performer (softmax, FAVOR+): +0.00 points, within the spread" in text
    assert "local attention (window ±64) − linear" not in text and "Not yet measured" not in text


def test_each_run_keeps_its_learning_curve():
    history = [{"step": s, "train/loss": 3.0 - s / 1000, "train/tokens_per_s": 10.0} for s in range(10, 210, 10)]
    history.append({"step": 200, "valid/loss": 2.5, "valid/accuracy": 0.123456, "valid/tokens": 5})
    kept = lm_table.curves(history)
    assert kept["curve"] == [[50, 2.97], [100, 2.92], [150, 2.87], [200, 2.82]]  # block means (steps 10-50: 2.97)
    assert kept["valid"] == [[200, 2.5, 0.12346]]
