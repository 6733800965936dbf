"""The fla path of causal FAVOR's gated product against the explicit L×L matrix, values and gradients.

Without CUDA, fla's Triton kernels run in Triton's interpreter on the CPU. ``triton.jit`` chooses the
interpreter when a kernel is defined, that is when triton (its own helpers) and fla are first
imported, so the ``fla`` fixture imports both with ``TRITON_INTERPRET=1`` set (and puts the variable
back afterwards: no other test sees it), or skips if something imported them without it. Two things
the interpreter of triton 3.7 cannot do are patched for the tests that run kernels: the autotuner
cannot time configurations without a GPU driver (every configuration gets time 0, so the first is
used), and loop counters are plain ints, which have no ``.to`` (fla's ``chunk_h`` kernels call
``i_t.to(tl.int64)``), so that module's ``range`` yields interpreter tensors. Neither changes what a
kernel computes. Skipped where fla or triton is not installed (CI: they are the ``gpu`` extra).
"""

import importlib
import os

import pytest
import torch

from protein_performer.attention.ops.fla import fla_available, gated_causal_product_fla

INTERPRET = not torch.cuda.is_available()
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# the interpreter multiplies in full float32; on the GPU triton's float32 products are TF32 by default
FLOAT32_TOLERANCE = 1e-4 if INTERPRET else 5e-3


def _interpreted(kernel) -> bool:
    """Whether a (heuristics- and autotune-wrapped) triton kernel was defined for the interpreter."""
    from triton.runtime.interpreter import InterpretedFunction

    while not isinstance(kernel, InterpretedFunction) and hasattr(kernel, "fn"):
        kernel = kernel.fn
    return isinstance(kernel, InterpretedFunction)


@pytest.fixture(scope="module")
def fla():
    """fla, imported (without CUDA) with the interpreter chosen for its kernels and triton's own."""
    saved = os.environ.get("TRITON_INTERPRET")
    if INTERPRET:
        os.environ["TRITON_INTERPRET"] = "1"
    try:
        triton = pytest.importorskip("triton")
        module = pytest.importorskip("fla.ops.simple_gla")
    finally:
        if saved is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = saved
    chunk_h = importlib.import_module("fla.ops.common.chunk_h")
    if INTERPRET and not (_interpreted(triton.language.standard.cdiv) and _interpreted(chunk_h.chunk_fwd_kernel_h)):
        pytest.skip("triton or fla was imported before TRITON_INTERPRET=1 was set: their kernels need a GPU")
    return module


@pytest.fixture
def kernels(fla, monkeypatch):
    """Run fla's kernels: on the GPU as they are, on the CPU in the interpreter with the two patches."""
    if not INTERPRET:
        return
    from triton.runtime.autotuner import Autotuner
    from triton.runtime.interpreter import interpreter_semantic

    def tensor_range(*bounds):
        for i in range(*bounds):
            yield interpreter_semantic.to_tensor(i, False)

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(Autotuner, "_bench", lambda self, *args, config, **kwargs: [0.0, 0.0, 0.0])
    monkeypatch.setattr(importlib.import_module("fla.ops.common.chunk_h"), "range", tensor_range, raising=False)
    assert fla_available()


def _inputs(b=1, h=2, length=100, m=32, d=9, *, spread=30.0, dtype=torch.float32, seed=0):
    """qf, kf ≥ 0 ``[B, H, L, M]``, ve ``[B, H, L, D]`` (last column ones) and a running-maximum log scale
    ``[B, H, L]`` whose rises add up to nearly ``spread``, so the gate e^{c_j − c_t} reaches e^{−spread}."""
    g = torch.Generator().manual_seed(seed)
    qf, kf = (torch.rand(b, h, length, m, generator=g) for _ in range(2))
    ve = torch.cat([torch.randn(b, h, length, d - 1, generator=g), torch.ones(b, h, length, 1)], dim=-1)
    envelope = torch.linspace(0.0, spread, length)
    log_scale = torch.cummax(torch.rand(b, h, length, generator=g) * envelope, dim=-1).values - 3.0
    return [x.to(DEVICE, dtype) for x in (qf, kf, ve)] + [log_scale.to(DEVICE)]


def _reference(qf, kf, ve, log_scale):
    """``u = A ve`` with the explicit ``A_tj = (qf_t·kf_j) e^{c_j − c_t}`` for j ≤ t, 0 after."""
    length = qf.shape[-2]
    causal = torch.ones(length, length, dtype=torch.bool, device=qf.device).tril()
    gate = (log_scale[..., None, :] - log_scale[..., :, None]).masked_fill(~causal, -torch.inf).exp()  # [B, H, t, j]
    return (qf @ kf.transpose(-1, -2) * gate) @ ve


def _values_and_gradients(fn, inputs, weight):
    inputs = [x.detach().requires_grad_() for x in inputs]
    out = fn(*inputs)
    (out * weight).sum().backward()
    return out.detach(), [x.grad for x in inputs]


def test_fla_product_matches_the_explicit_matrix_in_values_and_gradients(kernels):
    inputs = _inputs()  # L = 100: one whole chunk of 64 and a partial one
    weight = torch.randn(1, 2, 100, 9, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    out, grads = _values_and_gradients(gated_causal_product_fla, inputs, weight)
    ref, ref_grads = _values_and_gradients(_reference, [x.double() for x in inputs], weight.double())
    assert out.dtype == torch.float32 and out.shape == ref.shape
    for name, got, want in zip(["u", "qf", "kf", "ve", "log_scale"], [out, *grads], [ref, *ref_grads]):
        error = (got.double() - want).abs().max() / want.abs().max()
        assert error < FLOAT32_TOLERANCE, f"{name}: error {error:.2e} relative to the largest entry"
    # the gate matters: without it the product is far off
    ungated = _reference(*[x.double() for x in inputs[:3]], torch.zeros_like(inputs[3], dtype=torch.float64))
    assert (ungated - ref).abs().max() > 0.5 * ref.abs().max()


def test_fla_product_in_half_precision_pads_odd_widths(kernels):
    # fla's 16-bit backward asserts even K and V: M = 5 and D = 7 are padded with zero columns
    inputs = _inputs(b=2, h=1, length=40, m=5, d=7, spread=10.0, dtype=torch.float16)
    weight = torch.randn(2, 1, 40, 7, generator=torch.Generator().manual_seed(2)).to(DEVICE)
    out, grads = _values_and_gradients(gated_causal_product_fla, inputs, weight)
    ref, ref_grads = _values_and_gradients(_reference, [x.double() for x in inputs], weight.double())
    assert out.dtype == torch.float16 and out.shape == ref.shape
    for name, got, want in zip(["u", "qf", "kf", "ve"], [out, *grads[:3]], [ref, *ref_grads[:3]]):
        assert got.shape == want.shape, name
        error = (got.double() - want).abs().max() / want.abs().max()
        assert error < 1e-2, f"{name}: error {error:.2e} relative to the largest entry"


def test_shapes_are_checked_before_fla_is_needed():
    qf, kf, ve, log_scale = _inputs(length=8, m=4, d=3)
    with pytest.raises(ValueError, match="log_scale"):
        gated_causal_product_fla(qf, kf, ve, log_scale[..., :-1])


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the path is available")
def test_without_cuda_only_the_interpreter_makes_it_available(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not fla_available()
    qf, kf, ve, log_scale = _inputs(length=8, m=4, d=3)
    with pytest.raises(RuntimeError, match="CUDA"):
        gated_causal_product_fla(qf, kf, ve, log_scale)
