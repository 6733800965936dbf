"""The paper's rivals as attention kinds: local (sliding window) and linear (elu + 1) against their L×L
references, Reformer and Linformer wrapped from their packages; each through padding, causality where it
exists, gradients, a model, a checkpoint and a short training run."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from protein_performer.attention import ATTENTIONS, LinearAttention, LocalAttention
from protein_performer.attention.ops.local import local_attention
from protein_performer.attention.ops.naive import softmax_attention_naive
from protein_performer.model import PerformerLM, preset

pytest.importorskip("reformer_pytorch")
pytest.importorskip("linformer")

RIVALS = {"local": {"window": 16}, "linear": {}, "reformer": {"bucket_size": 16}, "linformer": {"positions": "learned", "max_len": 96}}


def _qkv(length: int, seed: int = 0, batch: int = 2, heads: int = 3, dim: int = 8):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, length, dim, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3)]


def _padding(batch: int, length: int, pad: int) -> torch.Tensor:
    mask = torch.zeros(batch, length, dtype=torch.bool)
    mask[-1, length - pad:] = True
    return mask


# -- local attention --------------------------------------------------------------------------------
@pytest.mark.parametrize("length,window,causal", [(37, 8, False), (37, 8, True), (64, 16, False), (5, 8, True), (50, 1, False)])
def test_local_equals_banded_softmax_forward_and_backward(length, window, causal):
    q, k, v = _qkv(length)
    pad = _padding(2, length, 4)
    ours = local_attention(q, k, v, window=window, causal=causal, key_padding_mask=pad)
    reference = softmax_attention_naive(q, k, v, causal=causal, key_padding_mask=pad, band=window)
    real = ~pad[:, None, :, None]
    torch.testing.assert_close(ours * real, reference * real, rtol=1e-10, atol=1e-10)
    grad = torch.randn_like(ours) * real
    for a, b in zip(torch.autograd.grad(ours, (q, k, v), grad), torch.autograd.grad(reference, (q, k, v), grad)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_local_window_is_a_hard_limit_and_causal_never_looks_ahead():
    q, k, v = _qkv(40)
    base = local_attention(q, k, v, window=5)
    v2 = v.detach().clone()
    v2[:, :, 30] += 100.0  # reaches only queries 25 .. 35
    changed = (local_attention(q, k, v2, window=5) - base).abs().amax(dim=(0, 1, 3)) > 0
    assert changed.nonzero().flatten().tolist() == list(range(25, 36))
    causal = local_attention(q, k, v, window=5, causal=True)
    changed = (local_attention(q, k, v2, window=5, causal=True) - causal).abs().amax(dim=(0, 1, 3)) > 0
    assert changed.nonzero().flatten().tolist() == list(range(30, 36))


def test_local_window_covering_the_sequence_is_exact_attention():
    q, k, v = _qkv(23)
    full = F.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(local_attention(q, k, v, window=23), full, rtol=1e-10, atol=1e-10)


# -- the layers' analysis views -------------------------------------------------------------------------
@pytest.mark.parametrize("kind", [LocalAttention, LinearAttention])
@pytest.mark.parametrize("causal", [False, True])
def test_layer_applies_the_matrix_it_reports(kind, causal):
    torch.manual_seed(0)
    layer = (kind(16, 2, window=3, causal=causal) if kind is LocalAttention else kind(16, 2, causal=causal)).double()
    x = torch.randn(2, 11, 16, dtype=torch.float64)
    pad = _padding(2, 11, 3)
    q, k = layer.queries_keys(x)
    v = torch.randn_like(q)
    matrix = layer.attention_matrix(q, k, pad)
    out = layer.attend(q, k, v, pad)
    real = ~pad[:, None, :, None]
    torch.testing.assert_close(out * real, (matrix @ v) * real, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(layer.attention_window(q, k, 2, 5, pad), matrix[..., 2:7, 2:7], rtol=1e-9, atol=1e-12)
    received = (matrix * real).sum(-2)
    torch.testing.assert_close(layer.received_attention(q, k, pad), received, rtol=1e-9, atol=1e-12)


def test_linear_attention_is_elu_plus_one_normalized():
    torch.manual_seed(1)
    layer = LinearAttention(8, 2).double()
    q, k, v = _qkv(9, heads=2, dim=4)
    phi_q, phi_k = F.elu(q) + 1, F.elu(k) + 1
    scores = phi_q @ phi_k.transpose(-1, -2)
    expected = (scores / scores.sum(-1, keepdim=True)) @ v
    torch.testing.assert_close(layer.attend(q, k, v, None), expected, rtol=1e-10, atol=1e-10)
    causal = LinearAttention(8, 2, causal=True).double()
    tril = scores.tril()
    torch.testing.assert_close(causal.attend(q, k, v, None), (tril / tril.sum(-1, keepdim=True)) @ v, rtol=1e-10, atol=1e-10)


# -- Reformer and Linformer -------------------------------------------------------------------------
def _model(kind: str, **overrides) -> PerformerLM:
    torch.manual_seed(0)
    return PerformerLM(preset("tiny", attention=kind, dropout=0.0, **{**RIVALS[kind], **overrides})).eval()


@pytest.mark.parametrize("kind", list(RIVALS))
def test_padding_content_never_reaches_real_positions(kind):
    model = _model(kind)
    tokens = torch.randint(4, 25, (2, 70), generator=torch.Generator().manual_seed(0))
    tokens[1, 50:] = 0
    mask = tokens.eq(0)
    hidden = model(tokens, logits=False, repr_layers=(2,))["representations"][2]
    # Other inputs at the padded positions (the model is told they are padding): nothing real changes.
    other = tokens.clone()
    other[1, 50:] = 7
    changed = model(other, padding_mask=mask, logits=False, repr_layers=(2,))["representations"][2]
    torch.testing.assert_close(changed[~mask], hidden[~mask], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["local", "linear", "linformer"])
def test_padding_is_exact(kind):
    """A padded sequence gives what the same sequence alone gives (Reformer's LSH cannot: its bucket
    count follows the padded length)."""
    model = _model(kind)
    tokens = torch.randint(4, 25, (2, 70), generator=torch.Generator().manual_seed(0))
    tokens[1, 50:] = 0
    batch = model(tokens)["logits"][1, :50]
    alone = model(tokens[1:, :50])["logits"][0]
    torch.testing.assert_close(batch, alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["local", "linear"])
def test_causal_rivals_never_read_the_future(kind):
    torch.manual_seed(0)
    model = PerformerLM(preset("tiny", attention=kind, objective="causal", dropout=0.0, window=8)).eval()
    tokens = torch.randint(4, 25, (1, 40), generator=torch.Generator().manual_seed(0))
    later = tokens.clone()
    later[0, 30:] = 5
    torch.testing.assert_close(model(later)["logits"][0, :30], model(tokens)["logits"][0, :30], rtol=1e-6, atol=1e-6)


def test_reformer_any_length_deterministic_in_eval_and_random_in_training():
    model = _model("reformer")
    for length in (5, 64, 65, 130):  # padded to a multiple of 2 × bucket_size inside
        tokens = torch.randint(4, 25, (2, length), generator=torch.Generator().manual_seed(length))
        first = model(tokens)["logits"]
        assert first.shape == (2, length, 30) and torch.isfinite(first).all()
        torch.testing.assert_close(model(tokens)["logits"], first)  # eval: the same rotations every call
    model.train()
    tokens = torch.randint(4, 25, (2, 130), generator=torch.Generator().manual_seed(0))
    assert not torch.equal(model(tokens)["logits"], model(tokens)["logits"])  # training: new rotations per call


def test_reformer_shares_queries_and_keys():
    model = _model("reformer")
    layer = model.blocks[0].attn
    assert layer.in_proj.out_features == 2 * 128
    assert sum(p.numel() for p in layer.parameters()) == 3 * 128 * 128 + 3 * 128


def test_linformer_is_tied_to_its_length():
    model = _model("linformer")
    with pytest.raises(ValueError, match="longer than this model's learned positions"):
        model(torch.randint(4, 25, (1, 97)))
    layer = model.blocks[0].attn
    with pytest.raises(ValueError, match="max_len"):
        layer(torch.randn(1, 97, 128))
    with pytest.raises(ValueError, match="rotary"):
        layer(torch.randn(1, 9, 128), qk_transform=lambda q, k: (q, k))


@pytest.mark.parametrize("kind,overrides,message", [
    ("reformer", {"objective": "causal"}, "bidirectional only"),
    ("linformer", {"objective": "causal", "positions": "learned"}, "bidirectional only"),
    ("linformer", {}, "use `positions` learned"),
    ("local", {"window": 0}, "`window` must be positive"),
])
def test_impossible_settings_are_refused_with_the_reason(kind, overrides, message):
    with pytest.raises(ValueError, match=message):
        preset("tiny", attention=kind, **overrides)


@pytest.mark.parametrize("kind", ["reformer", "linformer"])
def test_analyses_refuse_kinds_without_a_fixed_matrix(kind):
    model = _model(kind)
    with pytest.raises(ValueError, match="analy"):
        model.attention_maps(torch.randint(4, 25, (1, 20)))


def test_missing_package_is_one_clear_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def without_reformer(name, *args, **kwargs):
        if name.startswith("reformer_pytorch"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_reformer)
    monkeypatch.delitem(__import__("sys").modules, "reformer_pytorch.reformer_pytorch", raising=False)
    monkeypatch.delitem(__import__("sys").modules, "reformer_pytorch", raising=False)
    with pytest.raises(ValueError, match=r"protein-performer\[baselines\]"):
        ATTENTIONS["reformer"](32, 2)


@pytest.mark.parametrize("kind", list(RIVALS))
def test_rival_trains_saves_and_reloads(kind, tmp_path):
    from protein_performer.data import EncodedCorpus
    from protein_performer.rundir import RunDir
    from protein_performer.training import TrainConfig, Trainer

    corpus = EncodedCorpus.from_fasta()
    config = preset("tiny", attention=kind, **RIVALS[kind])
    tc = TrainConfig(seq_len=64, batch_size=8, micro_batch_size=8, max_steps=20, warmup_steps=2, lr=3e-3,
                     save_every=20, eval_every=20, eval_sequences=8, log_every=1, seed=0)
    trainer = Trainer(tmp_path / "run", config, tc, corpus=corpus)
    trainer.fit()
    losses = [row["train/loss"] for row in RunDir(tmp_path / "run").read_metrics() if "train/loss" in row]
    assert len(losses) == 20 and sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.1, losses
    from protein_performer import load

    reloaded = load(tmp_path / "run")
    assert reloaded.config.attention == kind
    tokens = torch.randint(4, 25, (2, 40))
    trainer.model.eval()
    torch.testing.assert_close(reloaded.model(tokens)["logits"], trainer.model(tokens)["logits"])
    # The commands a user runs on it.
    from protein_performer.cli import main

    (tmp_path / "two.fa").write_text(">a\nMKTAYIAKQRQISFVKSHFSRQ\n>b\nMSTNPKPQRKTKRNTNRRPQDVKFPGG\n")
    run = str(tmp_path / "run")
    assert main(["embed", "--checkpoint", run, "--fasta", str(tmp_path / "two.fa"), "--out", str(tmp_path / "e.h5"), "--quiet"]) == 0
    assert main(["score", "--checkpoint", run, "--sequence", "MKTAYIAKQRQISFVKSHFSRQ", "--mutations", "K2A,T3G", "--quiet"]) == 0
    assert main(["evaluate", "--checkpoint", run, "--quiet", "--max-sequences", "8"]) == 0
