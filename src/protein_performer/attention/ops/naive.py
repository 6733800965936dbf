"""Plain references that write attention matrices out, and the one home of that math.

Slow and quadratic on purpose: the fast paths are tested against these. The analyses look at the same
matrices, so the parts of them they read also live here, computed the same way: a block of query rows
of the masked softmax (``softmax_attention_rows``, behind every exact matrix, window and column sum),
a W×W window, and the attention each key receives (column sums). For FAVOR those come from a layer's
own stabilized features (``favor_window``, ``favor_received``) in O(L·M + W²·M), without the L×L matrix.

Shapes: q, k ``[B, H, L, d]`` (``[L, d]`` works too when there is no padding mask); features
``[B, H, L, M]``; ``key_padding_mask`` bool ``[B, L]``, True at padding; matrices ``[B, H, L, L]``,
row blocks ``[B, H, R, L]``, windows ``[B, H, W, W]``, column sums ``[B, H, L]``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..feature_maps import random_features
from .linear import causal_product, gate_matrix

ROW_BLOCK = 256


def _mask_scores(scores: Tensor, start: int, causal: bool, key_padding_mask: Tensor | None, fill: float,
                 window: int | None = None) -> Tensor:
    """Fill ``scores`` ``[..., R, L]`` (query rows ``start .. start + R − 1``) at padded keys, when
    causal at keys after the query, and with a ``window`` at keys more than ``window`` positions away."""
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, None, :], fill)
    rows = torch.arange(start, start + scores.shape[-2], device=scores.device)[:, None]
    offset = torch.arange(scores.shape[-1], device=scores.device)[None, :] - rows  # j − i
    if causal:
        scores = scores.masked_fill(offset > 0, fill)
    if window is not None:
        scores = scores.masked_fill(offset.abs() > window, fill)
    return scores


# -- exact softmax attention ----------------------------------------------------------------------------
def softmax_attention_rows(q: Tensor, k: Tensor, start: int, end: int, *, causal: bool = False,
                           key_padding_mask: Tensor | None = None, band: int | None = None) -> Tensor:
    """Query rows ``[start, end)`` of ``softmax(q kᵀ/√d)`` over unmasked keys: ``[B, H, end − start, L]``.
    ``band``: only keys at most that many positions from the query (local attention). A query with no
    key left gets a zero row."""
    scores = torch.matmul(q[..., start:end, :], k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    return torch.softmax(_mask_scores(scores, start, causal, key_padding_mask, -math.inf, band), dim=-1).nan_to_num(0.0)


def softmax_attention_matrix(q: Tensor, k: Tensor, *, causal: bool = False, key_padding_mask: Tensor | None = None,
                             band: int | None = None) -> Tensor:
    """``softmax(q kᵀ/√d)`` ``[B, H, L, L]`` over unmasked keys (within ``band`` of the query when given)."""
    return softmax_attention_rows(q, k, 0, q.shape[-2], causal=causal, key_padding_mask=key_padding_mask, band=band)


def softmax_attention_naive(
    q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, key_padding_mask: Tensor | None = None, band: int | None = None
) -> Tensor:
    """``softmax(q kᵀ/√d) v`` with the L×L matrix written out."""
    return torch.matmul(softmax_attention_matrix(q, k, causal=causal, key_padding_mask=key_padding_mask, band=band), v)


def softmax_window(q: Tensor, k: Tensor, start: int, window: int, *, causal: bool = False,
                   key_padding_mask: Tensor | None = None, band: int | None = None) -> Tensor:
    """Rows and columns ``[start, start + window)`` of ``softmax(q kᵀ/√d)`` (rows over all keys), in
    O(W·L); a window running past the end is cut there."""
    end = min(start + window, q.shape[-2])
    return softmax_attention_rows(q, k, start, end, causal=causal, key_padding_mask=key_padding_mask, band=band)[..., start:end]


def softmax_received(q: Tensor, k: Tensor, *, causal: bool = False, key_padding_mask: Tensor | None = None,
                     band: int | None = None) -> Tensor:
    """``Σ_i A_ij`` ``[B, H, L]`` for ``A = softmax(q kᵀ/√d)`` over real keys and real queries,
    ``ROW_BLOCK`` query rows at a time (memory O(ROW_BLOCK·L))."""
    length = q.shape[-2]
    received = torch.zeros(q.shape[:-1], dtype=q.dtype, device=q.device)
    for start in range(0, length, ROW_BLOCK):
        end = min(start + ROW_BLOCK, length)
        attn = softmax_attention_rows(q, k, start, end, causal=causal, key_padding_mask=key_padding_mask, band=band)
        if key_padding_mask is not None:
            attn = attn.masked_fill(key_padding_mask[:, None, start:end, None], 0.0)
        received += attn.sum(-2)
    return received


# -- FAVOR ----------------------------------------------------------------------------------------------
def favor_attention_matrix(
    q: Tensor,
    k: Tensor,
    projection: Tensor,
    *,
    kernel: str = "softmax",
    causal: bool = False,
    key_padding_mask: Tensor | None = None,
) -> Tensor:
    """The row-normalized L×L attention matrix ``[B, H, L, L]`` that FAVOR implicitly applies:
    ``A_ij = φ(q_i)ᵀφ(k_j) / Σ_j' φ(q_i)ᵀφ(k_j')`` over unmasked keys (the paper's features)."""
    scores = torch.matmul(random_features(q, projection, kernel), random_features(k, projection, kernel).transpose(-1, -2))
    scores = _mask_scores(scores, 0, causal, key_padding_mask, 0.0)
    return scores / scores.sum(-1, keepdim=True)


def favor_attention_naive(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    projection: Tensor,
    *,
    kernel: str = "softmax",
    causal: bool = False,
    key_padding_mask: Tensor | None = None,
) -> Tensor:
    """FAVOR through the explicit L×L product of the unstabilized features (run it in float64)."""
    attn = favor_attention_matrix(q, k, projection, kernel=kernel, causal=causal, key_padding_mask=key_padding_mask)
    return torch.matmul(attn, v)


def _denominators(qf: Tensor, kf: Tensor, causal: bool, log_scale: Tensor | None) -> Tensor:
    """``D_i = Σ_j q′_i·k′_j e^{g_j − g_i}`` over keys j ≤ i (all keys when bidirectional): ``[B, H, L, 1]``."""
    if causal:
        return causal_product(qf, kf, qf.new_ones((*qf.shape[:-1], 1)), log_scale=log_scale)
    return (qf * kf.sum(dim=-2, keepdim=True)).sum(-1, keepdim=True)


def favor_window(qf: Tensor, kf: Tensor, start: int, window: int, *, causal: bool = False,
                 log_scale: Tensor | None = None) -> Tensor:
    """Rows and columns ``[start, start + window)`` of the normalized attention matrix implied by
    query features ``qf`` and key features ``kf`` ``[B, H, L, M]`` (padded keys already zero) as a layer
    applies them: ``A_ij = q′_i·k′_j e^{g_j − g_i} / D_i``, the normalizer over the whole sequence (j ≤ i
    when causal; ``log_scale`` g ``[B, H, L]`` the causal keys' running scale, None: 0)."""
    end = min(start + window, qf.shape[-2])
    q = qf[..., start:end, :]
    scores = torch.matmul(q, kf[..., start:end, :].transpose(-1, -2))
    if causal:
        scores = scores.tril() if log_scale is None else scores * gate_matrix(log_scale[..., start:end], reverse=False)
    return scores / _denominators(qf, kf, causal, log_scale)[..., start:end, :]


def favor_received(qf: Tensor, kf: Tensor, *, causal: bool = False, query_mask: Tensor | None = None,
                   log_scale: Tensor | None = None) -> Tensor:
    """``Σ_i A_ij`` ``[B, H, L]``, the attention key j receives from all (unmasked) queries, for the
    matrix implied by features ``qf``, ``kf`` ``[B, H, L, M]`` (padded keys already zero) and the causal
    ``log_scale`` (see :func:`favor_window`): ``Σ_i k′_j·q′_i e^{g_j − g_i} / D_i`` in O(L·M).
    ``query_mask`` bool ``[B, L]``, True at queries to leave out (padding)."""
    weights = qf / _denominators(qf, kf, causal, log_scale)  # q′_i / D_i
    if query_mask is not None:
        weights = weights.masked_fill(query_mask[:, None, :, None], 0.0)
    if causal:  # key j hears only queries i ≥ j: a reversed gated sum
        back = None if log_scale is None else -log_scale
        ones = kf.new_ones((*kf.shape[:-1], 1))
        return causal_product(kf, weights, ones, log_scale=back, reverse=True)[..., 0]
    return (kf * weights.sum(-2, keepdim=True)).sum(-1)
