"""FAVOR against plain references: the explicit L×L product of the same features, exact softmax."""

import math

import pytest
import torch
from conftest import qkv

from protein_performer.attention import KERNELS, draw_projection, favor_attention, random_features, softmax_attention
from protein_performer.attention.ops.linear import causal_product
from protein_performer.attention.ops.naive import favor_attention_naive, softmax_attention_naive


def projection(m=32, d=8, seed=1, heads=None):
    g = torch.Generator().manual_seed(seed)
    if heads is None:
        return draw_projection(m, d, generator=g, dtype=torch.float64)
    return torch.stack([draw_projection(m, d, generator=g, dtype=torch.float64) for _ in range(heads)])


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("per_head", [False, True])
def test_fast_path_equals_explicit_product(kernel, causal, per_head):
    q, k, v = qkv(length=45)
    w = projection(heads=3 if per_head else None)
    fast = favor_attention(q, k, v, w, kernel=kernel, causal=causal, chunk_size=8)
    naive = favor_attention_naive(q, k, v, w, kernel=kernel, causal=causal)
    torch.testing.assert_close(fast, naive, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("chunk", [1, 4, 7, 16, 45, 200])
def test_causal_chunking_does_not_matter(chunk):
    q, k, v = qkv(length=45)
    w = projection()
    ref = favor_attention_naive(q, k, v, w, causal=True)
    torch.testing.assert_close(favor_attention(q, k, v, w, causal=True, chunk_size=chunk), ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("reverse", [False, True])
def test_causal_product_matches_masked_matrix(reverse):
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 3, 50, 6, generator=g, dtype=torch.float64), torch.randn(2, 3, 50, 6, generator=g, dtype=torch.float64)
    v = torch.randn(2, 3, 50, 5, generator=g, dtype=torch.float64)
    scores = q @ k.transpose(-1, -2)
    scores = scores.triu() if reverse else scores.tril()
    torch.testing.assert_close(causal_product(q, k, v, chunk=8, reverse=reverse), scores @ v)


@pytest.mark.parametrize("kernel", KERNELS)
def test_causal_prefix_equals_bidirectional_on_prefix(kernel):
    q, k, v = qkv(length=30)
    w = projection()
    causal = favor_attention(q, k, v, w, kernel=kernel, causal=True, chunk_size=8)
    for i in (0, 1, 7, 8, 19, 29):
        prefix = favor_attention(q[:, :, : i + 1], k[:, :, : i + 1], v[:, :, : i + 1], w, kernel=kernel)
        torch.testing.assert_close(causal[:, :, i], prefix[:, :, i], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("causal", [False, True])
def test_padding_is_exact(kernel, causal):
    q, k, v = qkv(b=2, length=20)
    w = projection()
    ref = favor_attention(q, k, v, w, kernel=kernel, causal=causal, chunk_size=8)
    # Append 13 padded positions with wild content: huge keys would dominate any stabilizer or normalizer.
    g = torch.Generator().manual_seed(5)

    def junk():
        return 50 * torch.randn(2, 3, 13, 8, generator=g, dtype=torch.float64)

    qp, kp, vp = (torch.cat([t, junk()], dim=2) for t in (q, k, v))
    mask = torch.zeros(2, 33, dtype=torch.bool)
    mask[:, 20:] = True
    out = favor_attention(qp, kp, vp, w, kernel=kernel, causal=causal, key_padding_mask=mask, chunk_size=8)
    torch.testing.assert_close(out[:, :, :20], ref, rtol=1e-9, atol=1e-9)
    assert torch.isfinite(out).all()


def test_padding_in_the_middle_of_a_batch():
    # Sequence 0 has 12 real positions, sequence 1 all 20: each matches its own unpadded run.
    q, k, v = qkv(b=2, length=20)
    w = projection()
    mask = torch.zeros(2, 20, dtype=torch.bool)
    mask[0, 12:] = True
    out = favor_attention(q, k, v, w, key_padding_mask=mask)
    alone = favor_attention(q[:1, :, :12], k[:1, :, :12], v[:1, :, :12], w)
    torch.testing.assert_close(out[:1, :, :12], alone)
    torch.testing.assert_close(out[1:], favor_attention(q[1:], k[1:], v[1:], w))
    naive = favor_attention_naive(q, k, v, w, key_padding_mask=mask)
    torch.testing.assert_close(out, naive)


def test_all_padded_sequence_is_finite():
    q, k, v = qkv(b=2, length=10)
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[1] = True
    for causal in (False, True):
        out = favor_attention(q, k, v, projection(), causal=causal, key_padding_mask=mask)
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kernel", ["softmax", "softmax_hyperbolic"])
def test_stabilizer_changes_nothing_at_realistic_norms(causal, kernel):
    # d = 64, M = 256, ‖q‖ = ‖k‖ = 8: float32 with stabilization vs the ideal estimator in float64
    # (unstabilized features, no ε). An ε added after a global max would flatten this toward uniform.
    q, k, v = qkv(b=1, h=2, length=300, d=64, norm=8.0, seed=3)
    w = projection(256, 64, seed=4)
    ideal = favor_attention_naive(q, k, v, w, kernel=kernel, causal=causal)
    out = favor_attention(q.float(), k.float(), v.float(), w.float(), kernel=kernel, causal=causal, chunk_size=64)
    err = (out.double() - ideal).norm() / ideal.norm()
    assert err < 1e-4
    # And the pattern is peaked, not uniform: far from the plain mean of the values.
    uniform = v.mean(dim=2, keepdim=True).expand_as(v) if not causal else v.cumsum(2) / torch.arange(1, 301).view(1, 1, -1, 1)
    assert (ideal - uniform).norm() / ideal.norm() > 0.3


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("norm", [1.0, 10.0, 20.0, 30.0])
def test_large_norms_are_finite_forward_and_backward(causal, norm):
    q, k, v = qkv(b=1, h=2, length=200, d=64, norm=norm, dtype=torch.float32, seed=7)
    q.requires_grad_(), k.requires_grad_(), v.requires_grad_()
    w = projection(256, 64).float()
    out = favor_attention(q, k, v, w, causal=causal, chunk_size=64)
    assert torch.isfinite(out).all()
    (out * torch.randn_like(out)).sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()


@pytest.mark.parametrize("causal", [False, True])
def test_bf16_and_autocast_stay_close_to_float32(causal):
    q, k, v = qkv(b=1, h=2, length=256, d=64, norm=6.0, dtype=torch.float32, seed=8)
    w = projection(256, 64).float()
    ref = favor_attention(q, k, v, w, causal=causal)
    out = favor_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), w, causal=causal)
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).norm() / ref.norm() < 0.03
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lin = torch.nn.Linear(64, 64)
        q16 = lin(q)
        out = favor_attention(q16, k, v, w, causal=causal)
    ref = favor_attention(lin(q).detach(), k, v, w, causal=causal)
    assert (out.float() - ref).norm() / ref.norm() < 0.03


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("causal", [False, True])
def test_gradcheck(kernel, causal):
    q, k, v = qkv(b=1, h=2, length=9, d=4)
    mask = torch.zeros(1, 9, dtype=torch.bool)
    mask[0, 7:] = True
    w = projection(6, 4)
    inputs = tuple(t.clone().requires_grad_() for t in (q, k, v))

    def fn(q, k, v):
        return favor_attention(q, k, v, w, kernel=kernel, causal=causal, key_padding_mask=mask, chunk_size=4)

    assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize("causal", [False, True])
def test_gradients_match_explicit_product(causal):
    q, k, v = qkv(length=40)
    w = projection()
    grads = []
    for fn in (favor_attention, favor_attention_naive):
        ins = [t.clone().requires_grad_() for t in (q, k, v)]
        out = fn(*ins, w, causal=causal, **({"chunk_size": 16} if fn is favor_attention else {}))
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        grads.append([t.grad for t in ins])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("causal", [False, True])
def test_softmax_attention_matches_naive(causal):
    q, k, v = qkv(length=25)
    mask = torch.zeros(2, 25, dtype=torch.bool)
    mask[0, 18:] = True
    torch.testing.assert_close(
        softmax_attention(q, k, v, causal=causal, key_padding_mask=mask),
        softmax_attention_naive(q, k, v, causal=causal, key_padding_mask=mask),
    )


def test_shape_errors_are_clear():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="key_padding_mask"):
        favor_attention(q, k, v, projection(), key_padding_mask=torch.zeros(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="unknown kernel"):
        favor_attention(q, k, v, projection(), kernel="gelu")
    with pytest.raises(ValueError, match=r"\[B, H, L, d\]"):
        favor_attention(q[0], k[0], v[0], projection())


def test_random_features_estimate_the_softmax_kernel_scale():
    # φ(q)ᵀφ(k) must estimate exp(qᵀk/√d) itself, not just up to a constant.
    q, k, _ = qkv(b=1, h=1, length=4, d=4, norm=1.0)
    g = torch.Generator().manual_seed(0)
    est = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    for _ in range(400):
        w = draw_projection(64, 4, generator=g, dtype=torch.float64)
        est += random_features(q, w) @ random_features(k, w).transpose(-1, -2) / 400
    exact = torch.exp(q @ k.transpose(-1, -2) / 2)
    torch.testing.assert_close(est, exact, rtol=0.02, atol=0)
    assert math.isfinite(est.sum().item())
