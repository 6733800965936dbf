"""benchmarks/backcompat.py: its docs section, written from the results and held to the results
committed beside its figure."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import backcompat  # noqa: E402


def stat(values: list[float]) -> dict:
    return backcompat.summary(values)


def fake_result() -> dict:
    row = {"accuracy": 0.11, "perplexity": 17.3, "agreement": 1.0, "kl": 0.0, "tokens": 100}
    favor = [{"num_features": m, "accuracy": stat([0.10, 0.11, 0.12]), "perplexity": stat([17.5, 17.6, 17.7]),
              "agreement": stat([0.6 + m / 1000] * 3), "kl": stat([0.03 - m / 10000] * 3)} for m in (16, 64)]
    curve = {"steps": [0, 25], "accuracy": {"mean": [0.104, 0.108], "std": [0.001, 0.002]}}
    scratch = {"steps": [0, 25], "accuracy": {"mean": [0.03, 0.09], "std": [0.02, 0.01]}}
    return {"source_steps": 1000, "source_validation_accuracy": 0.103, "finetune_features": 64,
            "zero_shot": {"source": row, "exact": row, "favor": favor,
                          "evaluate_source": {"accuracy": 0.11, "perplexity": 17.3}},
            "finetune": {"converted": curve, "scratch": scratch},
            "finetune_test": {"converted": {"accuracy": stat([0.112, 0.113, 0.114]), "perplexity": stat([17.2] * 3)},
                              "scratch": {"accuracy": stat([0.100, 0.105, 0.111]), "perplexity": stat([17.6] * 3)}}}


def test_section_states_every_row_and_whether_the_seeds_separate():
    text = backcompat.section(fake_result())
    assert "| source: exact Transformer (1,000 steps) | 11.00 | 17.30 | 100.0% | 0 |" in text
    assert "| FAVOR+ M = 16, zero-shot | 11.00 ± 0.82 |" in text and "| FAVOR+ M = 64, zero-shot |" in text
    assert "| 25 steps, validation | 10.80 ± 0.20% | 9.00 ± 1.00% |" in text
    assert "| 25 steps, test split (`protein-performer evaluate`) | 11.30 ± 0.08% (11.20, 11.30, 11.40) / 17.20 |" in text
    assert "converted − from scratch = +0.77 points" in text and "every seed of the conversion is ahead" in text
    result = fake_result()
    result["finetune_test"]["scratch"]["accuracy"] = stat([0.100, 0.105, 0.115])
    assert "the seeds overlap" in backcompat.section(result)


def test_the_docs_section_is_the_one_written_from_the_committed_results():
    result = json.loads(backcompat.FIGURE.with_suffix(".json").read_text())
    docs = backcompat.DOCS.read_text()
    assert f"{backcompat.BEGIN}\n{backcompat.section(result)}\n{backcompat.END}" in docs
