"""What the commands print and how they run: the train announcement and its percentages, progress
bars only for a terminal, ``--threads``."""

import argparse
from pathlib import Path

import pytest
import torch
from conftest import corpus_head

from protein_performer.cli import main
from protein_performer.cli.common import attention_name, show_progress
from protein_performer.model import PerformerConfig, PerformerLM
from protein_performer.rundir import save_model

TRAIN = ["--max-steps", "1", "--seq-len", "32", "--batch-size", "2", "--micro-batch-size", "2", "--eval-every", "1",
         "--save-every", "1", "--num-features", "8", "--eval-sequences", "2", "--precision", "fp32"]


@pytest.fixture(scope="module")
def fasta(tmp_path_factory) -> Path:
    return corpus_head(tmp_path_factory.mktemp("data") / "small.fasta", 300)  # a few land in the validation split


@pytest.mark.parametrize("attention,announced", [("favor", "FAVOR attention (softmax kernel, M = 8)"),
                                                 ("softmax", "exact softmax attention")])
def test_train_announces_its_attention_and_prints_percentages(tmp_path, capsys, fasta, attention, announced):
    assert main(["train", "--data", str(fasta), "--out", str(tmp_path / "run"), "--attention", attention, *TRAIN]) == 0
    captured = capsys.readouterr()
    assert f"with {announced}," in captured.err and "softmax/softmax" not in captured.err
    assert captured.out.startswith("validation: accuracy ") and "%, perplexity" in captured.out, captured.out
    assert "it/s" not in captured.err and "step/s" not in captured.err  # no bar: stderr is not a terminal


def test_attention_name():
    from protein_performer.model import preset

    assert attention_name(preset("tiny", attention="softmax").to_dict()) == "exact softmax attention"
    assert attention_name(preset("tiny", kernel="relu").to_dict()) == "FAVOR attention (relu kernel, M = 64)"
    assert attention_name(preset("tiny", attention="local", window=32).to_dict()) == "local attention (exact softmax within 32 positions)"


def test_progress_only_for_a_terminal_and_never_when_quiet(monkeypatch):
    import sys

    assert not show_progress(argparse.Namespace(quiet=False))  # under pytest stderr is not a terminal
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert show_progress(argparse.Namespace(quiet=False)) and show_progress(argparse.Namespace())
    assert not show_progress(argparse.Namespace(quiet=True))


def test_threads_sets_torchs_thread_count_before_the_work(tmp_path, capsys):
    torch.manual_seed(0)
    config = PerformerConfig(d_model=16, num_layers=1, num_heads=2, d_ff=32, num_features=8, dropout=0.0)
    save_model(PerformerLM(config), config, tmp_path / "model")
    before = torch.get_num_threads()
    try:
        assert main(["fill-mask", "--checkpoint", str(tmp_path / "model"), "--sequence", "MKT<mask>LL", "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1 and "position 4:" in capsys.readouterr().out
    finally:
        torch.set_num_threads(before)
