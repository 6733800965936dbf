"""The evaluation loop's progress bar: on stderr when asked, and nothing computed changes."""

import torch

from protein_performer.model import PerformerConfig, PerformerLM
from protein_performer.rundir import RunDir, save_model
from protein_performer.training import TrainConfig, evaluate


def test_evaluate_progress_is_on_stderr_and_changes_no_number(tmp_path, capsys):
    torch.manual_seed(0)
    config = PerformerConfig(d_model=16, num_layers=1, num_heads=2, d_ff=32, num_features=8, dropout=0.0)
    save_model(PerformerLM(config), config, tmp_path / "model")
    run = RunDir(tmp_path / "model")
    run.write_train_config(TrainConfig(seq_len=32, precision="fp32").to_dict())
    run.write_frequencies([1.0 / config.vocab_size] * config.vocab_size)
    fasta = tmp_path / "p.fasta"
    fasta.write_text("".join(f">p{i}\n{'MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ'[i:]}\n" for i in range(12)))
    quiet = evaluate(run.path, fasta, batch_size=5)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""
    shown = evaluate(run.path, fasta, batch_size=5, progress=True)
    captured = capsys.readouterr()
    assert shown == quiet  # bit for bit
    assert "evaluate" in captured.err and "/12 " in captured.err and captured.out == ""
