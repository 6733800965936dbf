"""Converting Hugging Face checkpoints as they are published: ESM-2's fp16-rounded rotary frequencies
(under transformers 4.x and 5.x key names), the unused position table 4.x saved, classifier and bare
encoder folders without the masked-LM head, and RoBERTa masked LMs.

Sources are tiny random models built here with ``transformers`` (nothing is downloaded), checked
against the same Hugging Face model in memory."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_convert import SEQUENCE, randomize, run_cli, save_esm

import protein_performer
from protein_performer.convert import convert_model
from protein_performer.convert.esm import ESM2_VOCABULARY
from protein_performer.model import NoLanguageModelHead
from protein_performer.rundir import ROTARY_FREQUENCIES, read_safetensors

transformers = pytest.importorskip("transformers")
RESIDUES = "ACDEFGHIKLMNPQRSTVWY"


def fp16_frequencies(model) -> torch.Tensor:
    """Set the model's rotary frequencies to their fp16 rounding, as ESM-2's published weights hold them."""
    inv_freq = model.esm.rotary_embeddings.inv_freq
    rounded = inv_freq.half().float()
    assert not torch.equal(rounded, inv_freq)
    with torch.no_grad():
        inv_freq.copy_(rounded)
    return rounded


def protein(length: int, seed: int) -> str:
    g = torch.Generator().manual_seed(seed)
    return "".join(RESIDUES[i] for i in torch.randint(0, 20, (length,), generator=g).tolist())


def hf_hidden(model, sequence: str) -> torch.Tensor:
    index = {t: i for i, t in enumerate(ESM2_VOCABULARY)}
    ids = torch.tensor([[index["<cls>"], *(index[c] for c in sequence), index["<eos>"]]])
    with torch.no_grad():
        return model.esm(ids).last_hidden_state[0, 1:-1] if hasattr(model, "esm") else model(ids).last_hidden_state[0, 1:-1]


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def save_4x_layout(model, directory: Path, *, position_table: bool) -> None:
    """Rewrite the weights as transformers 4.x saved ESM-2: inv_freq in every layer, and (``position_table``)
    the learned position table it kept even for rotary models."""
    tensors = load_file(str(directory / "model.safetensors"))
    inv_freq = next(tensors.pop(k) for k in list(tensors) if k.endswith("inv_freq"))
    for i in range(model.config.num_hidden_layers):
        tensors[f"esm.encoder.layer.{i}.attention.self.rotary_embeddings.inv_freq"] = inv_freq.clone()
    if position_table:
        tensors["esm.embeddings.position_embeddings.weight"] = torch.randn(model.config.max_position_embeddings, model.config.hidden_size)
    save_file(tensors, str(directory / "model.safetensors"))


@pytest.mark.parametrize("layout", ["5.x", "4.x"])
def test_esm_stored_rotary_frequencies_make_the_conversion_exact_at_length(tmp_path, layout):
    source = save_esm(tmp_path / "esm", std=0.15)
    rounded = fp16_frequencies(source)
    source.save_pretrained(tmp_path / "esm")
    if layout == "4.x":
        save_4x_layout(source, tmp_path / "esm", position_table=True)
    report = convert_model(tmp_path / "esm", tmp_path / "out", attention="softmax")
    assert any("position_embeddings.weight" in n and "never reads" in n for n in report.notes) == (layout == "4.x")
    assert torch.equal(read_safetensors(tmp_path / "out" / "model.safetensors")[ROTARY_FREQUENCIES], rounded)
    plm = protein_performer.load(tmp_path / "out")
    standard = protein_performer.load(tmp_path / "out")
    standard.model.rotary.inv_freq.copy_(1.0 / 10000 ** (torch.arange(0, 8, 2).float() / 8))
    for length in (40, 1000, 5000):
        sequence = protein(length, seed=length)
        expected = hf_hidden(source, sequence)
        error = relative(plm.embed(sequence), expected)
        assert error < 1e-4
        index = {t: i for i, t in enumerate(ESM2_VOCABULARY)}
        ids = torch.tensor([[index["<cls>"], *(index[c] for c in sequence), index["<eos>"]]])
        with torch.no_grad():
            logits = source(ids).logits[0, 1:-1][:, [index[a] for a in RESIDUES]]
        torch.testing.assert_close(plm.residue_log_probs(sequence), torch.log_softmax(logits.double(), -1).float(),
                                   atol=1e-4, rtol=0)
        if length == 5000:  # the recomputed frequencies are off there by several times the tolerance
            assert relative(standard.embed(sequence), expected) > max(3e-4, 10 * error)


def test_esm_frequencies_that_differ_by_layer_are_refused(tmp_path, capsys):
    source = save_esm(tmp_path / "esm")
    save_4x_layout(source, tmp_path / "esm", position_table=False)
    tensors = load_file(str(tmp_path / "esm" / "model.safetensors"))
    tensors["esm.encoder.layer.1.attention.self.rotary_embeddings.inv_freq"] *= 1.01
    save_file(tensors, str(tmp_path / "esm" / "model.safetensors"))
    code, err = run_cli(capsys, "convert", "--from", str(tmp_path / "esm"), "--out", str(tmp_path / "out"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "rotates every layer alike" in err, err


@pytest.mark.parametrize("kind", ["EsmForSequenceClassification", "EsmModel"])
def test_esm_without_its_head_converts_for_embeddings_only(tmp_path, capsys, kind):
    config = transformers.EsmConfig(vocab_size=33, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                    intermediate_size=64, position_embedding_type="rotary", token_dropout=True,
                                    mask_token_id=32, pad_token_id=1, layer_norm_eps=1e-5, hidden_dropout_prob=0.0, num_labels=2)
    torch.manual_seed(0)
    source = randomize(getattr(transformers, kind)(config), seed=3, std=0.15)
    fp16_frequencies(source if kind == "EsmForSequenceClassification" else type("M", (), {"esm": source})())
    source.save_pretrained(tmp_path / "esm")
    report = convert_model(tmp_path / "esm", tmp_path / "out", attention="softmax")
    assert any("no masked-LM head" in n for n in report.notes)
    if kind == "EsmForSequenceClassification":
        assert any("classifier.dense.*" in n for n in report.notes)  # the classifier is named as not used
    plm = protein_performer.load(tmp_path / "out")
    assert plm.model.lm_head is None
    assert relative(plm.embed(SEQUENCE), hf_hidden(source, SEQUENCE)) < 1e-5
    with pytest.raises(NoLanguageModelHead, match="no language-model head"):
        plm.residue_log_probs(SEQUENCE)
    for command in (["score", "--checkpoint", str(tmp_path / "out"), "--sequence", SEQUENCE, "--mutations", "K2A"],
                    ["fill-mask", "--checkpoint", str(tmp_path / "out"), "--sequence", "MK<mask>AY"]):
        code, err = run_cli(capsys, *command)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "no language-model head" in err, err
    fasta = tmp_path / "one.fasta"
    fasta.write_text("".join(f">p{i}\n{SEQUENCE}\n" for i in range(4)))
    code, err = run_cli(capsys, "embed", "--checkpoint", str(tmp_path / "out"), "--fasta", str(fasta), "--out", str(tmp_path / "e.h5"))
    assert code == 0 and (tmp_path / "e.h5").stat().st_size > 0, err
    code, err = run_cli(capsys, "train", "--init-from", str(tmp_path / "out"), "--data", str(fasta), "--out", str(tmp_path / "t"))
    assert code == 2 and "no language-model head" in err, err


def test_roberta_exact_conversion_reproduces_hugging_face(tmp_path):
    vocabulary = ("<s>", "<pad>", "</s>", "<unk>", "<mask>", *RESIDUES)
    config = transformers.RobertaConfig(vocab_size=len(vocabulary), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                        intermediate_size=64, max_position_embeddings=66, pad_token_id=1, bos_token_id=0,
                                        eos_token_id=2, hidden_dropout_prob=0.0, type_vocab_size=1)
    torch.manual_seed(0)
    source = randomize(transformers.RobertaForMaskedLM(config), seed=4, std=0.2)
    source.save_pretrained(tmp_path / "roberta")
    (tmp_path / "roberta" / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocabulary)}))
    convert_model(tmp_path / "roberta", tmp_path / "out", attention="softmax")
    plm = protein_performer.load(tmp_path / "out")
    assert (plm.config.positions, plm.config.max_len, plm.config.norm_position) == ("learned", 64, "post")
    index = {t: i for i, t in enumerate(vocabulary)}
    ids = torch.tensor([[index["<s>"], *(index[c] for c in SEQUENCE), index["</s>"]]])
    with torch.no_grad():
        logits = source(ids).logits[0, 1:-1][:, [index[a] for a in RESIDUES]]
    expected = torch.log_softmax(logits.double(), -1).float()
    assert (expected - expected.mean(-1, keepdim=True)).abs().max() > 1.0
    torch.testing.assert_close(plm.residue_log_probs(SEQUENCE), expected, atol=1e-4, rtol=0)
