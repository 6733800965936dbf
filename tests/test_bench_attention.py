"""The attention benchmark's bookkeeping (FLOP counts, extrapolation, crossover) and one tiny in-process run
(``benchmarks/attention_bench``, on the path through pyproject's pytest ``pythonpath``)."""

import json
import math

import pytest
from attention_bench.flops import favor_flops
from attention_bench.scaling import crossover, predict
from attention_bench.single import run_single


def test_favor_flops_bidirectional():
    n, b, h, d, m = 1024, 1, 8, 64, 256
    fwd, fb = favor_flops(n, b, h, d, m, causal=False, chunk=128)
    assert fwd == b * h * (4 * n * m * d + 4 * n * m * (d + 1))
    assert fb == b * h * (8 * n * m * d + 12 * n * m * (d + 1))


def test_favor_flops_causal_counts_chunk_products():
    n, d, m, c = 2048, 64, 256, 128
    fwd, fb = favor_flops(n, 1, 1, d, m, causal=True, chunk=c)
    attn = 2 * n * c * m + 2 * n * c * (d + 1) + 4 * n * m * (d + 1)
    assert fwd == 4 * n * m * d + attn
    assert fb == 8 * n * m * d + 3 * attn
    # shorter than one chunk: the chunk shrinks to L
    small, _ = favor_flops(64, 1, 1, d, m, causal=True, chunk=c)
    assert small == 4 * 64 * m * d + 2 * 64 * 64 * m + 2 * 64 * 64 * (d + 1) + 4 * 64 * m * (d + 1)


def test_predict_extrapolates_log_log_with_clamped_slope():
    assert predict([], 1024, 1.0) is None
    assert predict([(512, 1.0)], 1024, 1.0) == pytest.approx(2.0)
    assert predict([(512, 1.0)], 1024, 2.0) == pytest.approx(4.0)
    # measured slope 1.5 is used; a measured slope below the floor is raised to it
    assert predict([(256, 1.0), (512, 2 ** 1.5)], 1024, 1.0) == pytest.approx(2 ** 3)
    assert predict([(256, 1.0), (512, 1.1)], 1024, 1.0) == pytest.approx(2.2)


def _row(method, n, t, direction="bidirectional", dtype="float32"):
    return {"method": method, "direction": direction, "dtype": dtype, "length": n, "status": "ok", "fwd_bwd": {"median_s": t}}


def test_crossover_interpolates_log_log():
    rows = [_row("ours", 512, 2.0), _row("sdpa", 512, 1.0), _row("ours", 1024, 1.0), _row("sdpa", 1024, 2.0)]
    c = crossover(rows, "float32", "bidirectional")
    assert c["length"] == round(math.sqrt(512 * 1024))
    assert crossover(rows[:2], "float32", "bidirectional")["length"] is None
    assert "not faster" in crossover(rows[:2], "float32", "bidirectional")["note"]
    assert "already faster" in crossover(rows[2:], "float32", "bidirectional")["note"]


def test_run_single_tiny_in_process():
    spec = {"method": "ours", "direction": "causal", "dtype": "float32", "length": 64, "batch": 1, "heads": 2,
            "head_dim": 16, "features": 32, "chunk_size": 16, "device": "cpu", "repeats": 1, "slow": False,
            "slow_run_s": 10.0, "seed": 0, "threads": None}
    r = run_single(spec)
    assert r["status"] == "ok"
    for part in ("fwd", "fwd_bwd"):
        assert r[part]["median_s"] > 0 and r[part]["runs"] == 1
        assert r[part]["minflt"] >= 0
    assert r["attention_source"]


def test_profile_writes_its_numbers_and_a_section(tmp_path):
    from attention import main
    from attention_bench import profiling

    assert main(["--profile", "256", "--quick", "--heads", "2", "--head-dim", "16", "--features", "32", "--chunk-size", "32",
                 "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "profile.json").read_text())
    assert set(result["directions"]) == {"bidirectional", "causal"} and result["settings"]["length"] == 256
    for numbers in result["directions"].values():
        assert 0 < numbers["matmul_s"] < numbers["total_self_s"] and numbers["matmul_share"] == pytest.approx(
            numbers["matmul_s"] / numbers["total_self_s"])
        assert numbers["top_other_ops"] and all(not o["op"].startswith(("aten::mm", "aten::bmm")) for o in numbers["top_other_ops"])
    text = profiling.section(result)
    assert text.count("\n| bidirectional |") == 1 and text.count("\n| causal |") == 1 and "- causal: `" in text
    assert (tmp_path / "profile_causal_float32_L256.txt").is_file()


def test_the_profile_section_in_the_docs_is_its_json_or_not_yet_measured():
    from attention_bench import profiling

    begin, end = profiling.MARKERS
    body = profiling.DOCS.read_text().split(begin, 1)[1].split(end, 1)[0].strip()
    if profiling.RESULT.is_file():
        assert body == profiling.section(json.loads(profiling.RESULT.read_text())).strip()
    else:
        assert body.startswith("Not yet measured")
