"""Local (sliding-window) attention: exact softmax over the keys at most ``window`` positions away.

Query i attends keys j with ``|i − j| ≤ window`` (causal: ``0 ≤ i − j ≤ window``), the rest of the
sequence is invisible to it. Computed in blocks of ``window`` positions: block b's queries meet the keys
of blocks b − 1, b and b + 1 (causal: b − 1 and b), which hold every key in reach, and a mask keeps the
exact band. Time and memory are O(L · window), linear in L; the L×L reference is
``naive.softmax_attention_naive(..., band=window)``.

q, k, v ``[B, H, L, d]``; ``key_padding_mask`` bool ``[B, L]``, True at padding. A query with no real
key in reach (only padding queries can be) gets a zero output.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F


def _blocks(x: Tensor, window: int, blocks: int) -> Tensor:
    """``[B, H, L, d]`` → ``[B, H, n, window, d]``, zero-padded to ``n · window`` positions."""
    extra = blocks * window - x.shape[-2]
    return F.pad(x, (0, 0, 0, extra)).unflatten(-2, (blocks, window))


def _neighbours(x: Tensor, causal: bool) -> Tensor:
    """Blocks ``[..., n, w, d]`` → for each block the blocks b − 1, b (and b + 1 unless causal)
    concatenated ``[..., n, 2w or 3w, d]``; zeros beyond either end."""
    before = F.pad(x, (0, 0, 0, 0, 1, 0))[..., :-1, :, :]
    parts = [before, x] if causal else [before, x, F.pad(x, (0, 0, 0, 0, 0, 1))[..., 1:, :, :]]
    return torch.cat(parts, dim=-2)


def local_attention(q: Tensor, k: Tensor, v: Tensor, *, window: int, causal: bool = False,
                    key_padding_mask: Tensor | None = None) -> Tensor:
    """``[B, H, L, dv]``: softmax attention of each query over the keys within ``window`` positions."""
    if window < 1:
        raise ValueError(f"window must be positive, got {window}")
    length = q.shape[-2]
    blocks = -(-length // window)
    kb, vb = (_neighbours(_blocks(x, window, blocks), causal) for x in (k, v))  # [B, H, n, 2w|3w, d]
    qb = _blocks(q, window, blocks)  # [B, H, n, w, d]
    # Positions: query b·w + r, key (b − 1)·w + c; reach and the sequence's ends decide what is kept.
    base = torch.arange(blocks, device=q.device)[:, None, None] * window
    query = base + torch.arange(window, device=q.device)[:, None]  # [n, w, 1]
    key = base - window + torch.arange(kb.shape[-2], device=q.device)  # [n, 1, 2w|3w]
    offset = query - key  # i − j
    keep = (offset.abs() <= window) & (key >= 0) & (key < length)
    if causal:
        keep = keep & (offset >= 0)
    if key_padding_mask is not None:
        real = _neighbours(_blocks((~key_padding_mask)[:, None, :, None].to(q.dtype), window, blocks), causal)
        keep = keep & real.squeeze(-1).bool()[:, :, :, None, :]  # [B, 1, n, w, 2w|3w]
    # A row with nothing to attend to would be NaN (and so would its gradient): it attends to every
    # slot instead and its output is zeroed.
    empty = ~keep.any(dim=-1, keepdim=True)
    out = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=keep | empty).masked_fill(empty, 0.0)
    return out.flatten(-3, -2)[..., :length, :]
