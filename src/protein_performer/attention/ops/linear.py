"""Normalized linear attention given features: ``out = D⁻¹ Q′(K′ᵀ V)``, bidirectional or causal.

Shapes: features ``[B, H, L, M]``, values ``[B, H, L, D]``. The normalizer rides along as an extra
column of ones appended to V, so numerator and denominator come out of the same products.

Causal attention uses the chunked form: within a chunk of C positions a masked C×C product, across
chunks an M×(D+1) state carried by an (exclusive) prefix sum over chunks; every step is one batched
matrix product over all chunks, so there is no Python loop and no ``[L, M, D]`` tensor. The backward
pass is written out by hand (three more chunked products) and recomputes nothing quadratic, so memory
is linear in L in both directions.
"""

from __future__ import annotations

import torch
from torch import Tensor

DEFAULT_CHUNK = 128


def finite_or_zero(stab: Tensor) -> Tensor:
    """A feature stabilizer of 0 where every key is padding (its features are then all zero)."""
    return stab.masked_fill(~torch.isfinite(stab), 0.0)


def causal_product(q: Tensor, k: Tensor, v: Tensor, *, chunk: int = DEFAULT_CHUNK, reverse: bool = False) -> Tensor:
    """``out_i = Σ_{j ≤ i} (q_i·k_j) v_j`` (``j ≥ i`` with ``reverse=True``), without normalization.

    q, k ``[..., L, M]``; v ``[..., L, D]`` → ``[..., L, D]``. Memory O(L·(C + M + D) + (L/C)·M·D).
    """
    length = q.shape[-2]
    c = min(chunk, length)
    n = -(-length // c)
    pad = n * c - length
    if pad:
        q, k, v = (torch.nn.functional.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
    qc = q.unflatten(-2, (n, c))  # [..., N, C, M]
    kc = k.unflatten(-2, (n, c))
    vc = v.unflatten(-2, (n, c))  # [..., N, C, D]

    # Across chunks: the state each chunk sees, Σ k_j v_jᵀ over the chunks before it (after it when
    # reversed): an exclusive prefix sum over the N per-chunk states, accumulated chunk by chunk in
    # place (torch.cumsum over this non-innermost axis runs at a fraction of memory bandwidth).
    states = torch.matmul(kc.transpose(-1, -2), vc)  # [..., N, M, D]
    carried = torch.empty_like(states)
    order = range(n - 1, -1, -1) if reverse else range(n)
    previous = None
    for i in order:
        if previous is None:
            carried[..., i, :, :].zero_()
        else:
            torch.add(carried[..., previous, :, :], states[..., previous, :, :], out=carried[..., i, :, :])
        previous = i
    out = torch.matmul(qc, carried)  # [..., N, C, D]
    del states, carried
    # Within chunks: the masked C×C product, added in place (no second [L, D] temporary).
    scores = torch.matmul(qc, kc.transpose(-1, -2))  # [..., N, C, C]
    scores = scores.triu_() if reverse else scores.tril_()
    out.view(-1, c, out.shape[-1]).baddbmm_(scores.view(-1, c, c), vc.reshape(-1, c, vc.shape[-1]))
    del scores
    out = out.flatten(-3, -2)
    return out[..., :length, :] if pad else out


def with_ones(v: Tensor) -> Tensor:
    """``[..., D] → [..., D+1]``: V with the normalizer's column of ones appended."""
    return torch.cat([v, v.new_ones((*v.shape[:-1], 1))], dim=-1)


def normalize(u: Tensor) -> tuple[Tensor, Tensor]:
    """Split ``[..., D+1]`` into ``num / den``; a denominator that underflowed to exactly 0 gives 0."""
    den = u[..., -1:]
    den = den.masked_fill(den == 0, 1.0)
    return u[..., :-1] / den, den


class _LinearAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, qf: Tensor, kf: Tensor, v: Tensor, causal: bool, chunk: int) -> Tensor:
        ve = with_ones(v)  # [B, H, L, D+1]
        if causal:
            u = causal_product(qf, kf, ve, chunk=chunk)
        else:
            u = torch.matmul(qf, torch.matmul(kf.transpose(-1, -2), ve))  # Q′ (K′ᵀ [V 1])
        out, den = normalize(u)
        ctx.save_for_backward(qf, kf, v, out, den)
        ctx.causal, ctx.chunk = causal, chunk
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        qf, kf, v, out, den = ctx.saved_tensors
        # dL/dU for U = [num, den]: num-part g/den, den-part −Σ_d g·out / den.
        gu = torch.cat([grad_out, -(grad_out * out).sum(-1, keepdim=True)], dim=-1).div_(den)
        ve = with_ones(v)
        if ctx.causal:
            c = ctx.chunk
            grad_q = causal_product(gu, ve, kf, chunk=c)  # Σ_{j≤i} (g_i·ve_j) k′_j
            grad_k = causal_product(ve, gu, qf, chunk=c, reverse=True)  # Σ_{i≥j} (ve_j·g_i) q′_i
            grad_ve = causal_product(kf, qf, gu, chunk=c, reverse=True)  # Σ_{i≥j} (k′_j·q′_i) g_i
        else:
            state = torch.matmul(kf.transpose(-1, -2), ve)  # [B, H, M, D+1]
            grad_q = torch.matmul(gu, state.transpose(-1, -2))
            grad_state = torch.matmul(qf.transpose(-1, -2), gu)  # [B, H, M, D+1]
            grad_k = torch.matmul(ve, grad_state.transpose(-1, -2))
            grad_ve = torch.matmul(kf, grad_state)
        return grad_q, grad_k, grad_ve[..., :-1], None, None


def linear_attention(qf: Tensor, kf: Tensor, v: Tensor, *, causal: bool = False, chunk: int = DEFAULT_CHUNK) -> Tensor:
    """Normalized attention ``D⁻¹ Q′(K′ᵀV)`` (causal: prefix sums) from features ``[B, H, L, M]``."""
    return _LinearAttention.apply(qf, kf, v, causal, chunk)
