"""FAVOR attention and exact softmax attention with one calling convention: the functions layers call.

Both validate shapes once and leave the math to others: FAVOR asks the kernel's feature map how to
attend (FAVOR+ through the fused function, the other kernels through ``linear.linear_attention``),
exact attention goes to ``scaled_dot_product_attention``. Their L×L twins are in ``naive.py``.

q, k, v are ``[B, H, L, d]`` as in ``torch.nn.functional.scaled_dot_product_attention``;
``key_padding_mask`` is a bool ``[B, L]``, True at padding (the ``nn.MultiheadAttention`` convention).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from ...memory import freed_memory_retained
from ..feature_maps import feature_map
from .fla import FLA_INSTALLED, fla_available
from .linear import DEFAULT_CHUNK

# Precision policies for FAVOR's feature products (``favor_attention(precision=...)``): the dtype their
# operands take. Sums across chunks and the normalization always stay in the working dtype (float32, or
# float64 for float64 inputs). "bf16" halves the bytes of every product operand and is fast where bf16
# matrix units exist (GPUs; CPUs with AMX or AVX-512 BF16, elsewhere it is emulated and slow); its
# outputs carry bf16 rounding (measured in docs/benchmarks.md), so it is a choice, never the default.
# TF32 is PyTorch's own switch for float32 products on GPUs (``torch.backends.cuda.matmul.fp32_precision``).
FEATURE_PRECISIONS = {"float32": None, "bf16": torch.bfloat16}
# Where causal sums run: "torch" (the chunked PyTorch code), "fla" (flash-linear-attention's Triton
# kernels, ``pip install 'protein-performer[gpu]'``), "auto" (fla on CUDA when installed, else torch).
BACKENDS = ("auto", "torch", "fla")
# glibc's largest threshold for serving an allocation from the heap (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit):
# a larger tensor is mapped afresh, and page-faulted in, every time.
RECOMPUTE_BYTES = 32 * 2**20
# The largest feature tensor kept even where freed memory is reused: beyond it the kept path's peak (the
# two feature tensors, the backward's [B, H, L, M] gradients, the chunk states) passes 2 GiB per attention
# call, and in a model every layer keeps its own until backward; blocks stay under 1 GiB at L = 32768 for
# a few tenths more time (docs/benchmarks.md, favor-paths).
KEEP_BYTES_MAX = 256 * 2**20


def _recompute(q: Tensor, projection: Tensor) -> bool:
    """The default of ``favor_attention(recompute=None)``."""
    if q.is_cuda:
        return True
    b, h, length, _ = q.shape
    size = b * h * length * projection.shape[-2] * 4
    return size >= KEEP_BYTES_MAX or (size >= RECOMPUTE_BYTES and not freed_memory_retained())


def _check(q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None) -> None:
    if q.dim() != 4 or k.shape != q.shape or v.shape[:-1] != q.shape[:-1]:
        shapes = f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        raise ValueError(f"expected q, k [B, H, L, d] and v [B, H, L, dv], got {shapes}")
    expected = (q.shape[0], q.shape[2])
    if key_padding_mask is not None and (key_padding_mask.dtype != torch.bool or key_padding_mask.shape != expected):
        got = f"{key_padding_mask.dtype} {list(key_padding_mask.shape)}"
        raise ValueError(f"key_padding_mask must be bool [B, L] = {list(expected)}, got {got}")


def favor_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    projection: Tensor,
    *,
    kernel: str = "softmax",
    causal: bool = False,
    key_padding_mask: Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    precision: str = "float32",
    backend: str = "auto",
    recompute: bool | None = None,
) -> Tensor:
    """FAVOR attention ``[B, H, L, dv]`` in time and memory linear in L.

    For the softmax kernels the output estimates ``softmax(q kᵀ/√d) v``; projection row ω gives the
    feature ``exp(ωᵀx̃ − ‖x̃‖²/2)``, x̃ = x·d^(-1/4). ``projection`` is ``[M, d]`` (shared by heads) or
    ``[H, M, d]``. Padded keys are removed from numerator and normalizer alike. Inputs in bf16/fp16 (or
    under autocast) are computed in float32 and the result is cast back to the input dtype; what
    backward keeps stays in the inputs' dtype.
    ``precision`` (:data:`FEATURE_PRECISIONS`) is the dtype of the feature products, ``backend``
    (:data:`BACKENDS`) where causal sums run; bidirectional attention is two products and always torch.
    ``recompute``: backward recomputes the softmax kernel's features instead of keeping them (2·M numbers
    per token and head), and on the CPU both passes run in cache-sized blocks of positions; None: on CUDA
    yes; on the CPU where one ``[B, H, L, M]`` feature tensor would take ``RECOMPUTE_BYTES`` or more and
    the process does not retain freed memory (``protein_performer.memory``): glibc's malloc then maps
    fresh pages in for every allocation that large, and faulting them in costs more than recomputing;
    and wherever it would take ``KEEP_BYTES_MAX`` or more, for the memory.
    Causal outputs never depend on later keys: see ``linear.py``.
    """
    features = feature_map(kernel)
    _check(q, k, v, key_padding_mask)
    if precision not in FEATURE_PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(FEATURE_PRECISIONS)}")
    if precision != "float32" and features.signed:
        raise ValueError(f"precision {precision!r} is unsafe for the signed {kernel} features (their sums cancel): use float32")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "fla" and not fla_available():
        raise ValueError("backend 'fla' needs fla-core and triton (pip install 'protein-performer[gpu]') and a CUDA device")
    fla = causal and (backend == "fla" or (backend == "auto" and q.is_cuda and FLA_INSTALLED))
    out_dtype = q.dtype
    with torch.autocast(q.device.type, enabled=False):  # the kernels compute in float32 themselves
        if key_padding_mask is not None:
            v = v.masked_fill(key_padding_mask[:, None, :, None], 0.0)
        out = features.attention(q, k, v, projection, key_padding_mask=key_padding_mask, causal=causal, chunk=chunk_size,
                                 product_dtype=FEATURE_PRECISIONS[precision], fla=fla,
                                 recompute=_recompute(q, projection) if recompute is None else recompute)
    return out.to(out_dtype)


def softmax_attention(
    q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, key_padding_mask: Tensor | None = None
) -> Tensor:
    """Exact ``softmax(q kᵀ/√d) v`` through ``scaled_dot_product_attention`` (flash/memory-efficient
    kernels where they apply). A query whose keys are all masked gets a zero output."""
    _check(q, k, v, key_padding_mask)
    if key_padding_mask is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    allowed = ~key_padding_mask[:, None, None, :]  # [B, 1, 1, L]
    if causal:
        length = q.shape[-2]
        allowed = allowed & torch.ones(length, length, dtype=torch.bool, device=q.device).tril()
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    return out.nan_to_num(0.0)
