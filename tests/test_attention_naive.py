"""The references the analyses read (windows and column sums of attention matrices) against the
L×L matrices and the fast path: one masked softmax, FAVOR's matrix from a layer's own features."""

import pytest
import torch
from conftest import qkv

from protein_performer.attention import KERNELS, favor_attention, feature_map
from protein_performer.attention.ops.naive import (
    favor_attention_matrix,
    favor_received,
    favor_window,
    softmax_attention_matrix,
    softmax_attention_rows,
    softmax_received,
    softmax_window,
)


def _padding():
    pad = torch.zeros(2, 40, dtype=torch.bool)
    pad[1, 31:] = True
    return pad


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("causal", [False, True])
def test_favor_window_equals_the_explicit_matrix_of_the_same_features(kernel, causal):
    q, k, v = qkv(b=2, h=3, length=40, d=8, norm=2.0)
    w = torch.randn(3, 24, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    pad = _padding()
    full = favor_attention_matrix(q, k, w, kernel=kernel, causal=causal, key_padding_mask=pad)  # unstabilized, L×L
    qf, (kf, log_scale) = feature_map(kernel).query_features(q, w), feature_map(kernel).key_features(k, w, pad, causal=causal)
    window = favor_window(qf, kf, 5, 17, causal=causal, log_scale=log_scale)
    torch.testing.assert_close(window, full[..., 5:22, 5:22], rtol=1e-9, atol=1e-12)
    # the whole window applied to v is exactly the model's attention output
    whole = favor_window(qf, kf, 0, 40, causal=causal, log_scale=log_scale)
    out = favor_attention(q, k, v, w, kernel=kernel, causal=causal, key_padding_mask=pad)
    torch.testing.assert_close((whole @ v)[0], out[0], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close((whole @ v)[1, :, :31], out[1, :, :31], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("causal", [False, True])
def test_softmax_rows_windows_and_column_sums_are_parts_of_the_matrix(causal):
    q, k, _ = qkv(b=2, h=3, length=40, d=8, norm=2.0)
    pad = _padding()
    full = softmax_attention_matrix(q, k, causal=causal, key_padding_mask=pad)
    assert torch.equal(softmax_attention_rows(q, k, 0, 40, causal=causal, key_padding_mask=pad), full)
    torch.testing.assert_close(softmax_attention_rows(q, k, 7, 19, causal=causal, key_padding_mask=pad), full[..., 7:19, :])
    torch.testing.assert_close(softmax_window(q, k, 5, 17, causal=causal, key_padding_mask=pad), full[..., 5:22, 5:22])
    assert softmax_window(q, k, 30, 50, causal=causal).shape[-1] == 10
    received = softmax_received(q, k, causal=causal, key_padding_mask=pad)
    expected = full.masked_fill(pad[:, None, :, None], 0.0).sum(-2)  # padded queries attend to nothing
    torch.testing.assert_close(received, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("causal", [False, True])
def test_favor_received_equals_column_sums_of_the_explicit_matrix(kernel, causal):
    q, k, _ = qkv(b=2, h=3, length=40, d=8, norm=2.0)
    w = torch.randn(3, 24, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    pad = _padding()
    full = favor_attention_matrix(q, k, w, kernel=kernel, causal=causal, key_padding_mask=pad)
    fm = feature_map(kernel)
    kf, log_scale = fm.key_features(k, w, pad, causal=causal)
    received = favor_received(fm.query_features(q, w), kf, causal=causal, query_mask=pad, log_scale=log_scale)
    torch.testing.assert_close(received, full.masked_fill(pad[:, None, :, None], 0.0).sum(-2), rtol=1e-9, atol=1e-12)
