"""benchmarks/corpus_scale.py at a toy size: the synthetic FASTA it prepares, the memory probe of a
training process, and its docs section written from the results."""

import argparse
import sys
from pathlib import Path

import pytest

from protein_performer.data import EncodedCorpus

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import corpus_scale  # noqa: E402


def test_synthetic_fasta_is_valid_and_sized(tmp_path):
    made = corpus_scale.generate(tmp_path / "s.fasta", proteins=1234, seed=3)
    corpus = EncodedCorpus.from_fasta(tmp_path / "s.fasta")
    assert len(corpus) == made["proteins"] == 1234 and corpus.num_residues == made["residues"]
    assert made["bytes"] == (tmp_path / "s.fasta").stat().st_size


@pytest.mark.slow
def test_measure_and_section(tmp_path):
    args = argparse.Namespace(out=tmp_path / "out", gigabytes=0.003, base_proteins=300, uniref_proteins=6e7, uniref_residues=1.7e10,
                              workers=[1, 2])
    result = corpus_scale.measure(args)
    assert [p["workers"] for p in result["prepare"]] == [1, 2] and result["prepare"][0]["residues_per_s"] > 1e5
    assert not (tmp_path / "out" / "synthetic.fasta").exists()
    rows = {(m["scale"], m["source"]): m for m in result["memory"]}
    assert set(rows) == {(1, "FASTA"), (1, "corpus directory"), (10, "FASTA"), (10, "corpus directory")}
    assert all(m["anon_mib"] > 50 and m["seconds_to_first_step"] > 0 for m in rows.values())
    best = max(p["residues_per_s"] for p in result["prepare"])
    assert result["uniref50"]["prepare_hours"] == pytest.approx(1.7e10 / best / 3600)
    docs = tmp_path / "results.md"
    docs.write_text(f"{corpus_scale.BEGIN}\n{corpus_scale.END}\n")
    corpus_scale.update_docs(result, docs, tmp_path / "corpus_scale.json")
    assert "| 10× | 3,000 | corpus directory |" in docs.read_text()


def test_the_docs_section_is_the_one_written_from_the_committed_results():
    import json

    result = json.loads(corpus_scale.RESULT.read_text())
    docs = corpus_scale.DOCS.read_text()
    assert f"{corpus_scale.BEGIN}\n{corpus_scale.section(result)}\n{corpus_scale.END}" in docs
