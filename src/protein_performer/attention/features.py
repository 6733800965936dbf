"""FAVOR feature maps φ: R^d → R^M' for each kernel.

Shapes: x ``[B, H, L, d]``; projection ``[M, d]`` (shared by heads) or ``[H, M, d]``.

``random_features`` gives the features exactly as the paper writes them, so that
``φ(q)ᵀφ(k)`` estimates ``exp(qᵀk/√d)`` for the softmax kernels. ``query_features`` and
``key_features`` give the same features multiplied by constants that cancel in the attention ratio
(one per query row; one per (batch, head) for keys) so that nothing overflows or underflows in float32.
No ε is added after stabilization: it would not cancel and flattens attention toward uniform.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

KERNELS = ("softmax", "softmax_trig", "softmax_hyperbolic", "relu")
RELU_EPSILON = 1e-3


def check_kernel(kernel: str) -> None:
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; choose one of {', '.join(KERNELS)}")


def _project(x: Tensor, projection: Tensor) -> Tensor:
    """x̃ Wᵀ with x̃ = x·d^(-1/4): ``[B, H, L, d] → [B, H, L, M]``."""
    scale = x.shape[-1] ** -0.25
    w = projection.to(x.dtype).transpose(-1, -2)  # [d, M] or [H, d, M]
    return torch.matmul(x * scale, w)


def _half_sq_norm(x: Tensor) -> Tensor:
    """‖x̃‖²/2 with x̃ = x·d^(-1/4): ``[B, H, L, 1]``."""
    return x.pow(2).sum(-1, keepdim=True) * (0.5 / math.sqrt(x.shape[-1]))


def random_features(x: Tensor, projection: Tensor, kernel: str = "softmax") -> Tensor:
    """The paper's unstabilized features ``[B, H, L, M']`` (M' = 2M for trig and hyperbolic).

    Used by the naive references and the analyses; the fast path uses the stabilized maps below.
    """
    check_kernel(kernel)
    m = projection.shape[-2]
    proj = _project(x, projection)
    if kernel == "relu":
        return torch.relu(proj) + RELU_EPSILON
    h = _half_sq_norm(x)
    if kernel == "softmax":
        return torch.exp(proj - h) / math.sqrt(m)
    if kernel == "softmax_hyperbolic":
        return torch.cat([torch.exp(proj - h), torch.exp(-proj - h)], dim=-1) / math.sqrt(2 * m)
    return torch.exp(h) * torch.cat([torch.cos(proj), torch.sin(proj)], dim=-1) / math.sqrt(m)


def finite_or_zero(stab: Tensor) -> Tensor:
    """A stabilizer of 0 where every key is padding (its features are then all zero)."""
    return stab.masked_fill(~torch.isfinite(stab), 0.0)


def _signed(proj: Tensor, kernel: str) -> Tensor:
    return torch.cat([proj, -proj], dim=-1) if kernel == "softmax_hyperbolic" else proj


def query_features(q: Tensor, projection: Tensor, kernel: str = "softmax") -> Tensor:
    """Query features up to a positive constant per row (which cancels in D⁻¹ Q′(K′ᵀV))."""
    check_kernel(kernel)
    proj = _project(q, projection)
    if kernel == "relu":
        return proj.relu_() + RELU_EPSILON  # relu_ keeps its output for backward: add out of place
    if kernel == "softmax_trig":
        return torch.cat([torch.cos(proj), torch.sin(proj)], dim=-1)
    proj = _signed(proj, kernel)
    # exp(ωᵀq̃ − ‖q̃‖²/2) / max over features: ‖q̃‖²/2 is itself a per-row constant, so it drops out.
    row_max = proj.detach().amax(dim=-1, keepdim=True)
    return proj.sub_(row_max).exp_()


def key_features(k: Tensor, projection: Tensor, kernel: str = "softmax", key_padding_mask: Tensor | None = None) -> Tensor:
    """Key features up to one positive constant per (batch, head); padded rows exactly zero.

    The constant is taken over real (unpadded) keys only, so padding content cannot influence it.
    """
    check_kernel(kernel)
    pad = None if key_padding_mask is None else key_padding_mask[:, None, :, None]  # [B, 1, L, 1]
    proj = _project(k, projection)
    if kernel == "relu":
        feats = proj.relu_() + RELU_EPSILON
        return feats if pad is None else feats.masked_fill(pad, 0.0)
    if kernel == "softmax_trig":
        h = _half_sq_norm(k)
        if pad is not None:
            h = h.masked_fill(pad, -math.inf)
        scale = torch.exp(h - finite_or_zero(h.detach().amax(dim=-2, keepdim=True)))  # exp(‖k̃‖²/2 − max_j ‖k̃_j‖²/2)
        return torch.cat([torch.cos(proj), torch.sin(proj)], dim=-1) * scale
    proj = _signed(proj, kernel).sub_(_half_sq_norm(k))
    if pad is not None:
        proj = proj.masked_fill_(pad, -math.inf)
    stab = finite_or_zero(proj.detach().amax(dim=(-2, -1), keepdim=True))  # one constant per (batch, head)
    return proj.sub_(stab).exp_()
