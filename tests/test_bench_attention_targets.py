"""benchmarks/attention_targets.py: each target judged from a results document, and the docs section
held to the JSON it was written from."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import attention_targets as targets  # noqa: E402


def _row(method, direction, n, seconds, peak=2**29, gflops=None):
    row = {"dtype": "float32", "direction": direction, "method": method, "length": n, "status": "ok",
           "fwd_bwd": {"median_s": seconds, "peak_bytes": peak, "minflt": 1000, "stime_s": 0.1, "utime_s": seconds},
           "fwd": {"median_s": seconds / 3}}
    if gflops is not None:
        row.update(gflops_fwd=gflops, gflops_fwd_bwd=gflops)
    return row


def fake_doc(causal_at_16k: float, fast_tr_factor: float) -> dict:
    rows = []
    for n in (8192, 16384, 32768):
        bi = n / 16384
        rows.append(_row("ours", "bidirectional", n, bi, gflops=60.0))
        rows.append(_row("ours", "causal", n, bi * causal_at_16k, peak=2**30, gflops=55.0))
        rows.append(_row("performer", "bidirectional", n, 3.5 * bi))
        rows.append(_row("fast-tr", "causal", n, fast_tr_factor * bi * causal_at_16k))
    rows.append({"dtype": "bf16", "direction": "causal", "method": "ours", "length": 8192, "status": "skipped"})
    config = {"lengths": [8192, 16384, 32768], "methods": ["ours", "performer", "fast-tr"], "directions": ["bidirectional", "causal"],
              "dtypes": ["float32", "bf16"], "batch": 1, "heads": 8, "head_dim": 64, "features": 256, "chunk_size": 128, "device": "cpu"}
    return {"meta": {"malloc": "default (glibc)", "started": "2026-12-01T07:00:00+0000", "device_name": "CPU (Some CPU, 2 cores)"},
            "config": config,
            "matmul": {"float32_square": {"gflops": 100.0}}, "results": rows}


def test_each_target_is_judged_from_the_rows():
    judged = {target: (text, met) for target, text, met in targets.judge(targets.compact(fake_doc(1.5, 2.5)))}
    assert judged["causal within 1.6× of bidirectional at L = 16384"] == ("1500/1000 = 1.50×", True)
    assert judged["≥ 2× fast-transformers' C++ causal kernel at L ≥ 8192"] == ("2.50× (8192), 2.50× (16384), 2.50× (32768)", True)
    assert judged["≥ 3× performer-pytorch bidirectional at L ≥ 8192"][1] is True
    assert judged["t(32768)/t(8192) ≤ 4.5 in a plain process"] == ("bidirectional 2000/500 = 4.00; causal 3000/750 = 4.00", True)
    assert judged["peak memory at L = 32768 under 2 GiB"] == ("bidirectional 512 MiB, causal 1024 MiB", True)
    assert judged["matrix products ≥ 50% of plain matmul at every L"] == ("55–60% of 100 GFLOP/s", True)
    slow = {target: met for target, _, met in targets.judge(targets.compact(fake_doc(1.7, 1.5)))}
    assert slow["causal within 1.6× of bidirectional at L = 16384"] is False
    assert slow["≥ 2× fast-transformers' C++ causal kernel at L ≥ 8192"] is False


def test_section_gives_one_verdict_per_target_from_both_runs():
    result = {"plain": [targets.compact(fake_doc(1.7, 1.5))], "retained": [targets.compact(fake_doc(1.5, 2.5))]}
    text = targets.section(result)
    assert "| causal within 1.6× of bidirectional at L = 16384 | 1700/1000 = 1.70× | 1500/1000 = 1.50× | met with retained memory |" in text
    assert text.count("| met |") == 4  # performer, scaling, memory, matmul
    assert "Full tables, plain malloc" in text and "fasttr f+b ms" in text and "f+b %mm32" in text
    assert text.startswith("Runs of 2026-12-01 on CPU (Some CPU, 2 cores); float32")


def test_docs_section_is_the_one_its_json_gives():
    result = json.loads((ROOT / "docs" / "figures" / "attention_targets_cpu.json").read_text())
    docs = (ROOT / "docs" / "benchmarks.md").read_text()
    begin, end = targets.MARKERS
    assert docs.split(begin, 1)[1].split(end, 1)[0].strip() == targets.section(result).strip()


def test_several_runs_of_a_setting_give_median_times_and_say_how_many_met():
    runs = [targets.compact(fake_doc(c, 2.5)) for c in (1.5, 1.7, 1.9)]
    slow = next(r for r in runs[2]["results"] if (r["method"], r["length"]) == ("performer", 32768))
    slow.update(status="skipped", note="over the time limit")
    slow.pop("fwd_bwd")
    combined = targets.combine(runs)
    ours = {(r["direction"], r["length"]): r for r in combined["results"] if r["method"] == "ours"}
    assert ours[("causal", 16384)]["fwd_bwd"]["median_s"] == 1.7
    assert ours[("causal", 16384)]["gflops_fwd_bwd"] == 55.0 * 1.5 / 1.7  # the same FLOPs over the median time
    assert [r["status"] for r in combined["results"] if r["method"] == "performer"] == ["ok", "ok", "skipped"]
    text = targets.section({"plain": runs, "retained": runs[:1]})
    assert "| causal within 1.6× of bidirectional at L = 16384 | 1.70× (runs 1.50–1.90) (met in 1 of 3 runs) | 1500/1000 = 1.50× |" in text
    assert "3 plain and 1 retained runs of the benchmark" in text and "Full tables, plain malloc (medians over 3 runs" in text


def test_a_ratio_over_several_runs_is_the_median_of_each_runs_own():
    """Three runs whose bidirectional times differ: the ratio of the median times would say 1.33, met; two
    of the three runs say 2.0 (the second slow in both directions), so the median is 2.0, missed."""
    fast, slow = targets.compact(fake_doc(2.0, 2.5)), targets.compact(fake_doc(2.0, 2.5))
    for r in slow["results"]:
        r["fwd_bwd"]["median_s"] *= 1.5
    odd = targets.compact(fake_doc(1.0, 2.5))  # causal as fast as bidirectional
    for r in odd["results"]:
        if r["direction"] == "bidirectional":
            r["fwd_bwd"]["median_s"] *= 1.5
    judged = {t: (text, met) for t, text, met in targets.judge_runs([fast, slow, odd])}
    text, met = judged["causal within 1.6× of bidirectional at L = 16384"]
    assert text == "2.00× (runs 0.67–2.00) (met in 1 of 3 runs)" and met is False


def _write(folder, doc):
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(doc))
    return str(folder)


def test_runs_are_filed_under_their_malloc_setting_and_must_share_a_configuration(tmp_path, capsys):
    retained = fake_doc(1.5, 2.5)
    retained["meta"]["malloc"] = "MALLOC_MMAP_MAX_=0"
    folders = [_write(tmp_path / "a", fake_doc(1.7, 1.5)), _write(tmp_path / "b", retained), _write(tmp_path / "c", fake_doc(1.9, 1.5))]
    assert targets.main(folders) == 0
    assert "(met in 0 of 2 runs)" in capsys.readouterr().out
    other = fake_doc(1.7, 1.5)
    other["config"]["chunk_size"] = 64
    assert targets.main([*folders, _write(tmp_path / "d", other)]) == 2
    assert "another configuration" in capsys.readouterr().err
    assert targets.main(folders[:1]) == 2
    assert "no retained run" in capsys.readouterr().err
