"""Multi-head self-attention layers: FAVOR and its exact-softmax twin, the efficient rivals the paper
compares against, and :data:`ATTENTIONS`, the registry of attention kinds that models and configs build from.

FAVOR, exact softmax, local (sliding window) and linear (elu + 1 features) attention have the same
parameters (``in_proj`` producing q, k, v and ``out_proj``), so weights move between them unchanged:
that is what lets a trained softmax Transformer run as a Performer. They also answer the analyses'
questions about the matrix they apply (the whole L×L, a window of it, the attention each key receives)
from q, k, so that no caller needs to know which kind of layer it holds. Reformer and Linformer come
from their own packages (``baselines.py``, an optional extra).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .feature_maps import KeyFeatures, feature_map
from .ops.favor import favor_attention, softmax_attention
from .ops.linear import DEFAULT_CHUNK, linear_attention
from .ops.local import local_attention
from .ops.naive import (
    favor_attention_matrix,
    favor_received,
    favor_window,
    softmax_attention_matrix,
    softmax_received,
    softmax_window,
)
from .projection import draw_projection

# Applied to q and k (``[B, H, L, d]``) before attention, e.g. rotary position embeddings.
QKTransform = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


class SelfAttention(nn.Module):
    """Shared by the attention kinds: q, k, v from one ``in_proj``, heads merged by ``out_proj``.

    A kind defines :meth:`attend` and the three analysis views of its matrix, all from q, k
    ``[B, H, L, d]`` and ``key_padding_mask`` bool ``[B, L]`` (True at padding, or None). ``options``
    names the keyword arguments it takes beyond ``embed_dim``, ``num_heads``, ``causal``, ``bias`` and
    ``dropout``, so that a model can build any registered kind from its config.
    """

    options: ClassVar[tuple[str, ...]] = ()

    def __init__(self, embed_dim: int, num_heads: int, *, causal: bool = False, bias: bool = True, dropout: float = 0.0):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.causal = causal
        self.in_proj = nn.Linear(embed_dim, 3 * embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None) -> Tensor:
        raise NotImplementedError

    def attention_matrix(self, q: Tensor, k: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """The row-normalized attention matrix ``[B, H, L, L]`` this layer applies (for FAVOR: the one
        implied by its features). Quadratic: for analysis of short sequences only."""
        raise NotImplementedError

    def attention_window(self, q: Tensor, k: Tensor, start: int, window: int, key_padding_mask: Tensor | None = None) -> Tensor:
        """Rows and columns ``[start, start + window)`` of :meth:`attention_matrix`, ``[B, H, W, W]``,
        without forming L×L (rows normalized over the whole sequence; cut at the end)."""
        raise NotImplementedError

    def received_attention(self, q: Tensor, k: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """``Σ_i A_ij`` ``[B, H, L]``: the attention each key receives from all real queries (padded
        queries and keys left out), without forming L×L."""
        raise NotImplementedError

    def _qkv(self, x: Tensor, qk_transform: QKTransform | None) -> tuple[Tensor, Tensor, Tensor]:
        b, length, _ = x.shape
        q, k, v = self.in_proj(x).view(b, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if qk_transform is not None:
            q, k = qk_transform(q, k)
        return q, k, v

    @torch.no_grad()
    def queries_keys(self, x: Tensor, qk_transform: QKTransform | None = None) -> tuple[Tensor, Tensor]:
        """q, k ``[B, H, L, d]`` exactly as this layer attends with them (after ``qk_transform``, e.g.
        rotary), from ``x`` ``[B, L, E]``, without computing attention."""
        q, k, _ = self._qkv(x, qk_transform)
        return q, k

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None, qk_transform: QKTransform | None = None) -> Tensor:
        """x ``[B, L, E]`` → ``[B, L, E]``; ``key_padding_mask`` bool ``[B, L]``, True at padding."""
        b, length, _ = x.shape
        q, k, v = self._qkv(x, qk_transform)
        out = self.attend(q, k, v, key_padding_mask)  # [B, H, L, d]
        return self.dropout(self.out_proj(out.transpose(1, 2).reshape(b, length, self.embed_dim)))


class SoftmaxAttention(SelfAttention):
    """Exact softmax multi-head self-attention (the Transformer baseline)."""

    def attend(self, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None) -> Tensor:
        return softmax_attention(q, k, v, causal=self.causal, key_padding_mask=key_padding_mask)

    def attention_matrix(self, q: Tensor, k: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        return softmax_attention_matrix(q, k, causal=self.causal, key_padding_mask=key_padding_mask)

    def attention_window(self, q: Tensor, k: Tensor, start: int, window: int, key_padding_mask: Tensor | None = None) -> Tensor:
        return softmax_window(q, k, start, window, causal=self.causal, key_padding_mask=key_padding_mask)

    def received_attention(self, q: Tensor, k: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        return softmax_received(q, k, causal=self.causal, key_padding_mask=key_padding_mask)


class FavorAttention(SelfAttention):
    """FAVOR multi-head self-attention with its own random projection.

    The projection ``[H, M, d]`` (an independent draw per head) is a buffer, so it is saved in
    ``state_dict`` and moves with the module. It changes only through :meth:`redraw_projection`, never
    in ``forward``: the training loop decides when (per optimizer step), evaluation stays deterministic.
    """

    projection: Tensor
    options: ClassVar[tuple[str, ...]] = ("num_features", "kernel", "orthogonal", "norm", "chunk_size", "precision")

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        num_features: int = 256,
        kernel: str = "softmax",
        causal: bool = False,
        orthogonal: bool = True,
        norm: str = "chi",
        bias: bool = True,
        dropout: float = 0.0,
        chunk_size: int = DEFAULT_CHUNK,
        precision: str = "float32",
    ):
        super().__init__(embed_dim, num_heads, causal=causal, bias=bias, dropout=dropout)
        self.feature_map = feature_map(kernel)  # its math; the projection it is applied with stays here
        self.num_features, self.kernel = num_features, kernel
        self.orthogonal, self.norm, self.chunk_size, self.precision = orthogonal, norm, chunk_size, precision
        self.register_buffer("projection", self._draw(None, torch.device("cpu")))

    def _draw(self, generator: torch.Generator | None, device: torch.device) -> Tensor:
        heads = [
            draw_projection(self.num_features, self.head_dim, orthogonal=self.orthogonal, norm=self.norm, generator=generator,
                            device=device)
            for _ in range(self.num_heads)
        ]
        return torch.stack(heads)

    @torch.no_grad()
    def redraw_projection(self, generator: torch.Generator | None = None) -> None:
        """Replace the projection with a fresh draw from ``generator`` (global RNG when None)."""
        self.projection.copy_(self._draw(generator, self.projection.device))

    def attend(self, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None) -> Tensor:
        return favor_attention(
            q, k, v, self.projection, kernel=self.kernel, causal=self.causal,
            key_padding_mask=key_padding_mask, chunk_size=self.chunk_size, precision=self.precision,
        )

    def feature_maps(self, q: Tensor, k: Tensor, key_padding_mask: Tensor | None = None) -> tuple[Tensor, KeyFeatures]:
        """The features ``[B, H, L, M']`` this layer's attention is computed from, stabilized as in
        ``forward``: query features up to a positive constant per row, key features with their causal
        ``log_scale`` (see :class:`~protein_performer.attention.feature_maps.KeyFeatures`); the constants
        cancel in ``A_ij = q′_i·k′_j e^{g_j − g_i} / Σ_j' q′_i·k′_j' e^{g_j' − g_i}``. Padded keys are
        zero. Computed in q's dtype."""
        return (self.feature_map.query_features(q, self.projection),
                self.feature_map.key_features(k, self.projection, key_padding_mask, causal=self.causal))

    def attention_matrix(self, q: Tensor, k: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        return favor_attention_matrix(q, k, self.projection, kernel=self.kernel, causal=self.causal,
                                      key_padding_mask=key_padding_mask)

    def attention_window(self, q: Tensor, k: Tensor, start: int, window: int, key_padding_mask: Tensor | None = None) -> Tensor:
        qf, (kf, log_scale) = self.feature_maps(q, k, key_padding_mask)
        return favor_window(qf, kf, start, window, causal=self.causal, log_scale=log_scale)

    def received_attention(self, q: Tensor, k: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        qf, (kf, log_scale) = self.feature_maps(q, k, key_padding_mask)
        return favor_received(qf, kf, causal=self.causal, query_mask=key_padding_mask, log_scale=log_scale)

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, features={self.num_features}, kernel={self.kernel}, causal={self.causal}"


class LocalAttention(SelfAttention):
    """Exact softmax attention within a sliding window: query i sees keys j with ``|i − j| ≤ window``
    (causal: ``0 ≤ i − j ≤ window``). Linear in L; blind beyond the window by construction."""

    options: ClassVar[tuple[str, ...]] = ("window",)

    def __init__(self, embed_dim: int, num_heads: int, *, window: int = 64, causal: bool = False, bias: bool = True,
                 dropout: float = 0.0):
        super().__init__(embed_dim, num_heads, causal=causal, bias=bias, dropout=dropout)
        if window < 1:
            raise ValueError(f"window must be positive, got {window}")
        self.window = window

    def attend(self, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None) -> Tensor:
        return local_attention(q, k, v, window=self.window, causal=self.causal, key_padding_mask=key_padding_mask)

    def attention_matrix(self, q: Tensor, k: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        return softmax_attention_matrix(q, k, causal=self.causal, key_padding_mask=key_padding_mask, band=self.window)

    def attention_window(self, q: Tensor, k: Tensor, start: int, window: int, key_padding_mask: Tensor | None = None) -> Tensor:
        return softmax_window(q, k, start, window, causal=self.causal, key_padding_mask=key_padding_mask, band=self.window)

    def received_attention(self, q: Tensor, k: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        return softmax_received(q, k, causal=self.causal, key_padding_mask=key_padding_mask, band=self.window)

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, window={self.window}, causal={self.causal}"


class LinearAttention(SelfAttention):
    """Linear attention of Katharopoulos et al. (2020): the deterministic feature map ``elu(x) + 1``
    on queries and keys, ``A_ij ∝ φ(q_i)·φ(k_j)``. Linear in L like FAVOR, but no estimate of softmax:
    a different, fixed kernel."""

    @staticmethod
    def features(q: Tensor, k: Tensor, key_padding_mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """φ(q), φ(k) ``[B, H, L, d]`` in float32 (float64 for float64 inputs), padded keys zero."""
        work = torch.promote_types(q.dtype, torch.float32)
        qf, kf = F.elu(q.to(work)) + 1, F.elu(k.to(work)) + 1
        if key_padding_mask is not None:
            kf = kf.masked_fill(key_padding_mask[:, None, :, None], 0.0)
        return qf, kf

    def attend(self, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None) -> Tensor:
        qf, kf = self.features(q, k, key_padding_mask)
        with torch.autocast(q.device.type, enabled=False):
            out = linear_attention(qf, kf, v.to(qf.dtype), causal=self.causal)
        return out.to(q.dtype)

    def attention_matrix(self, q: Tensor, k: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        qf, kf = self.features(q, k, key_padding_mask)
        return favor_window(qf, kf, 0, q.shape[-2], causal=self.causal)

    def attention_window(self, q: Tensor, k: Tensor, start: int, window: int, key_padding_mask: Tensor | None = None) -> Tensor:
        qf, kf = self.features(q, k, key_padding_mask)
        return favor_window(qf, kf, start, window, causal=self.causal)

    def received_attention(self, q: Tensor, k: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        qf, kf = self.features(q, k, key_padding_mask)
        return favor_received(qf, kf, causal=self.causal, query_mask=key_padding_mask)


# This package's own attention kinds, by the names configs give them (with baselines.BASELINES they
# make the registry ``protein_performer.attention.ATTENTIONS``).
LAYERS: dict[str, type[SelfAttention]] = {"favor": FavorAttention, "softmax": SoftmaxAttention, "local": LocalAttention,
                                          "linear": LinearAttention}
