"""Normalized linear attention given features: ``out = D⁻¹ Q′(K′ᵀ V)``, bidirectional or causal.

Shapes: features ``[B, H, L, M]``, values ``[B, H, L, D]``. The normalizer rides along as an extra
column of ones appended to V, so numerator and denominator come out of the same products.

Causal attention is the chunked form of ``u_t = Σ_{j ≤ t} (q′_t·k′_j) e^{g_j − g_t} v_j``: within a
chunk of C positions a masked C×C product, across chunks an M×(D+1) state per chunk, carried to the
later chunks by a blocked scan (:func:`gated_prefix`): batched matrix products all the way, no Python
loop over chunks and no ``[L, M, D]`` tensor. The gate ``g`` is the keys' running stabilizer
(:func:`key_stabilizer`): output t divides its keys by a constant taken from keys ``j ≤ t`` only, so
that a large later key can neither underflow nor change an earlier output; every factor
``e^{g_j − g_t}`` is at most 1. (It is the scalar gate of gated linear attention, log-decay
``g_{t−1} − g_t``.) The backward pass is written out by hand (three more chunked products with the same
gate) and recomputes nothing quadratic, so memory is linear in L in both directions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

DEFAULT_CHUNK = 128
SCAN_BLOCK = 16  # chunks combined by one S×S product per level of the scan across chunks


def key_stabilizer(logits: Tensor, causal: bool) -> Tensor:
    """The constant key features are divided by, from their exponents ``logits`` ``[..., L, M]``
    (``−inf`` at padded keys, which never count): one per (batch, head) ``[..., 1, 1]``, the maximum
    over real keys; causal: the running maximum over keys ``j ≤ t`` ``[..., L, 1]`` (positions before
    the first real key take its value). 0 where every key is padding."""
    if not causal:
        stab = logits.detach().amax(dim=(-2, -1), keepdim=True)
        return stab.masked_fill(~torch.isfinite(stab), 0.0)
    return fill_unset(running_key_max(logits))[..., None]


def running_key_max(logits: Tensor, seen: Tensor | None = None) -> Tensor:
    """``[..., L]``: the maximum of ``logits`` ``[..., L, M]`` over real keys ``j ≤ t`` and ``seen``
    ``[...]`` (the maximum over the keys before these, for a sequence processed in blocks; None: no keys
    before), −inf before the first real key."""
    running = logits.detach().amax(dim=-1)
    if seen is not None:
        running[..., 0] = torch.maximum(running[..., 0], seen)
    return torch.cummax(running, dim=-1).values


def fill_unset(running: Tensor) -> Tensor:
    """A running maximum ``[..., L]`` with its −inf head replaced by its first finite value (0 if none)."""
    unset = torch.isinf(running)  # only before the first real key
    first = running.masked_fill(unset, math.inf).amin(dim=-1, keepdim=True)
    first = first.masked_fill(torch.isinf(first), 0.0)
    return torch.where(unset, first, running)


def gate_matrix(log_scale: Tensor, reverse: bool) -> Tensor:
    """``[..., S, S]``: ``e^{g_in − g_out}`` for in ≤ out (in ≥ out when reversed), 0 elsewhere.

    The exponents are clamped to ≤ 0 (what the kept entries are anyway) and the other half is zeroed
    after the exponential (``exp`` of ``−inf`` or of large arguments takes a scalar path on the CPU,
    3–30× slower than the vectorized one), by a product with the mask: a ``masked_fill_`` whose mask
    is broadcast over the chunks takes longer than the subtraction and the exponential together."""
    diff = log_scale[..., None, :] - log_scale[..., :, None]  # [..., out, in]
    size = log_scale.shape[-1]
    keep = torch.ones(size, size, dtype=torch.bool, device=log_scale.device)
    keep = keep.triu() if reverse else keep.tril()
    return diff.clamp_(max=0.0).exp_().mul_(keep)


def _pad_to(x: Tensor, length: int, dim: int, edge: bool = False) -> Tensor:
    """``x`` extended along ``dim`` to ``length``: zeros, or copies of its last entry (``edge``)."""
    extra = length - x.shape[dim]
    if not extra:
        return x
    tail = x.narrow(dim, x.shape[dim] - 1, 1) if edge else x.new_zeros(())
    shape = list(x.shape)
    shape[dim] = extra
    return torch.cat([x, tail.expand(shape)], dim=dim)


def _shifted(n: int, reverse: bool) -> tuple[slice, slice]:
    """``(src, dst)`` slices of a flattened ``[(…)·N]`` axis pairing item ``i`` with the one before it
    (after it when reversed): contiguous views, so no batched product copies its operands. Pairs that
    cross from one sequence to the next are harmless only because their weight is set to 0."""
    return (slice(1, None), slice(None, -1)) if reverse else (slice(None, -1), slice(1, None))


def _carry_weights(from_scale: Tensor, to_scale: Tensor, reverse: bool) -> Tensor:
    """``e^{from_{n∓1} − to_n}`` ``[(…)·N − 1, S]`` for the items a scan carries into, flattened as in
    :func:`_shifted`, 0 for an item with nothing before it (the first of its sequence).

    from_scale ``[..., N]``, to_scale ``[..., N, S]``."""
    n = to_scale.shape[-2]
    src, dst = _shifted(n, reverse)
    first = torch.zeros(n, dtype=torch.bool, device=to_scale.device)
    first[-1 if reverse else 0] = True
    weights = torch.exp(from_scale.reshape(-1)[src, None] - to_scale.flatten(0, -2)[dst])
    return weights.masked_fill_(first.expand(to_scale.shape[:-1]).reshape(-1)[dst, None], 0.0)


def gated_prefix(states: Tensor, log_scale: Tensor, *, reverse: bool = False) -> Tensor:
    """Inclusive ``P_n = Σ_{m ≤ n} e^{g_m − g_n} s_m`` (``m ≥ n`` reversed) over axis −2 of ``states``
    ``[..., N, X]``, ``log_scale`` g ``[..., N]`` non-decreasing in the direction of the sum.

    A blocked scan: blocks of ``SCAN_BLOCK`` items are summed by one masked S×S product each, the block
    totals recursively the same way, then carried into the blocks after them. Every factor is a
    difference of log scales, ≤ 1, so nothing overflows or underflows that the result keeps."""
    n = states.shape[-2]
    if n == 1:
        return states
    s = min(SCAN_BLOCK, n)
    groups = -(-n // s)
    x = _pad_to(states, groups * s, -2).unflatten(-2, (groups, s))  # [..., G, S, X]
    g = _pad_to(log_scale, groups * s, -1, edge=True).unflatten(-1, (groups, s))  # [..., G, S]
    within = torch.matmul(gate_matrix(g, reverse), x)
    if groups > 1:
        end = 0 if reverse else s - 1
        totals = gated_prefix(within[..., end, :], g[..., end], reverse=reverse)  # [..., G, X]
        src, dst = _shifted(groups, reverse)
        flat = within.view(-1, s, within.shape[-1])  # [(…)·G, S, X]
        weights = _carry_weights(g[..., end], g, reverse)  # [(…)·G − 1, S]
        flat[dst].baddbmm_(weights[..., None], totals.reshape(-1, 1, totals.shape[-1])[src])
    return within.flatten(-3, -2)[..., :n, :]


def chunk_gates(log_scale: Tensor, chunk: int) -> Tensor:
    """The within-chunk gates of :func:`causal_product` for ``log_scale`` g ``[..., L]``: ``[..., N, C, C]``,
    ``e^{g_j − g_t}`` for key j ≤ query t. The reversed sums with log scale −g use their transpose, so
    one computation serves a forward pass and the three products of its backward."""
    c = min(chunk, log_scale.shape[-1])
    n = -(-log_scale.shape[-1] // c)
    return gate_matrix(_pad_to(log_scale, n * c, -1, edge=True).unflatten(-1, (n, c)), reverse=False)


class CausalParts(NamedTuple):
    """What :func:`causal_parts` computes besides the output, for a later product that shares it.

    ``carried`` ``[(…)·N, Mk, Dv]``: the gated states summed over chunks up to each chunk; ``scores``
    ``[..., N, C, C]``: the gated within-chunk products of queries and keys. A product whose keys and
    values are this one's values and keys (in that order), with the same gate and direction, has
    ``carried`` transposed; one whose queries and keys are swapped, with the gate and direction
    reversed, has ``scores`` transposed: the four products of a causal forward and backward pass share
    two of each. ``total`` ``[..., Mk, Dv]`` (in the gate's dtype; None where ``carried`` was given):
    the whole sum at the gate of the last position (the first when reversed), what the next block of a
    sequence processed in blocks takes as ``initial``."""

    carried: Tensor
    scores: Tensor
    total: Tensor | None = None


def _chunk_prefix(kc: Tensor, vc: Tensor, gc: Tensor, ends: Tensor, reverse: bool,
                  initial: tuple[Tensor, Tensor] | None) -> Tensor:
    """``[..., N, Mk, Dv]``: each chunk's state Σ_j k_j v_jᵀ e^{g_j − g_end}, at the gate ``ends`` of
    the chunk's last position (first when reversed), summed over the chunks up to it (from it when
    reversed), with the ``initial`` state carried in. Products run in the inputs' dtype (bf16 under
    that precision policy), the result in the gate's."""
    scale = torch.exp(gc - ends[..., None])[..., None]  # applied to the narrower of k and v
    if kc.shape[-1] <= vc.shape[-1]:
        states = torch.matmul((kc * scale).to(kc.dtype).transpose(-1, -2), vc)
    else:
        states = torch.matmul(kc.transpose(-1, -2), (vc * scale).to(vc.dtype))
    states = states.to(gc.dtype)
    if initial is not None:  # enters with the first chunk's own state, and the scan carries it on from there
        state, scale0 = initial
        start = -1 if reverse else 0
        states[..., start, :, :].add_(state * torch.exp((scale0 - ends[..., start]).clamp_(max=0.0))[..., None, None])
    return gated_prefix(states.flatten(-2), ends, reverse=reverse).unflatten(-1, states.shape[-2:])


def causal_parts(q: Tensor, k: Tensor, v: Tensor, *, log_scale: Tensor | None = None, chunk: int = DEFAULT_CHUNK,
                 reverse: bool = False, gates: Tensor | None = None, carried: Tensor | None = None,
                 scores: Tensor | None = None, initial: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, CausalParts]:
    """:func:`causal_product` and its :class:`CausalParts`; ``carried`` and ``scores``, if given, are
    used instead of being computed (then k, or q and k, only give shapes; a given ``carried`` already
    holds ``initial``). ``initial``: ``(state [..., Mk, Dv], log scale [...])``, the sum over the
    positions before these (after them when reversed) at its gate: a sequence processed in blocks."""
    length, dim = q.shape[-2], v.shape[-1]
    c = min(chunk, length)
    n = -(-length // c)
    qc, kc, vc = (_pad_to(t, n * c, -2).unflatten(-2, (n, c)) for t in (q, k, v))  # [..., N, C, ·]
    if log_scale is None:
        log_scale = q.new_zeros(q.shape[:-1], dtype=torch.promote_types(q.dtype, torch.float32))
    gc = _pad_to(log_scale, n * c, -1, edge=True).unflatten(-1, (n, c))  # [..., N, C]
    end = 0 if reverse else c - 1
    first = -1 if reverse else 0  # the chunk the sum starts in
    ends = gc[..., end]  # [..., N]
    total = None
    if carried is None:
        prefix = _chunk_prefix(kc, vc, gc, ends, reverse, initial)
        total = prefix[..., -1 - first, :, :].clone()
        carried = prefix.to(q.dtype).reshape(-1, *prefix.shape[-2:])
        del prefix
    # Across chunks: chunk n's queries read the state carried to the chunk before it (after it), scaled
    # from that chunk's gate to each query's own.
    out = q.new_empty((*qc.shape[:-1], dim))  # [..., N, C, D]
    flat_out = out.view(-1, c, dim)
    src, dst = _shifted(flat_out.shape[0], reverse)
    reads, weights = qc.reshape(-1, c, qc.shape[-1])[dst], _carry_weights(ends, gc, reverse)[..., None]
    if reads.shape[-1] < dim:  # the weights scale the narrower of the queries and the outputs
        torch.bmm((reads * weights).to(q.dtype), carried[src], out=flat_out[dst])
    else:
        torch.bmm(reads, carried[src], out=flat_out[dst]).mul_(weights)
    flat_out[first].zero_()  # the one chunk nothing was carried into
    if initial is not None:  # the chunks a sum starts in read the initial state
        state, scale0 = initial
        read = torch.matmul(qc[..., first, :, :], state.to(q.dtype))  # [..., C, D]
        out[..., first, :, :].add_(read.mul_(torch.exp((scale0[..., None] - gc[..., first, :]).clamp_(max=0.0))[..., None]))
    # Within chunks: the masked, gated C×C product, added in place.
    if scores is None:
        if gates is None:
            gates = gate_matrix(gc, reverse)
        elif reverse:
            gates = gates.transpose(-1, -2)
        scores = torch.matmul(qc, kc.transpose(-1, -2)).mul_(gates)  # [..., N, C, C]
    flat_out.baddbmm_(scores.reshape(-1, c, c), vc.reshape(-1, c, dim))
    return out.flatten(-3, -2)[..., :length, :], CausalParts(carried, scores, total)


def causal_product(q: Tensor, k: Tensor, v: Tensor, *, log_scale: Tensor | None = None, chunk: int = DEFAULT_CHUNK,
                   reverse: bool = False, gates: Tensor | None = None) -> Tensor:
    """``u_t = Σ_{j ≤ t} (q_t·k_j) e^{g_j − g_t} v_j`` (``j ≥ t`` with ``reverse=True``), unnormalized.

    q, k ``[..., L, M]``; v ``[..., L, D]``; ``log_scale`` g ``[..., L]`` non-decreasing in the direction
    of the sum (None: no gate) → ``[..., L, D]``. ``gates``: :func:`chunk_gates` of g, or when reversed
    of −g, if already computed. Memory O(L·(C + M + D) + (L/C)·M·D).
    """
    return causal_parts(q, k, v, log_scale=log_scale, chunk=chunk, reverse=reverse, gates=gates)[0]


def with_ones(v: Tensor) -> Tensor:
    """``[..., D] → [..., D+1]``: V with the normalizer's column of ones appended."""
    return torch.cat([v, v.new_ones((*v.shape[:-1], 1))], dim=-1)


def normalize(u: Tensor) -> tuple[Tensor, Tensor]:
    """Split ``[..., D+1]`` into ``num / den``; a denominator that underflowed to exactly 0 gives 0."""
    den = u[..., -1:]
    den = den.masked_fill(den == 0, 1.0)
    return u[..., :-1] / den, den


def causal_backward(qf: Tensor, kf: Tensor, ve: Tensor, gu: Tensor, log_scale: Tensor | None, chunk: int,
                    forward: CausalParts | None = None, *, before: tuple[Tensor, Tensor] | None = None,
                    after: tuple[Tensor, Tensor] | None = None,
                    finish_q: Callable[[Tensor], Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """Gradients ``(dqf, dkf, dve)`` of ``u = causal_product(qf, kf, ve)`` given ``gu = dL/du``, from three
    chunked products that share their parts with each other and with the forward pass's (``forward``,
    if kept): the gradient of the queries reads the forward's states transposed, that of the values its
    scores transposed, and the keys' reuses the other two's. With gate g:
    ``dqf_t = Σ_{j ≤ t} (gu_t·ve_j) e^{g_j − g_t} kf_j``; keys and values sum the other way with log
    scale −g (non-decreasing backwards). The gate is a constant of the ratio: no gradient.

    For a sequence processed in blocks (backwards, last block first): ``before`` is the forward's
    ``(Σ kf veᵀ, g)`` over the positions before these, ``after`` ``(Σ qf guᵀ, g)`` over those after
    them, each at its own gate; the fourth result is ``after`` for the block before this one (the sum
    at the gate of the first position here; None without a gate). ``finish_q`` is applied to ``dqf`` as
    soon as it is computed, so that a caller's smaller result replaces it before the other products run."""
    back = None if log_scale is None else -log_scale
    carried = scores = gates = None
    if forward is not None and forward.carried is not None:
        carried, scores = forward.carried.transpose(-1, -2), forward.scores.transpose(-1, -2)
    if log_scale is not None:
        gates = chunk_gates(log_scale, chunk)  # computed once, shared by the products that need them
    initial_q = None if before is None else (before[0].transpose(-1, -2), before[1])
    initial_k = None if after is None else (after[0], -after[1])
    grad_q, q_parts = causal_parts(gu, ve, kf, log_scale=log_scale, chunk=chunk, gates=gates, carried=carried,
                                   initial=initial_q)
    if finish_q is not None:
        grad_q = finish_q(grad_q)
    if scores is not None:
        gates = None  # the other two products have their scores: freed before they run
    grad_ve, ve_parts = causal_parts(kf, qf, gu, log_scale=back, chunk=chunk, reverse=True, gates=gates, scores=scores,
                                     initial=initial_k)
    grad_k, _ = causal_parts(ve, gu, qf, log_scale=back, chunk=chunk, reverse=True, gates=gates,
                             carried=ve_parts.carried.transpose(-1, -2), scores=q_parts.scores.transpose(-1, -2),
                             initial=None if after is None else (after[0].transpose(-1, -2), -after[1]))
    before_this = None if log_scale is None else (ve_parts.total, log_scale[..., 0])
    return grad_q, grad_k, grad_ve, before_this


class _LinearAttention(torch.autograd.Function):
    """Products in the features' dtype (bf16 under that precision policy), the normalization and the
    result in the working dtype (float32, or float64 for float64 features)."""

    @staticmethod
    def forward(ctx, qf: Tensor, kf: Tensor, v: Tensor, log_scale: Tensor | None, causal: bool, chunk: int) -> Tensor:
        ve = with_ones(v).to(qf.dtype)  # [B, H, L, D+1]
        parts = (None, None)
        if causal:
            u, parts = causal_parts(qf, kf, ve, log_scale=log_scale, chunk=chunk)
        else:
            u = torch.matmul(qf, torch.matmul(kf.transpose(-1, -2), ve))  # Q′ (K′ᵀ [V 1])
        out, den = normalize(u.to(torch.promote_types(qf.dtype, torch.float32)))
        ctx.save_for_backward(qf, kf, ve, out, den, log_scale, *parts)
        ctx.causal, ctx.chunk, ctx.v_dtype = causal, chunk, v.dtype
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        qf, kf, ve, out, den, log_scale, *parts = ctx.saved_tensors
        # dL/dU for U = [num, den]: num-part g/den, den-part −Σ_d g·out / den.
        gu = torch.cat([grad_out, -(grad_out * out).sum(-1, keepdim=True)], dim=-1).div_(den).to(qf.dtype)
        if ctx.causal:
            grad_q, grad_k, grad_ve, _ = causal_backward(qf, kf, ve, gu, log_scale, ctx.chunk, CausalParts(*parts))
        else:
            state = torch.matmul(kf.transpose(-1, -2), ve)  # [B, H, M, D+1]
            grad_q = torch.matmul(gu, state.transpose(-1, -2))
            grad_state = torch.matmul(qf.transpose(-1, -2), gu)  # [B, H, M, D+1]
            grad_k = torch.matmul(ve, grad_state.transpose(-1, -2))
            grad_ve = torch.matmul(kf, grad_state)
        return grad_q, grad_k, grad_ve[..., :-1].to(ctx.v_dtype), None, None, None


def linear_attention(qf: Tensor, kf: Tensor, v: Tensor, *, causal: bool = False, chunk: int = DEFAULT_CHUNK,
                     log_scale: Tensor | None = None) -> Tensor:
    """Normalized attention ``D⁻¹ Q′(K′ᵀV)`` from features ``[B, H, L, M]``; causal: gated prefix sums,
    key j entering output t with ``e^{g_j − g_t}`` for ``log_scale`` g ``[B, H, L]`` (None: 1). The
    products run in the features' dtype, the result is float32 (float64 for float64 features)."""
    return _LinearAttention.apply(qf, kf, v, log_scale, causal, chunk)
