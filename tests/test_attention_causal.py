"""Causal FAVOR never reads the future: the running key stabilizer, the gated chunked sums that carry it,
and the blocked scan across chunks, each against a plain reference."""

import math

import pytest
import torch
from conftest import dominant_late_key, qkv

from protein_performer.attention import favor_attention, feature_map, random_features
from protein_performer.attention.ops.linear import causal_backward, causal_parts, causal_product, gated_prefix, key_stabilizer
from protein_performer.attention.ops.naive import favor_attention_naive

POSITIVE = ("softmax", "softmax_hyperbolic")


@pytest.mark.parametrize("kernel", ["softmax", "softmax_hyperbolic", "softmax_trig"])
@pytest.mark.parametrize("chunk", [64, 100])
def test_a_dominant_late_key_changes_no_earlier_output(kernel, chunk):
    q, k, late, v, w = dominant_late_key()
    before = favor_attention(q, k, v, w, kernel=kernel, causal=True, chunk_size=chunk)
    after = favor_attention(q, late, v, w, kernel=kernel, causal=True, chunk_size=chunk)
    torch.testing.assert_close(after[..., :-1, :], before[..., :-1, :], rtol=1e-6, atol=1e-6)
    assert torch.isfinite(after).all()
    if kernel in POSITIVE:  # and they are the estimator's values, computed in float64 from the paper's features
        ref = favor_attention_naive(q.double(), late.double(), v.double(), w.double(), kernel=kernel, causal=True)
        error = (after.double() - ref).norm(dim=-1) / ref.norm(dim=-1)
        assert error.max() < 1e-4


@pytest.mark.parametrize("kernel", POSITIVE)
def test_a_dominant_late_key_changes_no_earlier_gradient(kernel):
    q, k, late, v, w = dominant_late_key()
    weights = torch.randn(*q.shape[:-2], q.shape[-2] - 1, q.shape[-1], generator=torch.Generator().manual_seed(2))

    def grads(q, k, v, w, fast):
        q, k, v = (t.clone().requires_grad_() for t in (q, k, v))
        if fast:
            out = favor_attention(q, k, v, w, kernel=kernel, causal=True, chunk_size=64)
        else:
            out = favor_attention_naive(q, k, v, w, kernel=kernel, causal=True)
        (out[..., :-1, :] * weights.to(out.dtype)).sum().backward()
        return [t.grad[..., :-1, :] for t in (q, k, v)]

    before, after = grads(q, k, v, w, True), grads(q, late, v, w, True)
    ref = grads(q.double(), late.double(), v.double(), w.double(), False)
    for b, a, r in zip(before, after, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        assert ((a.double() - r).norm() / r.norm()) < 1e-4


def test_the_old_per_sequence_stabilizer_would_have_failed_this_setting():
    """The setting above is a real test: with one key constant per (batch, head), as bidirectional
    attention uses, the first outputs' keys underflow to zero."""
    _, _, late, _, w = dominant_late_key()
    kf, _ = feature_map("softmax").key_features(late, w)  # the bidirectional (whole-sequence) constant
    assert kf[..., :4, :].abs().max() == 0
    kf, _ = feature_map("softmax").key_features(late, w, causal=True)
    assert (kf[..., 0, :].amax(-1) == 1).all()  # the first key is the running maximum at its position


def _gated_prefix_reference(states, log_scale, reverse):
    n = states.shape[-2]
    out = torch.zeros_like(states)
    for i in range(n):
        others = range(i, n) if reverse else range(i + 1)
        for j in others:
            out[..., i, :] += torch.exp(log_scale[..., j] - log_scale[..., i])[..., None] * states[..., j, :]
    return out


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("n", [1, 5, 16, 17, 40, 300])
def test_blocked_scan_equals_the_sequential_sum(n, reverse):
    g = torch.Generator().manual_seed(n)
    states = torch.randn(2, n, 3, generator=g, dtype=torch.float64)
    log_scale = torch.cummax(30 * torch.randn(2, n, generator=g, dtype=torch.float64), dim=-1).values
    if reverse:
        log_scale = log_scale.flip(-1)  # non-decreasing in the direction of the sum
    expected = _gated_prefix_reference(states, log_scale, reverse)
    torch.testing.assert_close(gated_prefix(states, log_scale, reverse=reverse), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("chunk", [1, 7, 16, 45, 64])
def test_gated_causal_product_equals_the_masked_gated_matrix(chunk, reverse):
    g = torch.Generator().manual_seed(chunk)
    q, k = (torch.randn(2, 3, 45, 6, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.randn(2, 3, 45, 5, generator=g, dtype=torch.float64)
    log_scale = torch.cummax(20 * torch.randn(2, 3, 45, generator=g, dtype=torch.float64), dim=-1).values
    if reverse:
        log_scale = -log_scale
    gates = torch.exp(log_scale[..., None, :] - log_scale[..., :, None])  # [out, in]: e^{g_in − g_out}
    scores = (q @ k.transpose(-1, -2)) * gates
    scores = scores.triu() if reverse else scores.tril()
    got = causal_product(q, k, v, log_scale=log_scale, chunk=chunk, reverse=reverse)
    torch.testing.assert_close(got, scores @ v, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("chunk", [7, 16, 45])
@pytest.mark.parametrize("share_forward", [False, True])
def test_shared_backward_equals_autograd_of_the_masked_gated_matrix(chunk, share_forward):
    """The three backward products share their states and scores with each other (and, when kept, with
    the forward pass's, transposed): the gradients are those of the explicit L×L product."""
    g = torch.Generator().manual_seed(100 + chunk)
    qf, kf = (torch.rand(2, 3, 45, 6, generator=g, dtype=torch.float64) for _ in range(2))
    ve = torch.randn(2, 3, 45, 5, generator=g, dtype=torch.float64)
    gu = torch.randn(2, 3, 45, 5, generator=g, dtype=torch.float64)
    log_scale = torch.cummax(5 * torch.randn(2, 3, 45, generator=g, dtype=torch.float64), dim=-1).values
    _, parts = causal_parts(qf, kf, ve, log_scale=log_scale, chunk=chunk)
    got = causal_backward(qf, kf, ve, gu, log_scale, chunk, parts if share_forward else None)
    inputs = [t.clone().requires_grad_() for t in (qf, kf, ve)]
    gates = torch.exp(log_scale[..., None, :] - log_scale[..., :, None]).tril()
    (((inputs[0] @ inputs[1].transpose(-1, -2)) * gates) @ inputs[2]).mul(gu).sum().backward()
    for ours, expected in zip(got, (t.grad for t in inputs)):
        torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-10)


def test_running_stabilizer_is_monotone_causal_and_ignores_padding():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 30, 8, generator=g, dtype=torch.float64) * 10
    logits[0, :, :5] = -math.inf  # leading padding: takes the first real key's value
    logits[1] = -math.inf  # all padding: 0
    stab = key_stabilizer(logits, causal=True)[..., 0]
    assert (stab[0].diff(dim=-1) >= 0).all()
    torch.testing.assert_close(stab[0, :, 5:], torch.cummax(logits[0, :, 5:].amax(-1), dim=-1).values)
    assert (stab[0, :, :5] == stab[0, :, 5:6]).all() and (stab[1] == 0).all()
    later = logits.clone()
    later[0, :, 20:] += 100
    assert torch.equal(key_stabilizer(later, causal=True)[0, :, :20], key_stabilizer(logits, causal=True)[0, :, :20])


@pytest.mark.parametrize("kernel", ["softmax", "softmax_hyperbolic", "softmax_trig", "relu"])
def test_causal_key_features_are_the_papers_times_their_log_scale(kernel):
    _, k, _ = qkv(b=2, h=3, length=20, d=8, norm=2.0)
    w = torch.randn(3, 12, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    pad = torch.zeros(2, 20, dtype=torch.bool)
    pad[1, 15:] = True
    kf, log_scale = feature_map(kernel).key_features(k, w, pad, causal=True)
    assert kf[1, :, 15:].abs().max() == 0
    if kernel == "relu":
        assert log_scale is None
        return
    ratio = kf * torch.exp(log_scale)[..., None] / random_features(k, w, kernel)  # one constant per (batch, head)
    torch.testing.assert_close(ratio[0], ratio[0, :, :1, :1].expand_as(ratio[0]))
    torch.testing.assert_close(ratio[1, :, :15], ratio[1, :, :1, :1].expand_as(ratio[1, :, :15]))
