"""benchmarks/model_report.py on a small random model and small data: every row measured, cached by
the weights' hash, and its docs section written from the results."""

import argparse
import json
import sys
from pathlib import Path

import pytest
from test_bench_variants import MUTANTS, SEQ
from test_inference import make_model_dir

from protein_performer.data import DATA_DIR

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import model_report  # noqa: E402


@pytest.mark.slow  # about 20 s: evaluation, probes, similarity and variants of a model
def test_report_measures_every_row_and_reuses_what_did_not_change(tmp_path, monkeypatch):
    dms = tmp_path / "dms"
    dms.mkdir()
    (dms / "TOY.fasta").write_text(f">toy\n{SEQ}\n")
    (dms / "TOY.csv").write_text("mutant,score\n" + "".join(f"{m},{i % 4}\n" for i, m in enumerate(MUTANTS)))
    pdb = DATA_DIR / "pdb_ss_dev_slice.jsonl.gz"
    args = argparse.Namespace(out=tmp_path / "out", ood=pdb, pdb=pdb, dms=dms, similarity_sequences=6, eval_sequences=16)
    model = make_model_dir(tmp_path / "model", "mlm")
    first = model_report.report("toy", model, args)
    assert first["test"]["sequences"] == 16 and first["ood"]["tokens"] > 0
    assert 0 <= first["probes"]["q3"] <= 1 and first["probes"]["q3_window"] > 0
    assert -1 <= first["blosum62"]["spearman"] <= 1 and set(first["variants"]) == {"TOY"}
    assert set(first["variant_baselines"]) == {"BLOSUM62", "frequency only"}
    monkeypatch.setattr(model_report, "measure", lambda *a: (_ for _ in ()).throw(AssertionError("measured again")))
    assert model_report.report("toy", model, args) == first  # cached: nothing measured
    result = {"models": [first]}
    docs = tmp_path / "results.md"
    docs.write_text(f"a\n{model_report.BEGIN}\n{model_report.END}\nb\n")
    model_report.update_docs(result, docs, tmp_path / "report.json")
    text = docs.read_text()
    assert f"| masked accuracy % / perplexity, test split | {100 * first['test']['accuracy']:.2f} /" in text
    assert f"{100 * first['probes']['contact_separation']:.2f} (sequence separation)" in text
    assert (tmp_path / "report.json").is_file() and not (tmp_path / "report.png").exists()


def test_docs_section_is_the_one_its_json_gives():
    """docs/results.md holds what the script wrote from its published JSON, or says it is not yet measured."""
    text = model_report.DOCS.read_text().split(model_report.BEGIN, 1)[1].split(model_report.END, 1)[0].strip()
    if model_report.RESULT.exists():
        assert text == model_report.section(json.loads(model_report.RESULT.read_text())).strip()
    else:
        assert text.startswith("Not yet measured")
