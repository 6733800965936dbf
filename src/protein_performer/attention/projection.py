"""Random projections for FAVOR feature maps.

A projection is a ``[M, d]`` matrix whose rows ω_i are Gaussian directions. Orthogonal random features
(ORF) stack independent ``d × d`` blocks of exactly Haar-distributed orthogonal matrices and then give
the rows their lengths.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

NORMS = ("chi", "sqrt_d")


def draw_projection(
    num_features: int,
    head_dim: int,
    *,
    orthogonal: bool = True,
    norm: str = "chi",
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Draw a random projection ``W`` of shape ``[num_features, head_dim]``.

    - ``orthogonal=True``: rows come in blocks of ``head_dim`` mutually orthogonal directions, each
      block the Q factor of the QR decomposition of a Gaussian matrix with the signs of ``diag(R)``
      folded in (without that fix Q is not Haar distributed). Blocks are independent.
    - ``orthogonal=False``: iid ``N(0, I_d)`` rows.
    - ``norm="chi"``: each row has the length of an independent ``N(0, I_d)`` vector (chi_d
      distributed), so every row is marginally ``N(0, I_d)`` and the softmax estimator stays unbiased.
      ``norm="sqrt_d"``: every row has length exactly ``√head_dim`` (the regularized variant).

    All randomness comes from ``generator`` (or the global generator when it is None), so a seeded
    generator fixes the draw. Sampling happens in float64 on the generator's device and is then cast.
    """
    if num_features < 1 or head_dim < 1:
        raise ValueError(f"num_features and head_dim must be positive, got {num_features}, {head_dim}")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    sample_device = generator.device if generator is not None else (device or "cpu")

    def gaussian(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=generator, device=sample_device, dtype=torch.float64)

    if orthogonal:
        blocks = math.ceil(num_features / head_dim)
        q, r = torch.linalg.qr(gaussian(blocks, head_dim, head_dim))  # [K, d, d]
        signs = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))  # [K, d]
        signs[signs == 0] = 1.0
        q = q * signs.unsqueeze(-2)  # Haar: scale column j of Q by sign(R_jj)
        # Rows of Q^T (the columns of Q) are orthonormal; stack the blocks.
        directions = q.transpose(-1, -2).reshape(blocks * head_dim, head_dim)[:num_features]
    else:
        g = gaussian(num_features, head_dim)
        directions = g / g.norm(dim=-1, keepdim=True)

    if norm == "chi":
        lengths = gaussian(num_features, head_dim).norm(dim=-1, keepdim=True)
    else:
        lengths = torch.full((num_features, 1), math.sqrt(head_dim), dtype=torch.float64, device=sample_device)
    return (directions * lengths).to(device=device or sample_device, dtype=dtype)
