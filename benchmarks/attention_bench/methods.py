"""The attention implementations compared, each as ``fn(q, k, v) -> out`` on ``[B, H, L, d]`` tensors,
and whether the optional ones are installed. Only public APIs of protein_performer are used."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from protein_performer.attention import draw_projection, favor_attention


def favor_features(x, projection, is_query: bool):
    """Stabilized positive softmax features (same math as ours), for the fast-transformers variant.
    x ``[B, H, L, d]``, projection ``[M, d]`` → ``[B, H, L, M]``."""
    xs = x * x.shape[-1] ** -0.25
    proj = torch.matmul(xs, projection.t())
    if is_query:
        return (proj - proj.detach().amax(dim=-1, keepdim=True)).exp()
    proj = proj - 0.5 * (xs * xs).sum(-1, keepdim=True)
    return (proj - proj.detach().amax(dim=(-2, -1), keepdim=True)).exp()


def _projection(spec: dict[str, Any], device):
    gen = torch.Generator(device="cpu").manual_seed(spec["seed"] + 1)
    return draw_projection(spec["features"], spec["head_dim"], generator=gen).to(device)


def _ours(spec: dict[str, Any], device, causal: bool) -> Callable:
    projection, chunk = _projection(spec, device), spec["chunk_size"]
    return lambda q, k, v: favor_attention(q, k, v, projection, kernel="softmax", causal=causal, chunk_size=chunk)


def _sdpa(spec: dict[str, Any], device, causal: bool) -> Callable:
    return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def _performer(spec: dict[str, Any], device, causal: bool) -> Callable:
    from performer_pytorch import FastAttention

    torch.manual_seed(spec["seed"] + 1)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints a notice when its CUDA kernel is missing
        return FastAttention(dim_heads=spec["head_dim"], nb_features=spec["features"], causal=causal).to(device)


def _fast_tr(spec: dict[str, Any], device, causal: bool) -> Callable:
    from fast_transformers.causal_product import causal_dot_product

    if not causal:
        raise ValueError("fast-tr is causal only")
    projection = _projection(spec, device)

    def fast_tr(q, k, v):
        out_dtype = q.dtype
        q, k, v = q.float(), k.float(), v.float()  # the kernel is float32 only
        qf = favor_features(q, projection, True).contiguous()
        kf = favor_features(k, projection, False).contiguous()
        ve = torch.cat([v, v.new_ones((*v.shape[:-1], 1))], dim=-1).contiguous()  # the normalizer as a ones column
        u = causal_dot_product(qf, kf, ve)
        return (u[..., :-1] / u[..., -1:]).to(out_dtype)

    return fast_tr


_BUILDERS = {"ours": _ours, "sdpa": _sdpa, "performer": _performer, "fast-tr": _fast_tr}


def make_method(spec: dict[str, Any], device) -> Callable:
    """``fn(q, k, v) -> out`` for ``spec["method"]``; q, k, v ``[B, H, L, d]``."""
    if spec["method"] not in _BUILDERS:
        raise ValueError(f"unknown method {spec['method']!r}")
    return _BUILDERS[spec["method"]](spec, device, spec["direction"] == "causal")


def _performer_available(device: str) -> tuple[bool, str]:
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            from importlib.metadata import version

            import performer_pytorch  # noqa: F401

            return True, f"performer-pytorch {version('performer-pytorch')}"
    except Exception as exc:
        return False, f"performer-pytorch not importable ({type(exc).__name__}: {exc}); pip install performer-pytorch==1.1.4"


def _fast_tr_available(device: str) -> tuple[bool, str]:
    try:
        from importlib.metadata import version

        from fast_transformers.causal_product import causal_dot_product  # noqa: F401

        if device.startswith("cuda"):
            import fast_transformers.causal_product.causal_product_cuda  # noqa: F401

        return True, f"pytorch-fast-transformers {version('pytorch-fast-transformers')}"
    except Exception as exc:
        return False, (f"fast_transformers.causal_product not importable ({type(exc).__name__}: {exc}); build it with "
                       "`pip install --no-build-isolation pytorch-fast-transformers` (CPU: no nvcc on PATH, CUDA_HOME unset)")


def method_available(method: str, device: str = "cpu") -> tuple[bool, str]:
    """Whether ``method`` can run on ``device``, and its version (or why not)."""
    if method in ("ours", "sdpa"):
        return True, ""
    if method == "performer":
        return _performer_available(device)
    if method == "fast-tr":
        return _fast_tr_available(device)
    return False, "unknown method"
