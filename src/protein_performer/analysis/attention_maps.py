"""Attention maps of a trained model over a window of a sequence, without materializing L×L.

For a FAVOR layer the window ``[start, start + W)`` of its row-normalized attention matrix is
``A_ij = q′_i·k′_j / (q′_i·Σ_j' k′_j')`` from the layer's own (stabilized) features, the normalizer
running over the whole sequence (over j' ≤ i when causal): exactly the matrix the layer applies, at a
cost of O(L·M + W²·M). For an exact-attention layer: the softmax rows of the window over all keys,
O(W·L). Shapes: features ``[B, H, L, M]``, q/k ``[B, H, L, d]``, windows ``[B, H, W, W]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..attention import FavorAttention

# BPT1_BOVIN (UniProt P00974), the mature bovine pancreatic trypsin inhibitor (residues 36-93): the
# paper's attention-map example.
BPT1_BOVIN = "RPDFCLEPPYTGPCKARIIRYFYNAKAGLCQTFVYGGCRAKRNNFKSAEDCMRTCGGA"


def favor_window(qf: Tensor, kf: Tensor, start: int, window: int, *, causal: bool = False) -> Tensor:
    """Rows and columns ``[start, start + window)`` of the normalized attention matrix implied by
    query features ``qf`` and key features ``kf`` ``[B, H, L, M]`` (padded keys already zero)."""
    end = min(start + window, qf.shape[-2])
    q = qf[..., start:end, :]
    if causal:
        totals = kf.cumsum(dim=-2)[..., start:end, :]  # Σ_{j ≤ i} k′_j for each query row of the window
    else:
        totals = kf.sum(dim=-2, keepdim=True)
    scores = torch.matmul(q, kf[..., start:end, :].transpose(-1, -2))
    if causal:
        scores = scores.masked_fill(torch.ones_like(scores, dtype=torch.bool).triu(1), 0.0)
    return scores / (q * totals).sum(-1, keepdim=True)


def softmax_window(q: Tensor, k: Tensor, start: int, window: int, *, causal: bool = False,
                   key_padding_mask: Tensor | None = None) -> Tensor:
    """Rows and columns ``[start, start + window)`` of ``softmax(q kᵀ/√d)`` (rows over all keys)."""
    end = min(start + window, q.shape[-2])
    scores = torch.matmul(q[..., start:end, :], k.transpose(-1, -2)) / math.sqrt(q.shape[-1])  # [B, H, W, L]
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, None, :], -math.inf)
    if causal:
        rows = torch.arange(start, end, device=q.device)[:, None]
        scores = scores.masked_fill(torch.arange(q.shape[-2], device=q.device)[None, :] > rows, -math.inf)
    return torch.softmax(scores, dim=-1)[..., start:end]


def per_layer(model, tokens: Tensor, padding_mask: Tensor | None, favor: Callable, exact: Callable) -> Tensor:
    """Stack ``[B, layers, ...]`` of one quantity of every layer's attention, in float64: ``favor(q′, k′,
    layer, mask)`` from a FAVOR layer's own (stabilized) features, ``exact(q, k, layer, mask)`` from an
    exact layer's q, k. ``mask`` is True at padding, None where there is none."""
    if padding_mask is None:
        padding_mask = tokens.eq(model.config.pad_idx)
    mask = padding_mask if padding_mask.any() else None
    out = []
    for block, (q, k) in zip(model.blocks, model.queries_keys(tokens, padding_mask)):
        q, k, attn = q.double(), k.double(), block.attn
        if isinstance(attn, FavorAttention):
            out.append(favor(*attn.feature_maps(q, k, mask), attn, mask))
        else:
            out.append(exact(q, k, attn, mask))
    return torch.stack(out, dim=1)


@torch.no_grad()
def attention_windows(model, tokens: Tensor, start: int, window: int, padding_mask: Tensor | None = None) -> Tensor:
    """Every layer's attention over token positions ``[start, start + W)`` of ``tokens`` ``[B, L]``:
    ``[B, layers, H, W, W]`` (float64), for a :class:`~protein_performer.model.PerformerLM`."""
    if not 0 <= start < tokens.shape[1]:
        raise ValueError(f"window start {start} is outside the {tokens.shape[1]} positions")
    if window < 1:
        raise ValueError(f"window must be positive, got {window}")
    return per_layer(
        model, tokens, padding_mask,
        favor=lambda qf, kf, attn, mask: favor_window(qf, kf, start, window, causal=attn.causal),
        exact=lambda q, k, attn, mask: softmax_window(q, k, start, window, causal=attn.causal, key_padding_mask=mask),
    )


def sequence_attention_maps(plm, sequence: str, *, start: int = 0, window: int = 256) -> Tensor:
    """Attention between residues ``[start, start + W)`` (0-based) of ``sequence`` for every layer and
    head of a :class:`~protein_performer.inference.ProteinLanguageModel`: ``[layers, H, W, W]``
    (float32). The model sees the whole sequence (``<cls> residues <eos>``); only the window is formed."""
    tokens = plm.tokenize(sequence).to(plm.device)
    length = len(tokens) - 2
    if not 0 <= start < length:
        raise ValueError(f"--start {start} is outside the sequence of {length} residues (0-based)")
    window = min(window, length - start)
    return attention_windows(plm.model, tokens[None], start + 1, window)[0].float().cpu()


def head_statistics(maps: Tensor) -> list[list[dict]]:
    """Per layer and head of ``[layers, H, W, W]``: ``local`` (mean attention mass on keys with
    |i − j| ≤ 2: diagonal patterns), ``top_column`` (the largest mean attention one key receives:
    vertical patterns) and ``mean_distance`` (mean |i − j| under the attention, within the window)."""
    w = maps.shape[-1]
    pos = torch.arange(w, dtype=maps.dtype)
    distance = (pos[:, None] - pos[None, :]).abs()
    stats = []
    for layer in maps:
        stats.append([{
            "local": float(head[distance <= 2].sum() / w),
            "top_column": float(head.mean(0).max()),
            "mean_distance": float((head * distance).sum() / head.sum()),
        } for head in layer])
    return stats
