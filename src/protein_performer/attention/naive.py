"""Plain references that materialize the L×L matrix. Slow and quadratic on purpose: the fast paths are
tested against these, and the analyses use them to look at attention matrices."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .features import random_features


def _mask_scores(scores: Tensor, causal: bool, key_padding_mask: Tensor | None, fill: float) -> Tensor:
    length = scores.shape[-1]
    if causal:
        future = torch.ones(length, length, dtype=torch.bool, device=scores.device).triu(1)
        scores = scores.masked_fill(future, fill)
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, None, :], fill)
    return scores


def softmax_attention_matrix(q: Tensor, k: Tensor, *, causal: bool = False, key_padding_mask: Tensor | None = None) -> Tensor:
    """``softmax(q kᵀ/√d)`` ``[B, H, L, L]`` over unmasked keys."""
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    return torch.softmax(_mask_scores(scores, causal, key_padding_mask, -math.inf), dim=-1)


def softmax_attention_naive(
    q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, key_padding_mask: Tensor | None = None
) -> Tensor:
    """``softmax(q kᵀ/√d) v`` with the L×L matrix written out."""
    return torch.matmul(softmax_attention_matrix(q, k, causal=causal, key_padding_mask=key_padding_mask), v)


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
    ``A_ij = φ(q_i)ᵀφ(k_j) / Σ_j' φ(q_i)ᵀφ(k_j')`` over unmasked keys."""
    scores = torch.matmul(random_features(q, projection, kernel), random_features(k, projection, kernel).transpose(-1, -2))
    scores = _mask_scores(scores, causal, key_padding_mask, 0.0)
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
