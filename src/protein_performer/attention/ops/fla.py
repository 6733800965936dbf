"""Causal FAVOR's gated prefix product on the GPU through flash-linear-attention's chunked Triton kernels.

The product (``linear.causal_product`` computes the same in plain PyTorch): from query features qf
``[B, H, L, M]``, key features kf ``[B, H, L, M]`` (both ≥ 0, already stabilized), values ve
``[B, H, L, D]`` (the normalizer's column of ones included) and the keys' running log scale c
``[B, H, L]`` (non-decreasing in L)

    u_t = Σ_{j ≤ t} (qf_t·kf_j) e^{c_j − c_t} ve_j                                    ``[B, H, L, D]``

is simple gated linear attention, fla's ``chunk_simple_gla``: state ``S_t = e^{g_t} S_{t−1} + kf_t ve_tᵀ``,
output ``u_t = qf_tᵀ S_t`` (scale 1) with the per-position log decay ``g_t = c_{t−1} − c_t`` (g_0 = 0).
Unrolled, the factor between key j and query t is ``e^{g_{j+1} + … + g_t}``, a telescoping sum equal to
``e^{c_j − c_t}``: the mapping is exact, not an approximation. Because c never decreases, g ≤ 0 and
every factor is at most 1, so the kernel's within-chunk cumulative sums of g neither overflow nor
lose the terms that matter. Autograd goes through fla's own backward (c gets a gradient too, through
g; FAVOR's stabilizer is detached anyway).

Padding: padded keys already have kf = 0 and contribute nothing, so nothing here masks. Any L works
(fla masks the last partial chunk), and so does any M (fla tiles the feature axis). Inputs are
float32, or bf16/fp16 on the GPU, where fla's backward needs even M and D: a zero feature column
(qf = kf = 0 adds 0 to every score) and a zero value column (sliced off again) make them even. On
the GPU triton multiplies float32 in TF32 unless ``TRITON_F32_DEFAULT=ieee`` (about 1e-3 relative
error instead of 1e-6).

fla and triton are optional (``pip install 'protein-performer[gpu]'``) and imported only when the
product runs. On a machine without CUDA the kernels run only under Triton's interpreter
(``TRITON_INTERPRET=1`` set before triton is first imported), which is how the tests check them; with
triton 3.7 the interpreter also needs two patches that only the tests apply (``tests/test_attention_fla.py``).
"""

from __future__ import annotations

import importlib.util
import os

import torch
from torch import Tensor
from torch.nn import functional as F

# Looked up once (without importing them), so that choosing the path costs nothing inside torch.compile.
FLA_INSTALLED = all(importlib.util.find_spec(name) is not None for name in ("fla", "triton"))


def fla_available() -> bool:
    """Whether :func:`gated_causal_product_fla` can run here: fla and triton are installed and there is a
    CUDA device, or Triton's interpreter is on (``TRITON_INTERPRET=1``, for tests on the CPU)."""
    interpreting = os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")
    return FLA_INSTALLED and (torch.cuda.is_available() or interpreting)


def _even(x: Tensor) -> Tensor:
    """``x`` with a zero column appended when its last axis is odd."""
    return F.pad(x, (0, x.shape[-1] % 2))


def gated_causal_product_fla(qf: Tensor, kf: Tensor, ve: Tensor, log_scale: Tensor) -> Tensor:
    """``u_t = Σ_{j ≤ t} (qf_t·kf_j) e^{c_j − c_t} ve_j`` ``[B, H, L, D]`` by fla's chunked simple-GLA kernel.

    qf, kf ``[B, H, L, M]``; ve ``[B, H, L, D]``; log_scale c ``[B, H, L]``, non-decreasing along L.
    The result has ve's dtype; differentiable in all four inputs.
    """
    if qf.dim() != 4 or kf.shape != qf.shape or ve.shape[:-1] != qf.shape[:-1] or log_scale.shape != qf.shape[:-1]:
        shapes = ", ".join(str(list(x.shape)) for x in (qf, kf, ve, log_scale))
        raise ValueError(f"expected qf, kf [B, H, L, M], ve [B, H, L, D], log_scale [B, H, L], got {shapes}")
    if not fla_available():
        raise RuntimeError("the fla path needs fla-core and triton (pip install 'protein-performer[gpu]') and a CUDA "
                           "device (or TRITON_INTERPRET=1 on the CPU)")
    from fla.ops.simple_gla import chunk_simple_gla

    depth = ve.shape[-1]
    if qf.element_size() == 2:  # fla's 16-bit backward asserts even K and V
        qf, kf, ve = _even(qf), _even(kf), _even(ve)
    c = log_scale.float()
    g = F.pad(c[..., :-1] - c[..., 1:], (1, 0))  # [B, H, L]: g_0 = 0, g_t = c_{t−1} − c_t ≤ 0
    # fla's layout is [B, L, H, ·] (time before heads)
    out, _ = chunk_simple_gla(qf.transpose(1, 2), kf.transpose(1, 2), ve.transpose(1, 2), g=g.transpose(1, 2), scale=1.0)
    return out.transpose(1, 2)[..., :depth].to(ve.dtype)
