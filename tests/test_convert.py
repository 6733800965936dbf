"""Converting pretrained softmax Transformers (ESM-2, BERT, our own exact runs) into Performers.

The Hugging Face sources are tiny random models built here with ``transformers`` and written with
``save_pretrained`` (nothing is downloaded); their weights are redrawn large enough that the
predictions are far from uniform, so a mapping mistake shows far above the 1e-4 tolerance.
"""

import itertools
import json
from pathlib import Path

import pytest
import torch
from conftest import corpus_head
from safetensors.torch import load_file, save_file

import protein_performer
from protein_performer.cli import main
from protein_performer.convert import ConversionError, convert_model, read_source
from protein_performer.convert.common import build_model
from protein_performer.convert.esm import ESM2_VOCABULARY
from protein_performer.data import STANDARD_AMINO_ACIDS
from protein_performer.inference import ProteinLanguageModel
from protein_performer.model import PerformerConfig, PerformerLM
from protein_performer.rundir import RunDir

SEQUENCE = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ"
# AntiBERTy's vocabulary: BERT specials and the 20 standard amino acids (no B, O, U, X, Z).
BERT_VOCABULARY = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *STANDARD_AMINO_ACIDS)


def randomize(model: torch.nn.Module, seed: int, std: float = 0.3) -> torch.nn.Module:
    """Every parameter redrawn around its usual value (LayerNorm scales around 1, the rest around 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std + float(p.dim() == 1 and name.endswith("weight")))
    return model.eval()


def rewrite_weights(model: torch.nn.Module, directory: Path, weights: str) -> None:
    """Replace save_pretrained's model.safetensors by ``weights``: "safetensors" (kept), "bin" (one
    ``pytorch_model.bin``, as transformers 4 wrote it, tied decoder included) or "sharded" (two
    safetensors shards and their ``model.safetensors.index.json``)."""
    if weights == "safetensors":
        return
    (directory / "model.safetensors").unlink()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if weights == "bin":
        torch.save(state, directory / "pytorch_model.bin")
        return
    names = sorted(state)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in shards.items():
        save_file({k: state[k] for k in keys if "decoder.weight" not in k}, str(directory / shard))
    weight_map = {k: shard for shard, keys in shards.items() for k in keys if "decoder.weight" not in k}
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def save_esm(directory: Path, *, token_dropout: bool = True, weights: str = "safetensors", std: float = 0.3, **overrides):
    transformers = pytest.importorskip("transformers")
    config = transformers.EsmConfig(**{**dict(
        vocab_size=33, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        position_embedding_type="rotary", token_dropout=token_dropout, mask_token_id=32, pad_token_id=1,
        layer_norm_eps=1e-5, hidden_dropout_prob=0.0), **overrides})
    torch.manual_seed(0)
    model = randomize(transformers.EsmForMaskedLM(config), seed=1, std=std)
    model.save_pretrained(directory)
    rewrite_weights(model, directory, weights)
    return model


def save_bert(directory: Path, *, weights: str = "safetensors", vocab_file: bool = True):
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=len(BERT_VOCABULARY), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=64, hidden_act="gelu_new",
                                     hidden_dropout_prob=0.0)
    torch.manual_seed(0)
    model = randomize(transformers.BertForMaskedLM(config), seed=2, std=0.2)
    model.save_pretrained(directory)
    rewrite_weights(model, directory, weights)
    if vocab_file:
        (directory / "vocab.txt").write_text("\n".join(BERT_VOCABULARY) + "\n")
    return model


def reference_log_probs(model, vocabulary, sequence: str, masked: int | None = None) -> torch.Tensor:
    """The Hugging Face model's log-probabilities [L, 20] renormalized over the standard amino acids
    (``masked``: that 0-based residue replaced by the mask token, only its row returned)."""
    index = {t: i for i, t in enumerate(vocabulary)}
    cls, eos, mask = (index.get(a, index.get(b)) for a, b in (("<cls>", "[CLS]"), ("<eos>", "[SEP]"), ("<mask>", "[MASK]")))
    ids = torch.tensor([[cls, *(index[c] for c in sequence), eos]])
    if masked is not None:
        ids[0, masked + 1] = mask
    with torch.no_grad():
        logits = model(ids).logits[0, 1:-1][:, [index[a] for a in STANDARD_AMINO_ACIDS]]
    rows = torch.log_softmax(logits.double(), dim=-1).float()
    return rows if masked is None else rows[masked]


@pytest.mark.parametrize("token_dropout,weights,norm_before", [(True, "safetensors", False), (False, "bin", False),
                                                             (True, "sharded", False), (True, "safetensors", True)])
def test_esm_exact_conversion_reproduces_hugging_face(tmp_path, token_dropout, weights, norm_before):
    source = save_esm(tmp_path / "esm", token_dropout=token_dropout, weights=weights, emb_layer_norm_before=norm_before)
    report = convert_model(tmp_path / "esm", tmp_path / "out", attention="softmax")
    assert any("dropped: . - <null_1>" in n for n in report.notes)
    plm = protein_performer.load(tmp_path / "out")
    assert (plm.config.token_dropout, plm.config.embed_norm, plm.config.attention) == (token_dropout, norm_before, "softmax")
    expected = reference_log_probs(source, ESM2_VOCABULARY, SEQUENCE)
    assert (expected - expected.mean(-1, keepdim=True)).abs().max() > 1.0  # far from uniform: errors would show
    torch.testing.assert_close(plm.residue_log_probs(SEQUENCE), expected, atol=1e-4, rtol=0)
    # With a <mask> in the sequence (token dropout zeroes it and rescales the rest).
    positions = [0, 7, len(SEQUENCE) - 1]
    masked = torch.stack([reference_log_probs(source, ESM2_VOCABULARY, SEQUENCE, masked=p) for p in positions])
    torch.testing.assert_close(plm.masked_log_probs(SEQUENCE, positions), masked, atol=1e-4, rtol=0)


@pytest.mark.parametrize("weights", ["safetensors", "bin"])
def test_bert_exact_conversion_reproduces_hugging_face(tmp_path, weights):
    source = save_bert(tmp_path / "bert", weights=weights)
    report = convert_model(tmp_path / "bert", tmp_path / "out", attention="softmax")
    assert any("B, O, U, X, Z" in n for n in report.notes)  # our rare letters take the [UNK] row
    plm = protein_performer.load(tmp_path / "out")
    assert (plm.config.norm_position, plm.config.positions, plm.config.activation) == ("post", "learned", "gelu_tanh")
    expected = reference_log_probs(source, BERT_VOCABULARY, SEQUENCE)
    assert (expected - expected.mean(-1, keepdim=True)).abs().max() > 1.0
    torch.testing.assert_close(plm.residue_log_probs(SEQUENCE), expected, atol=1e-4, rtol=0)
    masked = reference_log_probs(source, BERT_VOCABULARY, SEQUENCE, masked=4)
    torch.testing.assert_close(plm.masked_log_probs(SEQUENCE, [4])[0], masked, atol=1e-4, rtol=0)


def error(plm: ProteinLanguageModel, expected: torch.Tensor) -> float:
    return float((plm.residue_log_probs(SEQUENCE) - expected).abs().mean())


def test_favor_conversion_approaches_the_source_as_features_grow(tmp_path):
    # Weights small enough that FAVOR's variance is moderate (large ones make it converge only at huge M).
    source = save_esm(tmp_path / "esm", std=0.1)
    expected = reference_log_probs(source, ESM2_VOCABULARY, SEQUENCE)
    assert (expected - expected.mean(-1, keepdim=True)).abs().max() > 1.0
    convert_model(tmp_path / "esm", tmp_path / "favor", num_features=2)  # the written checkpoint, and the same in memory:
    _, converted = read_source(tmp_path / "esm")
    errors = []
    for m in (2, 8, 32, 128, 512):
        converted.config = converted.config.replace(attention="favor", num_features=m)
        per_seed = [error(ProteinLanguageModel(build_model(converted, seed)), expected) for seed in range(3)]
        if m == 2:
            assert per_seed[0] == error(protein_performer.load(tmp_path / "favor"), expected)
        errors.append(sum(per_seed) / len(per_seed))
    assert all(a > b for a, b in itertools.pairwise(errors)), errors
    assert errors[-1] < 0.25 * errors[0], errors


def own_run(directory: Path, **overrides) -> PerformerLM:
    torch.manual_seed(0)
    defaults = dict(d_model=32, num_layers=2, num_heads=4, d_ff=64, attention="softmax", dropout=0.0)
    config = PerformerConfig(**{**defaults, **overrides})
    model = PerformerLM(config).eval()
    RunDir(directory).write_model(model.state_dict(), config)
    (directory / "train_config.json").write_text(json.dumps({"seq_len": 64}))
    (directory / "frequencies.json").write_text(json.dumps({"frequencies": [1 / 30] * 30}))
    return model


def test_own_exact_checkpoint_round_trip_and_favor_settings(tmp_path):
    own_run(tmp_path / "exact")
    convert_model(tmp_path / "exact", tmp_path / "same", attention="softmax")
    source, same = protein_performer.load(tmp_path / "exact"), protein_performer.load(tmp_path / "same")
    assert torch.equal(source.residue_log_probs(SEQUENCE), same.residue_log_probs(SEQUENCE))
    for name in ("train_config.json", "frequencies.json"):
        assert (tmp_path / "same" / name).read_text() == (tmp_path / "exact" / name).read_text()
    convert_model(tmp_path / "exact", tmp_path / "f1", kernel="softmax_hyperbolic", num_features=16, seed=3)
    convert_model(tmp_path / "exact", tmp_path / "f2", kernel="softmax_hyperbolic", num_features=16, seed=3)
    convert_model(tmp_path / "exact", tmp_path / "f3", kernel="softmax_hyperbolic", num_features=16, seed=4)
    favor = protein_performer.load(tmp_path / "f1")
    assert (favor.config.attention, favor.config.kernel, favor.config.num_features) == ("favor", "softmax_hyperbolic", 16)
    w1, w2, w3 = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("f1", "f2", "f3"))
    assert all(torch.equal(w1[k], w2[k]) for k in w1)  # deterministic given the seed
    assert not torch.equal(w1["blocks.0.attn.projection"], w3["blocks.0.attn.projection"])
    exact = load_file(str(tmp_path / "exact" / "model.safetensors"))
    assert all(torch.equal(exact[k], w1[k]) for k in exact)  # weights unchanged


def test_load_weights_names_a_shape_mismatch(tmp_path):
    own_run(tmp_path / "run")
    with pytest.raises(ValueError, match=r"blocks\.0\.ff\.fc1\.bias is \(64,\), the model's \(128,\) \(and 5 more\)"):
        RunDir(tmp_path / "run").load_weights(PerformerLM(PerformerConfig(d_model=32, num_layers=2, num_heads=4, d_ff=128)))


def run_cli(capsys, *args: str) -> tuple[int, str]:
    capsys.readouterr()  # drop what came before (save_pretrained's progress bar)
    code = main(list(args))
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case,message", [
    ("missing", "is not a directory"),
    ("gpt2", "model_type 'gpt2' is not supported"),
    ("esm1b", "'absolute' position embeddings (ESM-1b, ESM-1v) is not supported"),
    ("rope", "rotary base 500000.0 is not supported"),
    ("no_vocab", "--vocab FILE"),
    ("pickle", "could not be read as plain tensors"),
    ("damaged", "is not a readable safetensors file"),
    ("not_object", "holds list, not a JSON object"),
    ("wrong_type", "'32'"),
    ("fewer_layers", "config.json does not account for"),
    ("existing_out", "already holds files"),
    ("damaged_own", "is not a readable safetensors file"),
    ("into_source", "is the source directory"),
])
def test_convert_errors_are_one_line(tmp_path, capsys, case, message):
    source = tmp_path / "src"
    if case == "gpt2":
        source.mkdir()
        (source / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    elif case in ("esm1b", "rope"):
        save_esm(source)
        config = json.loads((source / "config.json").read_text())
        config.update({"position_embedding_type": "absolute"} if case == "esm1b" else {"rope_theta": 500000.0})
        (source / "config.json").write_text(json.dumps(config))
    elif case == "no_vocab":
        save_bert(source, vocab_file=False)
    elif case == "pickle":
        save_bert(source)
        (source / "model.safetensors").unlink()
        torch.save({"weights": ConversionError("pickled object")}, source / "pytorch_model.bin")
    elif case in ("not_object", "wrong_type", "fewer_layers"):
        save_esm(source)
        config = json.loads((source / "config.json").read_text())
        config.update({"hidden_size": "32"} if case == "wrong_type" else {"num_hidden_layers": config["num_hidden_layers"] - 1})
        (source / "config.json").write_text("[1]" if case == "not_object" else json.dumps(config))
    elif case == "existing_out":
        own_run(source)
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "metrics.jsonl").write_text("{}\n")
    elif case == "damaged":
        save_esm(source)
        (source / "model.safetensors").write_bytes(b"garbage")
    elif case == "damaged_own":
        own_run(source)
        (source / "model.safetensors").write_bytes(b"garbage")
    elif case == "into_source":
        own_run(source)
    out = source if case == "into_source" else tmp_path / "out"
    code, err = run_cli(capsys, "convert", "--from", str(source), "--out", str(out))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0] and "Traceback" not in err, err


@pytest.fixture(scope="module")
def fasta(tmp_path_factory) -> Path:
    return corpus_head(tmp_path_factory.mktemp("data") / "small.fasta", 200)


TRAIN = ["--seq-len", "64", "--batch-size", "4", "--micro-batch-size", "4", "--eval-every", "2", "--eval-sequences", "8",
         "--precision", "fp32", "--quiet"]


def test_train_init_from_continues_a_converted_model(tmp_path, capsys, fasta):
    save_esm(tmp_path / "esm")
    favor = str(tmp_path / "favor")
    assert run_cli(capsys, "convert", "--from", str(tmp_path / "esm"), "--out", favor, "--num-features", "16")[0] == 0
    train = ["train", "--init-from", favor, "--data", str(fasta), *TRAIN]
    # lr 0: the first steps must start from (and keep) exactly the converted weights and projections.
    code, err = run_cli(capsys, *train, "--out", str(tmp_path / "same"), "--max-steps", "1", "--lr", "0")
    assert code == 0, err
    converted, kept = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("favor", "same"))
    assert converted.keys() == kept.keys() and all(torch.equal(converted[k], kept[k]) for k in converted)
    code, err = run_cli(capsys, *train, "--out", str(tmp_path / "tuned"), "--max-steps", "2")
    assert code == 0, err
    assert PerformerConfig.load(tmp_path / "tuned" / "config.json") == PerformerConfig.load(tmp_path / "favor" / "config.json")
    metrics = [json.loads(line) for line in (tmp_path / "tuned" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == 2 and "valid/accuracy" in metrics[-1]
    tuned = load_file(str(tmp_path / "tuned" / "model.safetensors"))
    assert not torch.equal(tuned["blocks.0.ff.fc1.weight"], converted["blocks.0.ff.fc1.weight"])


def test_train_init_from_refuses_architecture_changes(tmp_path, capsys, fasta):
    save_bert(tmp_path / "bert")
    assert run_cli(capsys, "convert", "--from", str(tmp_path / "bert"), "--out", str(tmp_path / "favor"))[0] == 0
    base = ["train", "--init-from", str(tmp_path / "favor"), "--data", str(fasta), "--out", str(tmp_path / "run")]
    for extra, message in ((["--attention", "softmax"], "--attention would change the model"),
                           (["--preset", "small"], "--preset would change the model"),
                           (["--seq-len", "128"], "--seq-len 128 is longer than the learned positions")):
        code, err = run_cli(capsys, *base, *extra)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    for content, message in (("[1]", "is not a valid model config"), ("{bad", "config.json is not a valid model config")):
        (tmp_path / "favor" / "config.json").write_text(content)
        code, err = run_cli(capsys, *base)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
