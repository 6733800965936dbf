"""Evaluation: the masked metric (every selected position shown as `<mask>`), used by validation too; the progress bar changes no number."""

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


class CopyInput(torch.nn.Module):
    """Predicts each position's own input token: perfect wherever the answer is shown."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # a device to be on

    def forward(self, tokens, padding_mask):
        return {"logits": torch.nn.functional.one_hot(tokens, self.vocab_size).float() + self.anchor}


def _masked_dataset(tmp_path, count=40):
    from conftest import corpus_head

    from protein_performer.data import EncodedCorpus
    from protein_performer.training.objective import make_dataset

    corpus = EncodedCorpus.from_fasta(corpus_head(tmp_path / "p.fasta", count))
    return make_dataset(corpus, TrainConfig(seq_len=128), train=False)


def test_masked_evaluation_scores_only_predictions_made_without_the_answer(tmp_path):
    from protein_performer.training.evaluation import evaluate_dataset
    from protein_performer.training.objective import make_collator

    config = PerformerConfig()
    dataset, copy = _masked_dataset(tmp_path), CopyInput(PerformerConfig().vocab_size)
    training, evaluation = make_collator(config), make_collator(config, evaluation=True)
    # The same positions are selected; for evaluation every one of them reads <mask>.
    for i in range(8):
        a = training([dataset[i]], [dataset.generator_for(i)])
        b = evaluation([dataset[i]], [dataset.generator_for(i)])
        chosen = b["labels"] != -100
        assert torch.equal(a["labels"], b["labels"]) and chosen.sum() > 0
        assert (b["tokens"][chosen] == config.mask_idx).all()
        assert torch.equal(a["tokens"][~chosen], b["tokens"][~chosen])
    # Copying the input scores ~10% under BERT's corruption (the unchanged tenth) and nothing here.
    corrupted = evaluate_dataset(copy, dataset, training, batch_size=8, precision="fp32")
    honest = evaluate_dataset(copy, dataset, evaluation, batch_size=8, precision="fp32")
    assert corrupted["tokens"] == honest["tokens"] > 500
    assert 0.07 < corrupted["accuracy"] < 0.14
    assert honest["accuracy"] == 0.0


def test_training_validation_uses_the_evaluation_metric(tmp_path):
    from conftest import corpus_head

    from protein_performer.data import EncodedCorpus
    from protein_performer.training import Trainer

    corpus = EncodedCorpus.from_fasta(corpus_head(tmp_path / "p.fasta", 1500))
    config = PerformerConfig(d_model=16, num_layers=1, num_heads=2, d_ff=32, num_features=8)
    trainer = Trainer(tmp_path / "run", config, TrainConfig(seq_len=64, batch_size=4, precision="fp32", eval_sequences=32),
                      corpus=corpus)
    assert len(trainer.valid_data) > 0
    trainer.model = CopyInput(config.vocab_size)
    result = trainer.validate()
    assert result["tokens"] > 100 and result["accuracy"] == 0.0
