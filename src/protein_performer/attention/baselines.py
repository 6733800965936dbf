"""The efficient Transformers the Performer paper compares against, from their well-known PyTorch
implementations (``pip install 'protein-performer[baselines]'``), wrapped to this package's layer
interface: ``layer(x [B, L, E], key_padding_mask [B, L] True at padding, qk_transform) → [B, L, E]``.

- Reformer (Kitaev et al. 2020): LSH attention from ``reformer-pytorch``. Queries and keys are one
  projection (shared QK, so ``in_proj`` makes qk and v: 3E² + 3E parameters against our 4E² + 4E);
  each round of hashing sorts positions into buckets by random rotations and attends inside chunks of
  ``bucket_size`` (and one chunk back). Lengths are padded to a multiple of ``2 · bucket_size``; padded
  positions are hashed to bucket 0 and never attended to. Bidirectional only here: the library's causal
  mode forms its chunks over the whole sequence, so a future token can change which past tokens a
  position sees, and causal attention in this project never depends on the future. The rotations are
  drawn anew on every call (from the global generator while training; from a fixed seed in eval mode,
  so that evaluation is repeatable). It applies no fixed L×L matrix, so the attention analyses refuse it.
- Linformer (Wang et al. 2020): ``linformer.LinformerSelfAttention``, keys and values projected along
  the sequence to ``linformer_k`` rows by learned ``[max_len, k]`` matrices (4E² + E + 2·max_len·k
  parameters). Tied to ``max_len`` (longer inputs are refused) and bidirectional only (the projection
  mixes all positions); positions must be learned embeddings, since rotary ones act inside attention on
  q and k, which the library computes itself. Padding is exact: padded inputs are zeroed and its key
  and value projections have no bias, so padded positions add nothing to the projected keys and values.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .layers import QKTransform, SelfAttention

INSTALL = "pip install 'protein-performer[baselines]'"
EVAL_SEED = 0  # the LSH rotations of every eval-mode call


def _require(module: str, kind: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ValueError(f"{kind} attention needs the package {module.split('.')[0]}: {INSTALL}") from None


class ReformerAttention(SelfAttention):
    """LSH attention (Reformer) with shared queries and keys; see the module docstring."""

    options: ClassVar[tuple[str, ...]] = ("bucket_size", "n_hashes")

    def __init__(self, embed_dim: int, num_heads: int, *, bucket_size: int = 32, n_hashes: int = 4, causal: bool = False,
                 bias: bool = True, dropout: float = 0.0):
        if causal:
            raise ValueError("reformer attention is bidirectional only here: LSH chunks span the whole sequence, so later "
                             "tokens would change what earlier ones attend to; use local, linear, favor or softmax attention")
        if bucket_size < 1 or n_hashes < 1:
            raise ValueError(f"bucket_size and n_hashes must be positive, got {bucket_size} and {n_hashes}")
        lsh = _require("reformer_pytorch.reformer_pytorch", "reformer")
        super().__init__(embed_dim, num_heads, causal=False, bias=bias, dropout=dropout)
        self.in_proj = nn.Linear(embed_dim, 2 * embed_dim, bias=bias)  # shared qk, and v
        self.bucket_size, self.n_hashes = bucket_size, n_hashes
        self.lsh = lsh.LSHAttention(bucket_size=bucket_size, n_hashes=n_hashes, causal=False)

    def _qkv(self, x: Tensor, qk_transform: QKTransform | None) -> tuple[Tensor, Tensor, Tensor]:
        b, length, _ = x.shape
        qk, v = self.in_proj(x).view(b, length, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if qk_transform is not None:
            qk, _ = qk_transform(qk, qk)
        return qk, qk, v

    def attend(self, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None) -> Tensor:
        b, h, length, d = q.shape
        multiple = 2 * self.bucket_size
        padded = -(-length // multiple) * multiple
        real = torch.ones(b, length, dtype=torch.bool, device=q.device) if key_padding_mask is None else ~key_padding_mask
        real = F.pad(real, (0, padded - length), value=False)
        qk = F.pad(q, (0, 0, 0, padded - length)).masked_fill(~real[:, None, :, None], 0.0)  # padding hashes to bucket 0
        v = F.pad(v, (0, 0, 0, padded - length))
        merged = (qk.reshape(b * h, padded, d), v.reshape(b * h, padded, d))
        mask = real.repeat_interleave(h, dim=0)  # [B·H, L'], True at real positions
        if self.training:
            out = self.lsh(*merged, input_mask=mask)[0]
        else:
            devices = [q.device] if q.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(EVAL_SEED)
                out = self.lsh(*merged, input_mask=mask)[0]
        return out.view(b, h, padded, d)[:, :, :length]

    def _no_matrix(self) -> ValueError:
        return ValueError("reformer attention draws its LSH buckets anew on every call: it applies no fixed attention "
                          "matrix to analyze")

    def attention_matrix(self, q: Tensor, k: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        raise self._no_matrix()

    def attention_window(self, q: Tensor, k: Tensor, start: int, window: int, key_padding_mask: Tensor | None = None) -> Tensor:
        raise self._no_matrix()

    def received_attention(self, q: Tensor, k: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        raise self._no_matrix()

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, bucket_size={self.bucket_size}, n_hashes={self.n_hashes}"


class LinformerAttention(nn.Module):
    """Linformer's self-attention (low-rank keys and values along the sequence); see the module docstring."""

    options: ClassVar[tuple[str, ...]] = ("max_len", "linformer_k")

    def __init__(self, embed_dim: int, num_heads: int, *, max_len: int = 256, linformer_k: int = 64, causal: bool = False,
                 bias: bool = True, dropout: float = 0.0):
        super().__init__()
        if causal:
            raise ValueError("linformer attention is bidirectional only: its projection mixes every position, the later ones "
                             "too; use local, linear, favor or softmax attention")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        if max_len < 1 or linformer_k < 1:
            raise ValueError(f"max_len and linformer_k must be positive, got {max_len} and {linformer_k}")
        package = _require("linformer", "linformer")
        self.embed_dim, self.num_heads, self.causal = embed_dim, num_heads, False
        self.max_len, self.linformer_k = max_len, linformer_k
        self.linformer = package.LinformerSelfAttention(embed_dim, max_len, k=linformer_k, heads=num_heads, dropout=0.0)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None, qk_transform: QKTransform | None = None) -> Tensor:
        """x ``[B, L, E]`` → ``[B, L, E]``, L ≤ ``max_len``; ``key_padding_mask`` bool ``[B, L]``, True at padding."""
        if qk_transform is not None:
            raise ValueError("linformer attention computes its queries and keys itself, so rotary positions cannot act on "
                             "them: use learned positions")
        if x.shape[1] > self.max_len:
            raise ValueError(f"sequence of {x.shape[1]} tokens is longer than this linformer's max_len ({self.max_len}): "
                             f"its key projection is fixed at that length")
        if key_padding_mask is not None:
            x = x.masked_fill(key_padding_mask[:, :, None], 0.0)
        return self.dropout(self.linformer(x))

    def queries_keys(self, x: Tensor, qk_transform: QKTransform | None = None) -> tuple[Tensor, Tensor]:
        raise ValueError("linformer attention has no L×L attention matrix (its keys are projected to linformer_k rows): "
                         "the attention analyses do not apply to it")

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, max_len={self.max_len}, k={self.linformer_k}"


# Attention kinds from optional packages, by the names configs give them.
BASELINES: dict[str, type[nn.Module]] = {"reformer": ReformerAttention, "linformer": LinformerAttention}
