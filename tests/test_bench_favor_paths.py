"""benchmarks/favor_paths.py at a toy size: one configuration measured in this process, the section written
from its results, and the committed docs section held to the committed results."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import favor_paths  # noqa: E402


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak memory is read from /proc (Linux)")
@pytest.mark.parametrize("recompute", [False, True])
def test_one_configuration_is_timed_and_says_which_path_the_default_takes(recompute):
    got = favor_paths.run_single({"length": 256, "causal": True, "recompute": recompute, "repeats": 3})
    assert got["seconds"] > 0 and got["peak_mib"] >= 0
    assert got["default_recomputes"] is False  # 256 positions: 2 MiB of features, kept


def _row(length, direction, malloc, kept, blocks, default):
    entry = lambda s: {"seconds": s, "peak_mib": 100 * s, "default_recomputes": default == "blocks"}  # noqa: E731
    return {"length": length, "direction": direction, "malloc": malloc, "kept": entry(kept), "blocks": entry(blocks), "default": default}


def test_section_counts_where_the_default_is_the_faster_path(tmp_path):
    result = {"started": "2026-12-01T00:00:00+00:00", "machine": "x", "cpus": 2, "torch": "2.13.0", "threads": 2, "repeats": 5,
              "retained_env": "MALLOC_MMAP_MAX_=0", "rows": [_row(16384, "causal", "plain", 0.9, 0.7, "blocks"),
                                                             _row(16384, "causal", "retained", 0.6, 0.7, "kept"),
                                                             _row(4096, "causal", "plain", 0.15, 0.16, "blocks")]}
    text = favor_paths.section(result)
    assert "| 16384 | causal | plain | 900 | 700 | 0.78 | 90 | 70 | blocks |" in text
    assert "faster path in 2 of 3 configurations (not in 4096 causal plain (blocks))." in text
    assert "Blocks/kept time: plain causal 0.78–1.07; retained causal 1.17." in text
    assert "Peak at L = 16,384: kept 60–90 MiB, blocks 70 MiB." in text
    docs = tmp_path / "benchmarks.md"
    docs.write_text(f"before\n{favor_paths.BEGIN}\nold\n{favor_paths.END}\nafter\n")
    favor_paths.update_docs(result, docs, tmp_path / "favor_paths.json")
    assert docs.read_text() == f"before\n{favor_paths.BEGIN}\n{text}\n{favor_paths.END}\nafter\n"
    assert json.loads((tmp_path / "favor_paths.json").read_text()) == result


def test_the_docs_section_is_the_one_written_from_the_committed_results():
    result = json.loads(favor_paths.RESULT.read_text())
    assert f"{favor_paths.BEGIN}\n{favor_paths.section(result)}\n{favor_paths.END}" in favor_paths.DOCS.read_text()
