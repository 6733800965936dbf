"""The one-call GPU benchmark (``benchmarks/gpu.py``) on the CPU: ``--smoke`` runs every path at tiny
sizes and leaves numbers or the expected note for every method, direction and part; a spent budget
leaves notes, never a failure."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"
METHODS = ("sdpa", "ours", "ours-compiled", "ours-fla", "ours-bf16")
DIRECTIONS = ("bidirectional", "causal")
SMOKE_COMPILE_NOTE = "skipped: --smoke compiles one case only"


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # fla stays off on the CPU
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300, env=env)


def _expected_note(method: str, direction: str, note: str | None) -> bool:
    """A note that --smoke on a CPU gives on purpose."""
    if note is None:
        return False
    if method == "ours-fla":
        return note.startswith("fla not")
    return method == "ours-compiled" and note == SMOKE_COMPILE_NOTE


@pytest.mark.slow
def test_smoke_measures_every_method_direction_and_part(tmp_path):
    result = _run("--smoke", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["config"]["smoke"] and doc["meta"]["device_name"]
    for method in METHODS:
        for direction in DIRECTIONS:
            if method == "ours-fla" and direction == "bidirectional":
                continue
            timings = [i for i in doc["attention"] if i["method"] == method and i["direction"] == direction]
            assert timings, (method, direction)
            assert all((i["note"] is None and i["ms"] > 0) or _expected_note(method, direction, i["note"]) for i in timings), timings
            errors = [i for i in doc["error"] if i["method"] == method and i["direction"] == direction]
            assert len(errors) == 1, (method, direction)
            e, tolerance = errors[0], 0.05 if method == "ours-bf16" else 1e-4  # float32 inputs: bf16 only where asked for
            assert _expected_note(method, direction, e["note"]) or (e["note"] is None and 0 <= e["rel_err_fp64"] < tolerance
                                                                     and 0 < e["rel_err_exact"] < 1), e
    compiled = [i for i in doc["attention"] if i["method"] == "ours-compiled" and i["note"] is None]
    assert compiled and compiled[0]["compile_s"] > 0
    bf16 = [i for i in doc["error"] if i["method"] == "ours-bf16"]
    assert all(i["rel_err_fp64"] > 1e-5 for i in bf16)  # the bf16 feature products do round
    assert len(doc["train"]) == 2 * 2 * 2
    assert all(i["note"] is None and math.isfinite(i["tokens_per_s"]) and i["tokens_per_s"] > 0 for i in doc["train"])
    assert sorted({i["attention"] for i in doc["rivals"]}) == ["favor", "linear", "linformer", "local", "reformer", "softmax"]
    assert len(doc["rivals"]) == 6 * 2 and all(i["note"] is None and i["tokens_per_s"] > 0 for i in doc["rivals"])
    table = (tmp_path / "table.md").read_text()
    for heading in ("## Attention forward+backward, bidirectional", "## Attention forward+backward, causal", "## Output error", "## Training",
                    "## Every attention kind"):
        assert heading in table
    assert (tmp_path / "gpu.png").stat().st_size > 10_000


def test_spent_budget_skips_every_item_with_a_note(tmp_path):
    result = _run("--smoke", "--parts", "attention,train", "--budget-s", "0", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    doc = json.loads((tmp_path / "results.json").read_text())
    items = doc["attention"] + doc["train"]
    assert items and all(i["note"] == "skipped: budget" for i in items)
    assert doc["error"] == []
    assert "skip" in (tmp_path / "table.md").read_text()
    assert _run("--report", "--out", str(tmp_path)).returncode == 0
