"""The equal-wall-clock benchmarks end to end at toy sizes: context_at_equal_cost.py (a plan from
timed steps, three arms trained for it, evaluated on the same windows) and model_sweep.py (candidates
at equal time, the winner's long-run command), each with its docs section written from its results."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import context_at_equal_cost as bench  # noqa: E402
import equal_time  # noqa: E402
import model_sweep  # noqa: E402


def test_arms_see_the_same_tokens_per_step():
    arms = bench.arms(8192, 1024)
    assert {key: arm[1] * arm[2] for key, arm in arms.items()} == {"favor-long": 8192, "exact-long": 8192, "favor-short": 8192}
    with pytest.raises(SystemExit, match="multiple"):
        bench.arms(1000, 300)


def test_every_arm_is_evaluated_at_the_long_windows_halved_down_to_the_short():
    assert bench.eval_lengths(8192, 1024) == [8192, 4096, 2048, 1024]
    assert bench.eval_lengths(64, 32) == [64, 32]


def test_verdict_claims_a_lead_only_beyond_twice_the_standard_error():
    def row(name, accuracy, tokens=10_000):
        return {"name": name, "evaluation": {"8": {"accuracy": accuracy, "baseline_accuracy": 0.095, "tokens": tokens}}}

    se = bench.standard_error(row("a", 0.1)["evaluation"]["8"])
    assert se == pytest.approx((0.1 * 0.9 / 10_000) ** 0.5)
    close = bench.verdict([row("a", 0.100), row("b", 0.101)], "8")
    assert close.startswith("Windows of 8: best b, +0.10 points over a (is within 2 SE")
    far = bench.verdict([row("a", 0.100), row("b", 0.130)], "8")
    assert "+3.00 points over a (exceeds 2 SE" in far and "over the empirical baseline (exceeds" in far
    assert "over the empirical baseline (is within" in bench.verdict([row("a", 0.096), row("b", 0.090)], "8")


@pytest.mark.slow
def test_equal_cost_runs_end_to_end_and_resumes(tmp_path):
    command = [sys.executable, str(ROOT / "benchmarks" / "context_at_equal_cost.py"), "--preset", "tiny", "--minutes", "0.02",
               "--long", "64", "--short", "32", "--eval-windows", "2", "--out", str(tmp_path / "out")]
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=600)
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    plan = json.loads((tmp_path / "out" / "plan.json").read_text())
    assert [r["arm"] for r in result["rows"]] == ["favor-long", "exact-long", "favor-short"]
    for row in result["rows"]:
        assert row["steps"] == plan["arms"][row["arm"]]["steps"] >= 1
        assert set(row["evaluation"]) == {"64", "32"} and row["curve"][-1]["step"] == row["steps"]
        assert row["tokens"] > 0 and row["train_seconds"] > 0
    before = (tmp_path / "out" / "favor-long" / "model.safetensors").read_bytes()
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=600)  # finished: nothing retrained
    assert (tmp_path / "out" / "favor-long" / "model.safetensors").read_bytes() == before
    docs = tmp_path / "results.md"
    docs.write_text(f"{bench.BEGIN}\n{bench.END}\n")
    bench.update_docs(result, docs, tmp_path / "fig.png")
    assert "| Performer (FAVOR+), windows of 64 |" in docs.read_text() and (tmp_path / "fig.png").stat().st_size > 5_000


@pytest.mark.slow
def test_sweep_recommends_the_lowest_validation_perplexity(tmp_path):
    command = [sys.executable, str(ROOT / "benchmarks" / "model_sweep.py"), "--minutes", "0.02", "--hours", "0.5",
               "--candidates", "tiny:32:4", "tiny:64:2", "--out", str(tmp_path / "out")]
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=600)
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    rows = {r["key"]: r for r in result["rows"]}
    assert set(rows) == {"tiny-L32-B4", "tiny-L64-B2"}
    best = min(rows.values(), key=lambda r: r["final"]["perplexity"])
    recommendation = result["recommendation"]
    assert recommendation["key"] == best["key"]
    assert recommendation["steps"] == int(1800 / result["plan"][best["key"]]["seconds_per_step"])
    assert f"--seq-len {best['seq_len']} --batch-size {best['batch_size']} --micro-batch-size {best['batch_size']} --max-steps {recommendation['steps']}" in recommendation["command"]
    assert f"--keep-every {model_sweep.keep_every(recommendation['steps'])} " in recommendation["command"]
    assert recommendation["command"].endswith("--out runs/best --resume")  # a session boundary costs nothing
    for row in rows.values():
        assert row["curve"][-1]["step"] == row["steps"] and row["parameters"] > 100_000
    docs = tmp_path / "results.md"
    docs.write_text(f"{model_sweep.BEGIN}\n{model_sweep.END}\n")
    model_sweep.update_docs(result, docs, tmp_path / "fig.png")
    assert recommendation["command"] in docs.read_text() and (tmp_path / "fig.png").stat().st_size > 5_000


@pytest.mark.parametrize("bench", [model_sweep, bench], ids=["model_sweep", "context_at_equal_cost"])
def test_docs_section_is_the_one_its_json_gives(bench):
    """docs/results.md holds what the script wrote from its published JSON, or says it is not yet measured."""
    text = bench.DOCS.read_text().split(bench.BEGIN, 1)[1].split(bench.END, 1)[0].strip()
    published = bench.FIGURE.with_suffix(".json")
    if published.exists():
        assert text == bench.section(json.loads(published.read_text())).strip()
    else:
        assert text.startswith("Not yet measured")


def test_a_plan_is_kept_and_only_the_arms_it_lacks_are_timed(tmp_path, monkeypatch):
    timed = []

    def fake_seconds(model_config, train_config, corpus):
        timed.append(model_config)
        return {"a": 2.0, "b": 3.0}[model_config]

    monkeypatch.setattr(equal_time, "seconds_per_step", fake_seconds)
    path, arms = tmp_path / "plan.json", {"a": ("a", None), "b": ("b", None)}
    assert equal_time.plan(path, arms, None, 1.0, {"seed": 0}) == {"a": {"seconds_per_step": 2.0, "steps": 30},
                                                                    "b": {"seconds_per_step": 3.0, "steps": 20}}
    assert timed == ["a", "b"]
    equal_time.plan(path, arms, None, 1.0, {"seed": 0})
    assert timed == ["a", "b"]  # reused
    saved = json.loads(path.read_text())
    del saved["arms"]["b"]  # a disturbed timing, removed by hand
    path.write_text(json.dumps(saved))
    assert equal_time.plan(path, arms, None, 1.0, {"seed": 0})["b"]["steps"] == 20
    assert timed == ["a", "b", "b"]
    assert equal_time.plan(path, {"a": ("a", None)}, None, 1.0, {"seed": 0}) == {"a": {"seconds_per_step": 2.0, "steps": 30}}
    assert set(json.loads(path.read_text())["arms"]) == {"a", "b"}  # a plan for fewer arms keeps the others
    equal_time.plan(path, arms, None, 1.0, {"seed": 1})
    assert timed == ["a", "b", "b", "a", "b"]  # another identity: everything timed again


def test_a_long_run_keeps_ten_to_a_hundred_models_along_it():
    assert [model_sweep.keep_every(steps) for steps in (5, 100, 999, 27_907, 100_000)] == [1, 10, 10, 1000, 10_000]
