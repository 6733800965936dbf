"""Rotary position embeddings (RoFormer; as in ESM-2): rotate pairs of q/k channels by position."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Rotary(nn.Module):
    """Applies ``x·cos(pθ) + rotate_half(x)·sin(pθ)`` to q and k ``[B, H, L, d]`` (ESM-2's layout:
    channel i pairs with channel i + d/2). Works at any length; nothing is cached across lengths.

    The frequencies θ are a saved buffer, not only recomputed: a converted model keeps the ones it was
    trained with (ESM-2 stores them rounded to fp16, and rotating with the exact ones changes its
    outputs, by more the longer the protein). A checkpoint without them gets the standard ones."""

    inv_freq: Tensor

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        self.register_buffer("inv_freq", standard_frequencies(head_dim, base))

    def forward(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        positions = torch.arange(q.shape[-2], device=q.device, dtype=torch.float32)
        angles = torch.outer(positions, self.inv_freq)  # [L, d/2]
        angles = torch.cat([angles, angles], dim=-1)
        cos, sin = angles.cos().to(q.dtype), angles.sin().to(q.dtype)
        return _rotate(q, cos, sin), _rotate(k, cos, sin)


def standard_frequencies(head_dim: int, base: float = 10000.0) -> Tensor:
    """θ_i = base^(−2i/d), i < d/2, in float32."""
    return 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin
