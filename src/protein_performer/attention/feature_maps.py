"""FAVOR feature maps φ: R^d → R^M', one class per kernel, each owning its math.

A kernel is more than a formula: it has the paper's features, a numerically stable version of them,
and (for the positive softmax features) a faster way to attend with them. Keeping all three in one
object lets attention code ask the kernel instead of switching on its name; :data:`FEATURE_MAPS` is
the registry every list of kernels (``KERNELS``, the CLI, the config) reads.

Shapes: x ``[B, H, L, d]``; projection ``[M, d]`` (shared by heads) or ``[H, M, d]``.

``random_features`` gives the features exactly as the paper writes them, so that ``φ(q)ᵀφ(k)``
estimates ``exp(qᵀk/√d)`` for the softmax kernels. ``query_features`` and ``key_features`` give the
same features multiplied by constants that cancel in the attention ratio (one per query row; for keys
one per (batch, head), or for causal attention ``e^{−c_j}`` with ``c_j`` the running maximum over keys
up to j, returned as the ``log_scale`` the causal sums are gated with) so that nothing overflows or
underflows in float32 and no output depends on a later key. No ε is added after
stabilization: it would not cancel and flattens attention toward uniform. The projection belongs to
the caller (:class:`~protein_performer.attention.FavorAttention` keeps it as a buffer): feature maps
hold no state and draw nothing.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from .ops.fla import gated_causal_product_fla
from .ops.fused import favor_positive
from .ops.linear import key_stabilizer, linear_attention, normalize, with_ones

RELU_EPSILON = 1e-3


def _project(x: Tensor, projection: Tensor) -> Tensor:
    """x̃ Wᵀ with x̃ = x·d^(-1/4): ``[B, H, L, d] → [B, H, L, M]``."""
    scale = x.shape[-1] ** -0.25
    w = projection.to(x.dtype).transpose(-1, -2)  # [d, M] or [H, d, M]
    return torch.matmul(x * scale, w)


def _half_sq_norm(x: Tensor) -> Tensor:
    """‖x̃‖²/2 with x̃ = x·d^(-1/4): ``[B, H, L, 1]``."""
    return x.pow(2).sum(-1, keepdim=True) * (0.5 / math.sqrt(x.shape[-1]))


def _padding(key_padding_mask: Tensor | None) -> Tensor | None:
    """bool ``[B, L]`` → ``[B, 1, L, 1]``, broadcasting over heads and features."""
    return None if key_padding_mask is None else key_padding_mask[:, None, :, None]


class KeyFeatures(NamedTuple):
    """Stabilized key features ``[B, H, L, M']`` (padded keys exactly zero) and, for causal attention,
    ``log_scale`` ``[B, H, L]``: key j's features are ``φ(k_j)·e^{−log_scale_j}`` up to one constant, and
    output t weighs key j ≤ t by ``e^{log_scale_j − log_scale_t}`` (None: no per-position scale)."""

    features: Tensor
    log_scale: Tensor | None


def _stabilized(logits: Tensor, causal: bool) -> KeyFeatures:
    """``exp(logits − stabilizer)`` with its causal log scale (see ``linear.key_stabilizer``)."""
    stab = key_stabilizer(logits, causal)
    return KeyFeatures(logits.sub_(stab).exp_(), stab.squeeze(-1) if causal else None)


class FeatureMap:
    """One kernel's features. Subclasses define the three feature functions; :meth:`attention` is
    normalized linear attention over the stabilized features unless a kernel has a faster path."""

    name: str
    # Signed features (trigonometric) cancel in their sums: rounding their products to bf16 gives errors of
    # tens of percent (measured: 18-34% against float64), so they take float32 products only.
    signed: bool = False

    def random_features(self, x: Tensor, projection: Tensor) -> Tensor:
        """The paper's unstabilized features ``[B, H, L, M']`` (M' = 2M for trig and hyperbolic), for
        the naive references and the analyses; the fast path uses the stabilized maps."""
        raise NotImplementedError

    def query_features(self, q: Tensor, projection: Tensor) -> Tensor:
        """Query features up to a positive constant per row (which cancels in D⁻¹ Q′(K′ᵀV))."""
        raise NotImplementedError

    def key_features(self, k: Tensor, projection: Tensor, key_padding_mask: Tensor | None = None, *,
                     causal: bool = False) -> KeyFeatures:
        """Key features up to one positive constant per (batch, head) (causal: per key, with its
        ``log_scale``); padded rows exactly zero.

        The constants are taken over real (unpadded) keys only, so padding content cannot influence them;
        causal ones over keys at or before each position only, so later keys cannot either.
        """
        raise NotImplementedError

    def attention(self, q: Tensor, k: Tensor, v: Tensor, projection: Tensor, *, key_padding_mask: Tensor | None,
                  causal: bool, chunk: int, product_dtype: torch.dtype | None = None, fla: bool = False,
                  recompute: bool = True) -> Tensor:
        """Normalized attention ``[B, H, L, D]`` (v already zero at padded keys), computed and returned in
        float32 (float64 for float64 inputs); the feature products in ``product_dtype`` (None: that
        working dtype), causal sums through fla's Triton kernels with ``fla``. ``recompute``
        is for kernels with a fused path (this generic one keeps its features for backward)."""
        work = torch.promote_types(q.dtype, torch.float32)
        q, k, v = q.to(work), k.to(work), v.to(work)
        low = product_dtype or work
        qf = self.query_features(q, projection).to(low)
        kf, log_scale = self.key_features(k, projection, key_padding_mask, causal=causal)
        if fla:
            log_scale = q.new_zeros(q.shape[:-1]) if log_scale is None else log_scale
            out, _ = normalize(gated_causal_product_fla(qf, kf.to(low), with_ones(v).to(low), log_scale).to(q.dtype))
            return out
        return linear_attention(qf, kf.to(low), v, causal=causal, chunk=chunk, log_scale=log_scale)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class _Exponential(FeatureMap):
    """Features ``exp(ωᵀx̃ − ‖x̃‖²/2)`` (with ``−ωᵀx̃`` as well when hyperbolic): stabilized by
    subtracting a maximum inside the exponent."""

    def _signed(self, proj: Tensor) -> Tensor:
        """The exponents' ``ωᵀx̃`` terms ``[B, H, L, M']``."""
        raise NotImplementedError

    def query_features(self, q: Tensor, projection: Tensor) -> Tensor:
        proj = self._signed(_project(q, projection))
        # exp(ωᵀq̃ − ‖q̃‖²/2) / max over features: ‖q̃‖²/2 is itself a per-row constant, so it drops out.
        row_max = proj.detach().amax(dim=-1, keepdim=True)
        return proj.sub_(row_max).exp_()

    def key_features(self, k: Tensor, projection: Tensor, key_padding_mask: Tensor | None = None, *,
                     causal: bool = False) -> KeyFeatures:
        pad = _padding(key_padding_mask)
        proj = self._signed(_project(k, projection)).sub_(_half_sq_norm(k))
        if pad is not None:
            proj = proj.masked_fill_(pad, -math.inf)
        return _stabilized(proj, causal)


class PositiveSoftmax(_Exponential):
    """FAVOR+: ``exp(ωᵀx̃ − ‖x̃‖²/2) / √M``, positive, so the estimated attention never goes negative."""

    name = "softmax"

    def _signed(self, proj: Tensor) -> Tensor:
        return proj

    def random_features(self, x: Tensor, projection: Tensor) -> Tensor:
        m = projection.shape[-2]
        proj = _project(x, projection)
        h = _half_sq_norm(x)
        return torch.exp(proj - h) / math.sqrt(m)

    def attention(self, q: Tensor, k: Tensor, v: Tensor, projection: Tensor, *, key_padding_mask: Tensor | None,
                  causal: bool, chunk: int, product_dtype: torch.dtype | None = None, fla: bool = False,
                  recompute: bool = True) -> Tensor:
        if fla:
            return super().attention(q, k, v, projection, key_padding_mask=key_padding_mask, causal=causal, chunk=chunk,
                                     product_dtype=product_dtype, fla=True)
        # The main path: features and attention in one function, with a hand-written backward.
        return favor_positive(q, k, v, projection, key_padding_mask=key_padding_mask, causal=causal, chunk=chunk,
                              product_dtype=product_dtype, recompute=recompute)


class HyperbolicSoftmax(_Exponential):
    """``[exp(ωᵀx̃ − ‖x̃‖²/2), exp(−ωᵀx̃ − ‖x̃‖²/2)] / √(2M)``: positive, lower variance than FAVOR+."""

    name = "softmax_hyperbolic"

    def _signed(self, proj: Tensor) -> Tensor:
        return torch.cat([proj, -proj], dim=-1)

    def random_features(self, x: Tensor, projection: Tensor) -> Tensor:
        m = projection.shape[-2]
        proj = _project(x, projection)
        h = _half_sq_norm(x)
        return torch.cat([torch.exp(proj - h), torch.exp(-proj - h)], dim=-1) / math.sqrt(2 * m)


class TrigSoftmax(FeatureMap):
    """``exp(‖x̃‖²/2) [cos(ωᵀx̃), sin(ωᵀx̃)] / √M`` (the original random Fourier features): unbiased but
    not positive, so small attention values come with large relative error."""

    name = "softmax_trig"
    signed = True

    def random_features(self, x: Tensor, projection: Tensor) -> Tensor:
        m = projection.shape[-2]
        proj = _project(x, projection)
        h = _half_sq_norm(x)
        return torch.exp(h) * torch.cat([torch.cos(proj), torch.sin(proj)], dim=-1) / math.sqrt(m)

    def query_features(self, q: Tensor, projection: Tensor) -> Tensor:
        proj = _project(q, projection)
        return torch.cat([torch.cos(proj), torch.sin(proj)], dim=-1)

    def key_features(self, k: Tensor, projection: Tensor, key_padding_mask: Tensor | None = None, *,
                     causal: bool = False) -> KeyFeatures:
        pad = _padding(key_padding_mask)
        proj = _project(k, projection)
        h = _half_sq_norm(k)
        if pad is not None:
            h = h.masked_fill(pad, -math.inf)
        scale, log_scale = _stabilized(h, causal)  # exp(‖k̃‖²/2 − max_j ‖k̃_j‖²/2)
        return KeyFeatures(torch.cat([torch.cos(proj), torch.sin(proj)], dim=-1) * scale, log_scale)


class Relu(FeatureMap):
    """``relu(ωᵀx̃) + ε``: a generalized (non-softmax) kernel; nothing to stabilize."""

    name = "relu"

    def random_features(self, x: Tensor, projection: Tensor) -> Tensor:
        return torch.relu(_project(x, projection)) + RELU_EPSILON

    def query_features(self, q: Tensor, projection: Tensor) -> Tensor:
        return _project(q, projection).relu_() + RELU_EPSILON  # relu_ keeps its output for backward: add out of place

    def key_features(self, k: Tensor, projection: Tensor, key_padding_mask: Tensor | None = None, *,
                     causal: bool = False) -> KeyFeatures:
        pad = _padding(key_padding_mask)
        feats = _project(k, projection).relu_() + RELU_EPSILON
        return KeyFeatures(feats if pad is None else feats.masked_fill(pad, 0.0), None)


FEATURE_MAPS: dict[str, type[FeatureMap]] = {cls.name: cls for cls in (PositiveSoftmax, TrigSoftmax, HyperbolicSoftmax, Relu)}
KERNELS = tuple(FEATURE_MAPS)


def feature_map(kernel: str) -> FeatureMap:
    """The feature map registered as ``kernel``; ``ValueError`` naming the choices otherwise."""
    if kernel not in FEATURE_MAPS:
        raise ValueError(f"unknown kernel {kernel!r}; choose one of {', '.join(KERNELS)}")
    return FEATURE_MAPS[kernel]()


def random_features(x: Tensor, projection: Tensor, kernel: str = "softmax") -> Tensor:
    """``feature_map(kernel).random_features``: the paper's unstabilized features ``[B, H, L, M']``."""
    return feature_map(kernel).random_features(x, projection)
