"""FAVOR+ (positive softmax features) as autograd functions: feature maps and attention together.

Same math as ``feature_maps.PositiveSoftmax``'s ``query_features``/``key_features`` followed by
``linear.linear_attention``, but with the backward pass written out, so that the feature maps cost no
extra ``[B, H, L, M]`` tensors. Two ways to run it:

- :class:`_FavorKept` keeps the two feature tensors between forward and backward (2·M numbers per
  token and head): fastest where they are small, no feature product is computed twice.
- :class:`_FavorBlocked` keeps nothing of size M (backward recomputes the features from q and k, one
  product each; causal on the CPU, each block's chunk states and scores are kept for its backward as
  the kept path keeps them, M(d+1)/C + C numbers per token and head) and runs both passes in blocks of
  positions: what GPUs want (one block there, where memory is scarce and the products cheap), and on
  the CPU cache-sized blocks, whose tensors the allocator reuses instead of faulting fresh pages in.
  Bidirectional blocks add up the keys' state with an online maximum (rescaled when it grows, as flash
  attention does its softmax); causal blocks hand each other the gated state and its gate, forward in
  the forward pass and backward in the backward pass (``linear.causal_parts(initial=...)``).

With x̃ = x·s, s = d^(-1/4), ``p = x̃ Wᵀ`` and features ``exp(p − ‖x̃‖²/2 − c)``:

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

from .linear import CausalParts, causal_backward, causal_parts, fill_unset, key_stabilizer, normalize, running_key_max, with_ones

BLOCK_BYTES = 8 * 2**20


def block_rows(q: Tensor, features: int, chunk: int) -> int:
    """Positions per block for :class:`_FavorBlocked`: on the CPU in eager mode, as many whole chunks
    as keep one block's ``[B, H, rows, M]`` features near ``BLOCK_BYTES`` (they stay in cache, and the
    allocator reuses them instead of faulting fresh pages in); elsewhere the whole sequence."""
    length = q.shape[-2]
    if q.device.type != "cpu" or torch.compiler.is_compiling():
        return length
    per_row = q.shape[0] * q.shape[1] * features * 4
    return min(length, max(1, BLOCK_BYTES // (per_row * chunk)) * chunk)


def _key_logits(k: Tensor, wt: Tensor, pad: Tensor | None) -> Tensor:
    """``k̃ Wᵀ − ‖k̃‖²/2`` ``[B, H, rows, M]`` (the scale folded into W), −inf at padded keys."""
    logits = torch.matmul(k, wt)
    logits.sub_(k.pow(2).sum(-1, keepdim=True).mul_(0.5 / math.sqrt(k.shape[-1])))
    return logits if pad is None else logits.masked_fill_(pad, -math.inf)


def _query_features(q: Tensor, wt: Tensor) -> Tensor:
    qf = torch.matmul(q, wt)
    return qf.sub_(qf.amax(dim=-1, keepdim=True)).exp_()


def _gu(grad_out: Tensor, out: Tensor, den: Tensor) -> Tensor:
    """dL/d[num, den] ``[..., D+1]`` from dL/d(output) for ``out = num / den``."""
    return torch.cat([grad_out, -(grad_out * out).sum(-1, keepdim=True)], dim=-1).div_(den)


def _key_grad(k: Tensor, grad_kp: Tensor, w: Tensor) -> Tensor:
    """dL/dk from dL/d(key exponents) ``grad_kp``: through ``k̃ Wᵀ`` and ``−‖k̃‖²/2``."""
    return torch.matmul(grad_kp, w).sub_(k * grad_kp.sum(-1, keepdim=True).mul_(1 / math.sqrt(k.shape[-1])))


class _FavorKept(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q_in: Tensor, k_in: Tensor, v_in: Tensor, projection: Tensor, pad: Tensor | None, causal: bool,
                chunk: int, product_dtype: torch.dtype | None) -> Tensor:
        # Computed in float32 (float64 for float64 inputs); what backward needs is kept in the inputs' dtype,
        # so bf16 inputs cost bf16 memory between the passes, as flash attention's do.
        work = torch.promote_types(q_in.dtype, torch.float32)
        q, k, v = q_in.to(work), k_in.to(work), v_in.to(work)
        low = product_dtype or work
        w = projection.to(work) * q.shape[-1] ** -0.25  # [M, d] or [H, M, d]: the scale s folded into W
        wt = w.transpose(-1, -2)
        qf, kf = _query_features(q, wt), _key_logits(k, wt, pad)
        stab = key_stabilizer(kf, causal)
        kf = kf.sub_(stab).exp_()
        log_scale = stab.squeeze(-1) if causal else None
        qf, kf = qf.to(low), kf.to(low)
        ve = with_ones(v)  # [B, H, L, D+1]: the normalizer rides along as a ones column
        state, parts = None, (None, None)
        if causal:
            u, parts = causal_parts(qf, kf, ve.to(low), log_scale=log_scale, chunk=chunk)
        else:
            state = torch.matmul(kf.transpose(-1, -2), ve.to(low))  # [B, H, M, D+1]
            u = torch.matmul(qf, state)
        out, den = normalize(u.to(work))
        ctx.save_for_backward(q_in, k_in, v_in, w, out.to(q_in.dtype), den, state, log_scale, qf, kf, *parts[:2])
        ctx.causal, ctx.chunk, ctx.product_dtype = causal, chunk, low
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        q_in, k_in, v_in, w, out, den, state, log_scale, qf_, kf_, *parts = ctx.saved_tensors
        low, work = ctx.product_dtype, w.dtype
        k, v, out, grad_out = k_in.to(work), v_in.to(work), out.to(work), grad_out.to(work)
        qf, kf = qf_.to(work), kf_.to(work)
        ve_ = with_ones(v).to(low)
        gu_ = _gu(grad_out, out, den).to(low)
        # Each feature gradient is a fresh product times the features (through exp: dp = dφ ⊙ φ).
        if ctx.causal:
            grad_q, grad_kp, grad_ve, _ = causal_backward(qf_, kf_, ve_, gu_, log_scale, ctx.chunk, CausalParts(*parts),
                                                          finish_q=lambda g, qf=qf: torch.matmul(g.to(work).mul_(qf), w))
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
        grad_k = _key_grad(k, grad_kp, w)
        return grad_q.to(q_in.dtype), grad_k.to(k_in.dtype), grad_ve[..., :-1].to(v_in.dtype), None, None, None, None, None


class _FavorBlocked(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q_in: Tensor, k_in: Tensor, v_in: Tensor, projection: Tensor, pad: Tensor | None, causal: bool,
                chunk: int, product_dtype: torch.dtype | None, rows: int) -> Tensor:
        work = torch.promote_types(q_in.dtype, torch.float32)
        q, k, v = q_in.to(work), k_in.to(work), v_in.to(work)
        low = product_dtype or work
        w = projection.to(work) * q.shape[-1] ** -0.25
        wt = w.transpose(-1, -2)
        (b, h, length, _), dim, m = q.shape, v.shape[-1], w.shape[-2]
        blocks = [slice(s, min(s + rows, length)) for s in range(0, length, rows)]
        pads = [None if pad is None else pad[:, :, sl] for sl in blocks]
        out, den = q.new_empty(b, h, length, dim), q.new_empty(b, h, length, 1)
        shared: list[Tensor] = []  # causal, on the CPU: each block's chunk states and scores, for its backward
        if causal:
            seen, initial, log_scale, entering = q.new_full((b, h), -math.inf), None, q.new_empty(b, h, length), []
            for sl, p in zip(blocks, pads):
                logits = _key_logits(k[:, :, sl], wt, p)
                running = running_key_max(logits, seen)
                seen, g = running[..., -1], fill_unset(running)
                log_scale[:, :, sl] = g
                kf = logits.sub_(g[..., None]).exp_()
                qf = _query_features(q[:, :, sl], wt)
                u, parts = causal_parts(qf.to(low), kf.to(low), with_ones(v[:, :, sl]).to(low), log_scale=g, chunk=chunk,
                                        initial=initial)
                if initial is not None:
                    entering.append(initial[0])
                if q.device.type == "cpu":
                    shared += [parts.carried, parts.scores]
                initial = (parts.total, g[..., -1])
                out[:, :, sl], den[:, :, sl] = normalize(u.to(work))
            kept = (log_scale, torch.stack(entering) if entering else None)
        else:
            state, seen, stab = q.new_zeros(b, h, m, dim + 1), q.new_full((b, h, 1, 1), -math.inf), q.new_zeros(b, h, 1, 1)
            for sl, p in zip(blocks, pads):
                logits = _key_logits(k[:, :, sl], wt, p)
                seen = torch.maximum(seen, logits.amax(dim=(-2, -1), keepdim=True))
                new = seen.masked_fill(torch.isinf(seen), 0.0)  # 0 while every key so far is padding
                state.mul_(torch.exp((stab - new).clamp_(max=0.0)))
                stab = new
                kf = logits.sub_(stab).exp_()
                state.add_(torch.matmul(kf.to(low).transpose(-1, -2), with_ones(v[:, :, sl]).to(low)))
            product_state = state.to(low)
            for sl in blocks:
                u = torch.matmul(_query_features(q[:, :, sl], wt).to(low), product_state)
                out[:, :, sl], den[:, :, sl] = normalize(u.to(work))
            kept = (stab, state)
        ctx.save_for_backward(q_in, k_in, v_in, w, pad, out.to(q_in.dtype), den, *kept, *shared)
        ctx.causal, ctx.chunk, ctx.product_dtype, ctx.blocks = causal, chunk, low, blocks
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        q_in, k_in, v_in, w, pad, out, den, *kept = ctx.saved_tensors
        kept, shared = kept[:2], kept[2:]
        low, work, blocks = ctx.product_dtype, w.dtype, ctx.blocks
        q, k, v, out, grad_out = q_in.to(work), k_in.to(work), v_in.to(work), out.to(work), grad_out.to(work)
        wt = w.transpose(-1, -2)
        grad_q, grad_k, grad_v = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)

        def gu_of(sl: slice) -> Tensor:
            return _gu(grad_out[:, :, sl], out[:, :, sl], den[:, :, sl])

        if ctx.causal:
            log_scale, entering = kept
            after = None
            for i in reversed(range(len(blocks))):
                sl, p = blocks[i], None if pad is None else pad[:, :, blocks[i]]
                g = log_scale[:, :, sl]
                qf = _query_features(q[:, :, sl], wt)
                kf = _key_logits(k[:, :, sl], wt, p).sub_(g[..., None]).exp_()
                before = None if i == 0 else (entering[i - 1], log_scale[:, :, sl.start - 1])
                forward = CausalParts(*shared[2 * i:2 * i + 2]) if shared else None
                dq, dk, dve, after = causal_backward(qf.to(low), kf.to(low), with_ones(v[:, :, sl]).to(low), gu_of(sl).to(low),
                                                     g, ctx.chunk, forward, before=before, after=after)
                grad_q[:, :, sl] = torch.matmul(dq.to(work).mul_(qf), w)
                grad_k[:, :, sl] = _key_grad(k[:, :, sl], dk.to(work).mul_(kf), w)
                grad_v[:, :, sl] = dve[..., :-1]
        else:
            stab, state = kept
            grad_state = torch.zeros_like(state)
            state_t = state.to(low).transpose(-1, -2)
            for sl in blocks:
                qf, gu = _query_features(q[:, :, sl], wt), gu_of(sl).to(low)
                grad_q[:, :, sl] = torch.matmul(torch.matmul(gu, state_t).to(work).mul_(qf), w)
                grad_state.add_(torch.matmul(qf.to(low).transpose(-1, -2), gu))
            grad_state = grad_state.to(low)
            for sl in blocks:
                p = None if pad is None else pad[:, :, sl]
                kf = _key_logits(k[:, :, sl], wt, p).sub_(stab).exp_()
                ve = with_ones(v[:, :, sl]).to(low)
                grad_v[:, :, sl] = torch.matmul(kf.to(low), grad_state[..., :-1])
                grad_k[:, :, sl] = _key_grad(k[:, :, sl], torch.matmul(ve, grad_state.transpose(-1, -2)).to(work).mul_(kf), w)
        return grad_q.to(q_in.dtype), grad_k.to(k_in.dtype), grad_v.to(v_in.dtype), None, None, None, None, None, None


def favor_positive(q: Tensor, k: Tensor, v: Tensor, projection: Tensor, *, key_padding_mask: Tensor | None,
                   causal: bool, chunk: int, product_dtype: torch.dtype | None = None, recompute: bool = True) -> Tensor:
    """Normalized FAVOR+ attention ``[B, H, L, D]`` for the positive softmax kernel, computed in float32
    (float64 for float64 inputs) whatever the inputs' dtype, the result in that working dtype; the
    feature products in ``product_dtype`` (None: the working dtype); ``recompute``: backward recomputes
    the features instead of keeping them (2·M numbers per token and head), and both passes run in
    blocks of :func:`block_rows` positions."""
    pad = None if key_padding_mask is None else key_padding_mask[:, None, :, None]
    if recompute:
        rows = block_rows(q, projection.shape[-2], chunk)
        return _FavorBlocked.apply(q, k, v, projection, pad, causal, chunk, product_dtype, rows)
    return _FavorKept.apply(q, k, v, projection, pad, causal, chunk, product_dtype)
