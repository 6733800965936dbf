"""Training end to end on a small FASTA: exact resume (also after kill -9), redraws, evaluation, CLI."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import corpus_head
from safetensors.torch import load_file

from protein_performer.rundir import RunDir, load_model

TINY = ["--preset", "tiny", "--seq-len", "64", "--batch-size", "4", "--micro-batch-size", "2",
        "--redraw-interval", "2", "--num-features", "16", "--eval-every", "3", "--quiet"]

pytestmark = pytest.mark.slow  # end to end: subprocesses (make test-fast skips them)


@pytest.fixture(scope="module")
def fasta(tmp_path_factory) -> Path:
    return corpus_head(tmp_path_factory.mktemp("data") / "small.fasta", 400)


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "protein_performer", *args], capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(result.stderr)
    return result


def _latest(run: Path) -> Path | None:
    checkpoint = RunDir(run).latest_checkpoint()
    return None if checkpoint is None else checkpoint.path


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


@pytest.mark.parametrize("objective", ["mlm", "causal"])
def test_resume_ends_with_the_uninterrupted_weights(fasta, tmp_path, objective):
    common = [*TINY, "--data", str(fasta), "--objective", objective, "--save-every", "3"]
    cli("train", *common, "--out", str(tmp_path / "full"), "--max-steps", "7")
    cli("train", *common, "--out", str(tmp_path / "split"), "--max-steps", "3")
    assert _latest(tmp_path / "split").name == "step-0000003"
    at_step_3 = load_model(tmp_path / "split").favor_layers()[0].projection
    cli("train", *common, "--out", str(tmp_path / "split"), "--max-steps", "7", "--resume")
    assert_same_weights(tmp_path / "full", tmp_path / "split")
    # Projections were redrawn (every 2 steps) and are part of the weights.
    assert not torch.equal(load_model(tmp_path / "full").favor_layers()[0].projection, at_step_3)
    metrics = [json.loads(x) for x in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    steps = [m["step"] for m in metrics]
    assert steps == sorted(set(steps)) and steps[-1] == 7
    assert (tmp_path / "split" / "training_curves.png").stat().st_size > 1000


def test_kill_9_then_resume_matches(fasta, tmp_path):
    common = [*TINY, "--data", str(fasta), "--save-every", "1", "--max-steps", "12"]
    cli("train", *common, "--out", str(tmp_path / "full"))
    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "protein_performer", "train", *common, "--out", str(run)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while _latest(run) is None or _latest(run).name < "step-0000004":
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # most likely in the middle of a step or a checkpoint write
    proc.wait()
    assert _latest(run).name < "step-0000012"
    cli("train", *common, "--out", str(run), "--resume")
    assert_same_weights(tmp_path / "full", run)


def test_evaluate_reports_model_and_baseline(fasta, tmp_path):
    run = tmp_path / "run"
    cli("train", *TINY, "--data", str(fasta), "--out", str(run), "--max-steps", "3")
    result = json.loads(cli("evaluate", "--checkpoint", str(run), "--data", str(fasta), "--max-sequences", "40", "--json").stdout)
    assert {"accuracy", "perplexity", "baseline_accuracy", "baseline_perplexity", "tokens"} <= result.keys()
    assert 0.0 <= result["accuracy"] <= 1 and result["tokens"] > 100
    # The baseline predicts from amino-acid frequencies: ~8-10% accuracy, perplexity ~17-18 on proteins.
    assert 0.05 < result["baseline_accuracy"] < 0.15 and 14 < result["baseline_perplexity"] < 21
    again = json.loads(cli("evaluate", "--checkpoint", str(run), "--data", str(fasta), "--max-sequences", "40", "--json").stdout)
    assert again == result  # deterministic


def test_cli_errors_are_one_line(fasta, tmp_path):
    bad = tmp_path / "bad.fasta"
    bad.write_text(">a\nMKV\n>b\nMK1V\n")
    result = cli("train", "--data", str(bad), "--out", str(tmp_path / "r"), "--max-steps", "1", check=False)
    assert result.returncode == 2 and "line 4" in result.stderr and "Traceback" not in result.stderr
    result = cli("evaluate", "--checkpoint", str(tmp_path / "missing"), check=False)
    assert result.returncode == 2 and "not found" in result.stderr and "Traceback" not in result.stderr
    run = tmp_path / "run"
    cli("train", *TINY, "--data", str(fasta), "--out", str(run), "--max-steps", "1")
    (run / "model.safetensors").write_bytes(b"garbage")
    result = cli("evaluate", "--checkpoint", str(run), check=False)
    assert result.returncode == 2 and "corrupt" in result.stderr and "Traceback" not in result.stderr
    result = cli("train", *TINY, "--data", str(fasta), "--out", str(run), "--max-steps", "1", check=False)
    assert result.returncode == 2 and "--resume" in result.stderr
