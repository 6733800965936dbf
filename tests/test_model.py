import pytest
import torch

from protein_performer.model import PRESETS, PerformerConfig, PerformerLM, preset
from protein_performer.model.rotary import Rotary


def small(**kw) -> PerformerConfig:
    defaults = {"d_model": 32, "num_layers": 2, "num_heads": 4, "d_ff": 64, "num_features": 32, "dropout": 0.0}
    return PerformerConfig(**{**defaults, **kw})


def tokens(b=2, length=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(5, 30, (b, length), generator=g)


def test_config_round_trips_through_json(tmp_path):
    config = small(kernel="relu", objective="causal", positions="learned", max_len=512)
    config.save(tmp_path / "config.json")
    assert PerformerConfig.load(tmp_path / "config.json") == config
    assert preset("paper").num_layers == 36 and preset("paper").num_features == 256
    assert set(PRESETS) == {"tiny", "small", "paper"}


@pytest.mark.parametrize("bad", [{"attention": "performer"}, {"kernel": "cos"}, {"num_heads": 5}, {"dropout": 1.5},
                                 {"d_model": "32"}, {"orthogonal": 1}, {"num_layers": 2.0}])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="invalid model config"):
        small(**bad)


@pytest.mark.parametrize("attention", ["favor", "softmax"])
@pytest.mark.parametrize("objective", ["mlm", "causal"])
@pytest.mark.parametrize("positions", ["rotary", "learned"])
def test_padding_changes_nothing_at_real_positions(attention, objective, positions):
    torch.manual_seed(0)
    model = PerformerLM(small(attention=attention, objective=objective, positions=positions)).eval()
    t = tokens(1, 15)
    padded = torch.cat([t, torch.zeros(1, 9, dtype=torch.long)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model(padded)["logits"][:, :15], model(t)["logits"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention", ["favor", "softmax"])
def test_causal_model_does_not_see_the_future(attention):
    torch.manual_seed(0)
    model = PerformerLM(small(attention=attention, objective="causal")).eval()
    a, b = tokens(1, 30), tokens(1, 30, seed=1)
    b[:, :12] = a[:, :12]
    with torch.no_grad():
        la, lb = model(a)["logits"], model(b)["logits"]
    torch.testing.assert_close(la[:, :12], lb[:, :12], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(la[:, 12:], lb[:, 12:])


def test_bidirectional_model_sees_both_sides():
    torch.manual_seed(0)
    model = PerformerLM(small()).eval()
    a = tokens(1, 30)
    b = a.clone()
    b[:, 25] = (b[:, 25] + 1 - 5) % 25 + 5
    with torch.no_grad():
        assert not torch.allclose(model(a)["logits"][:, 3], model(b)["logits"][:, 3])


def test_representations_and_tied_head():
    model = PerformerLM(small())
    out = model(tokens(), repr_layers=(0, 1, 2))
    assert out["logits"].shape == (2, 20, 30)
    assert sorted(out["representations"]) == [0, 1, 2] and out["representations"][2].shape == (2, 20, 32)
    assert model.lm_head.embedding.weight is model.embed_tokens.weight


def test_redraw_projections_is_deterministic_and_touches_every_layer():
    model = PerformerLM(small())
    before = [layer.projection.clone() for layer in model.favor_layers()]
    model.redraw_projections(torch.Generator().manual_seed(3))
    after = [layer.projection.clone() for layer in model.favor_layers()]
    assert len(after) == 2 and all(not torch.equal(x, y) for x, y in zip(before, after))
    model.redraw_projections(torch.Generator().manual_seed(3))
    assert all(torch.equal(x, layer.projection) for x, layer in zip(after, model.favor_layers()))


def test_learned_positions_refuse_longer_inputs():
    model = PerformerLM(small(positions="learned", max_len=16))
    with pytest.raises(ValueError, match="longer than"):
        model(tokens(1, 17))


def test_rotary_scores_depend_only_on_offset():
    rotary = Rotary(8)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, 8, generator=g), torch.randn(1, 1, 1, 8, generator=g)
    qs, ks = q.expand(1, 1, 40, 8), k.expand(1, 1, 40, 8)
    rq, rk = rotary(qs, ks)
    scores = rq[0, 0] @ rk[0, 0].T  # [40, 40]
    torch.testing.assert_close(scores[5, 2], scores[30, 27])
    torch.testing.assert_close(scores[10, 17], scores[20, 27])
    torch.testing.assert_close(rq.norm(dim=-1), qs.norm(dim=-1))


@pytest.mark.parametrize("attention", ["favor", "softmax"])
@pytest.mark.parametrize("objective", ["mlm", "causal"])
def test_attention_maps_reproduce_the_forward_pass(attention, objective):
    # Each map applied to that layer's values gives exactly what the layer computed.
    torch.manual_seed(0)
    model = PerformerLM(small(attention=attention, objective=objective)).eval()
    t = tokens(2, 18)
    t[1, 12:] = 0
    maps = model.attention_maps(t)
    assert maps.shape == (2, 2, 4, 18, 18)
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(2, 4, 18))
    assert maps[1, :, :, :, 12:].abs().max() == 0  # padding gets no attention
    if objective == "causal":
        assert maps[0].triu(1).abs().max() == 0
    attn = model.blocks[0].attn
    x = model.blocks[0].attn_norm(model._embed(t))
    _, _, v = attn._qkv(x, model.rotary)
    with torch.no_grad():
        expected = attn.attend(*attn._qkv(x, model.rotary), t.eq(0))
    torch.testing.assert_close((maps[:, 0] @ v)[0], expected[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close((maps[:, 0] @ v)[1, :, :12], expected[1, :, :12], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("norm_position", ["pre", "post"])
@pytest.mark.parametrize("token_dropout", [False, True])
def test_queries_keys_are_what_each_layer_attends_with(norm_position, token_dropout):
    """The analyses read q, k through ``queries_keys``: softmax(q kᵀ/√d) over real keys must be the
    matrix every layer applies, for BERT-style post-norm and ESM-style token dropout as well."""
    torch.manual_seed(0)
    config = small(attention="softmax", norm_position=norm_position, token_dropout=token_dropout,
                   embed_norm=norm_position == "post")
    model = PerformerLM(config).eval()
    t = tokens(2, 18)
    t[0, 14:] = config.pad_idx
    t[1, 3] = config.mask_idx
    pad = t.eq(config.pad_idx)
    with torch.no_grad():
        maps = model.attention_maps(t)
        pairs = model.queries_keys(t)
    assert len(pairs) == config.num_layers
    for layer, (q, k) in enumerate(pairs):
        scores = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
        expected = scores.masked_fill(pad[:, None, None, :], float("-inf")).softmax(-1)
        torch.testing.assert_close(maps[:, layer], expected, atol=1e-5, rtol=1e-5)
