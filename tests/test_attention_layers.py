import pytest
import torch

from protein_performer.attention import FavorAttention, SoftmaxAttention
from protein_performer.attention.ops.naive import favor_attention_naive


def test_projection_is_a_saved_buffer_and_forward_never_redraws():
    torch.manual_seed(0)
    layer = FavorAttention(32, 4, num_features=16)
    assert layer.projection.shape == (4, 16, 8)
    assert "projection" in layer.state_dict()
    assert not any(p is layer.projection for p in layer.parameters())
    before = layer.projection.clone()
    x = torch.randn(2, 10, 32)
    a, b = layer(x), layer(x)
    assert torch.equal(before, layer.projection) and torch.equal(a, b)
    layer.train()
    layer(x).sum().backward()
    assert torch.equal(before, layer.projection)


def test_redraw_is_seeded_and_restored_by_state_dict():
    layer = FavorAttention(32, 4, num_features=16)
    layer.redraw_projection(torch.Generator().manual_seed(1))
    first = layer.projection.clone()
    layer.redraw_projection(torch.Generator().manual_seed(1))
    assert torch.equal(first, layer.projection)
    layer.redraw_projection(torch.Generator().manual_seed(2))
    assert not torch.equal(first, layer.projection)
    # Heads get independent draws.
    assert not torch.equal(layer.projection[0], layer.projection[1])
    other = FavorAttention(32, 4, num_features=16)
    other.load_state_dict(layer.state_dict())
    x = torch.randn(1, 7, 32)
    torch.testing.assert_close(other(x), layer(x))


@pytest.mark.parametrize("causal", [False, True])
def test_module_matches_functional_and_reference(causal):
    torch.manual_seed(0)
    layer = FavorAttention(24, 3, num_features=12, causal=causal).double()
    x = torch.randn(2, 11, 24, dtype=torch.float64)
    mask = torch.zeros(2, 11, dtype=torch.bool)
    mask[1, 6:] = True
    q, k, v = layer.in_proj(x).view(2, 11, 3, 3, 8).permute(2, 0, 3, 1, 4)
    ref = favor_attention_naive(q, k, v, layer.projection, causal=causal, key_padding_mask=mask)
    ref = layer.out_proj(ref.transpose(1, 2).reshape(2, 11, 24))
    out = layer(x, key_padding_mask=mask)
    torch.testing.assert_close(out[0], ref[0])
    torch.testing.assert_close(out[1, :6], ref[1, :6])
    torch.testing.assert_close(out[1, :6], layer(x[1:, :6])[0])


def test_weights_move_between_exact_and_favor():
    # Same parameter names: a softmax layer's state dict loads into a FAVOR layer (plus its projection),
    # and the FAVOR output approaches the exact one as M grows.
    torch.manual_seed(0)
    exact = SoftmaxAttention(64, 2).double()
    x = torch.randn(1, 50, 64, dtype=torch.float64) * 0.5
    ref = exact(x)
    errors = []
    for m in (16, 256, 4096):
        favor = FavorAttention(64, 2, num_features=m).double()
        missing, unexpected = favor.load_state_dict(exact.state_dict(), strict=False)
        assert missing == ["projection"] and unexpected == []
        favor.redraw_projection(torch.Generator().manual_seed(0))
        errors.append(((favor(x) - ref).norm() / ref.norm()).item())
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.05, errors


def test_bad_configuration():
    with pytest.raises(ValueError, match="divisible"):
        FavorAttention(30, 4)
    with pytest.raises(ValueError, match="unknown kernel"):
        FavorAttention(32, 4, kernel="cosine")
