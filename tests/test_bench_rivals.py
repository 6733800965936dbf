"""benchmarks/rivals.py: the speed table and the facts it states, the learning curves it draws from the
Table 2 ledger, and one (attention, length) of its sweep run in process."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import lm_table  # noqa: E402
import rivals  # noqa: E402
from test_bench_lm_table import fake_runs  # noqa: E402


def fake_result() -> dict:
    sweep = []
    for attention, rate in (("favor", 1000.0), ("softmax", 2000.0), ("local", 1500.0), ("linear", 1200.0), ("reformer", 300.0),
                            ("linformer", 1800.0)):
        for length in (1024, 2048):
            slower = 4 if attention == "softmax" and length == 2048 else 1
            sweep.append({"attention": attention, "length": length, "step_s": length / rate * slower,
                          "tokens_per_s": rate / slower, "tokens_per_s_range": [0.9 * rate / slower, 1.1 * rate / slower],
                          "peak_mib": length / 10, "parameters": 1000})
    sweep[3] = {"attention": "softmax", "length": 2048, "skipped": "predicted step time over 60 s"}
    runs = fake_runs({"mlm-local": 0.01})
    for r in runs:
        r["curve"] = [[50, 3.0 - r["seed"] * 0.1], [100, 2.8]]
        r["valid"] = [[20, 2.9, 0.09 + 0.001 * r["seed"]], [50, 2.85, 0.095], [100, 2.8, r["test"]["accuracy"]]]
        if r["arm"] == "mlm-reformer":
            r["train_seconds"] = 250.0  # 2.5 s per step: within FAVOR+'s 101 s it reaches step 20 only
    ledger = {"preset": "tiny", "steps": 100, "batch_size": 2, "seq_len": 8, "runs": runs, "rows": lm_table.summarize(runs)}
    return ledger, sweep


def test_section_states_the_measured_facts(tmp_path):
    ledger, sweep = fake_result()
    (tmp_path / "ledger.json").write_text(json.dumps(ledger))
    result = rivals.build({"preset": "tiny", "steps": 3, "repeats": 3, "lengths": "1024,2048"}, sweep, tmp_path / "ledger.json")
    text = rivals.section(result)
    assert "| Transformer (exact) | 2,000 tok/s, 102 MiB | – |" in text
    assert "Not run: Transformer (exact) at L = 2048 (predicted step time over 60 s)." in text
    assert ("- L = 1024: Transformer (exact) fastest (2,000 tokens/s, within the range of another method); FAVOR at 0.50× of it; "
            "FAVOR 0.5× exact attention") in text
    assert "- L = 2048: Linformer (k = 64) fastest (1,800 tokens/s, within the range of another method); FAVOR at 0.56× of it" in text
    assert "- local (window ±64): 11.10% (+1.00 points, every seed above every FAVOR+ seed)" in text
    assert "- Reformer (LSH): 10.10% (+0.00 points, within the spread)" in text
    assert ("Accuracy at equal training time (validation accuracy, mean over seeds, at the last validation each seed reached "
            "within FAVOR+'s 101 s; FAVOR+ 10.10% at step 100):") in text
    assert "- Reformer (LSH): 9.10% at step 20 (-1.00 points, every seed below every FAVOR+ seed)" in text
    # seed 2 of every arm takes 102 s: over the budget, it counts at its validation of step 50
    assert "- local (window ±64): 10.53% at steps 50–100 (+0.43 points, within the spread)" in text
    assert "- Transformer (exact): 9.87% at steps 50–100 (-0.23 points, within the spread)" in text
    assert "Not yet in Table 2" not in text
    assert "Parameters (tiny preset; Linformer's grow with its length, here at L = 1024): Performer (FAVOR+) 1,000," in text
    curves = result["curves"]["favor"]
    assert curves["steps"] == [50, 100] and curves["loss"] == pytest.approx([2.9, 2.8]) and curves["seeds"] == 3
    assert curves["seconds_per_step"] == pytest.approx(1.01)
    docs = tmp_path / "results.md"
    docs.write_text(f"a\n{rivals.BEGIN}\n{rivals.END}\nb\n")
    rivals.update_docs(result, docs, tmp_path / "speed.png", tmp_path / "curves.png")
    assert docs.read_text() == f"a\n{rivals.BEGIN}\n{text}\n{rivals.END}\nb\n"
    assert (tmp_path / "speed.png").stat().st_size > 5_000 and (tmp_path / "curves.png").stat().st_size > 5_000


def test_a_point_is_skipped_when_predicted_too_slow_or_too_large():
    class Limits:
        time_limit_s, memory_limit_gb = 10.0, 1.0

    previous = {"length": 1024, "step_s": 3.0, "peak_mib": 100.0}
    assert rivals.predict_skip(None, 1024, "softmax", Limits) is None
    assert rivals.predict_skip(previous, 2048, "favor", Limits) is None  # 6 s
    assert rivals.predict_skip(previous, 2048, "softmax", Limits) == "predicted step time over 10.0 s"  # 12 s
    assert rivals.predict_skip({**previous, "peak_mib": 600.0}, 2048, "favor", Limits) == "predicted memory over 1.0 GB"


def test_linformer_is_swept_at_its_own_length():
    assert rivals.overrides("linformer", 4096) == {"positions": "learned", "max_len": 4096}
    assert rivals.overrides("local", 4096) == {}


@pytest.mark.parametrize("attention", ["linformer", "reformer"])
def test_one_point_of_the_sweep(attention):
    row = rivals.single("tiny", attention, 128, 1, overrides=rivals.overrides(attention, 128))
    # (peak memory means something only in a fresh process, as the sweep runs it; here it is just recorded)
    assert row["attention"] == attention and row["length"] == 128 and row["tokens_per_s"] > 0 and "peak_mib" in row


def test_the_docs_section_is_the_one_written_from_the_committed_results():
    path = rivals.SPEED.with_suffix(".json")
    if not path.exists():
        pytest.skip("the sweep is not published yet")
    result = json.loads(path.read_text())
    assert f"{rivals.BEGIN}\n{rivals.section(result)}\n{rivals.END}" in rivals.DOCS.read_text()
    # and the section reads Table 2 as it stands
    assert result["table"]["rows"] == json.loads(lm_table.LEDGER.read_text())["rows"]


def test_the_sweep_stops_a_method_at_its_first_failure_or_predicted_overrun(monkeypatch):
    import types

    calls = []

    def point(script, passed, method, length):
        calls.append((method, length))
        if method == "reformer" and length == 2048:
            return {"skipped": "failed: out of memory"}
        step = (length / 1024) ** 2 * 40 if method == "softmax" else 1.0
        return {"tokens_per_s": 1000.0 + len(calls), "peak_mib": 10.0, "step_s": step, "parameters": 5}

    monkeypatch.setattr(rivals, "run_point", point)
    args = types.SimpleNamespace(preset="tiny", steps=1, lengths="1024,2048,4096", repeats=2, time_limit_s=60, memory_limit_gb=16)
    rows = rivals.measure(args)
    assert [(r["attention"], r["length"], r["skipped"]) for r in rows if "skipped" in r] == [
        ("softmax", 2048, "predicted step time over 60 s"), ("reformer", 2048, "failed: out of memory")]
    assert len(calls) == 6 * 2 + 5 * 2 - 1 + 4 * 2  # reformer's failing point is not repeated
    assert all(r["repeats"] == 2 and r["tokens_per_s_range"][0] < r["tokens_per_s_range"][1] for r in rows if "skipped" not in r)
