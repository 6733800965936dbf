"""Attention maps of a trained model over a window of a sequence, without materializing L×L.

Each layer forms its own window ``[start, start + W)`` of the row-normalized attention matrix it applies
(``attention_window``; the math is in :mod:`protein_performer.attention.ops.naive`): for a FAVOR layer
from its own (stabilized) features, the normalizer running over the whole sequence (over j' ≤ i when
causal), at a cost of O(L·M + W²·M); for an exact-attention layer the softmax rows of the window over
all keys, O(W·L). Shapes: tokens ``[B, L]``, windows ``[B, layers, H, W, W]``.
"""

from __future__ import annotations

import torch
from torch import Tensor

# BPT1_BOVIN (UniProt P00974), the mature bovine pancreatic trypsin inhibitor (residues 36-93): the
# paper's attention-map example.
BPT1_BOVIN = "RPDFCLEPPYTGPCKARIIRYFYNAKAGLCQTFVYGGCRAKRNNFKSAEDCMRTCGGA"


@torch.no_grad()
def attention_windows(model, tokens: Tensor, start: int, window: int, padding_mask: Tensor | None = None) -> Tensor:
    """Every layer's attention over token positions ``[start, start + W)`` of ``tokens`` ``[B, L]``:
    ``[B, layers, H, W, W]`` (float64), for a :class:`~protein_performer.model.PerformerLM`."""
    if not 0 <= start < tokens.shape[1]:
        raise ValueError(f"window start {start} is outside the {tokens.shape[1]} positions")
    if window < 1:
        raise ValueError(f"window must be positive, got {window}")
    windows = [layer.attention_window(q.double(), k.double(), start, window, mask)
               for layer, q, k, mask in model.attention_inputs(tokens, padding_mask)]
    return torch.stack(windows, dim=1)


def sequence_attention_maps(plm, sequence: str, *, start: int = 0, window: int = 256) -> Tensor:
    """Attention between residues ``[start, start + W)`` (0-based) of ``sequence`` for every layer and
    head of a :class:`~protein_performer.inference.ProteinLanguageModel`: ``[layers, H, W, W]``
    (float32). The model sees the whole sequence (``<cls> residues <eos>``); only the window is formed."""
    tokens = plm.tokenize(sequence).to(plm.device)
    length = len(tokens) - 2
    if not 0 <= start < length:
        raise ValueError(f"`start` {start} is outside the sequence of {length} residues (0-based)")
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
