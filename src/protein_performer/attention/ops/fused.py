"""FAVOR+ (positive softmax features) as one autograd function: feature maps and attention together.

Same math as ``feature_maps.PositiveSoftmax``'s ``query_features``/``key_features`` followed by
``linear.linear_attention``, but with the backward pass written out, so that the feature maps cost no
extra ``[B, H, L, M]`` tensors: forward keeps the two feature tensors it needs anyway, backward reuses
two buffers in place. With x̃ = x·s, s = d^(-1/4), ``p = x̃ Wᵀ`` and features ``exp(p − ‖x̃‖²/2 − c)``:

- dL/dq = s·(dq′ ⊙ q′) W (the query row constant c and ‖q̃‖²/2 cancel in the ratio; treating them as
  constants gives the exact gradient because the output does not depend on them);
- dL/dk = s·(dk′ ⊙ k′) W − s²·k·Σ_m (dk′ ⊙ k′)  (the −‖k̃‖²/2 term); c is one constant per
  (batch, head) and cancels likewise.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .linear import causal_product, finite_or_zero, normalize, with_ones


class _FavorPositive(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, projection: Tensor, pad: Tensor | None, causal: bool, chunk: int) -> Tensor:
        d = q.shape[-1]
        w = projection.to(q.dtype) * d**-0.25  # [M, d] or [H, M, d]: the scale s folded into W
        wt = w.transpose(-1, -2)
        qf = torch.matmul(q, wt)  # [B, H, L, M]
        qf.sub_(qf.amax(dim=-1, keepdim=True)).exp_()
        kf = torch.matmul(k, wt)
        kf.sub_(k.pow(2).sum(-1, keepdim=True).mul_(0.5 / math.sqrt(d)))
        if pad is not None:
            kf.masked_fill_(pad, -math.inf)
        kf.sub_(finite_or_zero(kf.amax(dim=(-2, -1), keepdim=True))).exp_()
        ve = with_ones(v)  # [B, H, L, D+1]: the normalizer rides along as a ones column
        state = None
        if causal:
            u = causal_product(qf, kf, ve, chunk=chunk)
        else:
            state = torch.matmul(kf.transpose(-1, -2), ve)  # [B, H, M, D+1]
            u = torch.matmul(qf, state)
        out, den = normalize(u)
        ctx.save_for_backward(qf, kf, k, ve, w, out, den, state)
        ctx.causal, ctx.chunk = causal, chunk
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        qf, kf, k, ve, w, out, den, state = ctx.saved_tensors
        gu = torch.cat([grad_out, -(grad_out * out).sum(-1, keepdim=True)], dim=-1).div_(den)  # dL/d[num, den]
        if ctx.causal:
            c = ctx.chunk
            grad_qp = causal_product(gu, ve, kf, chunk=c).mul_(qf)  # through exp: dp = dφ ⊙ φ
            grad_q = torch.matmul(grad_qp, w)
            del grad_qp
            grad_kp = causal_product(ve, gu, qf, chunk=c, reverse=True).mul_(kf)
            grad_ve = causal_product(kf, qf, gu, chunk=c, reverse=True)
        else:
            grad_state = torch.matmul(qf.transpose(-1, -2), gu)  # [B, H, M, D+1]
            grad_ve = torch.matmul(kf, grad_state)
            # One [B, H, L, M] buffer serves both feature gradients: fresh large tensors cost page faults.
            buf = torch.matmul(gu, state.transpose(-1, -2))
            grad_q = torch.matmul(buf.mul_(qf), w)  # through exp: dp = dφ ⊙ φ
            grad_kp = torch.matmul(ve, grad_state.transpose(-1, -2), out=buf).mul_(kf)
        grad_k = torch.matmul(grad_kp, w)
        grad_k.sub_(k * grad_kp.sum(-1, keepdim=True).mul_(1 / math.sqrt(k.shape[-1])))
        return grad_q, grad_k, grad_ve[..., :-1], None, None, None, None


def favor_positive(q: Tensor, k: Tensor, v: Tensor, projection: Tensor, *, key_padding_mask: Tensor | None,
                   causal: bool, chunk: int) -> Tensor:
    """Normalized FAVOR+ attention ``[B, H, L, D]`` for the positive softmax kernel."""
    pad = None if key_padding_mask is None else key_padding_mask[:, None, :, None]
    return _FavorPositive.apply(q, k, v, projection, pad, causal, chunk)
