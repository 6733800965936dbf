"""Learning-rate schedules: warmup, then constant or a linear / cosine decay to ``min_lr_ratio`` × lr."""

import itertools
import json
import math

import pytest
from conftest import corpus_head

from protein_performer.cli import main
from protein_performer.training.config import TrainConfig, schedule_factor


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
def test_schedule_shapes(schedule):
    def f(step):
        return schedule_factor(step, warmup_steps=10, max_steps=110, schedule=schedule, final_ratio=0.1)

    assert [f(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])  # the warmup ramp, the same for all
    expected = {"constant": (1.0, 1.0, 1.0), "linear": (1.0, 0.55, 0.1), "cosine": (1.0, 0.55, 0.1)}[schedule]
    assert [f(s) for s in (10, 60, 110)] == pytest.approx(expected)
    if schedule == "cosine":  # a quarter of the way: 0.1 + 0.9 * (1 + cos(pi/4)) / 2
        assert f(35) == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi / 4)) / 2)
    assert f(500) == pytest.approx(expected[-1])  # past max_steps it stays at the end
    steps = [f(s) for s in range(10, 111)]
    assert all(a >= b for a, b in itertools.pairwise(steps))  # never rises after the warmup


def test_bad_schedule_settings_are_refused():
    with pytest.raises(ValueError, match="`lr_schedule` must be one of constant, linear, cosine"):
        TrainConfig(lr_schedule="step")
    with pytest.raises(ValueError, match="`min_lr_ratio` must be from 0 to 1"):
        TrainConfig(min_lr_ratio=1.5)
    assert TrainConfig.from_dict({"lr": 0.01}).lr_schedule == "constant"  # runs recorded before keep their schedule


@pytest.mark.slow
def test_training_follows_the_schedule_and_a_resume_cannot_move_its_end(tmp_path, capsys):
    fasta = corpus_head(tmp_path / "small.fasta", 200)
    run = tmp_path / "run"
    args = ["train", "--data", str(fasta), "--out", str(run), "--seq-len", "64", "--batch-size", "4", "--max-steps", "6",
            "--warmup-steps", "2", "--lr", "0.01", "--lr-schedule", "cosine", "--min-lr-ratio", "0.2", "--eval-every", "3",
            "--save-every", "3", "--precision", "fp32", "--quiet"]
    assert main(args) == 0
    tc = TrainConfig.from_dict(json.loads((run / "train_config.json").read_text()))
    logged = {row["step"]: row["train/lr"] for row in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}
    assert logged and all(lr == pytest.approx(tc.lr_at(step - 1)) for step, lr in logged.items())
    assert tc.lr_at(5) == pytest.approx(0.01 * (0.2 + 0.8 * (1 + math.cos(math.pi * 3 / 4)) / 2))
    capsys.readouterr()
    assert main([*args[:args.index("--max-steps")], "--max-steps", "9", "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "cosine learning-rate decay ends there" in err and len(err.strip().splitlines()) == 1, err
