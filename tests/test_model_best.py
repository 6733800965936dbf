"""The model the repository ships (``models/best``: the model sweep's two-hour run, 1.7 MB) is the one
docs/results.md reports, and it works as a masked LM out of the box."""

import hashlib
import json
import math
from pathlib import Path

from protein_performer.inference import load, score_variants
from protein_performer.training.evaluation import evaluate

ROOT = Path(__file__).resolve().parents[1]
BEST = ROOT / "models" / "best"
REPORT = ROOT / "docs" / "figures" / "model_report.json"


def test_the_shipped_weights_are_the_reported_ones():
    reported = {m["name"]: m for m in json.loads(REPORT.read_text())["models"]}
    digest = hashlib.sha256((BEST / "model.safetensors").read_bytes()).hexdigest()[:16]
    assert reported["best"]["key"]["weights"] == digest
    assert reported["best"]["key"]["step"] == "step-0027907"
    assert json.loads((BEST / "train_config.json").read_text())["max_steps"] == 27907


def test_the_shipped_model_predicts_masked_residues_better_than_their_frequencies():
    result = evaluate(BEST, max_sequences=64)
    assert result["tokens"] > 1000
    assert result["accuracy"] > result["baseline_accuracy"] + 0.015
    assert result["perplexity"] < result["baseline_perplexity"] - 0.5
    scored = score_variants(load(BEST, "cpu"), "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ", mutations="K2A,Y5F", tokens_per_batch=4096)
    assert len(scored.scores) == 2 and all(math.isfinite(x) and x != 0 for x in scored.scores)
