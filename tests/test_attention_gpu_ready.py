"""The GPU-ready parts of FAVOR, checked on the CPU: the bf16 precision policy against float64, the
backend choice, and torch.compile (a whole graph, no breaks) against eager, both directions, padded."""

import pytest
import torch
from conftest import qkv

from protein_performer.attention import BACKENDS, FEATURE_PRECISIONS, KERNELS, draw_projection, favor_attention
from protein_performer.attention.ops.fla import fla_available


def _inputs(dtype=torch.float32):
    q, k, v = qkv(b=2, h=2, length=96, d=16, dtype=torch.float64, seed=3)
    w = torch.stack([draw_projection(64, 16, generator=torch.Generator().manual_seed(i), dtype=torch.float64) for i in range(2)])
    pad = torch.zeros(2, 96, dtype=torch.bool)
    pad[1, 70:] = True
    return q, k, v, w, pad


def _relative_error(out, ref, pad):
    keep = ~pad[:, None, :, None]
    return ((out.double() - ref) * keep).norm() / (ref * keep).norm()


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("causal", [False, True])
def test_bf16_products_stay_close_to_float64_and_float32_stays_exact(kernel, causal):
    q, k, v, w, pad = _inputs()
    ref = favor_attention(q, k, v, w, kernel=kernel, causal=causal, key_padding_mask=pad, chunk_size=32)  # float64
    q32, k32, v32, w32 = (t.float() for t in (q, k, v, w))
    errors = {}
    if kernel == "softmax_trig":  # signed features cancel: bf16 is refused for them
        with pytest.raises(ValueError, match="precision 'bf16' is unsafe for the signed softmax_trig features"):
            favor_attention(q32, k32, v32, w32, kernel=kernel, precision="bf16")
        errors["bf16"] = 1e-3
    for precision in FEATURE_PRECISIONS if kernel != "softmax_trig" else ["float32"]:
        out = favor_attention(q32, k32, v32, w32, kernel=kernel, causal=causal, key_padding_mask=pad, chunk_size=32,
                              precision=precision)
        assert out.dtype == torch.float32
        errors[precision] = _relative_error(out, ref, pad)
    # the trigonometric features are signed: their sums cancel, and float32 loses more of them
    assert errors["float32"] < (1e-4 if kernel == "softmax_trig" else 1e-5)
    # bf16 rounds each product (relative 2^-9 per operand): about 1e-3 here, and never a silent float32
    assert 1e-4 < errors["bf16"] < 2e-2


@pytest.mark.parametrize("causal", [False, True])
def test_bf16_gradients_stay_close_to_float64(causal):
    q, k, v, w, pad = _inputs()

    def grads(dtype, precision):
        inputs = [t.detach().to(dtype).clone().requires_grad_() for t in (q, k, v)]
        out = favor_attention(*inputs, w.to(dtype), causal=causal, key_padding_mask=pad, chunk_size=32, precision=precision)
        (out.masked_fill(pad[:, None, :, None], 0.0) * v.to(dtype)).sum().backward()
        return [t.grad.double() for t in inputs]

    for got, ref in zip(grads(torch.float32, "bf16"), grads(torch.float64, "float32")):
        assert 1e-4 < (got - ref).norm() / ref.norm() < 2e-2


def test_bad_precision_and_backend_are_named():
    q, k, v, w, _ = _inputs()
    with pytest.raises(ValueError, match="unknown precision 'fp8'; choose one of float32, bf16"):
        favor_attention(q, k, v, w, precision="fp8")
    with pytest.raises(ValueError, match="unknown backend 'cuda'; choose one of " + ", ".join(BACKENDS)):
        favor_attention(q, k, v, w, backend="cuda")
    if not fla_available():
        with pytest.raises(ValueError, match=r"backend 'fla' needs fla-core and triton"):
            favor_attention(q, k, v, w, causal=True, backend="fla")


def test_auto_backend_is_torch_on_the_cpu():
    q, k, v, w, pad = _inputs()
    for causal in (False, True):
        auto = favor_attention(q, k, v, w, causal=causal, key_padding_mask=pad)
        assert torch.equal(auto, favor_attention(q, k, v, w, causal=causal, key_padding_mask=pad, backend="torch"))


@pytest.mark.slow
@pytest.mark.parametrize("causal", [False, True])
def test_compiled_favor_attention_is_one_graph_and_equals_eager(causal):
    q, k, v, w, pad = (t.float() if t.is_floating_point() else t for t in _inputs())
    # One graph (a break raises) with autograd traced through; inductor's code generation (slow to
    # compile on the CPU) is exercised by the compiled training step below.
    compiled = torch.compile(favor_attention, fullgraph=True, backend="aot_eager")

    def run(fn):
        inputs = [t.clone().requires_grad_() for t in (q, k, v)]
        out = fn(*inputs, w, causal=causal, key_padding_mask=pad, chunk_size=32)
        (out * v).sum().backward()
        return [out, *(t.grad for t in inputs)]

    for got, ref in zip(run(compiled), run(favor_attention)):
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["mlm", "causal"])
def test_compiled_training_step_is_one_graph_and_equals_eager(objective):
    from protein_performer.model import PerformerConfig, PerformerLM

    torch.manual_seed(0)
    config = PerformerConfig(d_model=16, num_layers=2, num_heads=2, d_ff=32, num_features=8, dropout=0.0, objective=objective)
    model = PerformerLM(config)
    tokens = torch.randint(4, 24, (2, 30), generator=torch.Generator().manual_seed(1))
    pad = torch.zeros(2, 30, dtype=torch.bool)
    pad[1, 20:] = True
    tokens[pad] = config.pad_idx

    def step(module):
        model.zero_grad()
        logits = module(tokens, pad)["logits"]
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten(), ignore_index=config.pad_idx)
        loss.backward()
        return [loss.detach(), *(p.grad.clone() for p in model.parameters())]

    compiled = step(torch.compile(model, fullgraph=True))
    for got, ref in zip(compiled, step(model)):
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("causal", [False, True])
def test_with_recompute_nothing_of_size_m_is_kept_for_backward(causal):
    """Between forward and backward FAVOR keeps q, k, v, the output and per-position scalars (about
    flash attention's 4d numbers per token and head), not the [L, M] feature tensors: backward
    recomputes them (the default on CUDA). Without recompute (the CPU default) it keeps the two of
    them; the gradients are the same either way."""
    b, h, length, d, m = 1, 2, 512, 16, 64
    q, k, v = (torch.randn(b, h, length, d, requires_grad=True) for _ in range(3))
    w = torch.stack([draw_projection(m, d, generator=torch.Generator().manual_seed(i)) for i in range(h)])
    grads = {}
    for recompute in (True, False):
        saved = []

        def pack(t, saved=saved):
            saved.append(t)
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = favor_attention(q, k, v, w, causal=causal, recompute=recompute)
        features = [t for t in saved if t.dim() == 4 and t.shape[-2:] == (length, m)]
        per_token_head = sum(t.numel() * t.element_size() for t in saved if t.dim() == 4 and t.shape[-2] == length) / (b * h * length)
        if recompute:
            assert not features
            assert per_token_head <= (4 * d + 2) * 4  # q, k, v, out, normalizer and causal log scale, float32
        else:
            assert len(features) == 2
            # and, causal, the forward's chunk states and within-chunk scores for the backward to share:
            # M(d+1)/C + C numbers per token and head; every tensor kept counts here (bidirectional keeps
            # the [M, d+1] state; the projection is shared by all positions).
            total = sum(t.numel() * t.element_size() for t in saved) / (b * h * length)
            chunk = 128
            extra = m * (d + 1) / chunk + chunk if causal else m * (d + 1) / length
            assert total <= 4 * (4 * d + 2 + 2 * m + extra + m * d / length) + 1e-9
        grads[recompute] = torch.autograd.grad(out.sum(), (q, k, v))
    for a, b_ in zip(grads[True], grads[False]):
        assert torch.equal(a, b_)


@pytest.mark.parametrize("causal", [False, True])
def test_bf16_inputs_keep_bf16_for_backward_like_flash_attention(causal):
    """With bf16 inputs and recompute, what backward needs is q, k, v and the output in bf16 plus two
    float32 scalars per position: 4d·2 + 8 bytes per token and head (flash attention: 4d·2 + 4)."""
    b, h, length, d, m = 1, 2, 256, 16, 32
    q, k, v = (torch.randn(b, h, length, d, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    w = torch.stack([draw_projection(m, d, generator=torch.Generator().manual_seed(i)) for i in range(h)])
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = favor_attention(q, k, v, w, causal=causal, recompute=True)
    per_token_head = sum(t.numel() * t.element_size() for t in saved if t.dim() == 4 and t.shape[-2] == length) / (b * h * length)
    assert per_token_head <= 4 * d * 2 + 8
    grads = torch.autograd.grad(out.float().sum(), (q, k, v))
    inputs = [t.detach().float().requires_grad_() for t in (q, k, v)]  # the same numbers in float32
    ref = torch.autograd.grad(favor_attention(*inputs, w, causal=causal).sum(), inputs)
    for g, r in zip(grads, ref):
        assert g.dtype == torch.bfloat16
        assert (g.float() - r).norm() / r.norm() < 2e-2  # bf16 rounding of the saved output and of the result
