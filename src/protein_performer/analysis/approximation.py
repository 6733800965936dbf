"""How well FAVOR's implied attention matrix approximates exact softmax attention (arXiv 2009.14794,
Fig. 3 and §B): the error against the number of random features M, per feature kernel, for
orthogonal and iid projections — as the paper's mean squared error, and as a relative error per row
(‖Â_i − A_i‖ / ‖A_i‖, which compares across L: the MSE of rows that sum to one shrinks as 1/L² by
itself) — and the error as a function of the true attention value.

Everything is computed in float64 with the paper's unstabilized features (``random_features``), both
matrices written out by the naive references: ``A = softmax(q kᵀ/√d)`` (``softmax_attention_matrix``)
and ``Â_ij = φ(q_i)ᵀφ(k_j) / Σ_j' φ(q_i)ᵀφ(k_j')`` (``favor_attention_matrix``).
Shapes: one sample is q, k ``[L, d]``; matrices are ``[L, L]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from ..attention import draw_projection
from ..attention.ops.naive import favor_attention_matrix, softmax_attention_matrix

SOFTMAX_KERNELS = ("softmax", "softmax_trig", "softmax_hyperbolic")
FEATURE_COUNTS = (16, 32, 64, 128, 256)
PROJECTIONS = {"orthogonal": True, "iid": False}


def random_inputs(samples: int, length: int, dim: int, *, seed: int = 0) -> list[tuple[Tensor, Tensor]]:
    """``samples`` pairs q, k ``[L, d]`` (float64) with entries N(0, 1/√d): the kernel's arguments
    q̃ = q·d^(-1/4) then have unit expected squared norm, whatever d (the "normalized" inputs)."""
    g = torch.Generator().manual_seed(seed)
    std = dim**-0.25
    return [(std * torch.randn(length, dim, generator=g, dtype=torch.float64),
             std * torch.randn(length, dim, generator=g, dtype=torch.float64)) for _ in range(samples)]


def _projection(num_features: int, dim: int, orthogonal: bool, seed: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return draw_projection(num_features, dim, orthogonal=orthogonal, generator=generator, dtype=torch.float64)


def _summary(values: Sequence[float]) -> dict:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std()), "median": float(np.median(a)), "samples": len(a)}


ERRORS = ("relative", "mse")


def error_tables(pairs: Sequence[tuple[Tensor, Tensor]], *, kernels: Sequence[str] = SOFTMAX_KERNELS,
                 feature_counts: Sequence[int] = FEATURE_COUNTS, seed: int = 0,
                 progress: Callable[[Iterable], Iterable] = iter) -> dict:
    """``{"relative"|"mse": {kernel: {"orthogonal"|"iid": {M: {"mean", "std", "median", "samples"}}}}}``,
    one value per pair summarized over pairs: ``relative`` the mean over rows of ‖Â_i − A_i‖ / ‖A_i‖,
    ``mse`` the mean over entries of ``(Â − A)²``. Each (pair, M, projection type) gets its own draw,
    shared by the kernels (common random numbers make the kernels comparable)."""
    errors = {e: {kernel: {name: {m: [] for m in feature_counts} for name in PROJECTIONS} for kernel in kernels} for e in ERRORS}
    for index, (q, k) in enumerate(progress(pairs)):
        exact = softmax_attention_matrix(q, k)
        row_norm = exact.norm(dim=-1)
        for name, orthogonal in PROJECTIONS.items():
            for m in feature_counts:
                w = _projection(m, q.shape[-1], orthogonal, seed=seed * 1_000_003 + index * 1009 + m * 2 + int(orthogonal))
                for kernel in kernels:
                    diff = favor_attention_matrix(q, k, w, kernel=kernel) - exact
                    errors["relative"][kernel][name][m].append(float((diff.norm(dim=-1) / row_norm).mean()))
                    errors["mse"][kernel][name][m].append(float(diff.pow(2).mean()))
    return {e: {kernel: {name: {str(m): _summary(v) for m, v in by_m.items()} for name, by_m in by_name.items()}
                for kernel, by_name in table.items()} for e, table in errors.items()}


def error_by_value(pairs: Sequence[tuple[Tensor, Tensor]], *, kernels: Sequence[str] = SOFTMAX_KERNELS, num_features: int = 64,
                   orthogonal: bool = True, bins: int = 12, seed: int = 0) -> dict:
    """Squared and relative error binned by the true attention value ``A_ij`` (log-spaced bins over
    the range of A in all pairs): ``{"edges": [...], "count": [...], kernel: {"mse": [...],
    "relative_rmse": [...]}}`` with relative_rmse = √mean(((Â − A)/A)²). Empty bins are None."""
    exact = [softmax_attention_matrix(q, k) for q, k in pairs]
    low = min(float(a.min()) for a in exact)
    high = max(float(a.max()) for a in exact)
    edges = np.logspace(math.log10(low), math.log10(high), bins + 1)
    edges[0], edges[-1] = low * (1 - 1e-12), high * (1 + 1e-12)
    index = [np.clip(np.searchsorted(edges, a.numpy().ravel(), side="right") - 1, 0, bins - 1) for a in exact]
    count = sum(np.bincount(i, minlength=bins) for i in index)
    result: dict = {"edges": edges.tolist(), "count": count.tolist(), "num_features": num_features,
                    "projection": "orthogonal" if orthogonal else "iid"}
    for kernel in kernels:
        sq = np.zeros(bins)
        rel = np.zeros(bins)
        for p, ((q, k), a, idx) in enumerate(zip(pairs, exact, index)):
            w = _projection(num_features, q.shape[-1], orthogonal, seed=seed * 1_000_003 + p)
            diff = (favor_attention_matrix(q, k, w, kernel=kernel) - a).numpy().ravel()
            sq += np.bincount(idx, weights=diff**2, minlength=bins)
            rel += np.bincount(idx, weights=(diff / a.numpy().ravel()) ** 2, minlength=bins)
        result[kernel] = {
            "mse": [float(s / c) if c else None for s, c in zip(sq, count)],
            "relative_rmse": [float(math.sqrt(r / c)) if c else None for r, c in zip(rel, count)],
        }
    return result


def checkpoint_pairs(model, tokens: Sequence[Tensor]) -> list[tuple[Tensor, Tensor]]:
    """Real q, k ``[L, d]`` (float64, after any rotary transform) of every layer and head of ``model``
    (a :class:`~protein_performer.model.PerformerLM`) for each token row ``[L]``, padding excluded."""
    pairs = []
    for row in tokens:
        for q, k in model.queries_keys(row[None]):  # [1, H, L, d] per layer
            pairs.extend((q[0, h].double(), k[0, h].double()) for h in range(q.shape[1]))
    return pairs
