"""FAVOR+ (positive softmax features) as one autograd function: feature maps and attention together.

Same math as ``feature_maps.PositiveSoftmax``'s ``query_features``/``key_features`` followed by
``linear.linear_attention``, but with the backward pass written out, so that the feature maps cost no
extra ``[B, H, L, M]`` tensors. With ``recompute`` nothing of size M is kept between forward and backward
(backward recomputes the two feature tensors from q and k, one product each): what GPUs want, where
memory is scarce and the products are cheap. Without it the two feature tensors are kept, which is
faster where fresh large allocations are slow (a CPU process with glibc's default malloc). With x̃ = x·s, s = d^(-1/4), ``p = x̃ Wᵀ`` and features ``exp(p − ‖x̃‖²/2 − c)``:

- dL/dq = s·(dq′ ⊙ q′) W (the query row constant c and ‖q̃‖²/2 cancel in the ratio; treating them as
  constants gives the exact gradient because the output does not depend on them);
- dL/dk = s·(dk′ ⊙ k′) W − s²·k·Σ_m (dk′ ⊙ k′)  (the −‖k̃‖²/2 term); the key constant (one per
  (batch, head), or causal the running maximum ``c_t`` over keys ``j ≤ t``, see ``linear.py``) cancels
  likewise: output t depends on ``e^{p_j − c_j}·e^{c_j − c_t}``, in which only its own ``c_t`` is left.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .linear import CausalParts, causal_backward, causal_parts, key_stabilizer, normalize, with_ones


def _features(q: Tensor, k: Tensor, w: Tensor, pad: Tensor | None, causal: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """Stabilized ``q′, k′`` ``[B, H, L, M]`` and the causal ``log_scale`` ``[B, H, L]`` (or None), computed
    in place from one product each: forward computes them, backward recomputes them (cheaper than keeping
    two ``[B, H, L, M]`` tensors alive between the passes)."""
    wt = w.transpose(-1, -2)
    qf = torch.matmul(q, wt)  # [B, H, L, M]
    qf.sub_(qf.amax(dim=-1, keepdim=True)).exp_()
    kf = torch.matmul(k, wt)
    kf.sub_(k.pow(2).sum(-1, keepdim=True).mul_(0.5 / math.sqrt(q.shape[-1])))
    if pad is not None:
        kf.masked_fill_(pad, -math.inf)
    stab = key_stabilizer(kf, causal)
    kf.sub_(stab).exp_()
    return qf, kf, stab.squeeze(-1) if causal else None


class _FavorPositive(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q_in: Tensor, k_in: Tensor, v_in: Tensor, projection: Tensor, pad: Tensor | None, causal: bool,
                chunk: int, product_dtype: torch.dtype | None, recompute: bool) -> Tensor:
        # Computed in float32 (float64 for float64 inputs); what backward needs is kept in the inputs' dtype,
        # so bf16 inputs cost bf16 memory between the passes, as flash attention's do.
        work = torch.promote_types(q_in.dtype, torch.float32)
        q, k, v = q_in.to(work), k_in.to(work), v_in.to(work)
        low = product_dtype or work
        w = projection.to(work) * q.shape[-1] ** -0.25  # [M, d] or [H, M, d]: the scale s folded into W
        qf, kf, log_scale = _features(q, k, w, pad, causal)
        qf, kf = qf.to(low), kf.to(low)
        ve = with_ones(v)  # [B, H, L, D+1]: the normalizer rides along as a ones column
        state, parts = None, (None, None)
        if causal:
            u, parts = causal_parts(qf, kf, ve.to(low), log_scale=log_scale, chunk=chunk)
        else:
            state = torch.matmul(kf.transpose(-1, -2), ve.to(low))  # [B, H, M, D+1]
            u = torch.matmul(qf, state)
        out, den = normalize(u.to(work))
        kept = (None,) * 4 if recompute else (qf, kf, *parts)
        ctx.save_for_backward(q_in, k_in, v_in, w, pad, out.to(q_in.dtype), den, state, log_scale, *kept)
        ctx.causal, ctx.chunk, ctx.product_dtype = causal, chunk, low
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        q_in, k_in, v_in, w, pad, out, den, state, log_scale, qf, kf, *parts = ctx.saved_tensors
        low, work = ctx.product_dtype, w.dtype
        q, k, v, out, grad_out = q_in.to(work), k_in.to(work), v_in.to(work), out.to(work), grad_out.to(work)
        if qf is None:
            qf, kf, _ = _features(q, k, w, pad, ctx.causal)
        else:
            qf, kf = qf.to(work), kf.to(work)
        ve = with_ones(v)
        gu = torch.cat([grad_out, -(grad_out * out).sum(-1, keepdim=True)], dim=-1).div_(den)  # dL/d[num, den]
        qf_, kf_, ve_, gu_ = qf.to(low), kf.to(low), ve.to(low), gu.to(low)  # product operands
        # Each feature gradient is a fresh product times the features (through exp: dp = dφ ⊙ φ).
        if ctx.causal:
            grad_q, grad_kp, grad_ve = causal_backward(qf_, kf_, ve_, gu_, log_scale, ctx.chunk, CausalParts(*parts))
            grad_q = torch.matmul(grad_q.to(work).mul_(qf), w)
            grad_kp = grad_kp.to(work).mul_(kf)
        else:
            grad_state = torch.matmul(qf_.transpose(-1, -2), gu_)  # [B, H, M, D+1]
            grad_ve = torch.matmul(kf_, grad_state)
            # One [B, H, L, M] buffer serves both feature gradients: fresh large tensors cost page faults.
            buf = torch.matmul(gu_, state.transpose(-1, -2))
            grad_q = torch.matmul(buf.to(work).mul_(qf), w)
            if low == work:
                grad_kp = torch.matmul(ve_, grad_state.transpose(-1, -2), out=buf).mul_(kf)
            else:
                grad_kp = torch.matmul(ve_, grad_state.transpose(-1, -2)).to(work).mul_(kf)
            del buf
        del qf, kf, qf_, kf_
        grad_k = torch.matmul(grad_kp, w)
        grad_k.sub_(k * grad_kp.sum(-1, keepdim=True).mul_(1 / math.sqrt(k.shape[-1])))
        return grad_q.to(q_in.dtype), grad_k.to(k_in.dtype), grad_ve[..., :-1].to(v_in.dtype), None, None, None, None, None, None


def favor_positive(q: Tensor, k: Tensor, v: Tensor, projection: Tensor, *, key_padding_mask: Tensor | None,
                   causal: bool, chunk: int, product_dtype: torch.dtype | None = None, recompute: bool = True) -> Tensor:
    """Normalized FAVOR+ attention ``[B, H, L, D]`` for the positive softmax kernel, computed in float32
    (float64 for float64 inputs) whatever the inputs' dtype, the result in that working dtype; the
    feature products in ``product_dtype`` (None: the working dtype); ``recompute``: backward recomputes
    the features instead of keeping them (2·M numbers per token and head)."""
    pad = None if key_padding_mask is None else key_padding_mask[:, None, :, None]
    return _FavorPositive.apply(q, k, v, projection, pad, causal, chunk, product_dtype, recompute)
