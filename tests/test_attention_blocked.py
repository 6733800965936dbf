"""FAVOR+ in blocks of positions (``recompute=True``; the CPU default for large inputs): the same
attention as the explicit L×L product of the same features, whatever the blocks, with padding that
fills whole blocks, causal outputs still blind to later keys, nothing of size M kept for backward."""

import math

import pytest
import torch
from conftest import dominant_late_key, qkv

from protein_performer.attention import draw_projection, favor_attention
from protein_performer.attention.ops import favor as favor_module
from protein_performer.attention.ops import fused
from protein_performer.attention.ops.naive import favor_attention_naive

CHUNK = 16


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of one chunk (16 positions) for the tests' small inputs."""
    monkeypatch.setattr(fused, "BLOCK_BYTES", 1)


def _padding(kind: str, b: int, length: int) -> torch.Tensor | None:
    if kind == "none":
        return None
    pad = torch.zeros(b, length, dtype=torch.bool)
    if kind == "right":
        pad[1, length // 2:] = True
    elif kind == "left":  # the first blocks hold no real key at all
        pad[0, :length - 20] = True
        pad[1, :3 * CHUNK + 5] = True
    return pad


def _run(q, k, v, w, pad, causal, fn):
    """Output and gradients of a loss over the real query rows (a padded query's output is arbitrary)."""
    inputs = [t.clone().requires_grad_() for t in (q, k, v)]
    out = fn(*inputs, w, causal=causal, key_padding_mask=pad)
    if pad is not None:
        out = out.masked_fill(pad[:, None, :, None], 0.0)
    (out * torch.sin(torch.arange(out.numel(), dtype=out.dtype)).view_as(out)).sum().backward()
    return [out, *(i.grad for i in inputs)]


def _naive(q, k, v, w, *, causal, key_padding_mask):
    """The explicit product over each sequence's real positions (a query that sees only padding has no
    defined output there: 0/0, whose NaN would reach every gradient)."""
    if key_padding_mask is None:
        return favor_attention_naive(q, k, v, w, causal=causal)
    outs = []
    for b, pad in enumerate(key_padding_mask):
        real = (~pad).nonzero().flatten()
        out = v.new_zeros(v.shape[1:])
        out[:, real] = favor_attention_naive(*(t[b:b + 1, :, real] for t in (q, k, v)), w, causal=causal)[0]
        outs.append(out)
    return torch.stack(outs)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padding", ["none", "right", "left"])
def test_blocks_equal_the_explicit_product_of_the_same_features(small_blocks, causal, padding):
    q, k, v = qkv(b=2, h=3, length=150, d=8, seed=3)
    q, k = 1.5 * q, 1.5 * k
    w = torch.stack([draw_projection(24, 8, generator=torch.Generator().manual_seed(i), dtype=torch.float64) for i in range(3)])
    pad = _padding(padding, 2, 150)
    blocked = _run(q, k, v, w, pad, causal,
                   lambda *a, **kw: favor_attention(*a, **kw, chunk_size=CHUNK, recompute=True))
    naive = _run(q, k, v, w, pad, causal, _naive)
    for got, ref in zip(blocked, naive):
        torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("causal", [False, True])
def test_blocks_equal_the_features_kept_in_float32(small_blocks, causal):
    q, k, v = qkv(b=2, h=2, length=200, d=16, dtype=torch.float32, seed=4)
    w = draw_projection(64, 16, generator=torch.Generator().manual_seed(0))
    pad = _padding("left", 2, 200)
    blocked = _run(q, k, v, w, pad, causal, lambda *a, **kw: favor_attention(*a, **kw, chunk_size=CHUNK, recompute=True))
    kept = _run(q, k, v, w, pad, causal, lambda *a, **kw: favor_attention(*a, **kw, chunk_size=CHUNK, recompute=False))
    for got, ref in zip(blocked, kept):
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


def test_a_dominant_key_in_a_later_block_changes_no_earlier_output_or_gradient(small_blocks):
    """The setting of test_attention_causal (d = 64, M = 256, L = 256): a last key whose exponent exceeds
    the first keys' by far more than float32's range, here 15 blocks after them."""
    q, k, late, v, w = dominant_late_key()

    def run(k):
        inputs = [t.clone().requires_grad_() for t in (q, k, v)]
        out = favor_attention(*inputs, w, causal=True, chunk_size=CHUNK, recompute=True)
        out[..., :-1, :].sum().backward()
        return [out[..., :-1, :], *(t.grad[..., :-1, :] for t in inputs)]

    before, after = run(k), run(late)
    for b, a in zip(before, after):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    ref = favor_attention_naive(q.double(), late.double(), v.double(), w.double(), causal=True)
    error = (after[0].double() - ref[..., :-1, :]).norm(dim=-1) / ref[..., :-1, :].norm(dim=-1)
    assert error.max() < 1e-4


@pytest.mark.parametrize("causal", [False, True])
def test_blocks_keep_nothing_of_size_m_for_backward(small_blocks, causal):
    """q, k, v, the output and per-position scalars; causal, the M×(d+1) state entering each block and
    (on the CPU) the forward's chunk states and C×C scores, which its backward shares: M(d+1)/rows +
    M(d+1)/C + C more numbers per token and head."""
    b, h, length, d, m = 1, 2, 512, 16, 64
    q, k, v = (torch.randn(b, h, length, d, requires_grad=True) for _ in range(3))
    w = draw_projection(m, d, generator=torch.Generator().manual_seed(0))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        favor_attention(q, k, v, w, causal=causal, chunk_size=CHUNK, recompute=True)
    assert not [t for t in saved if t.shape[-2:] == (length, m)]
    per_token_head = sum(t.numel() * t.element_size() for t in saved if t is not w) / (b * h * length)
    shared = m * (d + 1) / CHUNK + CHUNK if causal else 0
    assert per_token_head <= 4 * (4 * d + 2 + m * (d + 1) / CHUNK + shared) + 4 * m * d / (b * h * length)


@pytest.mark.parametrize("causal", [False, True])
def test_bf16_products_in_blocks_stay_close_to_float64(small_blocks, causal):
    q, k, v = qkv(b=1, h=2, length=128, d=16, dtype=torch.float32, seed=5)
    w = draw_projection(64, 16, generator=torch.Generator().manual_seed(0))
    ref = favor_attention_naive(q.double(), k.double(), v.double(), w.double(), causal=causal)
    for precision, low, high in (("float32", 0.0, 1e-5), ("bf16", 1e-4, 2e-2)):
        out = favor_attention(q, k, v, w, causal=causal, chunk_size=CHUNK, recompute=True, precision=precision)
        error = ((out.double() - ref).norm() / ref.norm()).item()
        assert low <= error < high, (precision, error)


def test_block_rows_are_whole_chunks_near_the_byte_budget():
    q = torch.empty(1, 1, 1, 64).expand(2, 8, 100_000, 64)
    rows = fused.block_rows(q, 256, 128)
    assert rows % 128 == 0 and rows * 2 * 8 * 256 * 4 <= fused.BLOCK_BYTES < (rows + 128) * 2 * 8 * 256 * 4
    assert fused.block_rows(q[..., :300, :], 256, 128) == 300  # never more than the sequence
    assert fused.block_rows(torch.empty(1, 1, 1, 64).expand(64, 8, 4096, 64), 256, 128) == 128  # at least one chunk


def test_the_cpu_recomputes_in_blocks_once_a_feature_tensor_reaches_32_mib_unless_memory_is_retained(monkeypatch):
    w = torch.empty(256, 64)
    small, large = torch.empty(1, 8, 2048, 64, device="meta"), torch.empty(1, 8, 4096, 64, device="meta")
    longest, huge = torch.empty(1, 8, 32767, 64, device="meta"), torch.empty(1, 8, 32768, 64, device="meta")
    monkeypatch.setattr(favor_module, "freed_memory_retained", lambda: False)
    assert not favor_module._recompute(small, w)  # 16 MiB of features: kept
    assert favor_module._recompute(large, w)  # 32 MiB: recomputed, in blocks
    assert favor_module.RECOMPUTE_BYTES == 32 * 2**20 == math.prod((1, 8, 4096, 256)) * 4
    monkeypatch.setattr(favor_module, "freed_memory_retained", lambda: True)
    assert not favor_module._recompute(large, w)  # freed memory is reused: keeping the features is faster
    assert not favor_module._recompute(longest, w)
    assert favor_module._recompute(huge, w)  # 256 MiB of features: blocks for the memory, wherever
    assert favor_module.KEEP_BYTES_MAX == 256 * 2**20 == math.prod((1, 8, 32768, 256)) * 4


@pytest.mark.slow
def test_compiled_blocked_attention_is_one_block_and_one_graph(small_blocks):
    """Under torch.compile the whole sequence is one block (no loop to unroll), and equals eager's blocks."""
    q, k, v = qkv(b=1, h=2, length=96, d=8, dtype=torch.float32, seed=6)
    w = draw_projection(16, 8, generator=torch.Generator().manual_seed(0))
    compiled = torch.compile(favor_attention, fullgraph=True, backend="aot_eager")
    for causal in (False, True):
        got = _run(q, k, v, w, None, causal, lambda *a, **kw: compiled(*a, **kw, chunk_size=CHUNK, recompute=True))
        ref = _run(q, k, v, w, None, causal, lambda *a, **kw: favor_attention(*a, **kw, chunk_size=CHUNK, recompute=True))
        for a, b in zip(got, ref):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
